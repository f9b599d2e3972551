"""The plant's agent list in Kafka: `python -m producer agents add|remove|list`.

The list is the compacted agents topic (see `producer.wire`, "the plant's agent list"): adding
writes the agent's record (its URL as the key, its settings as the value), removing writes a
tombstone, listing reads the topic to its end. Producer processes of a group follow the
change within moments, without a restart. Writes use the same partition as any earlier record
of the URL (else Java's default partitioner), so an agent never lives in two partitions.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from confluent_kafka import KafkaException, Producer

from producer import wire
from producer.topics import ensure_topics, kafka_log, read_to_end

log = logging.getLogger("producer.agents")


def read_agents(properties: dict[str, Any], prefix: str, timeout: float = 30.0) -> dict[str, tuple[int, dict]]:
    """agent URL -> (partition, value) for every agent in the list now (latest record, no tombstone)."""
    agents: dict[str, tuple[int, dict]] = {}
    for message in read_to_end(properties, wire.topic_name(wire.AGENTS, prefix), timeout):
        key = message.key()
        if not key:
            continue
        agent = wire.normalise_agent_url(key.decode("utf-8", "replace"))
        if message.value() is None:
            agents.pop(agent, None)
            continue
        try:
            value = wire.decode(message.value())
        except ValueError:
            value = {"unreadable": True}
        agents[agent] = (message.partition(), value)
    return agents


def _partitions_of(properties: dict[str, Any], prefix: str, agent: str,
                   timeout: float = 30.0) -> tuple[set[int], set[int]]:
    """(partitions that hold a record of `agent`, those where its latest record is not a tombstone).

    A topic created a moment ago may not have its partition leaders yet: that is waited for."""
    key = wire.agent_key(agent)
    deadline = time.monotonic() + timeout
    while True:
        try:
            latest: dict[int, bool] = {}
            for message in read_to_end(properties, wire.topic_name(wire.AGENTS, prefix)):
                if message.key() == key:
                    latest[message.partition()] = message.value() is not None
            return set(latest), {partition for partition, present in latest.items() if present}
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = getattr(error, "retriable", lambda: False)() or "leader" in str(exc).lower()
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _write(properties: dict[str, Any], prefix: str, agent: str, value: bytes | None,
           partitions: set[int]) -> list[int]:
    errors: list[str] = []
    delivered: list[int] = []

    def on_delivery(error, message) -> None:
        if error is not None:
            errors.append(error.str())
        else:
            delivered.append(message.partition())

    producer = Producer({**properties, "acks": "all", "enable.idempotence": True,
                         "partitioner": wire.AGENTS_PARTITIONER, "logger": kafka_log})
    topic = wire.topic_name(wire.AGENTS, prefix)
    if partitions:
        for partition in sorted(partitions):
            producer.produce(topic, value, wire.agent_key(agent), partition=partition, on_delivery=on_delivery)
    else:
        producer.produce(topic, value, wire.agent_key(agent), on_delivery=on_delivery)
    remaining = producer.flush(30)
    if errors or remaining:
        raise KafkaException(f"writing the record of {agent} to {topic} failed: "
                             f"{'; '.join(errors) or f'{remaining} records not delivered within 30 s'}")
    return sorted(delivered)


def changed_by() -> str:
    """Who makes a change from this process: `user@host`, as the records' `updated_by`."""
    import getpass
    import socket

    return f"{getpass.getuser()}@{socket.gethostname()}"


def add_agent(properties: dict[str, Any], prefix: str, agent: str, settings: dict[str, Any],
              updated_at: str, updated_by: str | None = None, agents_partitions: int = 6) -> list[int]:
    """Add `agent` to the list (or change its settings); the partitions written."""
    agent = wire.normalise_agent_url(agent)
    if not agent.startswith(("http://", "https://")):
        raise ValueError(f"agent {agent!r}: the URL must start with http:// or https://")
    value = wire.encode(wire.agent_entry_value(agent, settings, updated_at, updated_by))
    ensure_topics(properties, prefix, agents_partitions=agents_partitions)
    return _write(properties, prefix, agent, value, _partitions_of(properties, prefix, agent)[0])


def remove_agent(properties: dict[str, Any], prefix: str, agent: str) -> list[int]:
    """Remove `agent` from the list (a tombstone in every partition that held it); [] if it was not there."""
    agent = wire.normalise_agent_url(agent)
    partitions = _partitions_of(properties, prefix, agent)[1]
    if not partitions:
        return []
    return _write(properties, prefix, agent, None, partitions)


def _setting(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or name not in wire.AGENT_SETTINGS:
        raise ValueError(f"--set {text!r}: expected NAME=VALUE with NAME one of {', '.join(wire.AGENT_SETTINGS)}")
    raw = raw.strip()
    if name == "verify_tls":
        lowered = raw.lower()
        return name, True if lowered == "true" else False if lowered == "false" else raw
    try:
        return name, int(raw) if name in ("interval_ms", "heartbeat_ms", "count") else float(raw)
    except ValueError:
        raise ValueError(f"--set {text!r}: {raw!r} is not a number") from None


def agents_cli(args) -> int:
    """`python -m producer agents add|remove|list`."""
    from producer.config import ConfigError, agents_client_config
    from producer.service import utc_now_iso

    try:
        properties, prefix, partitions = agents_client_config(args)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    try:
        if args.action == "list":
            agents = read_agents(properties, prefix)
            for agent, (partition, value) in sorted(agents.items()):
                settings = value.get("settings") if isinstance(value, dict) else None
                print(f"{agent}\tpartition={partition}\tsettings={json.dumps(settings or {}, sort_keys=True)}"
                      f"\tupdated_at={value.get('updated_at') if isinstance(value, dict) else None}")
            print(f"{len(agents)} agent(s) in {wire.topic_name(wire.AGENTS, prefix)}")
            return 0
        if not args.url:
            log.error("agents %s: give the agent's URL", args.action)
            return 2
        if args.action == "add":
            try:
                settings = dict(_setting(text) for text in (args.set or []))
                written = add_agent(properties, prefix, args.url, settings, utc_now_iso(), changed_by(), partitions)
            except ValueError as exc:
                log.error("%s", exc)
                return 2
            print(f"added {wire.normalise_agent_url(args.url)} to {wire.topic_name(wire.AGENTS, prefix)} "
                  f"(partition {', '.join(map(str, written))}) settings={json.dumps(settings, sort_keys=True)}")
            return 0
        written = remove_agent(properties, prefix, args.url)
        if not written:
            print(f"{wire.normalise_agent_url(args.url)} is not in {wire.topic_name(wire.AGENTS, prefix)}")
            return 1
        print(f"removed {wire.normalise_agent_url(args.url)} from {wire.topic_name(wire.AGENTS, prefix)} "
              f"(partition {', '.join(map(str, written))})")
        return 0
    except KafkaException as exc:
        log.error("event=kafka_unavailable error=%s", exc)
        return 1
