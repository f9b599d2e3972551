"""The producer service: follows MTConnect agents and moves every observation into Kafka.

`ProducerService.run()/stop()` runs until SIGTERM. Every agent of the process is followed on
one event loop (`producer.fleet.engine`), and a few transactional lanes commit the parts of
many agents together, each transaction carrying those agents' observations and their
checkpoints `{agent, instance_id, next_sequence}` (`producer.fleet.lanes`), so the checkpoint
never runs ahead of or behind the observations it covers, and commits per second do not grow
with the number of agents. Which agents: either the configured ones (`--agent`, `--config`),
spread over at most `static_lanes` lanes whose transactional ids follow from their agents (a
restart with the same agents fences its predecessor), or, with `--group NAME`, this process's
share of the plant's agents topic: the processes of a group divide its partitions through
Kafka's consumer-group membership, one lane per partition with a transactional id per (group,
partition), so that a process taking a partition over fences the one that had it
(`producer.fleet.group`). On start the service waits for the cluster (`wait_for_kafka`) and
creates the product's topics.
"""
from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
import random
import zlib
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from producer.config import ConfigError, ServiceConfig, build_config
from producer.topics import (  # noqa: F401 - read_to_end and read_checkpoints are used through here too
    MAX_DEVICE_RECORD_BYTES,
    Checkpoint,
    CheckpointStore,
    ensure_topics,
    kafka_log,
    read_checkpoints,
    read_to_end,
)

log = logging.getLogger("producer.service")

def utc_now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Backoff:
    """Exponential backoff with full jitter; never gives up, resets after a success."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0):
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class KafkaAuthError(RuntimeError):
    """Kafka refused our credentials or its certificate: retrying cannot help, the configuration must change."""


def _is_auth_error(error: KafkaError) -> bool:
    text = error.str().lower()
    return (error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)
            or "certificate verify failed" in text or "authentication failed" in text)


def _describe_auth_error(properties: dict[str, Any], error: KafkaError) -> str:
    bootstrap = properties.get("bootstrap.servers", "?")
    if "certificate" in error.str().lower():
        from producer import kafka_tls

        # librdkafka words an unknown CA and a wrong host name alike: find out which it is.
        problem = kafka_tls.diagnose(properties, error.str())
        if problem is not None:
            return kafka_tls.describe(problem, properties)
        return (f"Kafka TLS certificate of {bootstrap} could not be verified: {error.str()} "
                f"(give the cluster's CA with -X ssl.ca.location=FILE, and connect with a host name "
                f"the certificate lists)")
    user = properties.get("sasl.username", "<no sasl.username>")
    mechanism = properties.get("sasl.mechanism", properties.get("sasl.mechanisms", "GSSAPI"))
    return (f"Kafka authentication failed for user {user!r} ({mechanism}) at {bootstrap}: {error.str()} "
            f"(check sasl.username and sasl.password)")


def wait_for_kafka(properties: dict[str, Any], stop: threading.Event, attempt_timeout: float = 2.0) -> bool:
    """Block until the cluster answers a metadata request; False if `stop` was set first.

    An unreachable cluster is retried with backoff for as long as it takes (a broker may be
    restarting); refused credentials or an unverifiable certificate raise `KafkaAuthError`
    within a few seconds, because waiting cannot fix them.
    """
    from producer import kafka_tls

    auth_errors: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if _is_auth_error(error):
            auth_errors.append(error)
        else:
            log.warning("event=kafka_error code=%s error=%s", error.name(), error.str())

    admin = AdminClient({**properties, "error_cb": on_error,
                         "logger": kafka_tls.HandshakeFailuresAtDebug(kafka_log)})
    backoff = Backoff(0.5, 15.0)
    while not stop.is_set():
        try:
            admin.list_topics(timeout=attempt_timeout)
            return True
        except KafkaException as exc:
            admin.poll(0)
            if auth_errors:
                raise KafkaAuthError(_describe_auth_error(properties, auth_errors[0])) from exc
            delay = backoff.next_delay()
            log.warning("event=kafka_unavailable bootstrap=%s error=%s retry_in=%.1fs",
                        properties.get("bootstrap.servers"), exc.args[0].str() if exc.args else exc, delay)
            if stop.wait(delay):
                break
    return False



def static_lanes(config: ServiceConfig) -> dict[str, tuple[str, list[str]]]:
    """Lane id -> (transactional id, agents) for the configured agents of a process without a group.

    An agent's lane follows from its URL alone, and a lane's transactional id from its
    agents, so a restart with the same agents fences its predecessor and settles what it left
    open. A lane of one agent keeps the transactional id that agent had with one producer per
    agent (`<prefix>-<sha256(topic prefix|agent URL)[:16]>`).
    """
    agents = [agent.rstrip("/") for agent in config.agents]
    count = max(1, min(len(agents), config.static_lanes))
    members: list[list[str]] = [[] for _ in range(count)]
    for agent in agents:
        members[zlib.crc32(agent.encode()) % count].append(agent)
    lanes: dict[str, tuple[str, list[str]]] = {}
    for index, lane_agents in enumerate(members):
        if not lane_agents:
            continue
        digest = hashlib.sha256(f"{config.topic_prefix}|{'|'.join(sorted(lane_agents))}".encode()).hexdigest()[:16]
        lanes[f"static-{index}"] = (f"{config.transactional_id_prefix}-{digest}", lane_agents)
    return lanes


class ProducerService:
    """Follows the configured agents, or this process's share of a group's, until `stop()`."""

    def __init__(self, config: ServiceConfig):
        config.validate()
        self.config = config
        self._stop = threading.Event()
        self.engine = None
        self.group = None
        self._started = False
        self._finished = threading.Event()

    @property
    def followers(self) -> list:
        """The agents followed now (each with `agent` and its committed `checkpoint`)."""
        return list(self.engine.followers.values()) if self.engine is not None else []

    @property
    def published(self) -> int:
        """Observations committed since the start."""
        return self.engine.published if self.engine is not None else 0

    @property
    def running(self) -> bool:
        return self._started and not self._stop.is_set() and self.engine is not None and self.engine.alive

    def start(self) -> bool:
        """Wait for Kafka, create the topics, start following; False if stopped first."""
        from producer.fleet.engine import FleetEngine

        properties = self.config.kafka_properties()
        if not wait_for_kafka(properties, self._stop):
            return False
        ensure_topics(properties, self.config.topic_prefix, self.config.observation_partitions,
                      agents_partitions=self.config.agents_partitions)
        # One reader of the checkpoints topic for all lanes of this process.
        checkpoints = CheckpointStore(properties, self.config.topic_prefix)
        self.engine = FleetEngine(self.config, checkpoints)
        self.engine.start()
        if self.config.group is not None:
            from producer.fleet.group import AgentGroup

            self.group = AgentGroup(self.config, self.engine)
            self.group.start()
        else:
            lanes = static_lanes(self.config)
            opened = [self.engine.open_lane(lane_id, transactional_id, fenced_pause_s=random.uniform(0.5, 2.0),
                                            start=False)
                      for lane_id, (transactional_id, _) in lanes.items()]
            self.engine.apply_agent_changes([(agent, lane_id, "add", {})
                                             for lane_id, (_, agents) in lanes.items() for agent in agents])
            for lane in opened:
                lane.start()
        self._started = True
        return True

    def run(self, report_every: float = 10.0) -> int:
        try:
            if not self.start():
                self._finished.set()
                return 0
        except BaseException:
            self._shutdown()
            self._finished.set()
            raise
        last = time.monotonic()
        last_count = 0
        last_commits, last_commit_s = 0, 0.0
        code = 0
        while not self._stop.wait(0.5):
            crashed = self.engine.crashed_lanes() if self.engine is not None else []
            if crashed or (self.group is not None and self.group.failure is not None):
                log.error("event=service_failed lanes=%s group_failure=%s", crashed,
                          self.group.failure if self.group is not None else None)
                code = 1
                break
            now = time.monotonic()
            if now - last >= report_every:
                published = self.published
                rate = (published - last_count) / (now - last)
                commits, commit_s = self.engine.lane_totals()
                done = max(0, commits - last_commits)
                log.info("event=progress agents=%d published=%d obs_per_s=%.0f lanes=%d commits_per_s=%.1f "
                         "commit_ms=%.0f loop_lag_ms=%.0f", len(self.followers), published, rate,
                         len(self.engine.lanes), done / (now - last),
                         1000 * max(0.0, commit_s - last_commit_s) / done if done else 0.0,
                         1000 * self.engine.take_max_lag())
                last, last_count = now, published
                last_commits, last_commit_s = commits, commit_s
        failed = [f for f in self.followers if f.failure is not None]
        self._shutdown()
        self._finished.set()
        return 1 if failed or code else 0

    def _shutdown(self) -> None:
        if self.group is not None:
            self.group.close()  # leaves the group: the others take its agents over at once
        if self.engine is not None:
            self.engine.stop()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 60.0) -> bool:
        """Wait until `run()` has stopped everything; True if it did within `timeout`."""
        return self._finished.wait(timeout)


def run_cli(args) -> int:
    try:
        config = build_config(args)
        config.validate()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    service = ProducerService(config)

    def _on_signal(signum, frame) -> None:
        log.info("event=stopping signal=%s", signal.Signals(signum).name)
        service.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    agents = ",".join(config.agents) if len(config.agents) <= 10 else f"{len(config.agents)} agents"
    log.info("event=starting agents=%s group=%s bootstrap=%s topic_prefix=%r",
             agents, config.group, config.kafka_properties().get("bootstrap.servers"), config.topic_prefix)
    try:
        return service.run()
    except KafkaAuthError as exc:
        log.error("event=kafka_auth_failed %s", exc)
        service.stop()
        return 2
    except KafkaException as exc:
        log.error("event=kafka_unavailable error=%s", exc)
        service.stop()
        return 1
