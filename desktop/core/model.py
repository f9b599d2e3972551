"""The desktop's model: the fleet, sample buffers, alarm engine and journal, one batch at a time.

`MonitorModel.apply` runs on the core thread (`desktop.core.monitor.CoreRunner`), never on
the GUI thread: it updates the fleet (device models, agent reachability, machine state),
appends sample arrays to the ring buffers, runs the alarm engine and writes the alarm journal
(SQLite) before anything of the batch can be shown, and counts messages for the rate. It
returns the alarm events and which machines the batch touched; `desktop.core.monitor`
reduces that into the immutable update the GUI receives. It never draws.
"""
from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

from desktop.core.alarms import Alarm, AlarmEngine, AlarmEvent, AlarmJournal, Notice, RuleSet
from desktop.core.batch import Batch, SeriesKey
from desktop.core.gui_priority import no_pause
from desktop.core.machines import DEFAULT_OFFLINE_AFTER, Fleet
from desktop.core.ringbuffer import DEFAULT_CAPACITY, DEFAULT_WINDOW_SECONDS, SeriesStore

# The data item type plotted by default: spindle speed.
DEFAULT_PLOT_TYPE = "ROTARY_VELOCITY"

_ITEM_FIELDS = ("id", "name", "category", "type", "sub_type", "units", "component", "component_id")


@dataclass(frozen=True)
class ModelUpdate:
    alarm_events: tuple[AlarmEvent, ...] = ()
    # Alarms to pop up now (each once; not chattering, shelved or held back by a flood), in order.
    notifications: tuple[Alarm, ...] = ()
    # What to show for them: one notice per alarm, or one flood summary standing for many.
    notices: tuple[Notice, ...] = ()
    devices_changed: bool = False
    observation_count: int = 0
    # Machines whose state may have changed (observations, device records, agent status).
    touched: frozenset[str] = frozenset()


class RateMeter:
    """Messages per second over a sliding window of wall-clock time."""

    def __init__(self, window_seconds: float = 5.0) -> None:
        self.window_seconds = window_seconds
        self._counts: deque[tuple[float, int]] = deque()

    def add(self, count: int, now: float) -> None:
        if count:
            self._counts.append((now, count))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._counts and self._counts[0][0] < now - self.window_seconds:
            self._counts.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        return sum(count for _, count in self._counts) / self.window_seconds


class MonitorModel:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, window_seconds: float = DEFAULT_WINDOW_SECONDS,
                 rules: RuleSet | None = None, journal: AlarmJournal | None = None, station: str = "",
                 offline_after: float = DEFAULT_OFFLINE_AFTER) -> None:
        self.window_seconds = window_seconds
        self.offline_after = offline_after
        self.fleet = Fleet(offline_after)
        # Live points older than the window are not kept: the feed reads that much history at
        # start, and a detail view loads longer look-backs from Kafka.
        self.series = SeriesStore(capacity, window_seconds)
        # Without a rules file: every MTConnect Condition (FAULT critical, WARNING medium).
        self.alarm_engine = AlarmEngine(rules or RuleSet.conditions_only(), station=station)
        self.journal = journal if journal is not None else AlarmJournal()
        self.alarm_engine.restore(self.journal.open_alarms())
        self.rate = RateMeter()
        self.record_count = 0
        self.observation_count = 0
        self.last_data_at: float | None = None  # wall clock of the last observation batch
        self.last_observation_timestamp: str | None = None
        self.errors: deque[str] = deque(maxlen=20)
        self.error_count = 0
        # Records skipped because they do not match the schema: how many, and the latest few.
        self.skipped_count = 0
        self.skipped: deque[str] = deque(maxlen=10)
        # device uuid -> data item id -> descriptor (from the device model, else from observations)
        self._items: dict[str, dict[str, dict[str, Any]]] = {}
        self.items_version = 0
        # Called between the steps of `apply` (each can take tens of milliseconds for a
        # plant's batch): a busy GUI thread gets the interpreter first.
        self.pause = no_pause

    def reset(self) -> None:
        """Start over before history is read again (a reconnect): keep the alarm journal and
        what was already notified, so the re-read history updates rows instead of popping up."""
        self.fleet = Fleet(self.offline_after)
        self.series.clear()
        self.alarm_engine.reset()
        self._items.clear()
        self.items_version += 1
        # History is read again: its bad records will be counted again.
        self.skipped_count = 0
        self.skipped.clear()

    def use_rules(self, rules: RuleSet, now: float | None = None) -> list[AlarmEvent]:
        """New alarm rules (the settings dialog saved them): the engine starts over with them
        as at start, from the journal's open alarms; the caller reads history again.

        First the alarms of a rule that is now off (or gone) are taken out of service, and
        those of a rule back on return to service, as `set_rule_enabled` does, so what the
        operator sees follows the change. Returns those events, already in the journal."""
        now = time.time() if now is None else now
        old = self.alarm_engine
        enabled = {rule.id for rule in rules.rules if rule.enabled}
        events: list[AlarmEvent] = []
        for rule in old.rules.rules:
            events += old.set_rule_enabled(rule.id, rule.id in enabled, now)
        self.journal.apply(events)
        self.alarm_engine = AlarmEngine(rules, station=old.station, clock=old._clock)
        self.alarm_engine.restore(self.journal.open_alarms())
        return events

    def apply(self, batch: Batch, now: float | None = None) -> ModelUpdate:
        now = time.time() if now is None else now
        self.record_count += batch.record_count
        self.rate.add(batch.record_count, now)
        for message in batch.errors:
            self.errors.append(message)
        self.error_count += len(batch.errors)
        if batch.skipped_count:
            self.skipped_count += batch.skipped_count
            self.skipped.extend(record.describe() for record in batch.skipped)

        events: list[AlarmEvent] = []
        touched: set[str] = set()
        for device_uuid, device in batch.devices:
            touched.add(device_uuid)
            self.fleet.set_device(device_uuid, device)
            self._learn_device_items(device_uuid, device)
            self.alarm_engine.set_device(device_uuid, device, now)
        for agent, status in batch.agent_statuses:
            self.fleet.set_agent_status(agent, status)
            touched.update(self.fleet.devices_of_agent(agent))
            events += self.alarm_engine.set_agent_status(agent, status, now)

        if batch.observations:
            touched |= self.fleet.observe(batch.observations, batch.seen, now)
            self.pause()
            self._learn_observed_items(batch.observations)
            self.observation_count += len(batch.observations)
            self.last_data_at = now
            self.last_observation_timestamp = batch.observations[-1].get("timestamp")
        for series_key, series in batch.samples.items():
            self.series.extend(series_key, series.times, series.values)
        self.pause()

        events += self.alarm_engine.process(batch.observations, now)
        self.pause()
        update = self._alarm_update(events, batch.catching_up, devices_changed=bool(batch.devices),
                                    observation_count=len(batch.observations))
        return dataclasses.replace(update, touched=frozenset(touched))

    def tick(self, now: float | None = None) -> ModelUpdate:
        """Wall-clock alarm work (machine offline, shelve expiry) for the views' timer."""
        return self._alarm_update(self.alarm_engine.tick(time.time() if now is None else now), False)

    def apply_ack_records(self, records, now: float | None = None) -> ModelUpdate:
        """Shared acknowledgement/shelve records read from `monitor.alarm-acks`."""
        return self._alarm_update(self.alarm_engine.apply_ack_records(records, now), False)

    def _alarm_update(self, events: list[AlarmEvent], catching_up: bool, devices_changed: bool = False,
                      observation_count: int = 0) -> ModelUpdate:
        # Stored before anything is shown: a crash must not lose what the operator saw.
        self.journal.apply(events)
        notifications = [event.alarm for event in events if event.notify]
        notices = self.alarm_engine.drain_notices()
        if catching_up:
            # History from before the app started: what already cleared is news to nobody.
            active = {alarm.alarm_id for alarm in self.alarm_engine.active_alarms()}
            notifications = [alarm for alarm in notifications if alarm.alarm_id in active]
            notices = [n for n in notices if n.kind == "alarm" and set(n.alarm_ids) <= active]
        return ModelUpdate(
            alarm_events=tuple(events),
            notifications=tuple(notifications),
            notices=tuple(notices),
            devices_changed=devices_changed,
            observation_count=observation_count,
        )

    def _learn_device_items(self, device_uuid: str, device: Mapping[str, Any] | None) -> None:
        if device is None:
            self._items.pop(device_uuid, None)
        else:
            # The device model's order, whatever order observations arrived in: the default
            # pens (the first spindle) must be the same on every run.
            observed = self._items.get(device_uuid, {})
            items = {}
            for item in device.get("data_items") or ():
                if isinstance(item, Mapping) and item.get("id"):
                    items[str(item["id"])] = {field: item.get(field) for field in _ITEM_FIELDS}
            for item_id, descriptor in observed.items():
                items.setdefault(item_id, descriptor)
            self._items[device_uuid] = items
        self.items_version += 1

    def _learn_observed_items(self, observations: tuple[Mapping[str, Any], ...]) -> None:
        known = self._items
        for observation in observations:
            # Nearly always known: two lookups, no string conversion (validated records hold strings).
            items = known.get(observation.get("device_uuid"))
            if items is not None and observation.get("data_item_id") in items:
                continue
            items = known.setdefault(str(observation.get("device_uuid")), {})
            item_id = str(observation.get("data_item_id"))
            if item_id not in items:
                items[item_id] = {
                    "id": item_id,
                    "name": observation.get("name"),
                    "category": observation.get("category"),
                    "type": observation.get("type"),
                    "sub_type": observation.get("sub_type"),
                    "units": observation.get("units"),
                    "component": observation.get("component"),
                    "component_id": observation.get("component_id"),
                }
                self.items_version += 1

    def data_item(self, device_uuid: str, data_item_id: str) -> Mapping[str, Any] | None:
        return self._items.get(device_uuid, {}).get(data_item_id)

    def sample_items(self, device_uuid: str) -> list[Mapping[str, Any]]:
        """The device's SAMPLE data items, in the order of its device model."""
        return [item for item in self._items.get(device_uuid, {}).values() if item.get("category") == "SAMPLE"]

    def has_data(self, series_key: SeriesKey) -> bool:
        return series_key in self.series

    def default_series(self) -> SeriesKey | None:
        """The first machine (by name) with spindle-speed data, and that data item. Until any
        machine has spindle-speed data, the first numeric series at all, so the plot is not
        empty while data flows (it moves to spindle speed as soon as there is some)."""
        fallback = None
        for view in self.fleet.views():
            for item in self.sample_items(view.device_uuid):
                series_key = (view.device_uuid, str(item["id"]))
                if series_key not in self.series:
                    continue
                if item.get("type") == DEFAULT_PLOT_TYPE:
                    return series_key
                fallback = fallback or series_key
        return fallback
