"""The rules file: the default rules load and fit the NIST machines; every mistake in a
rules file is reported with the file, the line and the field."""
from __future__ import annotations

import pytest

import recorded_nist as testing
import alarm_support as support
from desktop.core.alarms import AlarmEngine, RulesError, default_rules_path, load_rules, parse_rules
from desktop.core.alarms.rules import parse_duration


def test_default_rules_load_and_watch_what_every_nist_machine_reports():
    rules = load_rules(default_rules_path())
    assert {r.kind for r in rules.rules} == {"condition", "event", "threshold", "unavailable", "offline"}
    engine = AlarmEngine(rules)
    for device in support.devices():
        observations = testing.unavailable_observations(device, "2016-11-16T20:00:00Z")
        watched = {o["name"] for o in observations if engine.watches(o)}
        items = device["data_items"]
        # Whatever the adapter calls them: emergency stop, execution, availability, every condition.
        must = {i["name"] for i in items if i.get("type") in ("EMERGENCY_STOP", "EXECUTION", "AVAILABILITY")
                or i["category"] == "CONDITION"}
        assert must and must <= watched, device["device_name"]
        spindle_loads = {i["name"] for i in items if i.get("type") == "LOAD" and i["name"].startswith("S")}
        assert spindle_loads <= watched
        assert not any(i.get("type") == "POSITION" and i["category"] == "SAMPLE" and i["name"] in watched for i in items)


def test_default_rules_on_the_mazak03_day_pop_up_its_faults():
    engine = AlarmEngine(load_rules(default_rules_path()))
    events = engine.process(support.day("Mazak03"), now=0.0)
    popped = [(e.alarm.rule_id, e.alarm.native_code) for e in events if e.notify]
    assert popped == [("condition", "791"), ("condition", "711"), ("condition", "711")]
    stopped = [e.alarm for e in events if e.kind == "raised" and e.alarm.rule_id == "execution-stopped"]
    expected = [start for start, end in support.runs(support.item_values("Mazak03", "execution"),
                                                      lambda v: v.strip() in {"STOPPED", "INTERRUPTED", "FEED_HOLD"})
                if end is None or support.epoch(end) - support.epoch(start) >= 30]
    assert [support.epoch(a.activated_at) - 30 for a in stopped] == pytest.approx([support.epoch(t) for t in expected])


def problems_of(text: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "plant-rules.yaml")
    return [str(p) for p in caught.value.problems]


def test_errors_name_the_file_the_line_and_the_field():
    text = """version: 1
rules:
  - id: spindle
    kind: threshold
    names: [Sload]
    abvoe: 90
    below: cold
  - id: spindle
    kind: event
    type: EXECUTION
    values: [STOPPED]
    priority: urgent
  - id: offline
    kind: offline
    after: soon
  - kind: teleport
"""
    assert problems_of(text) == [
        "plant-rules.yaml:6: rules[0].abvoe: unknown field (known: above, below, component, data_item, data_items, "
        "deadband, devices, enabled, escalate, for, id, kind, message, name, names, off_delay, priority, sub_type, "
        "title, type, types)",
        "plant-rules.yaml:7: rules[0].below: expected a number, not 'cold'",
        "plant-rules.yaml:12: rules[1].priority: unknown priority 'urgent' (one of critical, high, medium, low)",
        "plant-rules.yaml:15: rules[2].after: expected a duration such as '5 s' or '10 min', not 'soon'",
        "plant-rules.yaml:16: rules[3].kind: unknown kind 'teleport' (one of condition, event, threshold, unavailable, offline)",
    ]


def test_duplicate_ids_missing_fields_and_contradictions_are_errors():
    text = """version: 1
rules:
  - {id: a, kind: event, type: EXECUTION, values: [STOPPED]}
  - {id: a, kind: condition}
  - {id: b, kind: event, values: [X]}
  - {id: c, kind: threshold, name: Sload, above: 10, below: 20}
  - {id: d, kind: threshold, name: Sload}
  - {id: e, kind: event, type: EXECUTION}
  - {kind: condition}
"""
    assert problems_of(text) == [
        "plant-rules.yaml:4: rules[1].id: 'a' is already the id of the rule on line 3",
        "plant-rules.yaml:5: rules[2]: an event rule needs type, names or data_items to say which events it watches",
        "plant-rules.yaml:6: rules[3].below: must be less than above (10), or the alarm never clears",
        "plant-rules.yaml:7: rules[4]: a threshold rule needs above and/or below",
        "plant-rules.yaml:8: rules[5].values: missing: the event values that alarm, e.g. [STOPPED, FEED_HOLD]",
        "plant-rules.yaml:9: rules[6].id: missing",
    ]


def test_broken_yaml_and_bad_settings_are_located():
    assert problems_of("version: 1\nrules:\n  - id: a\n    kind: [condition\n") == [
        "plant-rules.yaml:5: not valid YAML: expected ',' or ']', but got '<stream end>'"]
    text = """version: 2
settings:
  flood: {alarms: 0, within: 10 min}
  shifts:
    - {name: early, start: "25:00"}
rules: []
"""
    assert problems_of(text) == [
        "plant-rules.yaml:1: version: unsupported version 2 (this app reads version 1)",
        "plant-rules.yaml:3: settings.flood.alarms: must be a whole number >= 1",
        "plant-rules.yaml:5: settings.shifts[0].start: expected a time HH:MM, not '25:00'",
    ]


def test_a_file_that_cannot_be_read_names_itself(tmp_path):
    with pytest.raises(RulesError, match="missing.yaml: cannot read the rules file"):
        load_rules(tmp_path / "missing.yaml")


def test_durations_and_unquoted_shift_times():
    assert [parse_duration(v) for v in (5, "5 s", "500 ms", "10 min", "1.5 h", "1 d")] == [5, 5, 0.5, 600, 5400, 86400]
    rules = parse_rules("version: 1\nsettings:\n  shifts:\n    - {name: a, start: 06:00}\n    - {name: b, start: 18:30}\nrules: []\n")
    assert [(s.name, s.start) for s in rules.settings.shifts] == [("a", "06:00"), ("b", "18:30")]


def test_message_templates_fill_in_and_unknown_placeholders_are_errors():
    engine = AlarmEngine(parse_rules("""version: 1
rules:
  - {id: estop, kind: event, type: EMERGENCY_STOP, values: [TRIGGERED], priority: critical,
     message: "{device}: emergency stop ({item} = {value})"}
"""))
    estop = next(o for o in support.day("Mazak01") if o["type"] == "EMERGENCY_STOP")
    [event] = engine.process([dict(estop, value="TRIGGERED")], now=0.0)
    assert event.alarm.message == "Mazak01: emergency stop (estop = TRIGGERED)"
    assert problems_of("""version: 1
rules:
  - id: estop
    kind: event
    type: EMERGENCY_STOP
    values: [TRIGGERED]
    message: "{machine} stopped"
""") == ["plant-rules.yaml:7: rules[0].message: unknown placeholder {machine} (known: {device}, {item}, {value}, "
         "{units}, {above}, {below}, {level}, {code}, {title}, {rule})"]
