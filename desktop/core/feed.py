"""The Kafka feed: consume the monitor's topics and hand over one immutable batch per poll.

`Feed.run` is the body of the feed: in the app's feed process (`desktop.core.feed_process`),
or on a thread (the Qt worker in `desktop.ui.workers` owns it). It creates the consumer lazily inside that thread and assigns itself every partition
of the devices, agent-status and observations topics - the compacted topics from their
beginning, the observations from "now minus the history window" (`offsets_for_times`), so
plots show recent history at once. It assigns partitions itself instead of joining a consumer
group: every desktop reads everything, and without a group there is no coordinator to wait
for after a broker restart (a group's rejoin held live data back for 30-45 s). Topics or
partitions that appear later (the producer creates the topics) are found by looking at the
cluster metadata every few seconds. Every `consume()` call becomes at most one batch,
passed through a `BatchGate` so a slow GUI gets merged batches rather than a queue.
Connection state goes to `on_status`, problems that do not stop the feed (bad records,
broker errors) travel inside batches or to `on_status`; only an unrecoverable error
escapes `run`, and the consumer is closed in every case. Every record that does not match
the schema is skipped (see `desktop.core.batch`) and logged once, with topic, partition and
offset, through `SkippedRecordLog`, which caps how many lines a flood of bad records writes.

Liveness: a broker that stops answering (frozen, or its host gone without a reset) does not
make `consume()` fail, it only returns nothing. So whenever no record came for
`LIVENESS_PROBE_AFTER` seconds the feed asks for the cluster metadata (2 s timeout); an answer
is contact. Without contact for `STALLED_AFTER` s the state is `stalled` (amber), for
`UNREACHABLE_AFTER` s `unreachable` (red), both well within 10 s. Status is reported once per
change of state, and librdkafka's own log lines (a refused connection is logged on every
retry) go through `KafkaLogThrottle`: the first line of each kind per feed state, then a count
of what was held back when the state changes.

Consumer properties are merged in one documented order: the feed's defaults, then the
user's settings (security, any librdkafka property), then what the feed must control
(group id, offsets, isolation) - later wins.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from producer import wire

from desktop.core.batch import Batch, BatchGate, Record, SkippedRecord, build_batch
from desktop.core.gui_priority import no_pause

DEFAULT_HISTORY_SECONDS = 600.0
# Records per consume() at most: large enough that a plant's stream (tens of thousands of
# records a second) is a few batches a second, not hundreds - the per-batch work (an array
# and a ring-buffer append per series, a view per machine) is then spread over many records.
CONSUME_BATCH = 20_000
CONSUME_TIMEOUT = 0.2
# `consume(n, timeout)` returns only when n records are there or the timeout ran out, so at
# a plant's ordinary rate every record would wait for the timeout. While the core is free the
# feed waits for the first record and takes what has already arrived with it (a batch is then
# as old as its first record, no older); while the core is busy with the previous batch it
# gathers for up to GATHER_WHILE_BUSY, so what waits is merged a few times a second, not
# once per record that trickles in.
GATHER_WHILE_BUSY = 0.05
# How often to look at the cluster metadata: for topics not there yet and while not
# connected (to notice the broker is back), and, less often, for partitions added later.
_PROBE_INTERVAL = 5.0
_PARTITION_CHECK_INTERVAL = 30.0

# Status words passed to on_status.
CONNECTING = "connecting"
CONNECTED = "connected"
UNREACHABLE = "unreachable"
WAITING = "waiting"  # connected, but the topics do not exist yet
STALLED = "stalled"  # connected before, but the broker has not answered for a few seconds
STOPPED = "stopped"

LIVENESS_PROBE_AFTER = 2.0
STALLED_AFTER = 3.5
UNREACHABLE_AFTER = 7.0

_instance_counter = itertools.count(1)
_new_record = tuple.__new__
_kafka_log = logging.getLogger("desktop.kafka")
log = logging.getLogger(__name__)

# Skipped records logged one by one before the log switches to periodic summaries.
SKIPPED_LOGGED_INDIVIDUALLY = 20
SKIPPED_SUMMARY_INTERVAL = 60.0

# Defaults a user setting may override.
_DEFAULT_PROPERTIES = {
    "auto.offset.reset": "earliest",
    "topic.metadata.refresh.interval.ms": "5000",
    # A broker that is back is reached within 2 s instead of up to librdkafka's 10 s.
    "reconnect.backoff.max.ms": "2000",
    "socket.connection.setup.timeout.ms": "10000",
    # Records fetched ahead of consume(): librdkafka's default (64 MB) is what an app that
    # falls behind a plant's stream holds on top of its own state; 32 MB is still over a
    # second of 50,000 records/s.
    "queued.max.messages.kbytes": "32768",
}


def _error_text(exc: Exception) -> str:
    """The readable part of a KafkaException (its KafkaError's message), else str()."""
    error = exc.args[0] if exc.args else None
    return error.str() if hasattr(error, "str") else str(exc)


# What a broker answers for a partition whose leader is not settled yet (a topic just made,
# a broker just restarted): asked again a moment later, the same lookup succeeds.
# Kafka error codes: UNKNOWN_TOPIC_OR_PART 3, LEADER_NOT_AVAILABLE 5, NOT_LEADER_FOR_PARTITION 6,
# REQUEST_TIMED_OUT 7, FENCED_LEADER_EPOCH 74, UNKNOWN_LEADER_EPOCH 75, OFFSET_NOT_AVAILABLE 78.
_SETTLING_ERRORS = frozenset({3, 5, 6, 7, 74, 75, 78})


def offsets_for_times(consumer: Any, partitions: list[Any], timeout: float = 10.0) -> list[Any]:
    """`consumer.offsets_for_times`, asked again while the broker's leadership settles, for
    up to `timeout` seconds in all; any other error, or one that outlasts it, is raised."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout
    pause = 0.1
    while True:
        try:
            return consumer.offsets_for_times(partitions, timeout=max(0.5, deadline - time.monotonic()))
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if hasattr(error, "code") else None
            if code not in _SETTLING_ERRORS or time.monotonic() + pause >= deadline:
                raise
        time.sleep(pause)
        pause = min(1.0, pause * 2)


def default_group_id() -> str:
    """Unique per app instance: every desktop reads everything, nobody shares partitions."""
    return f"machine-monitor-desktop-{socket.gethostname()}-{os.getpid()}-{next(_instance_counter)}"


@dataclass(frozen=True)
class FeedConfig:
    bootstrap_servers: str
    topic_prefix: str = ""
    # librdkafka properties from the settings (security etc.), passed through unchanged.
    kafka_properties: Mapping[str, str] = field(default_factory=dict, hash=False)
    history_seconds: float = DEFAULT_HISTORY_SECONDS
    # Read observations from this wall-clock time (epoch s) instead of now - history_seconds.
    start_time: float | None = None
    group_id: str = field(default_factory=default_group_id)

    def topics(self) -> dict[str, str]:
        """Base name -> deployed topic name, for the topics the desktop reads."""
        return {base: wire.topic_name(base, self.topic_prefix) for base in (wire.DEVICES, wire.AGENT_STATUS, wire.OBSERVATIONS)}

    def consumer_properties(self) -> dict[str, Any]:
        properties: dict[str, Any] = dict(_DEFAULT_PROPERTIES)
        properties.update(self.kafka_properties)
        properties.update(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        return properties


class SkippedRecordLog:
    """Logs each skipped record once: the first `individually` one line each, then at most one
    summary line per `interval` seconds (how many more, and the latest), so a topic full of
    garbage cannot flood the log."""

    def __init__(self, logger: logging.Logger = log, individually: int = SKIPPED_LOGGED_INDIVIDUALLY,
                 interval: float = SKIPPED_SUMMARY_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._individually = individually
        self._interval = interval
        self._clock = clock
        self.total = 0
        self._unreported = 0
        self._latest: SkippedRecord | None = None
        self._next_summary = 0.0

    def add(self, skipped: Iterable[SkippedRecord], count: int) -> None:
        """`skipped` describes the batch's skipped records (maybe not all of them); `count` is how many."""
        described = list(skipped)
        for index in range(count):
            self.total += 1
            record = described[index] if index < len(described) else None
            if self.total <= self._individually and record is not None:
                self._logger.warning("skipped invalid record at %s", record.describe())
                if self.total == self._individually:
                    self._logger.warning("further invalid records are summarised every %g s", self._interval)
                    self._next_summary = self._clock() + self._interval
                continue
            self._unreported += 1
            if record is not None:
                self._latest = record
        self.flush()

    def flush(self, force: bool = False) -> None:
        if not self._unreported or (not force and self._clock() < self._next_summary):
            return
        latest = f"; latest at {self._latest.describe()}" if self._latest is not None else ""
        self._logger.warning("skipped %d more invalid record(s) (%d in all)%s", self._unreported, self.total, latest)
        self._unreported = 0
        self._next_summary = self._clock() + self._interval


class KafkaLogThrottle:
    """Stands in for a `logging.Logger` as librdkafka's `logger`: the first line of each kind
    (librdkafka facility, e.g. FAIL, CONNECT) while the feed stays in one state is logged,
    repeats are counted and summarised once the state changes."""

    def __init__(self, logger: logging.Logger = _kafka_log) -> None:
        self._logger = logger
        self._seen: set[tuple[int, str]] = set()
        self._held = 0

    def log(self, level: int, message: str, *args: Any, **kwargs: Any) -> None:
        facility = str(args[0]) if args else message.split(" ", 1)[0]
        if (level, facility) in self._seen:
            self._held += 1
            return
        self._seen.add((level, facility))
        self._logger.log(level, message, *args, **kwargs)

    def state_changed(self, state: str) -> None:
        if self._held:
            self._logger.info("%d similar Kafka client message(s) not repeated; now %s", self._held, state)
        self._held = 0
        self._seen.clear()

    # librdkafka only calls log(); these keep the object usable where a Logger is expected.
    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger API
        return self._logger.isEnabledFor(level)


StatusCallback = Callable[[str, str], None]
BatchCallback = Callable[[Batch], None]


def _noop_status(state: str, detail: str) -> None:
    pass


class Feed:
    def __init__(self, config: FeedConfig, pause: Callable[[], None] = no_pause) -> None:
        self.config = config
        # Called between chunks of decoding: a busy GUI thread gets the interpreter first.
        self.pause = pause
        self.gate = BatchGate()
        self.skipped_log = SkippedRecordLog()
        self._state = ""
        self._detail = ""
        self._detail_kind = ""
        self._last_error = ""
        self.log_throttle = KafkaLogThrottle()
        # Monotonic time of the last answer from the cluster (records or metadata).
        self.last_contact: float | None = None
        self._on_status: StatusCallback = _noop_status
        self._assign_errors: list[str] = []
        # Wall-clock ms when this feed started: records written before it are history.
        self._live_from_ms = 0
        # (topic, partition) -> next offset to read, so nothing is read twice.
        self._positions: dict[tuple[str, int], int] = {}
        # Partitions assigned so far.
        self._assigned: set[tuple[str, int]] = set()
        # Brokers in the cluster metadata last read: with more than one, a failed connection
        # is one broker's, and the others still serve.
        self._known_brokers = 0
        self._last_connect_error = ""

    # -- status -------------------------------------------------------------------------

    def _set_status(self, state: str, detail: str = "") -> None:
        # Once per change of state (waiting: also when the missing topics change); a broker
        # that refuses every retry would otherwise report many times a second.
        # An unreachable broker that turns out to refuse the credentials is news: say it once.
        kind = "auth" if "authentication" in detail else ""
        if state == self._state and (state != WAITING or detail == self._detail) and \
                (state != UNREACHABLE or kind == self._detail_kind):
            return
        self._detail_kind = kind
        self._state = state
        self._detail = detail
        self.log_throttle.state_changed(state)
        self._on_status(state, detail)

    @property
    def state(self) -> str:
        return self._state

    def _contact(self) -> None:
        self.last_contact = time.monotonic()

    def _on_kafka_error(self, error: Any) -> None:
        """librdkafka's error callback (runs inside consume on the feed thread)."""
        from confluent_kafka import KafkaError

        code = error.code()
        if code in (KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self._last_connect_error = error.str()
            # On a cluster that lost one broker the others lead its partitions within seconds:
            # not "unreachable" (librdkafka reports _ALL_BROKERS_DOWN once none is left).
            if self._known_brokers <= 1:
                self._set_status(UNREACHABLE, error.str())
        elif code == KafkaError._ALL_BROKERS_DOWN:
            # Why the last connection failed says more than "3/3 brokers are down".
            self._set_status(UNREACHABLE, self._last_connect_error or error.str())
        elif code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL):
            self._set_status(UNREACHABLE, f"authentication failed: {error.str()}")
        elif error.str() != self._last_error:
            self._last_error = error.str()
            self._on_status("error", error.str())

    # -- assignment ---------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """Compacted topics from the beginning, observations from the history start."""
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException

        observations_topic = self.config.topics()[wire.OBSERVATIONS]
        start = self.config.start_time
        if start is None:
            start = time.time() - self.config.history_seconds
        start_ms = int(start * 1000)
        timed = []
        for partition in partitions:
            position = self._positions.get((partition.topic, partition.partition))
            if position is not None:
                partition.offset = position
            elif partition.topic == observations_topic:
                partition.offset = start_ms
                timed.append(partition)
            else:
                partition.offset = OFFSET_BEGINNING
        if timed:
            try:
                found = offsets_for_times(consumer, timed, timeout=10.0)
            except KafkaException as exc:
                self._assign_errors.append(f"could not look up history offsets, reading new data only: {exc}")
                found = []
                for partition in timed:
                    partition.offset = OFFSET_END
            by_partition = {(p.topic, p.partition): p for p in found}
            for partition in timed:
                located = by_partition.get((partition.topic, partition.partition))
                if located is not None:
                    # -1 (no record that new) is OFFSET_END: read what comes next.
                    partition.offset = located.offset if located.offset >= 0 else OFFSET_END
        # Added to what is assigned already (assign() would replace it and lose the positions).
        consumer.incremental_assign(partitions)
        self._assigned.update((partition.topic, partition.partition) for partition in partitions)
        if partitions:
            self._set_status(CONNECTED, self.config.bootstrap_servers)

    # -- main loop ----------------------------------------------------------------------

    def _create_consumer(self) -> Any:
        properties = self.config.consumer_properties()
        properties["error_cb"] = self._on_kafka_error
        # librdkafka's own log lines go through logging (not raw to stderr); they are
        # delivered inside consume(), on the feed thread.
        properties.setdefault("logger", self.log_throttle)
        from confluent_kafka import Consumer

        return Consumer(properties)

    def run(self, stop_event: threading.Event, on_batch: BatchCallback, on_status: StatusCallback | None = None) -> None:
        """Consume until `stop_event` is set. Raises only for errors the feed cannot survive
        (bad configuration, a fatal client error); the consumer is closed in every case."""
        from confluent_kafka import KafkaError, KafkaException

        self._on_status = on_status or _noop_status
        self._live_from_ms = int(time.time() * 1000)
        topics = self.config.topics()
        self._set_status(CONNECTING, self.config.bootstrap_servers)
        consumer = None
        try:
            try:
                consumer = self._create_consumer()
            except KafkaException as exc:
                raise RuntimeError(f"invalid Kafka settings: {_error_text(exc)}") from exc
            complete = self._probe(consumer, topics)
            last_probe = time.monotonic()
            next_probe = last_probe + (_PARTITION_CHECK_INTERVAL if complete else _PROBE_INTERVAL)
            while not stop_event.is_set():
                if self.gate.in_flight:
                    messages = consumer.consume(num_messages=CONSUME_BATCH, timeout=GATHER_WHILE_BUSY)
                else:
                    messages = consumer.consume(num_messages=1, timeout=CONSUME_TIMEOUT)
                    if messages:
                        messages.extend(consumer.consume(num_messages=CONSUME_BATCH - 1, timeout=0))
                self.pause()
                records: list[Record] = []
                append = records.append
                problems: list[str] = self._assign_errors[:]
                self._assign_errors.clear()
                # The oldest Kafka timestamp of the batch: older than the feed is history.
                oldest_ms = self._live_from_ms
                for message in messages:
                    error = message.error()
                    if error is None:
                        stamp_ms = message.timestamp()[1]
                        if 0 < stamp_ms < oldest_ms:
                            oldest_ms = stamp_ms
                        # tuple.__new__: a NamedTuple's own constructor is Python code, and
                        # this runs for every record of the stream.
                        append(_new_record(Record, (message.topic(), message.partition(), message.offset(),
                                                    message.key(), message.value(), stamp_ms)))
                        continue
                    if error.fatal():
                        raise KafkaException(error)
                    if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                        # The producer has not created the topics yet; they are picked up later.
                        self._set_status(WAITING, f"waiting for topic {message.topic()}")
                        continue
                    problems.append(f"Kafka error on {message.topic()} partition {message.partition()}: {error.str()}")
                for record in records:
                    # In partition order, so the last of each partition's records wins.
                    self._positions[(record.topic, record.partition)] = record.offset + 1
                if records:
                    self._contact()
                    self._set_status(CONNECTED, self.config.bootstrap_servers)
                if records or problems:
                    batch = build_batch(records, self.config.topic_prefix, self.pause)
                    if batch.skipped_count:
                        self.skipped_log.add(batch.skipped, batch.skipped_count)
                    if oldest_ms < self._live_from_ms:
                        batch = dataclasses.replace(batch, catching_up=True)
                    if problems:
                        batch = dataclasses.replace(batch, errors=tuple(problems) + batch.errors)
                    ready = self.gate.offer(batch)
                    if ready is not None:
                        on_batch(ready)
                pending = self.gate.take_pending()
                if pending is not None:
                    on_batch(pending)
                self.skipped_log.flush()
                moment = time.monotonic()
                quiet = self.last_contact is None or moment - self.last_contact >= LIVENESS_PROBE_AFTER
                if moment >= next_probe or (quiet and moment >= last_probe + LIVENESS_PROBE_AFTER):
                    complete = self._probe(consumer, topics)
                    last_probe = time.monotonic()
                    steady = complete and self._state == CONNECTED
                    next_probe = last_probe + (_PARTITION_CHECK_INTERVAL if steady else _PROBE_INTERVAL)
                self._check_liveness()
        finally:
            self.skipped_log.flush(force=True)
            if consumer is not None:
                try:
                    consumer.close()
                except Exception:  # noqa: BLE001 - closing must not hide the original error
                    pass
            self._set_status(STOPPED, "")

    def _check_liveness(self) -> None:
        """Connected, but no answer for a while: stalled, then unreachable."""
        if self.last_contact is None or self._state not in (CONNECTED, WAITING, STALLED):
            return
        silent = time.monotonic() - self.last_contact
        if silent >= UNREACHABLE_AFTER:
            self._set_status(UNREACHABLE, f"no answer from {self.config.bootstrap_servers} for {silent:.0f} s")
        elif silent >= STALLED_AFTER and self._state != STALLED:
            self._set_status(STALLED, f"no answer for {silent:.0f} s")

    def _probe(self, consumer: Any, topics: Mapping[str, str]) -> bool:
        """Look at the cluster metadata: tells "broker back" and "topics not created yet" apart,
        and assigns partitions not assigned yet. True when every topic was there."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            metadata = consumer.list_topics(timeout=2.0)
        except KafkaException as exc:
            if self._state in (CONNECTED, WAITING, STALLED) and self.last_contact is not None:
                # Answered before: stalled until the silence is long enough to call it unreachable.
                self._check_liveness()
                return False
            # The error callback has usually said why already (refused, authentication...).
            if self._state != UNREACHABLE:
                error = exc.args[0] if exc.args else None
                if error is not None and hasattr(error, "code"):
                    self._on_kafka_error(error)
                if self._state != UNREACHABLE:
                    self._set_status(UNREACHABLE, _error_text(exc))
            return False
        self._known_brokers = len(metadata.brokers)
        self._contact()
        missing = []
        new = []
        for name in topics.values():
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None or not topic.partitions:
                missing.append(name)
                continue
            new += [TopicPartition(name, number) for number in sorted(topic.partitions)
                    if (name, number) not in self._assigned]
        if new:
            self._on_assign(consumer, new)
        if missing:
            self._set_status(WAITING, "waiting for topics: " + ", ".join(missing))
        elif self._state != CONNECTED:
            self._set_status(CONNECTED, self.config.bootstrap_servers)
        return not missing
