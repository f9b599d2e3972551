"""The common rules the settings dialog edits, read from and written back into a rules file.

Which Conditions alarm and at what priority, after how long a machine counts as offline, and
the spindle-load threshold: the settings an operator changes most. They live in the rules
file like every other rule, so the file stays the one place alarms are defined. Writing them
back edits only the values concerned, in place, so the file's comments, order and layout stay
as its author wrote them; the result is checked with the rules file's own validation before
it replaces the file (atomically), so a bad edit never leaves a file the app cannot load.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from desktop.core.alarms.rules import PRIORITIES, RuleProblem, RulesError, RuleSet, parse_rules

# The rules the dialog edits, found by kind (conditions, offline) or by id (the threshold).
SPINDLE_LOAD_RULE = "spindle-overload"
# The user's rules file, in the settings folder; without it the app uses the default rules.
USER_RULES_FILE = "alarm-rules.yaml"


@dataclass(frozen=True)
class CommonRules:
    conditions_enabled: bool
    fault_priority: str
    warning_priority: str | None  # None: the file lets Warnings through without an alarm
    offline_enabled: bool
    offline_after: float  # seconds the agent is unreachable before its machines are offline
    spindle_load_enabled: bool
    spindle_load_above: float  # percent
    spindle_load_for: float  # seconds above the limit before it alarms


def _rule_ids(rules: RuleSet, source: str) -> tuple[str, str, str]:
    def first(kind: str) -> str:
        for rule in rules.rules:
            if rule.kind == kind:
                return rule.id
        raise RulesError([RuleProblem(source, None, "rules", f"no rule of kind {kind!r} for the settings dialog to edit")])

    spindle = [rule for rule in rules.rules if rule.id == SPINDLE_LOAD_RULE and rule.kind == "threshold"]
    if not spindle or spindle[0].above is None:
        raise RulesError([RuleProblem(source, None, "rules",
                                      f"no threshold rule {SPINDLE_LOAD_RULE!r} with 'above' for the settings dialog to edit")])
    return first("condition"), first("offline"), SPINDLE_LOAD_RULE


def common_rules(text: str, source: str = "<rules>") -> CommonRules:
    """The common rules of a rules file's text (checked as the app loads it)."""
    rules = parse_rules(text, source)
    condition_id, offline_id, spindle_id = _rule_ids(rules, source)
    condition, offline, spindle = rules.rule(condition_id), rules.rule(offline_id), rules.rule(spindle_id)
    return CommonRules(
        conditions_enabled=condition.enabled, fault_priority=condition.level_priority("FAULT") or "critical",
        warning_priority=condition.level_priority("WARNING"),
        offline_enabled=offline.enabled, offline_after=float(offline.after or 0.0),
        spindle_load_enabled=spindle.enabled, spindle_load_above=float(spindle.above), spindle_load_for=spindle.on_delay)


def _number(value: float) -> str:
    return f"{value:g}"


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _check(common: CommonRules, source: str) -> None:
    problems = []
    for field_name in ("fault_priority", "warning_priority"):
        value = getattr(common, field_name)
        if value is not None and value not in PRIORITIES:
            problems.append(f"{field_name}: unknown priority {value!r} (one of {', '.join(PRIORITIES)})")
    for field_name in ("offline_after", "spindle_load_for"):
        if not getattr(common, field_name) >= 0:
            problems.append(f"{field_name}: a duration cannot be negative, not {getattr(common, field_name)!r}")
    if not common.offline_after > 0:
        problems.append("offline_after: must be more than 0 s")
    if not 0 <= common.spindle_load_above < 1e6:
        problems.append(f"spindle_load_above: expected a percentage, not {common.spindle_load_above!r}")
    if problems:
        raise RulesError([RuleProblem(source, None, text.split(":")[0], text) for text in problems])


class _Editor:
    """Replaces scalar values of a YAML text in place, by their position in the text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        self.edits: list[tuple[int, int, str]] = []  # (start, end, replacement)

    def rule(self, rule_id: str) -> yaml.MappingNode:
        for key, value in self.root.value:
            if key.value == "rules":
                for rule in value.value:
                    for k, v in rule.value:
                        if k.value == "id" and v.value == rule_id:
                            return rule
        raise KeyError(rule_id)

    def set(self, mapping: yaml.MappingNode, key: str, replacement: str, default: str | None = None) -> None:
        """Set `key` to `replacement`; a missing key whose `default` is that value stays missing."""
        for k, v in mapping.value:
            if k.value == key:
                if not isinstance(v, yaml.ScalarNode):
                    raise ValueError(f"{key} is not a single value")
                if v.value != replacement:
                    self.edits.append((v.start_mark.index, v.end_mark.index, replacement))
                return
        if replacement == default:
            return
        # A key the file leaves at its default: added after the mapping's last value, at the
        # indentation of its keys (block style) or inside the braces (flow style).
        last_key, last_value = mapping.value[-1]
        end = last_value.end_mark.index
        if mapping.flow_style:
            self.edits.append((end, end, f", {key}: {replacement}"))
        else:
            self.edits.append((end, end, f"\n{' ' * last_key.start_mark.column}{key}: {replacement}"))

    def result(self) -> str:
        text = self.text
        for start, end, replacement in sorted(self.edits, reverse=True):
            text = text[:start] + replacement + text[end:]
        return text


def with_common_rules(text: str, common: CommonRules, source: str = "<rules>") -> str:
    """The rules file's text with the common rules set to `common`; everything else as it was.
    Raises RulesError (naming `source`) when the values or the resulting file are not valid."""
    _check(common, source)
    condition_id, offline_id, spindle_id = _rule_ids(parse_rules(text, source), source)
    editor = _Editor(text)
    condition = editor.rule(condition_id)
    editor.set(condition, "enabled", "true" if common.conditions_enabled else "false", default="true")
    levels = next((v for k, v in condition.value if k.value == "levels"), None)
    if levels is None:
        editor.set(condition, "levels", "{FAULT: %s%s}" % (
            common.fault_priority, f", WARNING: {common.warning_priority}" if common.warning_priority else ""))
    else:
        editor.set(levels, "FAULT", common.fault_priority)
        if common.warning_priority is not None:
            editor.set(levels, "WARNING", common.warning_priority)
        elif any(k.value == "WARNING" for k, _ in levels.value):
            raise RulesError([RuleProblem(source, levels.start_mark.line + 1, f"rules.{condition_id}.levels",
                                          "leaving Warnings out is done in the file: remove WARNING from levels")])
    offline = editor.rule(offline_id)
    editor.set(offline, "enabled", "true" if common.offline_enabled else "false", default="true")
    editor.set(offline, "after", _seconds(common.offline_after))
    spindle = editor.rule(spindle_id)
    editor.set(spindle, "enabled", "true" if common.spindle_load_enabled else "false", default="true")
    editor.set(spindle, "above", _number(common.spindle_load_above))
    editor.set(spindle, "for", _seconds(common.spindle_load_for), default=_seconds(0.0))
    result = editor.result()
    written = common_rules(result, source)  # the app must be able to load what is written
    if written != common:
        raise RulesError([RuleProblem(source, None, "rules", f"the edited file reads back as {written}, not {common}")])
    return result


def save_common_rules(path: str | Path, common: CommonRules, template: str | Path | None = None) -> None:
    """Write the common rules into the rules file at `path` (created from `template`, the
    default rules, when it does not exist yet), replacing it atomically."""
    path = Path(path)
    source = path if path.exists() or template is None else Path(template)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([RuleProblem(str(source), None, "", f"cannot read the rules file: {exc}")]) from exc
    result = with_common_rules(text, common, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(result)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
