"""Alarm rules: what the engine alarms on, read from a YAML file and checked before use.

A rules file has optional `settings` (which priorities pop up, chattering, flood and stale
limits, shifts for the KPIs) and a list of `rules`, each with an `id`, a `kind` (condition,
event, threshold, unavailable, offline) and the fields of that kind. The file is parsed with
PyYAML's safe loader into a node tree first, so every error names the file, the line and the
field (`rules[3].above`); unknown fields are errors too, because a misspelt `abvoe: 90` that
is silently ignored is an alarm that never comes. `docs/alarms.md` documents the format.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

PRIORITIES = ("critical", "high", "medium", "low")
KINDS = ("condition", "event", "threshold", "unavailable", "offline")
CONDITION_LEVELS = ("FAULT", "WARNING")
# What an alarm `message` template may use.
MESSAGE_FIELDS = ("device", "item", "value", "units", "above", "below", "level", "code", "title", "rule")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60,
                 "mins": 60, "minute": 60, "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600,
                 "d": 86400, "day": 86400, "days": 86400}


@dataclass(frozen=True)
class RuleProblem:
    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class RulesError(ValueError):
    """The rules file cannot be used; `problems` lists every mistake found, each located."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Escalation:
    after: float  # seconds the alarm has been active
    priority: str


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    title: str = ""
    priority: str = "medium"
    enabled: bool = True
    message: str = ""
    # Selectors: empty means "any". Devices match by name or uuid.
    devices: frozenset[str] = frozenset()
    data_items: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    sub_types: frozenset[str] = frozenset()
    components: frozenset[str] = frozenset()
    # condition: priority per level, native-code filters
    levels: tuple[tuple[str, str], ...] = ()
    native_codes: frozenset[str] = frozenset()
    exclude_native_codes: frozenset[str] = frozenset()
    # event: the values that alarm (compared stripped and case-insensitively)
    values: frozenset[str] = frozenset()
    # threshold
    above: float | None = None
    below: float | None = None
    deadband: float = 0.0
    # delays (seconds) for event, threshold and unavailable
    on_delay: float = 0.0
    off_delay: float = 0.0
    # offline (wall-clock seconds)
    after: float | None = None
    no_data_after: float | None = None
    escalate: Escalation | None = None
    line: int | None = None

    def level_priority(self, level: str) -> str | None:
        for name, priority in self.levels:
            if name == level:
                return priority
        return None

    def matches_device(self, device_uuid: str, device_name: str) -> bool:
        return not self.devices or device_uuid in self.devices or device_name in self.devices

    def matches_item(self, observation: Any) -> bool:
        """Whether the data item of `observation` is one this rule watches (device not checked)."""
        category = observation.get("category")
        if self.kind == "condition" and category != "CONDITION":
            return False
        if self.kind == "event" and category not in ("EVENT", "SAMPLE"):
            return False
        if self.kind == "threshold" and category != "SAMPLE":
            return False
        for selector, key in ((self.data_items, "data_item_id"), (self.names, "name"), (self.types, "type"),
                              (self.sub_types, "sub_type"), (self.components, "component")):
            if selector and observation.get(key) not in selector:
                return False
        return True


@dataclass(frozen=True)
class Shift:
    name: str
    start: str  # HH:MM local time; a shift ends where the next one starts


@dataclass(frozen=True)
class EngineSettings:
    notify_priorities: frozenset[str] = frozenset({"critical", "high"})
    chattering_activations: int = 3
    chattering_seconds: float = 60.0
    flood_alarms: int = 10  # more than this many new alarms ...
    flood_seconds: float = 600.0  # ... within this window is a flood
    stale_seconds: float = 86400.0
    shifts: tuple[Shift, ...] = (Shift("early", "06:00"), Shift("late", "14:00"), Shift("night", "22:00"))
    timezone: str | None = None  # IANA name for shift times; None: the computer's local time


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    settings: EngineSettings = field(default_factory=EngineSettings)
    source: str = "<built-in>"

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    @classmethod
    def conditions_only(cls) -> "RuleSet":
        """Every MTConnect Condition: FAULT critical, WARNING medium (the app's rules when no
        rules file is configured)."""
        return cls((Rule(id="conditions", kind="condition", title="MTConnect condition",
                         levels=(("FAULT", "critical"), ("WARNING", "medium"))),))


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a text such as `5 s`, `500 ms`, `10 min`, `24 h`."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '5 s' or '10 min', not {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration such as '5 s' or '10 min', not {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


# ---------------------------------------------------------------- reading YAML with line numbers


class _Reader:
    """Walks a composed YAML node tree, constructing scalars with the safe constructor and
    collecting every problem with its line."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.problems: list[RuleProblem] = []
        self._loader = yaml.SafeLoader(text)

    def root(self) -> yaml.Node | None:
        try:
            return self._loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            self.problems.append(RuleProblem(self.source, line, "", f"not valid YAML: {exc.problem or exc}"))
            return None

    def close(self) -> None:
        self._loader.dispose()

    def problem(self, node: yaml.Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(RuleProblem(self.source, line, path, message))

    def scalar(self, node: yaml.Node) -> Any:
        return self._loader.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, path: str, allowed: Iterable[str]) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, path, "expected a mapping of field: value")
            return None
        result: dict[str, yaml.Node] = {}
        allowed = set(allowed)
        for key_node, value_node in node.value:
            key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            field_path = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                self.problem(key_node, path, f"field names must be text, not {key!r}")
            elif key in result:
                self.problem(key_node, field_path, "given twice")
            elif key not in allowed:
                self.problem(key_node, field_path, f"unknown field (known: {', '.join(sorted(allowed))})")
            else:
                result[key] = value_node
        return result

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, path, "expected a list")
            return None
        return list(node.value)

    def text(self, node: yaml.Node, path: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, path, "expected a text value")
            return None
        value = self.scalar(node)
        if value is None or isinstance(value, (list, dict)):
            self.problem(node, path, "expected a text value")
            return None
        return str(value)

    def texts(self, node: yaml.Node, path: str) -> frozenset[str] | None:
        """One text or a list of texts."""
        if isinstance(node, yaml.SequenceNode):
            values = [self.text(item, f"{path}[{index}]") for index, item in enumerate(node.value)]
            if any(v is None for v in values):
                return None
            if not values:
                self.problem(node, path, "the list is empty")
                return None
            return frozenset(v for v in values if v is not None)
        value = self.text(node, path)
        return None if value is None else frozenset({value})

    def number(self, node: yaml.Node, path: str) -> float | None:
        value = self.scalar(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(node, path, f"expected a number, not {value!r}" if value is not None else "expected a number")
            return None
        return float(value)

    def duration(self, node: yaml.Node, path: str, allow_null: bool = False) -> float | None:
        value = self.scalar(node) if isinstance(node, yaml.ScalarNode) else object()
        if value is None and allow_null:
            return None
        try:
            return parse_duration(value)
        except (ValueError, TypeError) as exc:
            self.problem(node, path, str(exc) if value is not object else "expected a duration")
            return None

    def priority(self, node: yaml.Node, path: str) -> str | None:
        value = self.text(node, path)
        if value is None:
            return None
        if value.lower() not in PRIORITIES:
            self.problem(node, path, f"unknown priority {value!r} (one of {', '.join(PRIORITIES)})")
            return None
        return value.lower()

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        value = self.scalar(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, bool):
            self.problem(node, path, "expected true or false")
            return None
        return value


_COMMON = ("id", "kind", "title", "priority", "enabled", "message", "devices", "data_item", "data_items", "name",
           "names", "type", "types", "sub_type", "component", "escalate")
_FIELDS = {
    "condition": _COMMON + ("levels", "native_codes", "exclude_native_codes"),
    "event": _COMMON + ("values", "for", "off_delay"),
    "threshold": _COMMON + ("above", "below", "deadband", "for", "off_delay"),
    "unavailable": _COMMON + ("for", "off_delay"),
    "offline": ("id", "kind", "title", "priority", "enabled", "message", "devices", "after", "no_data_after", "escalate"),
}
_SELECTORS = {"devices": "devices", "data_item": "data_items", "data_items": "data_items", "name": "names",
              "names": "names", "type": "types", "types": "types", "sub_type": "sub_types", "component": "components"}


def _read_rule(reader: _Reader, node: yaml.Node, path: str) -> Rule | None:
    if not isinstance(node, yaml.MappingNode):
        reader.problem(node, path, "expected a rule (a mapping with id and kind)")
        return None
    kind_node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "kind"), None)
    kind = reader.text(kind_node, f"{path}.kind") if kind_node is not None else None
    if kind_node is None:
        reader.problem(node, f"{path}.kind", f"missing (one of {', '.join(KINDS)})")
        return None
    if kind not in KINDS:
        if kind is not None:
            reader.problem(kind_node, f"{path}.kind", f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
        return None
    fields = reader.mapping(node, path, _FIELDS[kind])
    if fields is None:
        return None
    before = len(reader.problems)
    values: dict[str, Any] = {"kind": kind, "line": node.start_mark.line + 1}
    if "id" not in fields:
        reader.problem(node, f"{path}.id", "missing")
    else:
        rule_id = reader.text(fields["id"], f"{path}.id")
        if rule_id is not None and not _ID_PATTERN.match(rule_id):
            reader.problem(fields["id"], f"{path}.id", "letters, digits, '.', '_' and '-' only, starting with a letter or digit")
        values["id"] = rule_id
    for key in ("title", "message"):
        if key in fields:
            values[key] = reader.text(fields[key], f"{path}.{key}") or ""
    if values.get("message"):
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(values["message"]) if name is not None}
        except ValueError as exc:
            reader.problem(fields["message"], f"{path}.message", f"not a valid message template: {exc}")
        else:
            unknown = sorted(n for n in names if n not in MESSAGE_FIELDS)
            if unknown:
                reader.problem(fields["message"], f"{path}.message",
                               f"unknown placeholder {{{unknown[0]}}} (known: {', '.join('{' + f + '}' for f in MESSAGE_FIELDS)})")
    if "priority" in fields:
        values["priority"] = reader.priority(fields["priority"], f"{path}.priority")
    if "enabled" in fields:
        values["enabled"] = reader.boolean(fields["enabled"], f"{path}.enabled")
    for key, attribute in _SELECTORS.items():
        if key in fields:
            selected = reader.texts(fields[key], f"{path}.{key}")
            if selected is not None:
                values[attribute] = values.get(attribute, frozenset()) | selected
    if "escalate" in fields:
        escalate = reader.mapping(fields["escalate"], f"{path}.escalate", ("after", "priority"))
        if escalate is not None:
            if "after" not in escalate or "priority" not in escalate:
                reader.problem(fields["escalate"], f"{path}.escalate", "needs both after and priority")
            else:
                after = reader.duration(escalate["after"], f"{path}.escalate.after")
                priority = reader.priority(escalate["priority"], f"{path}.escalate.priority")
                if after is not None and priority is not None:
                    values["escalate"] = Escalation(after, priority)

    if kind == "condition":
        if "levels" in fields:
            levels = reader.mapping(fields["levels"], f"{path}.levels", CONDITION_LEVELS)
            if levels is not None:
                parsed = [(level, reader.priority(levels[level], f"{path}.levels.{level}")) for level in CONDITION_LEVELS if level in levels]
                if not parsed:
                    reader.problem(fields["levels"], f"{path}.levels", "name FAULT and/or WARNING with a priority each")
                values["levels"] = tuple((lv, p) for lv, p in parsed if p is not None)
        else:
            values["levels"] = (("FAULT", values.get("priority") or "critical"), ("WARNING", "medium"))
        for key in ("native_codes", "exclude_native_codes"):
            if key in fields:
                values[key] = reader.texts(fields[key], f"{path}.{key}") or frozenset()
    if kind == "event":
        if "values" not in fields:
            reader.problem(node, f"{path}.values", "missing: the event values that alarm, e.g. [STOPPED, FEED_HOLD]")
        else:
            chosen = reader.texts(fields["values"], f"{path}.values")
            if chosen is not None:
                values["values"] = frozenset(v.strip().casefold() for v in chosen)
        if not any(k in fields for k in ("data_item", "data_items", "name", "names", "type", "types")):
            reader.problem(node, path, "an event rule needs type, names or data_items to say which events it watches")
    if kind == "threshold":
        for key in ("above", "below", "deadband"):
            if key in fields:
                values[key] = reader.number(fields[key], f"{path}.{key}")
        if "above" not in fields and "below" not in fields:
            reader.problem(node, path, "a threshold rule needs above and/or below")
        if (values.get("deadband") or 0) < 0:
            reader.problem(fields["deadband"], f"{path}.deadband", "cannot be negative")
        above, below = values.get("above"), values.get("below")
        if above is not None and below is not None and below >= above:
            reader.problem(fields["below"], f"{path}.below", f"must be less than above ({above:g}), or the alarm never clears")
        if not any(k in fields for k in ("data_item", "data_items", "name", "names", "type", "types")):
            reader.problem(node, path, "a threshold rule needs type, names or data_items to say which samples it watches")
    if kind in ("event", "threshold", "unavailable"):
        if "for" in fields:
            values["on_delay"] = reader.duration(fields["for"], f"{path}.for")
        if "off_delay" in fields:
            values["off_delay"] = reader.duration(fields["off_delay"], f"{path}.off_delay")
    if kind == "offline":
        values["after"] = reader.duration(fields["after"], f"{path}.after") if "after" in fields else 60.0
        if "no_data_after" in fields:
            values["no_data_after"] = reader.duration(fields["no_data_after"], f"{path}.no_data_after", allow_null=True)
    if len(reader.problems) > before:
        return None
    values = {k: v for k, v in values.items() if v is not None}
    if kind == "condition" and "priority" not in values:
        values["priority"] = max((p for _, p in values["levels"]), key=lambda p: -PRIORITIES.index(p), default="medium")
    return Rule(**values)


def _read_settings(reader: _Reader, node: yaml.Node) -> EngineSettings:
    fields = reader.mapping(node, "settings", ("notify_priorities", "chattering", "flood", "stale_after", "shifts", "timezone"))
    if fields is None:
        return EngineSettings()
    values: dict[str, Any] = {}
    if "notify_priorities" in fields:
        chosen = reader.texts(fields["notify_priorities"], "settings.notify_priorities")
        if chosen is not None:
            unknown = sorted(p for p in chosen if p.lower() not in PRIORITIES)
            if unknown:
                reader.problem(fields["notify_priorities"], "settings.notify_priorities", f"unknown priorities {unknown}")
            values["notify_priorities"] = frozenset(p.lower() for p in chosen)
    for key, count_field in (("chattering", "activations"), ("flood", "alarms")):
        if key in fields:
            part = reader.mapping(fields[key], f"settings.{key}", (count_field, "within"))
            if part is not None:
                if count_field in part:
                    count = reader.number(part[count_field], f"settings.{key}.{count_field}")
                    if count is not None and (count < 1 or count != int(count)):
                        reader.problem(part[count_field], f"settings.{key}.{count_field}", "must be a whole number >= 1")
                    elif count is not None:
                        values[f"{key}_{count_field}"] = int(count)
                if "within" in part:
                    within = reader.duration(part["within"], f"settings.{key}.within")
                    if within is not None:
                        values[f"{key}_seconds"] = within
    if "stale_after" in fields:
        stale = reader.duration(fields["stale_after"], "settings.stale_after")
        if stale is not None:
            values["stale_seconds"] = stale
    if "timezone" in fields:
        values["timezone"] = reader.text(fields["timezone"], "settings.timezone")
    if "shifts" in fields:
        items = reader.sequence(fields["shifts"], "settings.shifts") or []
        shifts = []
        for index, item in enumerate(items):
            shift = reader.mapping(item, f"settings.shifts[{index}]", ("name", "start"))
            if shift is None:
                continue
            if "name" not in shift or "start" not in shift:
                reader.problem(item, f"settings.shifts[{index}]", "needs name and start (HH:MM)")
                continue
            name = reader.text(shift["name"], f"settings.shifts[{index}].name")
            start_node = shift["start"]
            # YAML 1.1 reads an unquoted 06:00 as a base-60 integer (360): take it as minutes.
            raw = reader.scalar(start_node) if isinstance(start_node, yaml.ScalarNode) else None
            start = f"{raw // 60:02d}:{raw % 60:02d}" if isinstance(raw, int) and not isinstance(raw, bool) and ":" in start_node.value else raw
            if not isinstance(start, str) or not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", start):
                reader.problem(start_node, f"settings.shifts[{index}].start", f"expected a time HH:MM, not {start_node.value!r}")
                continue
            if name:
                shifts.append(Shift(name, start))
        if shifts:
            if len({s.start for s in shifts}) != len(shifts):
                reader.problem(fields["shifts"], "settings.shifts", "two shifts start at the same time")
            values["shifts"] = tuple(shifts)
    return EngineSettings(**values)


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """A checked rule set from YAML text; raises RulesError listing every problem."""
    reader = _Reader(text, source)
    try:
        root = reader.root()
        if reader.problems:
            raise RulesError(reader.problems)
        if root is None:
            raise RulesError([RuleProblem(source, None, "", "the file is empty; expected version and rules")])
        fields = reader.mapping(root, "", ("version", "settings", "rules"))
        if fields is None:
            raise RulesError(reader.problems)
        if "version" in fields:
            version = reader.scalar(fields["version"])
            if version != 1:
                reader.problem(fields["version"], "version", f"unsupported version {version!r} (this app reads version 1)")
        settings = _read_settings(reader, fields["settings"]) if "settings" in fields else EngineSettings()
        rules: list[Rule] = []
        if "rules" not in fields:
            reader.problem(root, "rules", "missing: the list of rules")
        else:
            seen: dict[str, int | None] = {}
            for index, node in enumerate(reader.sequence(fields["rules"], "rules") or []):
                rule = _read_rule(reader, node, f"rules[{index}]")
                if rule is None:
                    continue
                if rule.id in seen:
                    reader.problem(node, f"rules[{index}].id", f"{rule.id!r} is already the id of the rule on line {seen[rule.id]}")
                    continue
                seen[rule.id] = rule.line
                rules.append(rule)
        if reader.problems:
            raise RulesError(reader.problems)
        return RuleSet(tuple(rules), settings, source)
    finally:
        reader.close()


def load_rules(path: str | Path) -> RuleSet:
    """A checked rule set from a YAML file; errors name this file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([RuleProblem(str(path), None, "", f"cannot read the rules file: {exc}")]) from exc
    return parse_rules(text, str(path))


def default_rules_path() -> Path:
    from desktop.core.paths import resource_path

    return resource_path("alarms/default-rules.yaml")
