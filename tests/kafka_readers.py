"""Reading the product's topics back in tests, always up to an end and never "until quiet".

Every read goes through the producer's own `read_to_end`: it takes each partition's end
offset when the read starts (under `read_committed` the last stable offset, so an open
transaction is neither waited for nor seen; under `read_uncommitted` the high watermark) and
stops there. So a read finishes as soon as the data that existed when it began is in, a
loaded machine only makes it slower, and what it returns does not depend on how long a test
waits. `read_until` repeats such bounded reads until a condition holds, for tests that wait
for the product to write something; `read_offsets` reads one partition between two offsets
the test took from the broker.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from producer import wire
from producer.topics import read_to_end

# What a topic the product has only just created answers until its partitions have leaders.
NOT_READY_YET = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                 KafkaError.UNKNOWN_TOPIC_OR_PART}

# librdkafka's lines of the tests' own clients go through logging, which pytest shows for a
# failing test, instead of flooding stderr.
KAFKA_LOG = logging.getLogger("tests.kafka")


def read_topic(bootstrap: str, topic: str, isolation: str = "read_committed", timeout: float = 120.0) -> list:
    """Every message of `topic` up to the end offsets it had when the read began (none if it is missing)."""
    return list(read_to_end({"bootstrap.servers": bootstrap, "logger": KAFKA_LOG}, topic, timeout, isolation))


def read_values(bootstrap: str, topic: str, isolation: str = "read_committed") -> list[Any]:
    """The decoded JSON values of `read_topic`, in partition order."""
    return [wire.decode(message.value()) for message in read_topic(bootstrap, topic, isolation)]


def latest_by_key(bootstrap: str, topic: str) -> dict[str, Any]:
    """Key -> the last committed value of a compacted topic (tombstones remove the key)."""
    latest: dict[str, Any] = {}
    for message in read_topic(bootstrap, topic):
        key = message.key().decode("utf-8")
        value = wire.decode(message.value())
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = value
    return latest


def latest_checkpoint(bootstrap: str, prefix: str, agent_url: str) -> dict | None:
    """The agent's last committed checkpoint, or None when it has none yet."""
    return latest_by_key(bootstrap, wire.topic_name(wire.CHECKPOINTS, prefix)).get(agent_url)


def read_until(bootstrap: str, topic: str, condition: Callable[[list], bool], timeout: float, what: str,
               step: float = 0.2) -> list:
    """Bounded reads of `topic` repeated until `condition(messages)` holds; the messages of that read.

    A topic the product is still creating counts as empty (its partitions have no leader for a
    moment). Fails with `what` and the outcome of the last read after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            messages = read_topic(bootstrap, topic)
            last = f"{len(messages)} messages in {topic} at the last read"
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None or error.code() not in NOT_READY_YET:
                raise
            messages, last = None, f"the last read of {topic} failed: {error.str()}"
        if messages is not None and condition(messages):
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last})")
        time.sleep(step)


def read_offsets(bootstrap: str, topic: str, partition: int, start: int, end: int,
                 isolation: str = "read_uncommitted", timeout: float = 120.0) -> list:
    """The messages of one partition from offset `start` up to (not including) `end`, which the
    caller took from the broker (e.g. a high watermark): the read stops there, or at the end of
    the partition, whichever comes first. Control records (transaction markers) are never returned."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "logger": KAFKA_LOG, "group.id": f"tests-range-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "isolation.level": isolation, "enable.partition.eof": True,
    })
    messages = []
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic}[{partition}] offsets {start}..{end - 1} did not finish "
                                     f"within {timeout:.0f} s ({len(messages)} read)")
            for message in consumer.consume(num_messages=10000, timeout=0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return messages
                    raise KafkaException(error)
                if message.offset() < end:
                    messages.append(message)
                if message.offset() >= end - 1:
                    return messages
    finally:
        consumer.close()


class CheckpointTail:
    """Tails the committed checkpoints topic: the latest next_sequence of every agent.

    `through_broker_loss`: a broker that goes away is not an error (the consumer moves to the
    partitions' new leaders by itself); otherwise any consumer error fails the test.
    """

    def __init__(self, bootstrap: str, prefix: str, through_broker_loss: bool = False):
        from confluent_kafka import OFFSET_BEGINNING

        topic = wire.topic_name(wire.CHECKPOINTS, prefix)
        self._through_broker_loss = through_broker_loss
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{prefix}",
                                   "isolation.level": "read_committed", "enable.auto.commit": False})
        metadata = self._consumer.list_topics(topic, timeout=30)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions])
        self.latest: dict[str, int] = {}

    def poll(self) -> dict[str, int]:
        for message in self._consumer.consume(num_messages=5000, timeout=0.2):
            error = message.error()
            if error is not None:
                if self._through_broker_loss and (error.retriable() or error.code() < 0):
                    continue
                raise KafkaException(error)
            value = json.loads(message.value())
            self.latest[value["agent"]] = value["next_sequence"]
        return self.latest

    def close(self) -> None:
        self._consumer.close()
