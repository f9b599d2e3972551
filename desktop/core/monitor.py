"""The core thread: everything between a decoded batch and what the GUI draws, off the GUI thread.

Data path (see also `desktop.ui.workers`):

    feed process (Kafka consume, decode, validate: `desktop.core.feed`, run by
        `desktop.core.feed_process`) -> the window's feed thread
        -> `CoreRunner.offer_batch` -> core thread: `MonitorCore.apply`
           (fleet and machine state, ring buffers, alarm engine, alarm journal in SQLite)
        -> one immutable `ViewUpdate` -> the GUI (one queued signal), which redraws on a timer.

`MonitorCore` owns the `MonitorModel` and reduces each batch to what changed for the views:
the `MachineView` of every machine whose tile content changed (and only those), new alarm
events and notices (already in the journal: nothing shown can be lost by a kill), and sample
arrays of the series a view subscribed to (a detail view subscribes its machine's items, and
gets a snapshot of the buffer first, then only new points). Once a second `tick` re-derives
every machine (a machine that falls silent turns offline without any record arriving) and
runs the engine's wall-clock work.

`CoreRunner` is that thread. It takes batches from the feed (the feed's `BatchGate` merges
while the core is busy), commands from the GUI (`submit(fn)`: `fn(core)` runs on the core
thread between batches - acknowledge, shelve, unshelve - and the events it records come back
with the next update; its return value resolves the `Future`), and hands updates out through
an `UpdateGate`: at most one in flight to the GUI, the rest merged, so a slow GUI gets fewer,
larger updates instead of a queue. Nothing here imports Qt.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from desktop.core.alarms import Alarm, AlarmEvent, AlarmState, Notice, RuleSet
from desktop.core.alarms.table import UNACKNOWLEDGED
from desktop.core.batch import Batch, SampleSeries, SeriesKey
from desktop.core.machines import MachineStatus, MachineView
from desktop.core.model import ModelUpdate, MonitorModel

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
# Machine views are derived at most this often (a tile cannot show more; the GUI draws at
# 15 Hz), so a plant's stream costs a view per machine per interval, not per batch.
VIEW_INTERVAL = 0.1
RATE_WINDOW_SECONDS = 5.0
# No batch for this long: the feed has read everything there was, so it is not behind.
CAUGHT_UP_AFTER = 2.0
# Recent events and conditions kept per machine for the detail view's log.
LOG_LIMIT = 500
# Points of one series carried by one (merged) update at most; a view's own buffer holds more.
MAX_UPDATE_POINTS = 200_000

_EMPTY: Mapping[Any, Any] = MappingProxyType({})

# Worst first, for a machine's alarm badge and the tray.
ALARM_STATE_ORDER = (AlarmState.UNACKNOWLEDGED_ACTIVE.value, AlarmState.ACKNOWLEDGED_ACTIVE.value,
                     AlarmState.UNACKNOWLEDGED_RETURNED.value, AlarmState.SHELVED.value,
                     AlarmState.OUT_OF_SERVICE.value)
_ALARM_RANK = {state: rank for rank, state in enumerate(ALARM_STATE_ORDER)}
# A tile is marked with the highest priority among the alarms active or waiting for acknowledgement.
PRIORITY_ORDER = ("critical", "high", "medium", "low")
_PRIORITY_RANK = {priority: rank for rank, priority in enumerate(PRIORITY_ORDER)}
MARKING_STATES = frozenset(ALARM_STATE_ORDER[:3])


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float64)
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class DeviceDetail:
    """What a detail view gets for its machine: new state bands and log entries, or all of
    them (`replace`) the first time."""

    timeline: tuple[tuple[float, MachineStatus], ...] = ()
    log: tuple[Mapping[str, Any], ...] = ()
    replace: bool = False


@dataclass(frozen=True)
class ViewUpdate:
    """One hand-over to the GUI: already reduced, immutable, cheap to apply."""

    # Machines whose tile content changed, by device uuid; `removed` left the fleet.
    machines: Mapping[str, MachineView] = field(default_factory=lambda: _EMPTY)
    removed: tuple[str, ...] = ()
    # Device uuid -> its SAMPLE data item descriptors (sent when they changed).
    items: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=lambda: _EMPTY)
    # New points of subscribed series; for keys in `replaced` the arrays replace what the view holds.
    samples: Mapping[SeriesKey, SampleSeries] = field(default_factory=lambda: _EMPTY)
    replaced: frozenset[SeriesKey] = frozenset()
    details: Mapping[str, DeviceDetail] = field(default_factory=lambda: _EMPTY)
    alarm_events: tuple[AlarmEvent, ...] = ()
    notifications: tuple[Alarm, ...] = ()
    notices: tuple[Notice, ...] = ()
    # Observation records received (exact), and the rate measured on the core thread.
    observation_records: int = 0
    observation_rate: float = 0.0
    last_data_at: float | None = None
    last_observation_timestamp: str | None = None
    errors: tuple[str, ...] = ()
    skipped_count: int = 0  # in all, since start (or the last reset)
    skipped: tuple[str, ...] = ()  # the latest few
    catching_up: bool = False
    # How far the app is behind the stream: for each observation partition read, how long ago
    # its newest record handed over was published (now minus its Kafka timestamp), and of
    # those the longest. None: not known from this update.
    behind_seconds: float | None = None
    # The model started over (settings changed, history read again): drop what you hold first.
    reset: bool = False

    @property
    def has_observations(self) -> bool:
        return self.observation_records > 0


def _concat(first: SampleSeries, second: SampleSeries) -> SampleSeries:
    times = np.concatenate([first.times, second.times])[-MAX_UPDATE_POINTS:]
    values = np.concatenate([first.values, second.values])[-MAX_UPDATE_POINTS:]
    return SampleSeries(_frozen(times), _frozen(values))


def merge_updates(first: ViewUpdate | None, second: ViewUpdate) -> ViewUpdate:
    """One update equivalent (for the views) to applying `first`, then `second`."""
    if first is None:
        return second
    if second.reset:
        # What came before the reset is void for the views; its alarms still count.
        return dataclasses.replace(
            second,
            alarm_events=first.alarm_events + second.alarm_events,
            notifications=first.notifications + second.notifications,
            notices=first.notices + second.notices,
            observation_records=first.observation_records + second.observation_records,
        )
    machines = dict(first.machines)
    for uuid in second.removed:
        machines.pop(uuid, None)
    machines.update(second.machines)
    removed = tuple(uuid for uuid in dict.fromkeys(first.removed + second.removed) if uuid not in second.machines)
    samples = dict(first.samples)
    replaced = set(first.replaced)
    for key, series in second.samples.items():
        if key in second.replaced or key not in samples:
            samples[key] = series
        else:
            samples[key] = _concat(samples[key], series)
    replaced |= second.replaced
    details = dict(first.details)
    for uuid, detail in second.details.items():
        earlier = details.get(uuid)
        if earlier is None or detail.replace:
            details[uuid] = detail
        else:
            details[uuid] = DeviceDetail(earlier.timeline + detail.timeline, (earlier.log + detail.log)[-LOG_LIMIT:],
                                         earlier.replace)
    return ViewUpdate(
        machines=MappingProxyType(machines),
        removed=removed,
        items=MappingProxyType({**first.items, **second.items}),
        samples=MappingProxyType(samples),
        replaced=frozenset(replaced),
        details=MappingProxyType(details),
        alarm_events=first.alarm_events + second.alarm_events,
        notifications=first.notifications + second.notifications,
        notices=first.notices + second.notices,
        observation_records=first.observation_records + second.observation_records,
        observation_rate=second.observation_rate,
        last_data_at=second.last_data_at if second.last_data_at is not None else first.last_data_at,
        last_observation_timestamp=second.last_observation_timestamp or first.last_observation_timestamp,
        errors=(first.errors + second.errors)[-50:],
        skipped_count=second.skipped_count,
        skipped=second.skipped or first.skipped,
        catching_up=first.catching_up or second.catching_up,
        behind_seconds=second.behind_seconds if second.behind_seconds is not None else first.behind_seconds,
        reset=first.reset,
    )


class RateWindow:
    """Observations per second over the last few seconds of wall-clock time (exact counts;
    a young window is divided by its true age, so the first seconds are not understated)."""

    def __init__(self, window_seconds: float = RATE_WINDOW_SECONDS) -> None:
        self.window_seconds = window_seconds
        self._counts: deque[tuple[float, int]] = deque()
        self._started: float | None = None

    def add(self, count: int, now: float) -> None:
        if self._started is None:
            self._started = now
        if count:
            self._counts.append((now, count))

    def rate(self, now: float) -> float:
        while self._counts and self._counts[0][0] < now - self.window_seconds:
            self._counts.popleft()
        if self._started is None:
            return 0.0
        span = min(self.window_seconds, max(now - self._started, 1.0))
        return sum(count for _, count in self._counts) / span


class MonitorCore:
    """The model plus what the views have been told; every method runs on the core thread."""

    def __init__(self, model: MonitorModel | None = None, clock: Callable[[], float] = time.time) -> None:
        self.model = model or MonitorModel()
        self._clock = clock
        self._sent: dict[str, MachineView] = {}
        self._alarm_summary: dict[str, tuple[str, int, str]] = {}
        self._series_subscribers: dict[SeriesKey, int] = {}
        self._device_subscribers: dict[str, int] = {}
        self._fresh_series: set[SeriesKey] = set()
        self._fresh_devices: set[str] = set()
        self._logs: dict[str, deque[Mapping[str, Any]]] = {}
        self._new_log: dict[str, list[Mapping[str, Any]]] = {}
        self._new_bands: dict[str, list[tuple[float, MachineStatus]]] = {}
        self._items_version = -1
        self._pending_events: list[AlarmEvent] = []
        self._rate = RateWindow()
        self._reset_pending = False
        self._skipped_sent = -1
        self._deferred: set[str] = set()
        self._views_at = 0.0
        # Device uuid -> the observation partitions its records came from (history reads only those).
        self._partitions: dict[str, set[int]] = {}
        self._behind: float | None = None
        self._last_batch_at: float | None = None

    # -- subscriptions (from the GUI, through commands) ------------------------------------

    def subscribe_device(self, device_uuid: str) -> None:
        """Send this machine's sample series, state bands and log from now on (a snapshot first)."""
        self._device_subscribers[device_uuid] = self._device_subscribers.get(device_uuid, 0) + 1
        self._fresh_devices.add(device_uuid)

    def unsubscribe_device(self, device_uuid: str) -> None:
        count = self._device_subscribers.get(device_uuid, 0) - 1
        if count <= 0:
            self._device_subscribers.pop(device_uuid, None)
        else:
            self._device_subscribers[device_uuid] = count

    def subscribe_series(self, key: SeriesKey) -> None:
        self._series_subscribers[key] = self._series_subscribers.get(key, 0) + 1
        self._fresh_series.add(key)

    def unsubscribe_series(self, key: SeriesKey) -> None:
        count = self._series_subscribers.get(key, 0) - 1
        if count <= 0:
            self._series_subscribers.pop(key, None)
        else:
            self._series_subscribers[key] = count

    def _subscribed(self, key: SeriesKey) -> bool:
        return key in self._series_subscribers or key[0] in self._device_subscribers

    def partitions_of(self, device_uuid: str) -> frozenset[int]:
        return frozenset(self._partitions.get(device_uuid, ()))

    def device_model(self, device_uuid: str) -> Mapping[str, Any]:
        return self.model.fleet.device(device_uuid)

    # -- alarm commands --------------------------------------------------------------------

    def record_events(self, events: Iterable[AlarmEvent]) -> None:
        """Alarm events produced by a command; journaled and sent with the next update."""
        self._pending_events.extend(events)

    def acknowledge(self, alarm_id: str, by: str, note: str | None = None) -> dict[str, Any]:
        record, events = self.model.alarm_engine.acknowledge(alarm_id, by, note, self._clock())
        self.record_events(events)
        return record

    def use_rules(self, rules: RuleSet) -> list[Alarm]:
        """New alarm rules (see `MonitorModel.use_rules`); the alarms held afterwards, for the
        table to start from. The caller reads history again (a feed restart)."""
        self.record_events(self.model.use_rules(rules, self._clock()))
        return self.model.alarm_engine.alarms()

    def shelve(self, alarm_id: str, by: str, seconds: float, reason: str) -> dict[str, Any]:
        record, events = self.model.alarm_engine.shelve(alarm_id, by, seconds, reason, self._clock())
        self.record_events(events)
        return record

    def unshelve(self, alarm_id: str, by: str) -> dict[str, Any]:
        record, events = self.model.alarm_engine.unshelve(alarm_id, by, self._clock())
        self.record_events(events)
        return record

    def reset(self) -> None:
        """Start over (history is read again): the journal and what was notified stay."""
        self.model.reset()
        self._sent.clear()
        self._alarm_summary.clear()
        self._logs.clear()
        self._new_log.clear()
        self._new_bands.clear()
        self._items_version = -1
        self._fresh_series |= set(self._series_subscribers)
        self._fresh_devices |= set(self._device_subscribers)
        self._reset_pending = True

    # -- batches and ticks -----------------------------------------------------------------

    def apply(self, batch: Batch, now: float | None = None) -> ViewUpdate:
        now = self._clock() if now is None else now
        update = self.model.apply(batch, now)
        self.model.pause()
        self._rate.add(batch.observation_records, now)
        if batch.partition_newest:
            # The partition read latest sets it: its newest record is the oldest of the newest.
            self._behind = max(0.0, now - min(batch.partition_newest.values()))
            self._last_batch_at = now
        for uuid, numbers in batch.partitions.items():
            self._partitions.setdefault(uuid, set()).update(numbers)
        for observation in batch.observations:
            if observation.get("category") != "SAMPLE":
                uuid = observation.get("device_uuid")
                entries = self._logs.get(uuid)
                if entries is None:
                    entries = self._logs[uuid] = deque(maxlen=LOG_LIMIT)
                entries.append(observation)
                if uuid in self._device_subscribers:
                    self._new_log.setdefault(uuid, []).append(observation)
        samples = {key: series for key, series in batch.samples.items() if self._subscribed(key)}
        touched = set(update.touched)
        if not (batch.devices or batch.agent_statuses or update.alarm_events) and now - self._views_at < VIEW_INTERVAL:
            # Derived with the next batch or flush, at most VIEW_INTERVAL later.
            self._deferred |= touched
            touched = set()
        else:
            touched |= self._take_deferred(now)
        return self._reduce(update, now, touched, samples, batch)

    def _take_deferred(self, now: float) -> set[str]:
        deferred, self._deferred = self._deferred, set()
        self._views_at = now
        return deferred

    @property
    def views_pending(self) -> bool:
        return bool(self._deferred)

    def tick(self, now: float | None = None) -> ViewUpdate:
        """Once a second: wall-clock alarm work, and every machine re-derived (freshness)."""
        now = self._clock() if now is None else now
        update = self.model.tick(now)
        self._rate.add(0, now)
        if self._last_batch_at is not None and now - self._last_batch_at >= CAUGHT_UP_AFTER and self._behind:
            self._behind = 0.0
        self._take_deferred(now)
        return self._reduce(update, now, frozenset(self.model.fleet.uuids()), {}, None)

    def flush(self, now: float | None = None) -> ViewUpdate:
        """An update for command results (and new subscriptions) without a batch."""
        now = self._clock() if now is None else now
        return self._reduce(ModelUpdate(), now, self._take_deferred(now), {}, None)

    def _reduce(self, update: ModelUpdate, now: float, touched: frozenset[str] | set[str],
                samples: dict[SeriesKey, SampleSeries], batch: Batch | None) -> ViewUpdate:
        model = self.model
        events = list(update.alarm_events)
        notifications = list(update.notifications)
        notices = list(update.notices)
        if self._pending_events:
            pending, self._pending_events = self._pending_events, []
            # Stored before it is shown, as for the batch's own events.
            model.journal.apply(pending)
            events += pending
        touched = set(touched)
        if events:
            touched |= self._refresh_alarm_summary({event.alarm.device_uuid for event in events})
        # A machine seen for the first time since the start or a reset may already have alarms
        # that raised no event now: restored from the journal, or kept through the reset.
        unknown = {uuid for uuid in touched if uuid not in self._alarm_summary}
        if unknown:
            self._refresh_alarm_summary(unknown)
        machines: dict[str, MachineView] = {}
        fleet = model.fleet
        for uuid in touched:
            tracker = fleet.tracker(uuid)
            if tracker is None:
                continue
            alarm_state, unacknowledged, priority = self._alarm_summary.get(uuid, ("", 0, ""))
            view = fleet.view(uuid, now, alarm_state, unacknowledged)
            if view is None:
                continue
            if priority:
                view = dataclasses.replace(view, alarm_priority=priority)
            at = tracker.last_seen if tracker.last_seen is not None and view.status != MachineStatus.OFFLINE else now
            if tracker.note_status(view.status, min(at, now)):
                view = dataclasses.replace(view, state_since=tracker.state_since)
                if uuid in self._device_subscribers:
                    self._new_bands.setdefault(uuid, []).append((tracker.state_since, view.status))
            if self._sent.get(uuid) != view:
                self._sent[uuid] = view
                machines[uuid] = view
        removed = tuple(uuid for uuid in list(self._sent) if uuid not in fleet)
        for uuid in removed:
            del self._sent[uuid]

        items: dict[str, tuple[Mapping[str, Any], ...]] = {}
        if model.items_version != self._items_version:
            self._items_version = model.items_version
            items = {uuid: tuple(model.sample_items(uuid)) for uuid in fleet.uuids()}

        replaced: set[SeriesKey] = set()
        for uuid in self._fresh_devices:
            for item in model.sample_items(uuid):
                self._fresh_series.add((uuid, str(item["id"])))
        for key in self._fresh_series:
            buffer = model.series.get(key)
            if buffer is not None:
                times, values = buffer.snapshot()
                samples[key] = SampleSeries(_frozen(times), _frozen(values))
            else:
                samples[key] = SampleSeries(_frozen(np.empty(0)), _frozen(np.empty(0)))
            replaced.add(key)
        self._fresh_series.clear()
        details: dict[str, DeviceDetail] = {}
        for uuid in self._fresh_devices:
            tracker = fleet.tracker(uuid)
            details[uuid] = DeviceDetail(tuple(tracker.timeline) if tracker else (), tuple(self._logs.get(uuid, ())), True)
            self._new_bands.pop(uuid, None)
            self._new_log.pop(uuid, None)
        self._fresh_devices.clear()
        for uuid in set(self._new_bands) | set(self._new_log):
            details[uuid] = DeviceDetail(tuple(self._new_bands.pop(uuid, ())), tuple(self._new_log.pop(uuid, ())))

        skipped: tuple[str, ...] = ()
        if model.skipped_count != self._skipped_sent:
            self._skipped_sent = model.skipped_count
            skipped = tuple(model.skipped)
        reset, self._reset_pending = self._reset_pending, False
        return ViewUpdate(
            machines=MappingProxyType(machines),
            removed=removed,
            items=MappingProxyType(items),
            samples=MappingProxyType(samples),
            replaced=frozenset(replaced),
            details=MappingProxyType(details),
            alarm_events=tuple(events),
            notifications=tuple(notifications),
            notices=tuple(notices),
            observation_records=batch.observation_records if batch is not None else 0,
            observation_rate=self._rate.rate(now),
            last_data_at=model.last_data_at,
            last_observation_timestamp=model.last_observation_timestamp,
            errors=batch.errors if batch is not None else (),
            skipped_count=model.skipped_count,
            skipped=skipped,
            catching_up=batch.catching_up if batch is not None else False,
            behind_seconds=self._behind,
            reset=reset,
        )

    def _refresh_alarm_summary(self, devices: set[str]) -> set[str]:
        """Each machine's worst alarm state from the engine; the machines whose summary changed."""
        engine = self.model.alarm_engine
        changed = set()
        for uuid in devices:
            best, unacknowledged, top = len(ALARM_STATE_ORDER), 0, len(PRIORITY_ORDER)
            for alarm_state, priority in engine.device_alarm_states(uuid):
                rank = _ALARM_RANK.get(alarm_state.value)
                if rank is None:
                    continue
                best = min(best, rank)
                if alarm_state in UNACKNOWLEDGED:
                    unacknowledged += 1
                if alarm_state.value in MARKING_STATES:
                    top = min(top, _PRIORITY_RANK.get(priority, len(PRIORITY_ORDER)))
            value = (ALARM_STATE_ORDER[best] if best < len(ALARM_STATE_ORDER) else "", unacknowledged,
                     PRIORITY_ORDER[top] if top < len(PRIORITY_ORDER) else "")
            previous = self._alarm_summary.get(uuid)
            if previous != value:
                self._alarm_summary[uuid] = value  # kept also when empty: known from now on
                if (previous or ("", 0, "")) != value:
                    changed.add(uuid)
        return changed


class UpdateGate:
    """At most one update in flight to the GUI; whatever is produced meanwhile is merged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = False
        self._pending: ViewUpdate | None = None

    def offer(self, update: ViewUpdate) -> ViewUpdate | None:
        with self._lock:
            if self._in_flight:
                self._pending = merge_updates(self._pending, update)
                return None
            if self._pending is not None:
                update = merge_updates(self._pending, update)
                self._pending = None
            self._in_flight = True
            return update

    def take_pending(self) -> ViewUpdate | None:
        with self._lock:
            if self._in_flight or self._pending is None:
                return None
            update, self._pending = self._pending, None
            self._in_flight = True
            return update

    def release(self) -> None:
        with self._lock:
            self._in_flight = False


_STOP = object()


def _is_empty(update: ViewUpdate) -> bool:
    return not (update.machines or update.removed or update.items or update.samples or update.details
                or update.alarm_events or update.notices or update.observation_records or update.errors
                or update.skipped or update.reset)


class CoreRunner:
    """The core thread: applies batches, runs commands and ticks, hands out updates."""

    def __init__(self, core: MonitorCore, on_update: Callable[[ViewUpdate], None], tick_seconds: float = TICK_SECONDS,
                 name: str = "monitor-core") -> None:
        self.core = core
        self._on_update = on_update
        self._tick_seconds = tick_seconds
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.gate = UpdateGate()
        self._thread: threading.Thread | None = None
        self.failure: str | None = None
        self._last_rate_sent = 0.0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        thread = self._thread
        if thread is None:
            return True
        self._queue.put(_STOP)
        thread.join(timeout)
        return not thread.is_alive()

    # -- inputs, from any thread -------------------------------------------------------------

    def offer_batch(self, batch: Batch, release: Callable[[], None] | None = None) -> None:
        """A batch from the feed; `release` is called once it is applied (the feed's gate)."""
        self._queue.put((batch, release))

    def submit(self, command: Callable[[MonitorCore], Any]) -> Future:
        """Run `command(core)` on the core thread between batches; its alarm events come back
        with the next update, its result (or exception) through the returned Future."""
        future: Future = Future()
        self._queue.put((command, future))
        return future

    def update_consumed(self) -> None:
        """The GUI has applied the last update: the next one (or the merged backlog) may come."""
        self.gate.release()
        # Wake the thread so a pending update goes out now, not at the next tick.
        self._queue.put(None)

    # -- the thread ----------------------------------------------------------------------------

    def _emit(self, update: ViewUpdate) -> None:
        ready = self.gate.offer(update)
        if ready is not None:
            self._on_update(ready)

    def _run(self) -> None:
        core = self.core
        next_tick = time.monotonic() + self._tick_seconds
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            if core.views_pending:
                timeout = min(timeout, VIEW_INTERVAL)
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if isinstance(item, tuple):
                    first, second = item
                    if isinstance(first, Batch):
                        try:
                            update = core.apply(first)
                        finally:
                            if second is not None:
                                second()
                        if not _is_empty(update):
                            self._emit(update)
                    else:
                        future: Future = second
                        if future.set_running_or_notify_cancel():
                            try:
                                future.set_result(first(core))
                            except BaseException as exc:  # noqa: BLE001 - the caller gets it
                                future.set_exception(exc)
                        self._emit(core.flush())
                if item is None and core.views_pending:
                    self._emit(core.flush())
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self._tick_seconds
                    update = core.tick()
                    # The rate moves every second even when nothing else does.
                    self._emit(update)
                pending = self.gate.take_pending()
                if pending is not None:
                    self._on_update(pending)
            except Exception as exc:  # noqa: BLE001 - the thread must report, not die silently
                log.exception("monitor core failed on one batch")
                self.failure = f"{type(exc).__name__}: {exc}"
