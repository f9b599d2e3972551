"""Kafka records to immutable batches: the one unit that crosses from the feed thread to the GUI.

`build_batch` decodes what one `consume()` call returned (device models, agent status,
observations) with `producer.wire`, and turns every numeric SAMPLE into per-data-item numpy
arrays of (epoch seconds, value), so the GUI only appends arrays to ring buffers. A record that
cannot be decoded becomes an error naming its topic, partition and offset; the rest of the batch
is kept. `merge` combines batches while the GUI is behind, bounded so a stalled GUI cannot
make the backlog grow without limit, and `BatchGate` is the hand-off that decides between
emitting a batch and merging it into the pending one.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from producer import wire

SeriesKey = tuple[str, str]  # (device uuid, data item id)

# Bounds for a merged backlog: the plot never needs more points per item than a ring buffer
# holds, and observations beyond this count are compacted to what the model needs.
MAX_MERGED_POINTS = 20_000
MAX_MERGED_OBSERVATIONS = 20_000
MAX_ERRORS = 50


class Record(NamedTuple):
    """One Kafka record as the feed hands it over (topic is the full, prefixed name)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # The record's Kafka timestamp (ms since the epoch), when known.
    timestamp_ms: int | None = None


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
    # True when some records were written to Kafka before the feed started (history read at
    # start-up, not live data): their alarms are listed, but only still-active ones pop up.
    catching_up: bool = False

    @property
    def is_empty(self) -> bool:
        return not (self.devices or self.agent_statuses or self.observations or self.errors)


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


def build_batch(records: Iterable[Record], topic_prefix: str = "") -> Batch:
    """Decode records into one batch; undecodable records become errors, never exceptions."""
    devices_topic = wire.topic_name(wire.DEVICES, topic_prefix)
    status_topic = wire.topic_name(wire.AGENT_STATUS, topic_prefix)
    observations_topic = wire.topic_name(wire.OBSERVATIONS, topic_prefix)

    devices: list[tuple[str, Mapping[str, Any] | None]] = []
    statuses: list[tuple[str, Mapping[str, Any] | None]] = []
    observations: list[Mapping[str, Any]] = []
    sample_times: dict[SeriesKey, list[float]] = {}
    sample_values: dict[SeriesKey, list[float]] = {}
    errors: list[str] = []
    count = 0

    for record in records:
        count += 1
        try:
            value = wire.decode(record.value)
        except (ValueError, UnicodeDecodeError) as exc:
            errors.append(f"undecodable JSON at {_where(record)}: {exc}")
            continue
        key = record.key.decode("utf-8", "replace") if record.key is not None else None

        if record.topic == observations_topic:
            if not isinstance(value, dict) or not value.get("device_uuid") or not value.get("data_item_id"):
                errors.append(f"not an observation at {_where(record)}: {str(value)[:120]}")
                continue
            if value.get("category") == "SAMPLE":
                number = wire.numeric_value(value)
                if number is not None:
                    try:
                        moment = parse_timestamp(str(value.get("timestamp")))
                    except ValueError:
                        # Still an observation for the machine state; only the plot loses it.
                        errors.append(f"bad timestamp {value.get('timestamp')!r} at {_where(record)}")
                    else:
                        series_key = (str(value["device_uuid"]), str(value["data_item_id"]))
                        sample_times.setdefault(series_key, []).append(moment)
                        sample_values.setdefault(series_key, []).append(number)
            observations.append(value)
        elif record.topic == devices_topic:
            if value is not None and not isinstance(value, dict):
                errors.append(f"not a device record at {_where(record)}")
                continue
            uuid = key or (value or {}).get("device_uuid")
            if not uuid:
                errors.append(f"device record without key or device_uuid at {_where(record)}")
                continue
            devices.append((str(uuid), value))
        elif record.topic == status_topic:
            if value is not None and not isinstance(value, dict):
                errors.append(f"not an agent status at {_where(record)}")
                continue
            agent = key or (value or {}).get("agent")
            if not agent:
                errors.append(f"agent status without key or agent at {_where(record)}")
                continue
            statuses.append((str(agent), value))
        # Records of other topics are not ours to interpret; they only count.

    samples = {
        series_key: SampleSeries(_frozen_array(times), _frozen_array(sample_values[series_key]))
        for series_key, times in sample_times.items()
    }
    return Batch(
        devices=tuple(devices),
        agent_statuses=tuple(statuses),
        observations=tuple(observations),
        samples=MappingProxyType(samples),
        errors=tuple(errors),
        record_count=count,
    )


def _latest_by_key(pairs: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    latest: dict[str, Any] = {}
    for key, value in pairs:
        latest.pop(key, None)  # re-insert so order follows the latest arrival
        latest[key] = value
    return tuple(latest.items())


def _compact_observations(observations: tuple[Mapping[str, Any], ...], limit: int) -> tuple[Mapping[str, Any], ...]:
    """Keep every CONDITION (alarms need each transition) and the latest value of each other
    data item (machine state needs only that); samples travel separately as arrays."""
    if len(observations) <= limit:
        return observations
    latest_index: dict[SeriesKey, int] = {}
    for index, observation in enumerate(observations):
        if observation.get("category") != "CONDITION":
            latest_index[(observation.get("device_uuid"), observation.get("data_item_id"))] = index
    keep = set(latest_index.values())
    kept = [o for i, o in enumerate(observations) if i in keep or o.get("category") == "CONDITION"]
    return tuple(kept[-limit:])


def merge(first: Batch | None, second: Batch, max_points: int = MAX_MERGED_POINTS,
          max_observations: int = MAX_MERGED_OBSERVATIONS) -> Batch:
    """One batch equivalent (for the model) to applying `first` then `second`, bounded."""
    if first is None:
        return second
    samples: dict[SeriesKey, SampleSeries] = dict(first.samples)
    for series_key, series in second.samples.items():
        earlier = samples.get(series_key)
        if earlier is None:
            samples[series_key] = series
            continue
        times = np.concatenate([earlier.times, series.times])[-max_points:]
        values = np.concatenate([earlier.values, series.values])[-max_points:]
        samples[series_key] = _frozen_series(times, values)
    return Batch(
        devices=_latest_by_key(first.devices + second.devices),
        agent_statuses=_latest_by_key(first.agent_statuses + second.agent_statuses),
        observations=_compact_observations(first.observations + second.observations, max_observations),
        samples=MappingProxyType(samples),
        errors=(first.errors + second.errors)[-MAX_ERRORS:],
        record_count=first.record_count + second.record_count,
        catching_up=first.catching_up or second.catching_up,
    )


class BatchGate:
    """At most one batch in flight to the GUI; whatever arrives meanwhile is merged.

    The feed thread calls `offer` for each new batch and `take_pending` when idle; the GUI
    calls `release` when it has applied the batch it was given. This is how the GUI falling
    behind turns into fewer, larger batches instead of a growing signal queue.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = False
        self._pending: Batch | None = None

    @property
    def in_flight(self) -> bool:
        with self._lock:
            return self._in_flight

    @property
    def has_pending(self) -> bool:
        with self._lock:
            return self._pending is not None

    def offer(self, batch: Batch) -> Batch | None:
        """The batch to emit now, or None when it was merged into the pending one."""
        with self._lock:
            if self._in_flight:
                self._pending = merge(self._pending, batch)
                return None
            if self._pending is not None:
                batch = merge(self._pending, batch)
                self._pending = None
            self._in_flight = True
            return batch

    def take_pending(self) -> Batch | None:
        with self._lock:
            if self._in_flight or self._pending is None:
                return None
            batch, self._pending = self._pending, None
            self._in_flight = True
            return batch

    def release(self) -> None:
        with self._lock:
            self._in_flight = False
