"""What the GUI holds: the latest reduced state, applied from `ViewUpdate`s, read by the views.

Lives on the GUI thread and only ever receives immutable updates from the core thread
(`desktop.core.monitor`), so the views read it without locks. Applying an update is dict
updates and a few vectorised numpy appends for the subscribed series - no per-observation
work. `machines_version` and `dirty` tell the overview which tiles changed since it last drew;
per-series and per-device versions do the same for the detail view.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Mapping

import numpy as np

from desktop.core.batch import SeriesKey
from desktop.core.machines import MachineStatus, MachineView
from desktop.core.monitor import LOG_LIMIT, ViewUpdate
from desktop.core.ringbuffer import RingBuffer

# A detail view may show 24 h of a series sampled every few tenths of a second.
DETAIL_CAPACITY = 400_000


class DeviceState:
    """A subscribed machine's state bands and recent events/conditions."""

    def __init__(self) -> None:
        self.timeline: list[tuple[float, MachineStatus]] = []
        self.log: deque[Mapping[str, Any]] = deque(maxlen=LOG_LIMIT)
        self.version = 0


class ViewState:
    def __init__(self, capacity: int = DETAIL_CAPACITY) -> None:
        self.capacity = capacity
        self.machines: dict[str, MachineView] = {}
        self.machines_version = 0
        # Machines changed (or removed) since the overview last took them.
        self.dirty: set[str] = set()
        self.items: dict[str, tuple[Mapping[str, Any], ...]] = {}
        self.items_version = 0
        self.series: dict[SeriesKey, RingBuffer] = {}
        self.devices: dict[str, DeviceState] = {}
        self.observation_rate = 0.0
        self.observation_records = 0
        self.last_data_at: float | None = None
        self.last_observation_timestamp: str | None = None
        self.errors: deque[str] = deque(maxlen=20)
        self.error_count = 0
        self.skipped_count = 0
        self.skipped: tuple[str, ...] = ()
        # How far behind the stream the app is reading (seconds; see ViewUpdate.behind_seconds).
        self.behind_seconds = 0.0

    def apply(self, update: ViewUpdate) -> None:
        if update.reset:
            self.dirty |= set(self.machines)
            self.machines.clear()
            self.items.clear()
            for buffer in self.series.values():
                buffer.clear()
            for device in self.devices.values():
                device.timeline.clear()
                device.log.clear()
                device.version += 1
            self.machines_version += 1
        if update.machines or update.removed:
            for uuid in update.removed:
                self.machines.pop(uuid, None)
            self.machines.update(update.machines)
            self.dirty |= set(update.machines) | set(update.removed)
            self.machines_version += 1
        if update.items:
            self.items.update(update.items)
            self.items_version += 1
        for key, series in update.samples.items():
            buffer = self.series.get(key)
            if buffer is None:
                buffer = self.series[key] = RingBuffer(self.capacity)
            if key in update.replaced:
                buffer.clear()
            buffer.extend(series.times, series.values)
        for uuid, detail in update.details.items():
            device = self.devices.setdefault(uuid, DeviceState())
            if detail.replace:
                device.timeline = list(detail.timeline)
                device.log.clear()
            else:
                device.timeline.extend(detail.timeline)
            device.log.extend(detail.log)
            device.version += 1
        self.observation_rate = update.observation_rate
        self.observation_records += update.observation_records
        if update.last_data_at is not None:
            self.last_data_at = update.last_data_at
        if update.last_observation_timestamp:
            self.last_observation_timestamp = update.last_observation_timestamp
        if update.errors:
            self.errors.extend(update.errors)
            self.error_count += len(update.errors)
        self.skipped_count = update.skipped_count
        if update.behind_seconds is not None:
            self.behind_seconds = update.behind_seconds
        if update.skipped:
            self.skipped = update.skipped

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def sample_items(self, device_uuid: str) -> tuple[Mapping[str, Any], ...]:
        return self.items.get(device_uuid, ())

    def data_item(self, device_uuid: str, item_id: str) -> Mapping[str, Any] | None:
        return next((item for item in self.items.get(device_uuid, ()) if str(item.get("id")) == item_id), None)

    def forget_device(self, device_uuid: str) -> None:
        """A detail view closed: drop its buffers."""
        self.devices.pop(device_uuid, None)
        for key in [key for key in self.series if key[0] == device_uuid]:
            del self.series[key]

    def views(self) -> list[MachineView]:
        return sorted(self.machines.values(), key=lambda v: (v.name.lower(), v.device_uuid))

    def counts(self) -> dict[MachineStatus, int]:
        counts = {status: 0 for status in MachineStatus}
        for view in self.machines.values():
            counts[view.status] += 1
        return counts

    def series_arrays(self, key: SeriesKey) -> tuple[np.ndarray, np.ndarray]:
        buffer = self.series.get(key)
        if buffer is None:
            return np.empty(0), np.empty(0)
        return buffer.snapshot()
