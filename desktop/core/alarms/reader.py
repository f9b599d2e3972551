"""Reading shared acknowledgements: `monitor.alarm-acks` from its beginning, then following it.

`AckReader` turns the records of the compacted topic into decoded, checked ack records (the
layout of `producer.wire`, checked by `acks.ack_record_problem`) and hands them to a callback,
one call per `consume()` that brought any. The compacted topic holds each alarm's latest
shared state, so reading it from the beginning tells a station that starts late everything
that was acknowledged or shelved before; applying a record twice is harmless (the engine
merges), so a re-read after a restart needs no stored offsets.

It runs two ways. Inside a consumer loop that exists already: `attach(consumer)` assigns the
topic's partitions (from the beginning, or from where this reader stopped) next to whatever
the consumer reads, and `take(messages)` picks this topic's messages out of a `consume()`
result. Or with a consumer of its own: `run(stop_event, on_records, on_status)` is a thread
body that creates its consumer lazily inside that thread and closes it in `finally`, and
`start()` runs it on a thread that reports how it ended instead of dying silently. Like the
observation feed it assigns partitions itself instead of joining a consumer group: every
station reads every record, and there is no group to rejoin after a broker restart; the topic
and partitions that appear later are found in the cluster metadata. A record that cannot be
used is skipped and logged once with topic, partition and offset (`SkippedRecordLog`, which
summarises a flood), and the rest of the batch is kept.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Mapping

from producer import wire

from desktop.core.alarms.acks import ack_record_problem
from desktop.core.batch import SkippedRecord
from desktop.core.feed import (
    CONNECTED,
    CONNECTING,
    STOPPED,
    UNREACHABLE,
    WAITING,
    FeedConfig,
    KafkaLogThrottle,
    SkippedRecordLog,
)

log = logging.getLogger(__name__)

CONSUME_BATCH = 500
CONSUME_TIMEOUT = 0.2
# How often the cluster metadata is read: while the topic is missing or the broker away, and
# (less often) once every partition is assigned, for partitions added later.
PROBE_INTERVAL = 5.0
# The first probes after a miss come sooner (doubling up to PROBE_INTERVAL): a station that
# starts while the topic's metadata is still settling reads acknowledgements within about a
# second instead of after a whole PROBE_INTERVAL (seen: 4.4 s before the first fetch).
FIRST_PROBE_RETRY = 0.25
PARTITION_CHECK_INTERVAL = 30.0
METADATA_TIMEOUT = 2.0

RecordsCallback = Callable[[tuple[dict[str, Any], ...]], None]
StatusCallback = Callable[[str, str], None]


def _noop_status(state: str, detail: str) -> None:
    pass


def _error_text(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if hasattr(error, "str") else str(exc)


class AckReader:
    """Follows `monitor.alarm-acks` (under the topic prefix) and hands out checked records.

    `properties` are librdkafka properties from the settings (security and the like), merged
    as the observation feed merges them: its defaults, then these, then what the reader must
    control (group id, no commits, `read_committed`)."""

    def __init__(self, bootstrap_servers: str, topic_prefix: str = "",
                 properties: Mapping[str, Any] | None = None, logger: logging.Logger = log) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        self.topic = wire.topic_name(wire.ALARM_ACKS, topic_prefix)
        self.properties = dict(properties or {})
        self.skipped_log = SkippedRecordLog(logger)
        # librdkafka's own lines (a broker away: one per retry) once per kind and reader state.
        self.log_throttle = KafkaLogThrottle()
        self.skipped_count = 0
        self.record_count = 0
        self.failure: str | None = None  # why the reader's own thread ended, if it failed
        self._state = ""
        self._on_status: StatusCallback = _noop_status
        # partition -> next offset to read: a re-assignment continues there, nothing twice.
        self._positions: dict[int, int] = {}
        self._assigned: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_feed(cls, config: FeedConfig) -> "AckReader":
        """A reader with the feed's broker, topic prefix and client settings."""
        return cls(config.bootstrap_servers, config.topic_prefix, config.kafka_properties)

    # -- status ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    def _set_status(self, state: str, detail: str = "") -> None:
        if state == self._state and state in (CONNECTED, STOPPED, WAITING):
            return
        if state != self._state:
            self.log_throttle.state_changed(state)
        self._state = state
        self._on_status(state, detail)

    def _on_kafka_error(self, error: Any) -> None:
        """librdkafka's error callback; runs inside consume() on the reader's thread."""
        from confluent_kafka import KafkaError

        code = error.code()
        if code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self._set_status(UNREACHABLE, error.str())
        elif code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL):
            self._set_status(UNREACHABLE, f"authentication failed: {error.str()}")
        else:
            self._on_status("error", f"{self.topic}: {error.str()}")

    # -- inside any consumer loop ---------------------------------------------------------

    def attach(self, consumer: Any, timeout: float = METADATA_TIMEOUT) -> bool:
        """Assign the topic's partitions not assigned yet to `consumer` (added to what it reads):
        new ones from the beginning, known ones from where this reader stopped. True when
        the topic exists. Reads the cluster metadata, so call it every few seconds, not per poll."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            metadata = consumer.list_topics(topic=self.topic, timeout=timeout)
        except KafkaException as exc:
            if self._state != UNREACHABLE:
                self._set_status(UNREACHABLE, _error_text(exc))
            return False
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            self._set_status(WAITING, f"waiting for topic {self.topic}")
            return False
        new = [TopicPartition(self.topic, number, self._positions.get(number, OFFSET_BEGINNING))
               for number in sorted(topic.partitions) if number not in self._assigned]
        if new:
            # incremental: a shared consumer keeps its other partitions and their positions.
            consumer.incremental_assign(new)
            self._assigned.update(partition.partition for partition in new)
        self._set_status(CONNECTED, self.bootstrap_servers)
        return True

    def take(self, messages: Iterable[Any]) -> tuple[dict[str, Any], ...]:
        """The usable ack records among `messages` (one consume() result), in their order.

        Messages of other topics and error events are left to the loop that owns the
        consumer; tombstones carry nothing to apply. A bad record is skipped and logged."""
        records: list[dict[str, Any]] = []
        skipped: list[SkippedRecord] = []
        for message in messages:
            if message.error() is not None or message.topic() != self.topic:
                continue
            self._positions[message.partition()] = message.offset() + 1
            try:
                record, problem = ack_record_problem(message.key(), message.value())
            except Exception as exc:  # noqa: BLE001 - one record must never stop the reader
                record, problem = None, f"could not be read ({type(exc).__name__})"
            if problem is not None:
                skipped.append(SkippedRecord(message.topic(), message.partition(), message.offset(), problem))
            elif record is not None:
                records.append(record)
        if skipped:
            self.skipped_count += len(skipped)
            self.skipped_log.add(skipped, len(skipped))
        self.record_count += len(records)
        return tuple(records)

    # -- with a consumer of its own -------------------------------------------------------

    def _consumer_properties(self) -> dict[str, Any]:
        properties = FeedConfig(self.bootstrap_servers, self.topic_prefix, self.properties).consumer_properties()
        properties["group.id"] = properties["group.id"].replace("-desktop-", "-alarm-acks-", 1)
        properties["error_cb"] = self._on_kafka_error
        properties.setdefault("logger", self.log_throttle)
        return properties

    def run(self, stop_event: threading.Event, on_records: RecordsCallback,
            on_status: StatusCallback | None = None) -> None:
        """Read and follow the topic until `stop_event` is set, calling `on_records` once per
        consume() that brought records. Raises only what the reader cannot survive (settings
        the client refuses, a fatal client error, an exception from `on_records`); the
        consumer is closed in every case."""
        from confluent_kafka import Consumer, KafkaError, KafkaException

        self._on_status = on_status or _noop_status
        self._set_status(CONNECTING, self.bootstrap_servers)
        consumer = None
        try:
            try:
                consumer = Consumer(self._consumer_properties())
            except KafkaException as exc:
                raise RuntimeError(f"invalid Kafka settings for {self.topic}: {_error_text(exc)}") from exc
            next_probe = 0.0
            retry = FIRST_PROBE_RETRY
            while not stop_event.is_set():
                if time.monotonic() >= next_probe:
                    complete = self.attach(consumer)
                    steady = complete and self._state == CONNECTED
                    if steady:
                        next_probe, retry = time.monotonic() + PARTITION_CHECK_INTERVAL, FIRST_PROBE_RETRY
                    else:
                        next_probe, retry = time.monotonic() + retry, min(retry * 2, PROBE_INTERVAL)
                messages = consumer.consume(num_messages=CONSUME_BATCH, timeout=CONSUME_TIMEOUT)
                for message in messages:
                    error = message.error()
                    if error is None:
                        continue
                    if error.fatal():
                        raise RuntimeError(f"reading {self.topic} failed: {error.str()}")
                    if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                        self._set_status(WAITING, f"waiting for topic {self.topic}")
                    else:
                        self._on_status("error", f"{self.topic} partition {message.partition()}: {error.str()}")
                records = self.take(messages)
                if records:
                    self._set_status(CONNECTED, self.bootstrap_servers)
                    on_records(records)
                self.skipped_log.flush()
        finally:
            self.skipped_log.flush(force=True)
            if consumer is not None:
                try:
                    consumer.close()
                except Exception:  # noqa: BLE001 - closing must not hide the original error
                    pass
            self._set_status(STOPPED, "")

    def start(self, on_records: RecordsCallback, on_status: StatusCallback | None = None,
              on_failed: Callable[[str], None] | None = None) -> threading.Thread:
        """Run `run` on a thread of its own. If it ends with an error, `failure` says why and
        `on_failed` gets the same text (default: logged as an error)."""
        if self.running:
            raise RuntimeError("the alarm acknowledgement reader is running already")
        self._stop = threading.Event()
        self.failure = None

        def body() -> None:
            try:
                self.run(self._stop, on_records, on_status)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, none vanishes
                self.failure = _describe_failure(exc)
                if on_failed is not None:
                    on_failed(self.failure)
                else:
                    log.error("alarm acknowledgements are no longer read: %s", self.failure)

        self._thread = threading.Thread(target=body, name="alarm-acks-reader", daemon=True)
        self._thread.start()
        return self._thread

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the reader's own thread and join it; True when it ended within `timeout`."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()


def _describe_failure(exc: Exception) -> str:
    if isinstance(exc, RuntimeError):
        return str(exc)  # the reader's own, worded for people
    detail = f"{type(exc).__name__}: {exc}"
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    if last:
        detail += f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})"
    return detail
