"""The common rules the settings dialog edits: read from the rules file, written back in place.

Expected values come from reading the files as plain YAML here, never from the code under test."""
from __future__ import annotations

import dataclasses
import difflib

import pytest
import yaml

import alarm_support as support
from desktop.core.alarms import AlarmEngine, RulesError, default_rules_path, load_rules
from desktop.core.alarms.common import CommonRules, common_rules, save_common_rules, with_common_rules

DEFAULT_TEXT = default_rules_path().read_text(encoding="utf-8")


def seconds(text) -> float:
    number, unit = str(text).split()
    return float(number) * {"ms": 0.001, "s": 1, "min": 60, "h": 3600}[unit]


def plain_rule(text: str, rule_id: str) -> dict:
    return next(rule for rule in yaml.safe_load(text)["rules"] if rule["id"] == rule_id)


def test_the_default_rules_give_the_values_the_file_says():
    condition, offline, spindle = (plain_rule(DEFAULT_TEXT, i) for i in ("condition", "machine-offline", "spindle-overload"))
    assert common_rules(DEFAULT_TEXT, "default-rules.yaml") == CommonRules(
        conditions_enabled=True, fault_priority=condition["levels"]["FAULT"], warning_priority=condition["levels"]["WARNING"],
        offline_enabled=True, offline_after=seconds(offline["after"]),
        spindle_load_enabled=True, spindle_load_above=float(spindle["above"]), spindle_load_for=seconds(spindle["for"]))


def test_saving_changes_only_those_values_and_keeps_the_comments(tmp_path):
    path = tmp_path / "rules.yaml"
    changed = dataclasses.replace(common_rules(DEFAULT_TEXT), warning_priority="high", offline_after=90.0,
                                  spindle_load_above=80.0, spindle_load_for=10.0, conditions_enabled=False)
    save_common_rules(path, changed, template=default_rules_path())
    text = path.read_text(encoding="utf-8")
    condition, offline, spindle = (plain_rule(text, i) for i in ("condition", "machine-offline", "spindle-overload"))
    assert (condition["levels"], condition["enabled"]) == ({"FAULT": "critical", "WARNING": "high"}, False)
    assert seconds(offline["after"]) == 90.0
    assert (spindle["above"], seconds(spindle["for"])) == (80, 10.0)
    # Every other rule and setting is as the file had it, and so is every comment.
    before, after = yaml.safe_load(DEFAULT_TEXT), yaml.safe_load(text)
    assert after["settings"] == before["settings"]
    untouched = {"condition", "machine-offline", "spindle-overload"}
    assert [r for r in after["rules"] if r["id"] not in untouched] == [r for r in before["rules"] if r["id"] not in untouched]
    comments = [line.split("#", 1)[1] for line in DEFAULT_TEXT.splitlines() if "#" in line]
    assert [line.split("#", 1)[1] for line in text.splitlines() if "#" in line] == comments
    changed_lines = [line for line in difflib.ndiff(DEFAULT_TEXT.splitlines(), text.splitlines()) if line[:1] in "+-"]
    assert len(changed_lines) == 2 * 4 + 1  # four values replaced, `enabled: false` added
    # What the app loads from the saved file behaves accordingly: no condition alarm on a day of faults.
    engine = AlarmEngine(load_rules(path))
    assert not [e for e in engine.process(support.day("Mazak03"), now=0.0) if e.alarm.rule_kind == "condition"]
    # Saving the same values again changes nothing.
    save_common_rules(path, changed)
    assert path.read_text(encoding="utf-8") == text


def test_a_flow_style_rule_without_the_edited_keys_gets_them():
    text = ("version: 1\nrules:\n"
            "  - {id: faults, kind: condition, levels: {FAULT: high}}   # faults only\n"
            "  - id: offline\n    kind: offline\n"
            "  - id: spindle-overload\n    kind: threshold\n    names: [Sload]\n    above: 95\n")
    common = common_rules(text)
    assert (common.fault_priority, common.warning_priority, common.spindle_load_for) == ("high", None, 0.0)
    result = with_common_rules(text, dataclasses.replace(common, spindle_load_for=5.0, offline_after=45.0), "mine.yaml")
    rules = yaml.safe_load(result)["rules"]
    assert rules[0] == {"id": "faults", "kind": "condition", "levels": {"FAULT": "high"}}
    off = with_common_rules(text, dataclasses.replace(common, conditions_enabled=False), "mine.yaml")
    assert yaml.safe_load(off)["rules"][0]["enabled"] is False
    assert seconds(rules[1]["after"]) == 45.0 and seconds(rules[2]["for"]) == 5.0
    assert "# faults only" in result


def test_bad_values_are_refused_naming_the_file_and_field_and_the_file_is_left_alone(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(DEFAULT_TEXT, encoding="utf-8")
    common = common_rules(DEFAULT_TEXT)
    for change, field in ((dict(fault_priority="urgent"), "fault_priority"), (dict(offline_after=0.0), "offline_after"),
                          (dict(spindle_load_for=-1.0), "spindle_load_for")):
        with pytest.raises(RulesError) as raised:
            save_common_rules(path, dataclasses.replace(common, **change))
        assert str(path) in str(raised.value) and field in str(raised.value)
    assert path.read_text(encoding="utf-8") == DEFAULT_TEXT
    with pytest.raises(RulesError, match="no threshold rule 'spindle-overload'"):
        common_rules("version: 1\nrules:\n  - {id: c, kind: condition}\n  - {id: o, kind: offline}\n", "mine.yaml")
