"""The Kafka message schema shared by the producer service and the desktop app.

Every topic name, key and JSON value layout that crosses Kafka is defined here and
nowhere else, so the producer (writer) and the desktop (reader) cannot drift apart.
This is the one producer module the desktop imports; its only third-party
dependency is the optional orjson encoder (the standard library's is the fallback). `docs/messages.md` documents the same schema for people.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

SCHEMA_VERSION = 1

# Topic base names. Every deployed name is `prefix + base` (see `topic_name`).
OBSERVATIONS = "mtconnect.observations"
DEVICES = "mtconnect.devices"
CHECKPOINTS = "mtconnect.checkpoints"
GAPS = "mtconnect.gaps"
AGENT_STATUS = "mtconnect.agent-status"
ALARM_ACKS = "monitor.alarm-acks"

# Topics keyed by identity whose latest value is all that matters: compacted.
COMPACTED_TOPICS = (DEVICES, CHECKPOINTS, AGENT_STATUS, ALARM_ACKS)
ALL_TOPICS = (OBSERVATIONS, DEVICES, CHECKPOINTS, GAPS, AGENT_STATUS, ALARM_ACKS)

CATEGORIES = ("SAMPLE", "EVENT", "CONDITION")
UNAVAILABLE = "UNAVAILABLE"
# Condition levels as upper-case words (the XML element names Normal/Warning/Fault/Unavailable).
CONDITION_LEVELS = ("NORMAL", "WARNING", "FAULT", "UNAVAILABLE")

# Fields every observation value carries (conditions add CONDITION_FIELDS).
OBSERVATION_FIELDS = (
    "agent",
    "instance_id",
    "sequence",
    "timestamp",
    "device_uuid",
    "device_name",
    "component",
    "component_id",
    "data_item_id",
    "name",
    "category",
    "type",
    "sub_type",
    "units",
    "value",
)
CONDITION_FIELDS = ("level", "native_code", "native_severity", "qualifier", "condition_id")


def topic_name(base: str, prefix: str = "") -> str:
    """The deployed name of a topic: the configurable prefix followed by the base name."""
    return f"{prefix}{base}"


def sample_value(text: str | None) -> Any:
    """The JSON value of a SAMPLE's text.

    A single number becomes a float; several whitespace-separated numbers (three-space
    positions such as PATH_POSITION, or a TimeSeries list) become a list of floats;
    `UNAVAILABLE` stays the distinct string `"UNAVAILABLE"`; anything else stays the text
    exactly as the agent sent it (whitespace included), so nothing the agent said is lost.
    The observation's `text` field always carries the verbatim text as well.
    """
    if text is None:
        return ""
    stripped = text.strip()
    if stripped == UNAVAILABLE:
        return UNAVAILABLE
    parts = stripped.split()
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        return text
    if not numbers or not all(math.isfinite(n) for n in numbers):
        return text
    return numbers[0] if len(numbers) == 1 else numbers


def numeric_value(observation: Mapping[str, Any]) -> float | None:
    """The plottable number of an observation, or None (UNAVAILABLE, text, vectors)."""
    value = observation.get("value")
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _encode_stdlib(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


try:  # orjson writes the same compact UTF-8 JSON about ten times faster (the producer's hot path)
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency; stay usable without it
    _orjson = None


def fast_encoder() -> Callable[[Mapping[str, Any]], bytes]:
    """`encode` without its fallback, for hot loops: may raise TypeError, then call `encode`."""
    return _orjson.dumps if _orjson is not None else _encode_stdlib


def encode(value: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as written to every topic."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value)
        except TypeError:  # e.g. an integer beyond 64 bits, which the standard encoder writes exactly
            pass
    return _encode_stdlib(value)


def decode(payload: bytes | str | None) -> Any:
    """Inverse of `encode`; a tombstone (None) decodes to None."""
    if payload is None:
        return None
    return json.loads(payload)


def observation_key(observation: Mapping[str, Any]) -> bytes:
    """Observations are keyed by device uuid so each machine's order is kept in one partition."""
    return str(observation["device_uuid"]).encode("utf-8")


def device_key(device: Mapping[str, Any]) -> bytes:
    return str(device["device_uuid"]).encode("utf-8")


def agent_key(agent_url: str) -> bytes:
    """Checkpoints and agent status are keyed by the agent's base URL."""
    return agent_url.encode("utf-8")


def checkpoint_value(agent: str, instance_id: int, next_sequence: int) -> dict[str, Any]:
    return {"agent": agent, "instance_id": int(instance_id), "next_sequence": int(next_sequence)}


def gap_value(
    agent: str, instance_id: int, first_missing: int | None, last_missing: int | None, reason: str
) -> dict[str, Any]:
    return {
        "agent": agent,
        "instance_id": int(instance_id),
        "first_missing": first_missing,
        "last_missing": last_missing,
        "reason": reason,
    }


# Why observations are missing from the observations topic (the `reason` of a gap record).
GAP_OUT_OF_RANGE = "OUT_OF_RANGE"  # the agent's buffer no longer held them when they were read
GAP_AGENT_RESTART = "AGENT_RESTART"  # the agent restarted (new instanceId) before they were read
GAP_REJECTED = "REJECTED"  # read, but not publishable as they are (too large, not parseable)
GAP_REASONS = (GAP_OUT_OF_RANGE, GAP_AGENT_RESTART, GAP_REJECTED)


def rejected_value(agent: str, instance_id: int, first_missing: int, last_missing: int, detail: str,
                   device_uuid: str | None = None, data_item_id: str | None = None) -> dict[str, Any]:
    """A gap record for observations the agent served that cannot be published, with why."""
    value = gap_value(agent, instance_id, first_missing, last_missing, GAP_REJECTED)
    value["detail"] = detail
    if device_uuid is not None:
        value["device_uuid"] = device_uuid
    if data_item_id is not None:
        value["data_item_id"] = data_item_id
    return value


def agent_status_value(
    agent: str, state: str, since: str, last_error: str | None = None, instance_id: int | None = None
) -> dict[str, Any]:
    """`state` is `connected` or `unreachable`; `since` is an ISO-8601 UTC time."""
    return {
        "agent": agent,
        "state": state,
        "since": since,
        "last_error": last_error,
        "instance_id": instance_id,
    }


# ---- alarm acknowledgements
#
# `monitor.alarm-acks` is compacted and keyed by alarm id, so its latest value per key must be
# the whole shared state of that alarm, not one action: a value carries the acknowledgement
# (once given, it stays) and the latest shelve or unshelve together. Stations merge what they
# receive (the earliest acknowledgement wins, the latest shelve action wins), which makes
# applying records idempotent and independent of their order. `record_id` names one write,
# so the same write delivered twice is recognised.

ALARM_ACK_SCHEMA = 1
SHELVED = "shelved"
UNSHELVED = "unshelved"


def alarm_ack_key(alarm_id: str) -> bytes:
    return alarm_id.encode("utf-8")


def acknowledgement(at: str, by: str, station: str, note: str | None = None) -> dict[str, Any]:
    """Who acknowledged, where and when (ISO-8601 UTC), with an optional note."""
    return {"at": at, "by": by, "station": station, "note": note}


def shelve_action(state: str, at: str, by: str, station: str, until: str | None = None,
                  reason: str | None = None) -> dict[str, Any]:
    """`state` is `shelved` (until `until`, ISO-8601 UTC, with a reason) or `unshelved`."""
    if state not in (SHELVED, UNSHELVED):
        raise ValueError(f"shelve state must be {SHELVED!r} or {UNSHELVED!r}, not {state!r}")
    return {"state": state, "at": at, "until": until if state == SHELVED else None,
            "reason": reason, "by": by, "station": station}


def alarm_ack_value(alarm_id: str, device_uuid: str | None, rule_id: str | None,
                    acknowledged: Mapping[str, Any] | None, shelve: Mapping[str, Any] | None,
                    record_id: str, station: str, written_at: str) -> dict[str, Any]:
    return {
        "schema": ALARM_ACK_SCHEMA,
        "alarm_id": alarm_id,
        "device_uuid": device_uuid,
        "rule_id": rule_id,
        "acknowledged": dict(acknowledged) if acknowledged else None,
        "shelve": dict(shelve) if shelve else None,
        "record_id": record_id,
        "station": station,
        "written_at": written_at,
    }


# ---- the plant's agent list
#
# `mtconnect.agents` is compacted and keyed by the agent's base URL (without a trailing slash):
# its latest value per key is that agent's settings, and a tombstone (null value) removes the
# agent. Producer processes of one group divide its partitions among themselves (Kafka consumer
# group membership) and each follows the agents whose records are in its partitions, so the
# partition of an agent's record decides which process follows it. Writers use Java's default
# partitioner (murmur2 of the key), so every client puts a URL in the same partition.

AGENTS = "mtconnect.agents"
AGENTS_SCHEMA = 1
AGENTS_PARTITIONER = "murmur2_random"
# Settings an agent record may carry; each overrides the producer's own default for that agent.
AGENT_SETTINGS = ("interval_ms", "heartbeat_ms", "count", "http_timeout_s", "stream_idle_s", "verify_tls")


def agent_entry_value(agent: str, settings: Mapping[str, Any], updated_at: str,
                      updated_by: str | None = None) -> dict[str, Any]:
    """The value of an agent record: `settings` holds only keys of `AGENT_SETTINGS`."""
    unknown = set(settings) - set(AGENT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown agent settings {sorted(unknown)}; known: {list(AGENT_SETTINGS)}")
    return {"schema": AGENTS_SCHEMA, "agent": agent, "settings": dict(settings),
            "updated_at": updated_at, "updated_by": updated_by}


def normalise_agent_url(url: str) -> str:
    """The form an agent URL takes in every key: as given, without a trailing slash."""
    return url.strip().rstrip("/")
