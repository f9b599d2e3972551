"""The product's Kafka topics: creating them, reading one to its end, and the shared checkpoints.

`read_to_end` reads a topic from its beginning up to the end offsets taken when the read
starts (under `read_committed`, each partition's last stable offset), so a partition that
other producers keep writing to is still read in bounded time: what they add meanwhile is
newer than the read and not waited for. `CheckpointStore` is the one reader of the
checkpoints topic in a producer process: every follower that needs its committed
checkpoint asks the store, and all requests that arrive while a read is running are served
together by the next read, which starts after each of them asked (so it sees every commit
that was settled before the request, e.g. by the caller's `init_transactions`). The store's
reads first wait for the transactions open in the topic to be decided (`wait_until_stable`):
several producers commit into the same partitions, and a reader stopped at another's open
transaction would not see checkpoints committed after it.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from producer import wire

log = logging.getLogger("producer.topics")
# librdkafka's own log lines go through Python logging instead of straight to stderr.
kafka_log = logging.getLogger("producer.kafka")

# Device models of real machines run to megabytes (a 12,000-item probe is over 1 MB); the
# devices topic and the producers accept records up to this size.
MAX_DEVICE_RECORD_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Checkpoint:
    instance_id: int
    next_sequence: int


def topic_configs(base: str, replication: int) -> dict[str, str]:
    """Server-side settings of one of the product's topics on a cluster of `replication` copies."""
    config = {"cleanup.policy": "compact"} if base in wire.COMPACTED_TOPICS or base == wire.AGENTS else {}
    if base == wire.DEVICES:
        config["max.message.bytes"] = str(MAX_DEVICE_RECORD_BYTES)
    if base == wire.CHECKPOINTS:
        # A plant commits a checkpoint per agent every few hundred milliseconds, and a producer
        # that takes agents over reads this topic whole: small segments let the cleaner keep it
        # near one record per agent instead of hours of history.
        config.update({"segment.bytes": str(8 * 1024 * 1024), "segment.ms": "600000",
                       "min.cleanable.dirty.ratio": "0.2"})
    if replication > 1:
        config["min.insync.replicas"] = "2"
    return config


def ensure_topics(admin_config: dict[str, str], prefix: str, observation_partitions: int = 6,
                  timeout: float = 30.0, agents_partitions: int = 6) -> None:
    """Create the product's topics if missing: compaction where a topic is keyed by identity.

    The agents topic (`mtconnect.agents`) gets `agents_partitions` partitions: at most that many
    producer processes can share a plant's agents."""
    admin = AdminClient({**admin_config, "logger": kafka_log})
    metadata = admin.list_topics(timeout=timeout)
    replication = min(3, max(1, len(metadata.brokers)))
    wanted = []
    devices_topic = wire.topic_name(wire.DEVICES, prefix)
    if devices_topic in metadata.topics:
        _raise_record_limit(admin, devices_topic, MAX_DEVICE_RECORD_BYTES, timeout)
    for base in (*wire.ALL_TOPICS, wire.AGENTS):
        name = wire.topic_name(base, prefix)
        if name in metadata.topics:
            continue
        partitions = {wire.OBSERVATIONS: observation_partitions, wire.GAPS: 1,
                      wire.AGENTS: agents_partitions}.get(base, 3)
        wanted.append(NewTopic(name, num_partitions=partitions, replication_factor=replication,
                               config=topic_configs(base, replication)))
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        log.info("event=topic_ready topic=%s", name)


def _raise_record_limit(admin: AdminClient, topic: str, limit: int, timeout: float) -> None:
    """Let a devices topic created elsewhere (or by an older version) take large device models."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
        current = int(entries["max.message.bytes"].value)
        if current >= limit:
            return
        change = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry("max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([change], request_timeout=timeout)[change].result(timeout)
        log.info("event=topic_limit_raised topic=%s max.message.bytes=%d (was %d)", topic, limit, current)
    except (KafkaException, KeyError, ValueError) as exc:
        log.warning("event=topic_limit_unchanged topic=%s error=%s: device models larger than the topic's "
                    "max.message.bytes will be refused; ask the cluster's administrator to set "
                    "max.message.bytes=%d on it", topic, exc, limit)


def _timed_out(topic: str, timeout: float, pending: dict[int, int]) -> KafkaException:
    return KafkaException(KafkaError(
        KafkaError._TIMED_OUT,
        f"reading {topic} up to its end offsets did not finish within {timeout} s "
        f"(partitions {sorted(pending)} still below {dict(sorted(pending.items()))})"))


# What a partition answers for a moment after its topic was created.
_NO_LEADER_YET = frozenset((KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                           KafkaError.UNKNOWN_TOPIC_OR_PART))


def _end_offsets(consumer: Consumer, partition: TopicPartition, deadline: float) -> tuple[int, int]:
    """(low, high) of a partition: a ListOffsets request with the consumer's isolation level, so
    under read_committed "high" is the last stable offset. A partition whose leader is not known
    yet (a topic created a moment ago) is asked again until the deadline."""
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=max(0.1, deadline - time.monotonic()),
                                                  cached=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            transient = isinstance(error, KafkaError) and (error.retriable() or error.code() in _NO_LEADER_YET)
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_to_end(client_config: dict[str, Any], topic: str, timeout: float = 30.0,
                isolation: str = "read_committed") -> Iterator[Any]:
    """Every message of `topic` from its beginning up to the end offsets it had when the read began.

    The end offset of each partition is taken first (with `read_committed` the last stable
    offset: an open transaction is never waited for and never seen). A partition is done when
    a message at or past its last offset arrives, or the consumer reports reaching the end of
    the partition (which covers a range that ends in transaction markers): messages written
    after the read began are not waited for, so a busy partition does not keep the read from
    finishing. `client_config` gives the connection (bootstrap servers, security). A missing
    topic yields nothing; not reaching the end offsets within `timeout` raises `KafkaException`.
    """
    config = {
        "logger": kafka_log,
        **client_config,
        "group.id": f"machine-monitor-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }
    consumer = Consumer(config)
    deadline = time.monotonic() + timeout
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            return
        pending: dict[int, int] = {}  # partition -> end offset to reach
        for partition in metadata.topics[topic].partitions:
            low, high = _end_offsets(consumer, TopicPartition(topic, partition), deadline)
            if high > low:
                pending[partition] = high
        if not pending:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        while pending:
            if time.monotonic() > deadline:
                raise _timed_out(topic, timeout, pending)
            done: list[int] = []
            for message in consumer.consume(num_messages=10000, timeout=0.2):
                partition = message.partition()
                end = pending.get(partition)
                if end is None:
                    continue  # finished already; a fetch in flight still delivered this
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        done.append(partition)
                        continue
                    raise KafkaException(error)
                offset = message.offset()
                if offset < end:
                    yield message
                if offset >= end - 1:
                    done.append(partition)
            for partition in done:
                if pending.pop(partition, None) is not None:
                    consumer.pause([TopicPartition(topic, partition)])
    finally:
        consumer.close()


def wait_until_stable(client_config: dict[str, Any], topic: str, timeout: float = 30.0) -> float:
    """Wait until every transaction that had written to `topic` when the call began is decided.

    Under `read_committed` a reader sees nothing past the first record of a transaction that
    is still open, not even records committed after it. A checkpoint read that stopped at such
    a transaction could miss an agent's newer checkpoints (committed by another producer after
    the open transaction began) and resume too early. So first the high watermarks are taken
    (read_uncommitted), and then the last stable offsets are watched until they reach them.
    A live producer's transaction is decided within its commit interval; one left open by a
    producer that died is settled when its successor calls `init_transactions`, or aborted by
    the broker after `transaction.timeout.ms`. Returns the seconds waited; raises
    `KafkaException` after `timeout`.
    """
    from confluent_kafka import IsolationLevel
    from confluent_kafka.admin import OffsetSpec

    started = time.monotonic()
    deadline = started + timeout
    admin = AdminClient({**client_config, "logger": kafka_log})
    metadata = admin.list_topics(topic, timeout=timeout)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        return 0.0
    partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]

    def ends(isolation) -> dict[int, int]:
        request = {tp: OffsetSpec.latest() for tp in partitions}
        futures = admin.list_offsets(request, isolation_level=isolation,
                                     request_timeout=max(1.0, deadline - time.monotonic()))
        return {tp.partition: future.result().offset for tp, future in futures.items()}

    high = ends(IsolationLevel.READ_UNCOMMITTED)
    warned = False
    while True:
        stable = ends(IsolationLevel.READ_COMMITTED)
        behind = {p: (stable[p], high[p]) for p in high if stable.get(p, 0) < high[p]}
        if not behind:
            return time.monotonic() - started
        now = time.monotonic()
        if now > deadline:
            raise KafkaException(KafkaError(
                KafkaError._TIMED_OUT,
                f"{topic}: transactions still open after {timeout} s in partitions "
                f"{ {p: f'stable {s} < end {h}' for p, (s, h) in sorted(behind.items())} }"))
        if not warned and now - started > 2.0:
            warned = True
            log.warning("event=checkpoints_wait topic=%s partitions=%s: a transaction is still open (a producer "
                        "stopped mid-commit; its successor settles it, or the broker aborts it after "
                        "transaction.timeout.ms)", topic, sorted(behind))
        time.sleep(0.05)


def read_checkpoints(consumer_config: dict[str, Any], prefix: str, timeout: float = 30.0,
                     settled: bool = False) -> dict[str, Checkpoint]:
    """The last committed checkpoint of every agent (read_committed, up to the end offsets).

    With `settled`, every transaction open when the read begins is waited for first
    (`wait_until_stable`), so no committed checkpoint hides behind one."""
    checkpoints: dict[str, Checkpoint] = {}
    topic = wire.topic_name(wire.CHECKPOINTS, prefix)
    if settled:
        wait_until_stable(consumer_config, topic, timeout)
    for message in read_to_end(consumer_config, topic, timeout):
        key = message.key()
        try:
            value = wire.decode(message.value())
            agent = key.decode("utf-8")
            if value is None:
                checkpoints.pop(agent, None)
                continue
            checkpoints[agent] = Checkpoint(int(value["instance_id"]), int(value["next_sequence"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            # Not ours (another tool wrote here) or damaged: say where, and never let it stop the rest.
            log.error("event=bad_checkpoint topic=%s partition=%d offset=%d error=%s",
                      topic, message.partition(), message.offset(), exc)
    return checkpoints


class CheckpointStore:
    """The committed checkpoints of one producer process, read once for all its followers.

    `get(agent)` returns the agent's checkpoint from a read of the topic that started after
    the call: all callers waiting at the same time share one read, so a process that starts a
    thousand followers reads the checkpoints topic once or twice, not a thousand times.
    """

    def __init__(self, client_config: dict[str, Any], prefix: str, timeout: float = 30.0):
        self._config = client_config
        self._prefix = prefix
        self._timeout = timeout
        self._condition = threading.Condition()
        self._reads_started = 0
        self._reads_finished = 0
        self._reading = False
        self._checkpoints: dict[str, Checkpoint] = {}
        self._error: BaseException | None = None
        self._error_read = 0
        self.reads = 0  # completed reads, for tests and logs

    def get(self, agent: str) -> Checkpoint | None:
        agent = agent.rstrip("/")
        with self._condition:
            needed = self._reads_started + 1  # a read that starts after this call
            while self._reads_finished < needed:
                if not self._reading:
                    self._reading = True
                    self._reads_started += 1
                    number = self._reads_started
                    self._condition.release()
                    try:
                        checkpoints, error = self._read(), None
                    except BaseException as exc:  # handed to every caller of this read
                        checkpoints, error = None, exc
                    finally:
                        self._condition.acquire()
                    self._reading = False
                    self._reads_finished = number
                    if error is None:
                        self._checkpoints = checkpoints
                        self.reads += 1
                    else:
                        self._error, self._error_read = error, number
                    self._condition.notify_all()
                else:
                    self._condition.wait()
            if self._error is not None and self._error_read == self._reads_finished:
                raise self._error
            return self._checkpoints.get(agent)

    def snapshot(self) -> dict[str, Checkpoint]:
        """Every agent's checkpoint, from a read that started after this call."""
        self.get("")
        with self._condition:
            return dict(self._checkpoints)

    def _read(self) -> dict[str, Checkpoint]:
        started = time.monotonic()
        checkpoints = read_checkpoints(self._config, self._prefix, self._timeout, settled=True)
        log.info("event=checkpoints_read agents=%d seconds=%.2f", len(checkpoints), time.monotonic() - started)
        return checkpoints
