"""Shared helpers for the alarm tests: the recorded NIST days as observations, rule sets
written as YAML, and an independent reading of SHDR condition lines (the tests' oracle)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import recorded_nist as testing
from desktop.core.alarms import AlarmEngine, RuleSet, parse_rules

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"
MAZAK01_DAY = "Mazak01-20171030-20171031.txt"
GFAGIE01_DAY = "GFAgie01-20160513-20160514.txt"
DAY_OF = {"Mazak03": MAZAK03_DAY, "Mazak01": MAZAK01_DAY, "GFAgie01": GFAGIE01_DAY}

_devices = None


def devices():
    global _devices
    if _devices is None:
        _devices = testing.load_devices()
    return _devices


def day(name: str, last_line: int | None = None) -> list[dict]:
    """The machine's recorded day as observations (what the producer writes)."""
    device = testing.device_named(devices(), name)
    return [o for _, o in testing.shdr_observations(testing.nist_shdr(DAY_OF[name]), device, last_line=last_line)]


def numbered_day(name: str) -> list[tuple[int, dict]]:
    device = testing.device_named(devices(), name)
    return list(testing.shdr_observations(testing.nist_shdr(DAY_OF[name]), device))


def shdr_lines(name: str) -> list[list[str]]:
    text = testing.nist_shdr(DAY_OF[name]).read_text(encoding="utf-8", errors="replace")
    return [line.split("|") for line in text.splitlines()]


def epoch(text: str) -> float:
    """The tests' own timestamp reading (not the engine's)."""
    text = text.rstrip("Z")
    if "." in text:
        head, fraction = text.split(".")
        text = f"{head}.{(fraction + '000000')[:6]}"
    else:
        text += ".000000"
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class Activation:
    timestamp: str
    item: str
    level: str  # FAULT / WARNING
    code: str
    text: str
    cleared_at: str | None = None


def condition_activations(name: str) -> list[Activation]:
    """Every condition activation of the recorded day by the MTConnect rules, read straight
    from the SHDR lines: FAULT/WARNING for a code not active starts one; NORMAL with a code
    ends that code, NORMAL without one (or UNAVAILABLE) ends every code of the item."""
    active: dict[tuple[str, str], int] = {}
    found: list[Activation] = []
    for fields in shdr_lines(name):
        if len(fields) < 7 or fields[2] not in ("Fault", "Warning", "Normal", "Unavailable"):
            continue
        timestamp, item, level, code, text = fields[0], fields[1], fields[2].upper(), fields[3], fields[6].strip()
        if level in ("FAULT", "WARNING"):
            key = (item, code)
            if key not in active:
                active[key] = len(found)
                found.append(Activation(timestamp, item, level, code, text))
            continue
        ended = [k for k in active if k[0] == item and (level != "NORMAL" or not code or k[1] == code)]
        for key in ended:
            index = active.pop(key)
            found[index] = Activation(**{**found[index].__dict__, "cleared_at": timestamp})
    return found


def chattering_flags(activations: list[Activation], count: int = 3, seconds: float = 60.0) -> list[bool]:
    """For each activation: did its (item, code) activate `count` times within `seconds`, this one included."""
    flags = []
    for index, activation in enumerate(activations):
        moment = epoch(activation.timestamp)
        recent = [a for a in activations[: index + 1] if (a.item, a.code) == (activation.item, activation.code)
                  and moment - epoch(a.timestamp) <= seconds]
        flags.append(len(recent) >= count)
    return flags


def rules(yaml_text: str) -> RuleSet:
    return parse_rules(yaml_text, "test-rules.yaml")


def engine(yaml_text: str | None = None, **options) -> AlarmEngine:
    return AlarmEngine(rules(yaml_text) if yaml_text else None, **options)


def with_value(observation: dict, value, timestamp: str, sequence: int) -> dict:
    """A recorded observation with another value and time (for sequences the day lacks)."""
    return dict(observation, value=value, timestamp=timestamp, sequence=sequence)


def item_values(name: str, item: str) -> list[tuple[str, str]]:
    """(timestamp, raw value) of every value of `item` on the machine's SHDR lines (the
    key|value pairs after the timestamp; condition lines carry one item each)."""
    found = []
    for fields in shdr_lines(name):
        if len(fields) >= 7 and fields[2] in ("Fault", "Warning", "Normal", "Unavailable"):
            continue
        for index in range(1, len(fields) - 1, 2):
            if fields[index] == item:
                found.append((fields[0], fields[index + 1]))
    return found


def runs(values: list[tuple[str, str]], inside) -> list[tuple[str, str | None]]:
    """(start, end) of each stretch where `inside(value)` holds; end None: still at the file's end."""
    found, start = [], None
    for timestamp, value in values:
        if inside(value) and start is None:
            start = timestamp
        elif not inside(value) and start is not None:
            found.append((start, timestamp))
            start = None
    if start is not None:
        found.append((start, None))
    return found
