"""One machine's history from Kafka, by time: what the detail view's look-back picker loads.

`load_history` runs on a worker thread (never the GUI's). It uses a consumer of its own with
the feed's settings (no group, nothing committed), asks the broker for the offsets of the
window's start on the observations partitions (`offsets_for_times`), takes each partition's
end offset at that moment, and reads up to it. Records of other machines are skipped by key
before they are decoded (observations are keyed by device uuid); when the live feed already
knows which partitions carry the machine, only those are read. Every record is checked as
the feed checks it (`desktop.core.batch.build_batch`), so the history shows exactly what the
live view would have shown: the numeric samples per data item (epoch seconds of the
observation, value), the events and conditions for the log, and the derived state bands
(Kafka timestamps, like the live timeline), including offline bands for silences longer than
the offline limit. Progress is reported as the fraction of records read; a cancel event stops
the read. The records read end where live data continues: the caller joins both at the first
live point, so the plot has no seam and no point twice.
"""
from __future__ import annotations

import threading
import time
import uuid as uuid_module
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from producer import wire

from desktop.core.batch import Record, SampleSeries, build_batch
from desktop.core.feed import FeedConfig, offsets_for_times
from desktop.core.machines import DEFAULT_OFFLINE_AFTER, MachineStatus, MachineTracker

READ_BATCH = 5000
# Observation kinds after which the derived state can change.
_STATE_TYPES = frozenset({"AVAILABILITY", "EXECUTION", "CONTROLLER_MODE", "EMERGENCY_STOP"})


class HistoryError(RuntimeError):
    pass


@dataclass(frozen=True)
class HistoryResult:
    device_uuid: str
    start: float
    end: float
    # data item id -> (times, values), oldest first
    samples: Mapping[str, SampleSeries] = field(default_factory=lambda: MappingProxyType({}))
    timeline: tuple[tuple[float, MachineStatus], ...] = ()
    log: tuple[Mapping[str, Any], ...] = ()
    records_read: int = 0
    observations: int = 0
    seconds: float = 0.0
    cancelled: bool = False


def derive_timeline(device: Mapping[str, Any] | None, device_uuid: str,
                    observations: Iterable[tuple[float, Mapping[str, Any]]],
                    offline_after: float = DEFAULT_OFFLINE_AFTER, until: float | None = None) -> list[tuple[float, MachineStatus]]:
    """State bands [(start, status)] from (published epoch, observation) pairs in order."""
    tracker = MachineTracker(device_uuid)
    if device:
        tracker.set_device(device)
    bands: list[tuple[float, MachineStatus]] = []
    previous: float | None = None

    def note(status: MachineStatus, at: float) -> None:
        if not bands or bands[-1][1] != status:
            bands.append((at, status))

    for seen, observation in observations:
        if previous is not None and offline_after > 0 and seen - previous > offline_after:
            note(MachineStatus.OFFLINE, previous + offline_after)
        tracker.observe(observation, seen)
        if (previous is None or observation.get("category") == "CONDITION" or observation.get("type") in _STATE_TYPES
                or (bands and bands[-1][1] == MachineStatus.OFFLINE)):
            note(tracker.view(now=seen, offline_after=0).status, seen)
        previous = seen
    if until is not None and previous is not None and offline_after > 0 and until - previous > offline_after:
        note(MachineStatus.OFFLINE, previous + offline_after)
    return bands


def load_history(config: FeedConfig, device_uuid: str, start: float, end: float | None = None,
                 partitions: Iterable[int] | None = None, device: Mapping[str, Any] | None = None,
                 progress: Callable[[float], None] | None = None, cancel: threading.Event | None = None,
                 timeout: float = 30.0, offline_after: float = DEFAULT_OFFLINE_AFTER,
                 consumer_factory: Callable[[dict[str, Any]], Any] | None = None) -> HistoryResult:
    """Observations of one machine published between `start` and `end` (epoch seconds;
    end None: up to what the topic holds now)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    began = time.monotonic()
    topic = wire.topic_name(wire.OBSERVATIONS, config.topic_prefix)
    properties = config.consumer_properties()
    properties.update({"group.id": f"machine-monitor-history-{uuid_module.uuid4().hex[:12]}",
                       "enable.partition.eof": False, "fetch.max.bytes": 52_428_800,
                       "max.partition.fetch.bytes": 10_485_760})
    properties.setdefault("logger", __import__("logging").getLogger("desktop.kafka.history"))
    consumer = (consumer_factory or Consumer)(properties)
    key = device_uuid.encode("utf-8")
    deadline = time.monotonic() + timeout
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=min(10.0, timeout))
        except KafkaException as exc:
            raise HistoryError(f"cannot reach Kafka at {config.bootstrap_servers}: {exc}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise HistoryError(f"topic {topic} not found at {config.bootstrap_servers}")
        numbers = sorted(found.partitions)
        if partitions:
            wanted = sorted(set(partitions) & set(numbers))
            numbers = wanted or numbers
        start_ms = int(start * 1000)
        end_ms = int(end * 1000) if end is not None else None
        try:
            located = offsets_for_times(consumer, [TopicPartition(topic, n, start_ms) for n in numbers], timeout=10.0)
        except KafkaException as exc:
            raise HistoryError(f"could not look up offsets for {time.ctime(start)}: {exc}") from exc
        plan: list[TopicPartition] = []
        ends: dict[int, int] = {}
        total = 0
        for partition in located:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition.partition), timeout=10.0)
            first = partition.offset if partition.offset >= 0 else high
            if end_ms is not None:
                after = offsets_for_times(consumer, [TopicPartition(topic, partition.partition, end_ms + 1)],
                                          timeout=10.0)[0]
                if after.offset >= 0:
                    high = min(high, after.offset)
            if first < high:
                plan.append(TopicPartition(topic, partition.partition, first))
                ends[partition.partition] = high
                total += high - first
        records: list[Record] = []
        read = 0
        if plan:
            consumer.assign(plan)
            remaining = dict(ends)
            positions = {tp.partition: tp.offset for tp in plan}
            last_report = 0.0
            while remaining:
                if cancel is not None and cancel.is_set():
                    return HistoryResult(device_uuid, start, end or time.time(), cancelled=True, records_read=read,
                                         seconds=time.monotonic() - began)
                if time.monotonic() > deadline:
                    raise HistoryError(f"history read did not finish within {timeout:g} s ({read:,} of {total:,} records)")
                messages = consumer.consume(num_messages=READ_BATCH, timeout=0.5)
                for message in messages:
                    if message.error() is not None:
                        continue
                    number = message.partition()
                    offset = message.offset()
                    if number not in remaining or offset >= remaining[number]:
                        continue
                    read += offset - positions[number] + 1
                    positions[number] = offset + 1
                    if offset + 1 >= remaining[number]:
                        del remaining[number]
                    if message.key() != key:
                        continue
                    stamp = message.timestamp()[1]
                    if end_ms is not None and stamp > end_ms:
                        continue
                    records.append(Record(topic, number, offset, message.key(), message.value(), stamp))
                # Offsets of transaction markers are never delivered: a partition is done once
                # its position reached the end, which `position()` tells after the markers.
                for number in list(remaining):
                    position = consumer.position([TopicPartition(topic, number)])[0].offset
                    if position >= remaining[number]:
                        read += max(0, remaining[number] - positions[number])
                        del remaining[number]
                if progress is not None and time.monotonic() - last_report > 0.1:
                    last_report = time.monotonic()
                    progress(min(1.0, read / total) if total else 1.0)
        if progress is not None:
            progress(1.0)
    finally:
        consumer.close()

    records.sort(key=lambda record: (record.timestamp_ms or 0, record.partition, record.offset))
    batch = build_batch(records, config.topic_prefix)
    samples = {item: SampleSeries(series.times, series.values) for (uuid, item), series in batch.samples.items()
               if uuid == device_uuid}
    # build_batch keeps record order; pair each observation with its record's timestamp.
    observations = [o for o in batch.observations if o.get("device_uuid") == device_uuid]
    stamps = _stamps_of(records, observations)
    timeline = derive_timeline(device, device_uuid, zip(stamps, observations), offline_after,
                               until=end if end is not None else time.time())
    log = tuple(o for o in observations if o.get("category") != "SAMPLE")
    for item, series in samples.items():
        order = np.argsort(series.times, kind="stable")
        if np.any(np.diff(order) < 0):
            samples[item] = SampleSeries(series.times[order], series.values[order])
    return HistoryResult(device_uuid, start, end if end is not None else time.time(), MappingProxyType(samples),
                         tuple(timeline), log, read, len(observations), time.monotonic() - began)


def _stamps_of(records: list[Record], observations: list[Mapping[str, Any]]) -> list[float]:
    """The publish time of each kept observation (records that were skipped have none)."""
    if len(records) == len(observations):
        return [(record.timestamp_ms or 0) / 1000.0 for record in records]
    # Some records were invalid: match by position in the stream, decoding only the keys.
    stamps = []
    index = 0
    for observation in observations:
        while index < len(records):
            record = records[index]
            index += 1
            value, problem = wire.decode_record(record.value)
            if problem is None and isinstance(value, Mapping) and value.get("sequence") == observation.get("sequence") \
                    and value.get("data_item_id") == observation.get("data_item_id"):
                stamps.append((record.timestamp_ms or 0) / 1000.0)
                break
        else:
            stamps.append(stamps[-1] if stamps else 0.0)
    return stamps
