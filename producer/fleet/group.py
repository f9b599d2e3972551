"""A producer process's membership in its group: which of the plant's agents it follows.

The plant's agent list is the compacted agents topic (`mtconnect.agents`, key = agent URL,
value = its settings, tombstone = removed). Every producer process of a group subscribes to it
with one Kafka consumer in the consumer group `<topic prefix>mtconnect.producers.<group>`, so
Kafka's group coordinator divides the topic's partitions among the live processes (cooperative
sticky assignment: a rebalance moves only the partitions that change hands). A process follows
the agents whose records are in its partitions, reading each assigned partition from its
beginning (offsets are never committed), so it knows every agent of the partition and sees
additions, setting changes and removals as they are written, without a restart.

Each assigned partition is one lane (`producer.fleet.lanes`) whose transactional id belongs to
the (group, partition): `<transactional_id_prefix>-<sha256(topic prefix|group)[:12]>-p<partition>`.
When a process dies or leaves, the coordinator gives its partitions to the others after the
session timeout (at once when it leaves cleanly); the new owner's `init_transactions` with that
id fences the old owner, so a paused zombie can never commit again, and settles whatever it
left open before the lane reads the checkpoints back. The followers then resume from the
committed checkpoints: exactly once, across processes. A lane fenced while still assigned
waits for the group to decide instead of fencing back.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from producer import wire
from producer.topics import kafka_log

log = logging.getLogger("producer.group")


def group_id(config) -> str:
    return f"{config.topic_prefix}mtconnect.producers.{config.group}"


def lane_id(partition: int) -> str:
    return f"p{partition}"


def transactional_id(config, partition: int) -> str:
    digest = hashlib.sha256(f"{config.topic_prefix}|{config.group}".encode()).hexdigest()[:12]
    return f"{config.transactional_id_prefix}-{digest}-p{partition}"


def agent_settings(value: Any) -> dict[str, Any]:
    """The settings of an agent record's value; ValueError names what is wrong."""
    if not isinstance(value, dict):
        raise ValueError("the value is not a JSON object")
    settings = value.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise ValueError("`settings` is not a JSON object")
    unknown = set(settings) - set(wire.AGENT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {list(wire.AGENT_SETTINGS)}")
    for name in ("interval_ms", "heartbeat_ms", "count"):
        if name in settings and (not isinstance(settings[name], int) or isinstance(settings[name], bool)
                                 or settings[name] < (0 if name == "interval_ms" else 1)):
            raise ValueError(f"settings.{name}={settings[name]!r} is not a valid whole number")
    for name in ("http_timeout_s", "stream_idle_s"):
        if name in settings and (not isinstance(settings[name], (int, float)) or isinstance(settings[name], bool)
                                 or settings[name] <= 0):
            raise ValueError(f"settings.{name}={settings[name]!r} is not a positive number of seconds")
    if "verify_tls" in settings and not isinstance(settings["verify_tls"], (bool, str)):
        raise ValueError("settings.verify_tls must be true, false or the path of a CA file")
    return dict(settings)


class AgentGroup:
    """Runs the group consumer on its own thread and drives the engine's lanes and followers."""

    def __init__(self, config, engine):
        self.config = config
        self.engine = engine
        self.topic = wire.topic_name(wire.AGENTS, config.topic_prefix)
        self.group_id = group_id(config)
        self._closing = threading.Event()
        self._session_s = config.group_session_timeout_ms / 1000.0
        self.assigned: set[int] = set()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="group", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout: float = 60.0) -> None:
        """Leave the group (the others take this process's agents over at once) and stop its lanes."""
        self._closing.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    # -- the group's thread

    def _consumer(self) -> Consumer:
        session_ms = self.config.group_session_timeout_ms
        properties = self.config.kafka_properties()
        properties.update({
            "group.id": self.group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(300, session_ms // 5),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "logger": kafka_log,
            "error_cb": self._on_error,
        })
        return Consumer(properties)

    def _on_error(self, error: KafkaError) -> None:
        log.warning("event=group_kafka_error code=%s error=%s", error.name(), error.str())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted(tp.partition for tp in partitions)
        if not numbers:
            return
        log.info("event=partitions_assigned group=%s partitions=%s", self.group_id, numbers)
        for number in numbers:
            self.assigned.add(number)
            self.engine.open_lane(lane_id(number), transactional_id(self.config, number),
                                  fenced_pause_s=1.5 * self._session_s)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition], lost: bool = False) -> None:
        numbers = sorted(tp.partition for tp in partitions)
        if not numbers:
            return
        if lost:
            log.warning("event=partitions_lost group=%s partitions=%s: this process was taken out of the group "
                        "(no heartbeat within %.0f s); their agents are followed by others now",
                        self.group_id, numbers, self._session_s)
        else:
            log.info("event=partitions_revoked group=%s partitions=%s", self.group_id, numbers)
        for number in numbers:
            self.assigned.discard(number)
            self.engine.close_lane(lane_id(number))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions, lost=True)

    def _run(self) -> None:
        consumer = None
        try:
            consumer = self._consumer()
            consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_lost)
            log.info("event=group_joining group=%s topic=%s session_timeout_s=%.0f",
                     self.group_id, self.topic, self._session_s)
            while not self._closing.is_set():
                messages = consumer.consume(num_messages=1000, timeout=0.5)
                changes = []
                for message in messages:
                    change = self._change(message)
                    if change is not None:
                        changes.append(change)
                if changes:
                    self.engine.apply_agent_changes(changes)
        except BaseException as exc:  # the service notices and stops with an error
            self.failure = exc
            log.exception("event=group_failed group=%s", self.group_id)
        finally:
            if consumer is not None:
                try:
                    consumer.close()  # revokes every partition (closing their lanes) and leaves the group
                except (KafkaException, RuntimeError) as exc:
                    log.warning("event=group_close_failed error=%s", exc)
                for number in sorted(self.assigned):
                    self.engine.close_lane(lane_id(number))
                self.assigned.clear()
            log.info("event=group_left group=%s", self.group_id)

    def _change(self, message) -> tuple[str, str, str, dict[str, Any] | None] | None:
        """(agent, lane, "add" | "remove", settings) for one agents-topic record, None to ignore it."""
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("event=agents_read_error error=%s", error.str())
            return None
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        key = message.key()
        try:
            agent = wire.normalise_agent_url(key.decode("utf-8")) if key else ""
        except UnicodeDecodeError:
            agent = ""
        if not agent.startswith(("http://", "https://")):
            log.error("event=bad_agent_record record=%s key=%r: the key must be the agent's http(s) URL", where, key)
            return None
        lane = lane_id(message.partition())
        if message.value() is None:
            return agent, lane, "remove", None
        try:
            settings = agent_settings(wire.decode(message.value()))
        except ValueError as exc:
            log.error("event=bad_agent_record record=%s agent=%s error=%s (the agent is not followed until its "
                      "record is written again)", where, agent, exc)
            return agent, lane, "remove", None
        return agent, lane, "add", settings
