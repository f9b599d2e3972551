"""Kafka records to immutable batches: the one unit that crosses from the feed to the core and GUI.

`build_batch` decodes what one `consume()` call returned (device models, agent status,
observations) with `producer.wire`, checks every record against the schema there, and turns
every numeric SAMPLE into per-data-item numpy arrays of (epoch seconds, value), so the GUI only
appends arrays to ring buffers. A record that cannot be decoded or does not match the schema is
skipped: it never reaches the model (no tile, no state, no alarm comes from it), it is counted,
and it is described - topic, partition, offset and what is wrong - in `Batch.skipped`; the rest
of the batch is kept. Nothing a record holds can make `build_batch` raise. `merge` combines
batches while the GUI is behind, bounded so a stalled GUI cannot make the backlog grow without
limit, and `BatchGate` is the hand-off that decides between emitting a batch and merging it
into the pending one. `pack_batch` / `unpack_batch` carry a batch from the feed process to the
window's.
"""
from __future__ import annotations

import marshal
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np

from producer import wire

try:  # orjson parses the same JSON several times faster; it is stricter, never more lenient
    import orjson as _orjson
except ImportError:  # pragma: no cover - a declared dependency
    _orjson = None


def decode_value(payload: bytes | None) -> tuple[Any, str | None]:
    """`wire.decode_record`, fast: orjson first, and whatever orjson refuses (invalid UTF-8,
    NaN, lone surrogates, integers beyond 64 bits, deep nesting...) goes to `decode_record`,
    so every refusal is worded - and every value accepted - exactly as there."""
    if payload is not None and _orjson is not None:
        try:
            return _orjson.loads(payload), None
        except _orjson.JSONDecodeError:
            pass
    return wire.decode_record(payload)

SeriesKey = tuple[str, str]  # (device uuid, data item id)

# Bounds for a merged backlog: the plot never needs more points per item than a ring buffer
# holds, and observations beyond this count are compacted to what the model needs.
MAX_MERGED_POINTS = 20_000
MAX_MERGED_OBSERVATIONS = 20_000
MAX_ERRORS = 50
# Skipped records described in a (merged) batch; the count is always exact.
MAX_SKIPPED = 50


class Record(NamedTuple):
    """One Kafka record as the feed hands it over (topic is the full, prefixed name)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # The record's Kafka timestamp (ms since the epoch), when known.
    timestamp_ms: int | None = None


class SkippedRecord(NamedTuple):
    """A record that was not used, where it is and why."""

    topic: str
    partition: int
    offset: int
    problem: str

    def describe(self) -> str:
        return f"{self.topic} partition {self.partition} offset {self.offset}: {self.problem}"


class SampleSeries(NamedTuple):
    times: np.ndarray  # epoch seconds, float64, read-only
    values: np.ndarray  # float64, read-only


@dataclass(frozen=True)
class Batch:
    """What one consume call (or a merge of several) delivered, ready for the model."""

    # (device uuid, device record or None for a tombstone), in arrival order.
    devices: tuple[tuple[str, Mapping[str, Any] | None], ...] = ()
    # (agent URL, status record or None), in arrival order.
    agent_statuses: tuple[tuple[str, Mapping[str, Any] | None], ...] = ()
    observations: tuple[Mapping[str, Any], ...] = ()
    samples: Mapping[SeriesKey, SampleSeries] = field(default_factory=lambda: MappingProxyType({}))
    errors: tuple[str, ...] = ()
    record_count: int = 0
    # Records that were skipped (undecodable, or not matching the schema): the latest few, and
    # how many in all.
    skipped: tuple[SkippedRecord, ...] = ()
    skipped_count: int = 0
    # True when some records were written to Kafka before the feed started (history read at
    # start-up, not live data): their alarms are listed, but only still-active ones pop up.
    catching_up: bool = False
    # Device uuid -> when its newest record in the batch was published (Kafka timestamp,
    # epoch seconds): how fresh each machine's data is.
    seen: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # Valid observation records (exact; `observations` of a merged batch are compacted).
    observation_records: int = 0
    # Device uuid -> the observation partitions its records came from (where its history is).
    partitions: Mapping[str, frozenset[int]] = field(default_factory=lambda: MappingProxyType({}))
    # Observation partition -> when its newest record in the batch was published (epoch s).
    # The oldest of these is how far behind the stream the reading is: a partition read late
    # delivers old records, however fresh the others are.
    partition_newest: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def is_empty(self) -> bool:
        return not (self.devices or self.agent_statuses or self.observations or self.errors or self.skipped_count)


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an ISO-8601 UTC time such as `2016-11-16T20:29:56.063Z`.

    Agents send 3, 6 or 7 fractional digits; Python keeps microseconds, which is all a plot
    needs. A time without a zone is taken as UTC (some NIST recordings omit the `Z`).
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc).timestamp()
    return moment.timestamp()


def _frozen_array(values: list[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    array.flags.writeable = False
    return array


def _frozen_series(times: np.ndarray, values: np.ndarray) -> SampleSeries:
    times = np.ascontiguousarray(times, dtype=np.float64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    times.flags.writeable = False
    values.flags.writeable = False
    return SampleSeries(times, values)


def _where(record: Record) -> str:
    return f"{record.topic} partition {record.partition} offset {record.offset}"


def _key_text(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key is not None else None


# The plain shape: exactly these fields (a Condition has five more). An observation with any
# other field (text, attributes, sample_count...) takes the full check.
_PLAIN_FIELDS = 15
_CONDITION_FIELDS = 20


def _plainly_valid(value: Any, valid_stamps: set[str]) -> bool:
    """True when `value` is certainly an observation `wire.observation_problem` accepts, in
    the shape the producer writes (checked inline, without a call per field: this runs for
    every record of a plant's stream). False only means "look closer": the full check then
    decides, and words the problem. `valid_stamps` holds timestamps already matched.

    Every field of the plain shape is read below (a missing one is a KeyError), so a field
    count equal to the shape's means no other field is there."""
    if value.__class__ is not dict:
        return False
    try:
        if value["agent"].__class__ is not str or value["type"].__class__ is not str:
            return False
        uuid = value["device_uuid"]
        item = value["data_item_id"]
        if uuid.__class__ is not str or not uuid or item.__class__ is not str or not item:
            return False
        text = value["device_name"]
        if text is not None and text.__class__ is not str:
            return False
        text = value["component"]
        if text is not None and text.__class__ is not str:
            return False
        text = value["component_id"]
        if text is not None and text.__class__ is not str:
            return False
        text = value["name"]
        if text is not None and text.__class__ is not str:
            return False
        text = value["sub_type"]
        if text is not None and text.__class__ is not str:
            return False
        text = value["units"]
        if text is not None and text.__class__ is not str:
            return False
        sequence = value["sequence"]
        if value["instance_id"].__class__ is not int or sequence.__class__ is not int or sequence < 0:
            return False
        stamp = value["timestamp"]
        if stamp.__class__ is not str:
            return False
        if stamp not in valid_stamps:
            if wire._TIMESTAMP_FORM.fullmatch(stamp) is None:
                return False
            valid_stamps.add(stamp)
        category = value["category"]
        number = value["value"]
        if category == "SAMPLE":
            kind = number.__class__
            return (kind is float and number - number == 0.0 or kind is int or kind is str) and len(value) == _PLAIN_FIELDS
        if category == "EVENT":
            return number.__class__ is str and len(value) == _PLAIN_FIELDS
        if category != "CONDITION" or len(value) != _CONDITION_FIELDS:
            return False
        if number is not None and number.__class__ is not str:
            return False
        if value["level"] not in wire.CONDITION_LEVELS:
            return False
        for name in ("native_code", "native_severity", "qualifier", "condition_id"):
            text = value[name]
            if text is not None and text.__class__ is not str:
                return False
        return True
    except (KeyError, TypeError):
        return False


# Records decoded between two calls of build_batch's `pause` (see `desktop.core.gui_priority`).
PAUSE_EVERY = 1024


def build_batch(records: Iterable[Record], topic_prefix: str = "", pause: Callable[[], None] | None = None) -> Batch:
    """Decode and check records into one batch; bad records are skipped, never raised.
    `pause` is called every `PAUSE_EVERY` records (the GUI thread may go first)."""
    devices_topic = wire.topic_name(wire.DEVICES, topic_prefix)
    status_topic = wire.topic_name(wire.AGENT_STATUS, topic_prefix)
    observations_topic = wire.topic_name(wire.OBSERVATIONS, topic_prefix)

    devices: list[tuple[str, Mapping[str, Any] | None]] = []
    statuses: list[tuple[str, Mapping[str, Any] | None]] = []
    observations: list[Mapping[str, Any]] = []
    sample_times: dict[SeriesKey, list[float]] = {}
    sample_values: dict[SeriesKey, list[float]] = {}
    errors: list[str] = []
    skipped: list[SkippedRecord] = []
    skipped_count = 0
    count = 0
    seen_ms: dict[str, int] = {}
    partition_ms: dict[int, int] = {}
    device_partitions: set[tuple[str, int]] = set()
    # Within one batch most observations share a few timestamps (an agent stamps a scan's
    # items alike): each is matched and parsed once.
    valid_stamps: set[str] = set()
    epochs: dict[str, float] = {}
    loads = _orjson.loads if _orjson is not None else None
    append = observations.append

    for record in records:
        count += 1
        if pause is not None and not count % PAUSE_EVERY:
            pause()
        topic = record.topic
        if topic == observations_topic:
            # The common case inline: orjson decodes, the plain shape is checked in one call.
            value = None
            if loads is not None and record.value is not None:
                try:
                    value = loads(record.value)
                except _orjson.JSONDecodeError:
                    value = None
            if value is None or not _plainly_valid(value, valid_stamps):
                value = None
                try:
                    problem = _take(record, observations_topic, devices_topic, devices, statuses, observations,
                                    sample_times, sample_values, errors)
                except Exception as exc:  # noqa: BLE001 - a record must never stop the feed; it is reported
                    problem = f"could not be read ({type(exc).__name__})"
                if problem is not None:
                    skipped_count += 1
                    if len(skipped) < MAX_SKIPPED:
                        skipped.append(SkippedRecord(topic, record.partition, record.offset, problem))
                    continue
                value = observations[-1]
            else:
                if value["category"] == "SAMPLE":
                    number = value["value"]
                    if number.__class__ is float or number.__class__ is int:
                        stamp = value["timestamp"]
                        moment = epochs.get(stamp)
                        if moment is None:
                            try:
                                moment = epochs[stamp] = parse_timestamp(stamp)
                            except (ValueError, OverflowError):
                                errors.append(f"bad timestamp {stamp[:40]!r} at {_where(record)}")
                        if moment is not None:
                            series_key = (value["device_uuid"], value["data_item_id"])
                            times = sample_times.get(series_key)
                            if times is None:
                                sample_times[series_key] = [moment]
                                sample_values[series_key] = [float(number)]
                            else:
                                times.append(moment)
                                sample_values[series_key].append(float(number))
                append(value)
            stamp_ms = record.timestamp_ms
            if stamp_ms:
                device = value["device_uuid"]
                device_partitions.add((device, record.partition))
                if stamp_ms > seen_ms.get(device, 0):
                    seen_ms[device] = stamp_ms
                if stamp_ms > partition_ms.get(record.partition, 0):
                    partition_ms[record.partition] = stamp_ms
            continue
        if topic not in (devices_topic, status_topic):
            continue  # records of other topics are not ours to interpret; they only count
        try:
            problem = _take(record, observations_topic, devices_topic, devices, statuses, observations,
                            sample_times, sample_values, errors)
        except Exception as exc:  # noqa: BLE001 - a record must never stop the feed; it is reported
            problem = f"could not be read ({type(exc).__name__})"
        if problem is not None:
            skipped_count += 1
            if len(skipped) < MAX_SKIPPED:
                skipped.append(SkippedRecord(topic, record.partition, record.offset, problem))

    samples = {
        series_key: SampleSeries(_frozen_array(times), _frozen_array(sample_values[series_key]))
        for series_key, times in sample_times.items()
    }
    partitions: dict[str, set[int]] = {}
    for device, number in device_partitions:
        partitions.setdefault(device, set()).add(number)
    return Batch(
        devices=tuple(devices),
        agent_statuses=tuple(statuses),
        observations=tuple(observations),
        samples=MappingProxyType(samples),
        errors=tuple(errors),
        record_count=count,
        skipped=tuple(skipped),
        skipped_count=skipped_count,
        seen=MappingProxyType({device: stamp / 1000.0 for device, stamp in seen_ms.items()}),
        partition_newest=MappingProxyType({number: stamp / 1000.0 for number, stamp in partition_ms.items()}),
        observation_records=len(observations),
        partitions=MappingProxyType({device: frozenset(numbers) for device, numbers in partitions.items()}),
    )


def _take(record: Record, observations_topic: str, devices_topic: str,
          devices: list, statuses: list, observations: list,
          sample_times: dict[SeriesKey, list[float]], sample_values: dict[SeriesKey, list[float]],
          errors: list[str]) -> str | None:
    """Add one record to the batch under construction; what is wrong with it, or None."""
    value, problem = decode_value(record.value)
    if problem is not None:
        return problem
    if record.topic == observations_topic:
        if value is None:
            return "empty value (an observation is never deleted)"
        problem = wire.observation_problem(value)
        if problem is not None:
            return problem
        if value["category"] == "SAMPLE":
            number = wire.numeric_value(value)
            if number is not None:
                try:
                    moment = parse_timestamp(value["timestamp"])
                except (ValueError, OverflowError):
                    # A date that does not exist (30 February): still an observation for the
                    # machine state; only the plot loses it.
                    errors.append(f"bad timestamp {value['timestamp'][:40]!r} at {_where(record)}")
                else:
                    series_key = (value["device_uuid"], value["data_item_id"])
                    sample_times.setdefault(series_key, []).append(moment)
                    sample_values.setdefault(series_key, []).append(number)
        observations.append(value)
        return None
    key = _key_text(record.key)
    if record.topic == devices_topic:
        if value is not None:
            problem = wire.device_problem(value)
            if problem is not None:
                return problem
            if key is not None and key != value["device_uuid"]:
                return f"key {key[:60]!r} is not the record's device_uuid"
        uuid = key or (value or {}).get("device_uuid")
        if not uuid:
            return "a deleted device record without a key"
        devices.append((uuid, value))
        return None
    if value is not None:
        problem = wire.agent_status_problem(value)
        if problem is not None:
            return problem
        if key is not None and key != value["agent"]:
            return f"key {key[:60]!r} is not the record's agent"
    agent = key or (value or {}).get("agent")
    if not agent:
        return "a deleted agent status without a key"
    statuses.append((agent, value))
    return None


def _latest_by_key(pairs: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    latest: dict[str, Any] = {}
    for key, value in pairs:
        latest.pop(key, None)  # re-insert so order follows the latest arrival
        latest[key] = value
    return tuple(latest.items())


def _compact_observations(observations: list[Mapping[str, Any]] | tuple[Mapping[str, Any], ...],
                          limit: int) -> tuple[Mapping[str, Any], ...]:
    """Keep every CONDITION (alarms need each transition) and the latest value of each other
    data item (machine state needs only that); samples travel separately as arrays."""
    if len(observations) <= limit:
        return tuple(observations)
    latest_index: dict[SeriesKey, int] = {}
    conditions: list[int] = []
    for index, observation in enumerate(observations):
        if observation.get("category") == "CONDITION":
            conditions.append(index)
        else:
            latest_index[(observation.get("device_uuid"), observation.get("data_item_id"))] = index
    keep = sorted(conditions + list(latest_index.values()))[-limit:]
    return tuple([observations[index] for index in keep])


def merge(first: Batch | None, second: Batch, max_points: int = MAX_MERGED_POINTS,
          max_observations: int = MAX_MERGED_OBSERVATIONS) -> Batch:
    """One batch equivalent (for the model) to applying `first` then `second`, bounded."""
    if first is None:
        return second
    return merge_all((first, second), max_points, max_observations)


def merge_all(batches: Iterable[Batch], max_points: int = MAX_MERGED_POINTS,
              max_observations: int = MAX_MERGED_OBSERVATIONS) -> Batch:
    """One batch equivalent (for the model) to applying `batches` in order, bounded.

    In one pass: each series' arrays are joined once and each observation is looked at once
    by the compaction, however many batches there are - merging them two by two would touch
    the backlog again for every batch added to it."""
    batches = list(batches)
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return Batch()
    pieces: dict[SeriesKey, list[SampleSeries]] = {}
    devices: list[tuple[str, Any]] = []
    statuses: list[tuple[str, Any]] = []
    observations: list[Mapping[str, Any]] = []
    errors: list[str] = []
    skipped: list[SkippedRecord] = []
    partitions: dict[str, frozenset[int]] = {}
    seen: dict[str, float] = {}
    partition_newest: dict[int, float] = {}
    for batch in batches:
        for series_key, series in batch.samples.items():
            held = pieces.get(series_key)
            if held is None:
                pieces[series_key] = [series]
            else:
                held.append(series)
        devices += batch.devices
        statuses += batch.agent_statuses
        observations += batch.observations
        errors += batch.errors
        skipped += batch.skipped
        for device, numbers in batch.partitions.items():
            earlier = partitions.get(device)
            if earlier is None or not numbers <= earlier:
                partitions[device] = numbers if earlier is None else numbers | earlier
        for device, moment in batch.seen.items():
            if moment > seen.get(device, 0.0):
                seen[device] = moment
        for number, moment in batch.partition_newest.items():
            if moment > partition_newest.get(number, 0.0):
                partition_newest[number] = moment
    samples: dict[SeriesKey, SampleSeries] = {}
    for series_key, parts in pieces.items():
        if len(parts) == 1 and len(parts[0].times) <= max_points:
            samples[series_key] = parts[0]
            continue
        times = np.concatenate([part.times for part in parts])[-max_points:]
        values = np.concatenate([part.values for part in parts])[-max_points:]
        samples[series_key] = _frozen_series(times, values)
    return Batch(
        devices=_latest_by_key(devices),
        agent_statuses=_latest_by_key(statuses),
        observations=_compact_observations(observations, max_observations),
        samples=MappingProxyType(samples),
        errors=tuple(errors[-MAX_ERRORS:]),
        record_count=sum(batch.record_count for batch in batches),
        skipped=tuple(skipped[-MAX_SKIPPED:]),
        skipped_count=sum(batch.skipped_count for batch in batches),
        catching_up=any(batch.catching_up for batch in batches),
        observation_records=sum(batch.observation_records for batch in batches),
        partitions=MappingProxyType(partitions),
        seen=MappingProxyType(seen),
        partition_newest=MappingProxyType(partition_newest),
    )


def pack_batch(batch: Batch) -> bytes:
    """A batch as bytes for another process of this app (`unpack_batch` reads it): `marshal`
    of plain values, with each sample array as its raw float64 bytes."""
    return marshal.dumps((
        tuple((uuid, dict(value) if value is not None else None) for uuid, value in batch.devices),
        tuple((agent, dict(value) if value is not None else None) for agent, value in batch.agent_statuses),
        tuple(dict(observation) for observation in batch.observations)
        if any(type(observation) is not dict for observation in batch.observations) else batch.observations,
        {key: (series.times.tobytes(), series.values.tobytes()) for key, series in batch.samples.items()},
        batch.errors,
        batch.record_count,
        tuple(tuple(record) for record in batch.skipped),
        batch.skipped_count,
        batch.catching_up,
        dict(batch.seen),
        batch.observation_records,
        dict(batch.partitions),
        dict(batch.partition_newest),
    ))


def _frozen_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float64)  # read-only: it shares the bytes


def unpack_batch(data: bytes) -> Batch:
    """The batch `pack_batch` packed."""
    (devices, statuses, observations, samples, errors, record_count, skipped, skipped_count, catching_up, seen,
     observation_records, partitions, partition_newest) = marshal.loads(data)
    return Batch(
        devices=devices,
        agent_statuses=statuses,
        observations=observations,
        samples=MappingProxyType({key: SampleSeries(_frozen_bytes(times), _frozen_bytes(values))
                                  for key, (times, values) in samples.items()}),
        errors=errors,
        record_count=record_count,
        skipped=tuple(SkippedRecord(*record) for record in skipped),
        skipped_count=skipped_count,
        catching_up=catching_up,
        seen=MappingProxyType(seen),
        observation_records=observation_records,
        partitions=MappingProxyType(partitions),
        partition_newest=MappingProxyType(partition_newest),
    )


class BatchGate:
    """At most one batch in flight to the GUI; whatever arrives meanwhile is merged.

    The feed thread calls `offer` for each new batch and `take_pending` when idle; the GUI
    calls `release` when it has applied the batch it was given. This is how the GUI falling
    behind turns into fewer, larger batches instead of a growing signal queue.

    What waits is held as a list and merged once, when it is handed over (`merge_all`), not
    batch by batch; only when it grows past twice `max_observations` is it merged (and
    compacted to `max_observations`) early, which bounds what a stalled GUI makes the feed
    hold. `offer` and `take_pending` are called by one thread (the feed's); only the
    in-flight flag is shared, so no merge runs under the lock.
    """

    def __init__(self, max_observations: int = MAX_MERGED_OBSERVATIONS) -> None:
        self._lock = threading.Lock()
        self._in_flight = False
        self._pending: list[Batch] = []
        self._pending_observations = 0
        self._max_observations = max_observations

    @property
    def in_flight(self) -> bool:
        with self._lock:
            return self._in_flight

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def _hold(self, batch: Batch) -> None:
        self._pending.append(batch)
        self._pending_observations += len(batch.observations)
        if self._pending_observations > 2 * self._max_observations:
            self._pending = [merge_all(self._pending, max_observations=self._max_observations)]
            self._pending_observations = len(self._pending[0].observations)

    def _take(self) -> Batch:
        batch = merge_all(self._pending, max_observations=self._max_observations)
        self._pending = []
        self._pending_observations = 0
        return batch

    def offer(self, batch: Batch) -> Batch | None:
        """The batch to emit now, or None when it was kept to be merged with what waits."""
        with self._lock:
            busy = self._in_flight
            self._in_flight = True
        self._hold(batch)
        return None if busy else self._take()

    def take_pending(self) -> Batch | None:
        if not self._pending:
            return None
        with self._lock:
            if self._in_flight:
                return None
            self._in_flight = True
        return self._take()

    def release(self) -> None:
        with self._lock:
            self._in_flight = False
