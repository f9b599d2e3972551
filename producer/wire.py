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


# ---- validation of records read from Kafka
#
# A reader (the desktop's feed) checks every record against the schema above before it uses
# it: `decode_record` turns the raw bytes into a value or says why it cannot, and the
# `*_problem` functions return None for a value that matches the schema, or one line naming
# the field that does not. They sit on a consumer's hot path: plain type checks, and they
# never look deeper into a value than the schema allows, so no record - however large, deep or
# odd - can make them raise (problems name types, never repr() a value, which could recurse).
# Fields not described here are accepted (forward compatibility), except in device records,
# whose other fields are plain text.

import math as _math
import re as _re

_TIMESTAMP_FORM = _re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"T(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.\d{1,9})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d)?"
)
_OBSERVATION_TEXT = ("agent", "type")
_OBSERVATION_OPTIONAL_TEXT = ("device_name", "component", "component_id", "name", "sub_type", "units")
_CONDITION_OPTIONAL_TEXT = ("native_code", "native_severity", "qualifier", "condition_id")
AGENT_STATES = ("connected", "unreachable")


def _kind(value: Any) -> str:
    """The JSON type of a decoded value, for messages."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if type(value) is int or type(value) is float:
        return "number"
    if type(value) is str:
        return "string"
    if type(value) is list:
        return "array"
    if type(value) is dict:
        return "object"
    return type(value).__name__


def _is_finite_number(value: Any) -> bool:
    # bool is an int subclass in Python; JSON true/false are not numbers.
    kind = type(value)
    return kind is int or (kind is float and _math.isfinite(value))


def decode_record(payload: bytes | str | None) -> tuple[Any, str | None]:
    """(value, None) for a record value, or (None, why it is not one); a tombstone is (None, None).

    Stricter than `decode`: UTF-8 only (no byte-order detection), no NaN or Infinity, and a
    document nested too deeply for the parser is a problem instead of a RecursionError.
    """
    if payload is None:
        return None, None
    try:
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 (byte {exc.start})"

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(text, parse_constant=refuse_constant)
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:  # JSONDecodeError, the constant above, an integer too long to convert
        return None, f"not valid JSON: {str(exc)[:160]}"
    if "\\u" in text and not _encodable(value):
        return None, "a string holds an unpaired surrogate (not representable as UTF-8)"
    return value, None


def _encodable(value: Any) -> bool:
    """No string in `value` holds a lone surrogate (only possible through a JSON \\u escape)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError):
        return False
    return True


def _text_problem(value: Mapping[str, Any], name: str, nullable: bool = False, non_empty: bool = False) -> str | None:
    if name not in value:
        return f"missing field {name}"
    field_value = value[name]
    if type(field_value) is str:
        if non_empty and not field_value:
            return f"{name} is empty"
        return None
    if nullable and field_value is None:
        return None
    return f"{name} must be a string{' or null' if nullable else ''}, not {_kind(field_value)}"


def _integer_problem(value: Mapping[str, Any], name: str, minimum: int | None = None, nullable: bool = False) -> str | None:
    if name not in value:
        return f"missing field {name}"
    field_value = value[name]
    if field_value is None and nullable:
        return None
    if type(field_value) is not int:
        return f"{name} must be an integer{' or null' if nullable else ''}, not {_kind(field_value)}"
    if minimum is not None and field_value < minimum:
        return f"{name} must be at least {minimum}"
    return None


def _entries_problem(entries: dict, numbers_allowed: bool) -> str | None:
    """DataSet / Table values: key -> text | null | {cell key -> text} (numbers too on SAMPLEs)."""
    for key, entry in entries.items():
        if entry is None or type(entry) is str or (numbers_allowed and _is_finite_number(entry)):
            continue
        if type(entry) is dict:
            for cell in entry.values():
                if not (type(cell) is str or (numbers_allowed and _is_finite_number(cell))):
                    return f"value entry {key[:40]!r} has a cell that is {_kind(cell)}, not a string"
            continue
        return f"value entry {key[:40]!r} is {_kind(entry)}, not a string, null or object"
    return None


def _value_problem(category: str, value: Any) -> str | None:
    if category == "EVENT":
        if type(value) is str:
            return None
        if type(value) is dict:
            return _entries_problem(value, numbers_allowed=False)
        return f"an EVENT value must be a string or object, not {_kind(value)}"
    if category == "SAMPLE":
        if type(value) is str or _is_finite_number(value):
            return None
        if type(value) is list:
            for number in value:
                if not _is_finite_number(number):
                    return f"a SAMPLE value list holds {_kind(number)}, not only finite numbers"
            return None
        if type(value) is dict:
            return _entries_problem(value, numbers_allowed=True)
        if type(value) is float:
            return "a SAMPLE value must be a finite number"
        return f"a SAMPLE value must be a number, list of numbers, string or object, not {_kind(value)}"
    # CONDITION
    if value is None or type(value) is str:
        return None
    return f"a CONDITION value must be a string or null, not {_kind(value)}"


def observation_problem(value: Any) -> str | None:
    """None when `value` is an observation as the producer writes it, else what is wrong."""
    if type(value) is not dict:
        return f"not a JSON object but {_kind(value)}"
    for name in _OBSERVATION_TEXT:
        problem = _text_problem(value, name)
        if problem:
            return problem
    for name in ("device_uuid", "data_item_id"):
        problem = _text_problem(value, name, non_empty=True)
        if problem:
            return problem
    for name in _OBSERVATION_OPTIONAL_TEXT:
        problem = _text_problem(value, name, nullable=True)
        if problem:
            return problem
    problem = _integer_problem(value, "instance_id") or _integer_problem(value, "sequence", minimum=0)
    if problem:
        return problem
    problem = _text_problem(value, "timestamp")
    if problem:
        return problem
    if not _TIMESTAMP_FORM.fullmatch(value["timestamp"]):
        return f"timestamp {value['timestamp'][:40]!r} is not an ISO-8601 time"
    category = value.get("category")
    if category not in CATEGORIES:
        return f"category must be one of {', '.join(CATEGORIES)}, not {_kind(category) if type(category) is not str else repr(category[:40])}"
    if "value" not in value:
        return "missing field value"
    problem = _value_problem(category, value["value"])
    if problem:
        return problem
    if category == "CONDITION":
        level = value.get("level")
        if level not in CONDITION_LEVELS:
            shown = repr(level[:40]) if type(level) is str else _kind(level)
            return f"level must be one of {', '.join(CONDITION_LEVELS)}, not {shown}"
        for name in _CONDITION_OPTIONAL_TEXT:
            problem = _text_problem(value, name, nullable=True)
            if problem:
                return problem
    return _optional_fields_problem(value)


def _optional_fields_problem(value: Mapping[str, Any]) -> str | None:
    if "text" in value and type(value["text"]) is not str:
        return f"text must be a string, not {_kind(value['text'])}"
    if "reset_triggered" in value and type(value["reset_triggered"]) is not str:
        return f"reset_triggered must be a string, not {_kind(value['reset_triggered'])}"
    if "sample_count" in value and type(value["sample_count"]) is not int:
        return f"sample_count must be an integer, not {_kind(value['sample_count'])}"
    if "sample_rate" in value and not _is_finite_number(value["sample_rate"]):
        return f"sample_rate must be a finite number, not {_kind(value['sample_rate'])}"
    if "attributes" in value:
        attributes = value["attributes"]
        if type(attributes) is not dict:
            return f"attributes must be an object, not {_kind(attributes)}"
        for name, text in attributes.items():
            if type(text) is not str:
                return f"attribute {name[:40]!r} must be a string, not {_kind(text)}"
    return None


def device_problem(value: Any) -> str | None:
    """None when `value` is a device record as the producer writes it, else what is wrong."""
    if type(value) is not dict:
        return f"not a JSON object but {_kind(value)}"
    problem = (_text_problem(value, "device_uuid", non_empty=True) or _text_problem(value, "device_name")
               or _text_problem(value, "agent"))
    if problem:
        return problem
    items = value.get("data_items")
    if type(items) is not list:
        return "missing field data_items" if "data_items" not in value else f"data_items must be an array, not {_kind(items)}"
    for index, item in enumerate(items):
        if type(item) is not dict:
            return f"data_items[{index}] is {_kind(item)}, not an object"
        if type(item.get("id")) is not str:
            return f"data_items[{index}].id must be a string, not {_kind(item.get('id'))}"
        for name, field_value in item.items():
            if field_value is not None and type(field_value) is not str:
                return f"data_items[{index}].{name[:40]} must be a string or null, not {_kind(field_value)}"
    for name, field_value in value.items():
        if name in ("device_uuid", "device_name", "agent", "data_items"):
            continue
        if name == "instance_id":
            if field_value is not None and type(field_value) is not int:
                return f"instance_id must be an integer or null, not {_kind(field_value)}"
            continue
        if field_value is not None and type(field_value) is not str:
            return f"{name[:40]} must be a string or null, not {_kind(field_value)}"
    return None


def agent_status_problem(value: Any) -> str | None:
    """None when `value` is an agent status as the producer writes it, else what is wrong."""
    if type(value) is not dict:
        return f"not a JSON object but {_kind(value)}"
    problem = _text_problem(value, "agent") or _text_problem(value, "since")
    if problem:
        return problem
    state = value.get("state")
    if state not in AGENT_STATES:
        shown = repr(state[:40]) if type(state) is str else _kind(state)
        return f"state must be one of {', '.join(AGENT_STATES)}, not {shown}"
    return _text_problem(value, "last_error", nullable=True) or _integer_problem(value, "instance_id", nullable=True)


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
