"""Where the feed starts reading when partitions are assigned, while the broker's leadership
is still settling (a topic just made, a broker just restarted). Pure unit tests: the consumer
is a stand-in that answers the offset lookup the way librdkafka does."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from desktop.core.feed import Feed, FeedConfig


class SettlingConsumer:
    """Answers `offsets_for_times` with `errors` first (one per call), then with offset 40."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.lookups = 0
        self.assigned: list[TopicPartition] = []

    def offsets_for_times(self, partitions, timeout):
        self.lookups += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return [TopicPartition(p.topic, p.partition, 40) for p in partitions]

    def incremental_assign(self, partitions):
        self.assigned.extend(partitions)


def assign(consumer: SettlingConsumer) -> tuple[Feed, dict[str, int]]:
    config = FeedConfig("127.0.0.1:9", "t.", history_seconds=600)
    feed = Feed(config)
    topics = config.topics()
    feed._on_assign(consumer, [TopicPartition(topics["mtconnect.observations"], 0),
                               TopicPartition(topics["mtconnect.devices"], 0)])
    return feed, {p.topic: p.offset for p in consumer.assigned}


def test_a_partition_without_a_settled_leader_is_asked_again_and_history_is_read():
    consumer = SettlingConsumer(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    feed, offsets = assign(consumer)
    assert feed._assign_errors == [], "a leader that settles within seconds is not an error the user sees"
    assert offsets == {"t.mtconnect.observations": 40, "t.mtconnect.devices": OFFSET_BEGINNING}
    assert consumer.lookups == 3


def test_an_error_that_is_not_about_leadership_is_reported_at_once():
    consumer = SettlingConsumer(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    began = time.monotonic()
    feed, offsets = assign(consumer)
    assert consumer.lookups == 1 and time.monotonic() - began < 5
    assert len(feed._assign_errors) == 1 and "reading new data only" in feed._assign_errors[0]
    assert offsets["t.mtconnect.devices"] == OFFSET_BEGINNING


def test_a_leader_that_never_settles_gives_up_after_the_lookup_timeout():
    import desktop.core.feed as feed_module

    consumer = SettlingConsumer(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    began = time.monotonic()
    with pytest.raises(KafkaException):
        feed_module.offsets_for_times(consumer, [TopicPartition("t.mtconnect.observations", 0, 0)], timeout=1.0)
    assert time.monotonic() - began < 30  # bounded by the timeout, not by the number of errors
    assert 2 <= consumer.lookups < 1000
