"""Writing records into a real broker for the desktop's Kafka tests: the product's topics
(created as the producer creates them), and the recorded NIST data as the producer writes it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from confluent_kafka import Producer

import recorded_nist as testing
from producer import wire
from producer.topics import ensure_topics

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Written:
    topic: str
    partition: int
    offset: int

    @property
    def where(self) -> str:
        """How the desktop names a record's position (topic partition P offset O)."""
        return f"{self.topic} partition {self.partition} offset {self.offset}"


def create_topics(client_config: Mapping[str, str], prefix: str) -> None:
    ensure_topics(dict(client_config), prefix)


def produce(client_config: Mapping[str, str], messages: Iterable[Message]) -> list[Written]:
    """Write `messages` in order (acks=all) and return where each one landed."""
    messages = list(messages)
    landed: list[Written | None] = [None] * len(messages)
    failures: list[str] = []
    # Idempotent: a retried request (a topic just created has no leader for a moment) must not
    # land after the ones behind it, or a machine's records would arrive out of order.
    producer = Producer({**client_config, "acks": "all", "enable.idempotence": True, "linger.ms": 5})

    def report(index: int):
        def on_delivery(error, message) -> None:
            if error is not None:
                failures.append(error.str())
            else:
                landed[index] = Written(message.topic(), message.partition(), message.offset())
        return on_delivery

    for index, message in enumerate(messages):
        options: dict[str, Any] = {"on_delivery": report(index)}
        if message.timestamp_ms is not None:
            options["timestamp"] = message.timestamp_ms
        while True:
            try:
                producer.produce(message.topic, key=message.key, value=message.value, **options)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0, "records still unsent after 60 s"
    assert not failures, failures[:5]
    assert all(written is not None for written in landed)
    return landed  # type: ignore[return-value]


def device_messages(devices: Iterable[Mapping[str, Any]], prefix: str, timestamp_ms: int | None = None) -> list[Message]:
    return [Message(wire.topic_name(wire.DEVICES, prefix), wire.device_key(device), wire.encode(device), timestamp_ms)
            for device in devices]


def observation_messages(observations: Iterable[Mapping[str, Any]], prefix: str,
                         timestamp_ms: int | None = None) -> list[Message]:
    return [Message(wire.topic_name(wire.OBSERVATIONS, prefix), wire.observation_key(observation),
                    wire.encode(observation), timestamp_ms)
            for observation in observations]


def mazak03_observations(devices, first_line: int = 1, last_line: int | None = None, first_sequence: int = 1):
    device = testing.device_named(devices, "Mazak03")
    return [o for _, o in testing.shdr_observations(testing.nist_shdr(MAZAK03_DAY), device, first_line, last_line,
                                                    first_sequence=first_sequence)]


def hurco_unavailable(devices, timestamp: str = "2016-11-16T20:00:00Z"):
    return [o for d in devices if d["device_name"].startswith("Hurco")
            for o in testing.unavailable_observations(d, timestamp)]
