"""The alarm engine over recorded Mazak03 conditions: raise once, clear, re-raise, stable ids."""
from __future__ import annotations

import pytest

import recorded_nist as testing
from desktop.core.alarms import CLEARED, AlarmEngine, AlarmJournal, alarm_id
from desktop.core.conditions import ConditionTracker

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"


@pytest.fixture(scope="module")
def mazak03():
    return testing.device_named(testing.load_devices(), "Mazak03")


@pytest.fixture(scope="module")
def day(mazak03):
    """(line number, observation) for the whole recorded day."""
    return list(testing.shdr_observations(testing.nist_shdr(MAZAK03_DAY), mazak03))


def lines_with(text: str) -> list[int]:
    with open(testing.nist_shdr(MAZAK03_DAY), encoding="utf-8") as lines:
        return [number for number, line in enumerate(lines, start=1) if text in line]


def observations_until(day, last_line: int):
    return [o for number, o in day if number <= last_line]


def test_recorded_fault_791_raises_one_critical_notification(day):
    fault_line = lines_with("|motion_cond|Fault|791|")[0]
    fault = next(o for number, o in day if number == fault_line)
    engine = AlarmEngine()
    events = engine.process(observations_until(day, fault_line))
    raised = [e for e in events if e.notify]
    assert len(raised) == 1
    alarm = raised[0].alarm
    assert alarm.device_name == "Mazak03" and alarm.level == "FAULT" and alarm.priority == "critical"
    assert alarm.native_code == "791" and alarm.message == "MUST INPUT CUTTING SPEED"
    assert alarm.alarm_id == f"{fault['device_uuid']}/{fault['data_item_id']}/791/{fault['sequence']}"
    assert [a.alarm_id for a in engine.active_alarms()] == [alarm.alarm_id]

    # The same active fault reported again (an agent's /current, a producer restart) is no news.
    assert engine.process([fault, dict(fault, sequence=fault["sequence"] + 1000)]) == []


def test_normal_clears_and_a_later_fault_is_a_new_notified_activation(day):
    faults_711 = lines_with("|motion_cond|Fault|711|")
    assert len(faults_711) >= 2
    engine = AlarmEngine()
    events = engine.process(observations_until(day, faults_711[1]))
    notified = [e.alarm for e in events if e.notify and e.alarm.native_code == "711"]
    cleared = [e.alarm for e in events if e.kind == "cleared" and e.alarm.native_code == "711"]
    assert len(notified) == 2, "each FAULT after a NORMAL is a new activation"
    assert notified[0].alarm_id != notified[1].alarm_id
    assert len(cleared) == 1 and cleared[0].alarm_id == notified[0].alarm_id
    assert cleared[0].state == CLEARED and cleared[0].cleared_at


def test_ids_are_deterministic_across_engines(day):
    observations = [o for _, o in day]
    first = [(e.kind, e.alarm.alarm_id) for e in AlarmEngine().process(observations)]
    second = [(e.kind, e.alarm.alarm_id) for e in AlarmEngine().process(observations)]
    assert first == second
    recorded_faults = len(lines_with("|Fault|"))
    assert sum(1 for kind, _ in first if kind == "raised") >= 1
    assert sum(1 for e in AlarmEngine().process(observations) if e.notify) == recorded_faults


def test_warnings_are_listed_but_not_notified(day):
    warning_line = lines_with("|Warning|")[0]
    engine = AlarmEngine()
    events = [e for e in engine.process(observations_until(day, warning_line)) if e.alarm.level == "WARNING"]
    assert events and events[-1].kind == "raised" and not events[-1].notify
    assert events[-1].alarm.priority == "medium"


def test_reread_history_after_reset_does_not_notify_again(day):
    fault_line = lines_with("|motion_cond|Fault|791|")[0]
    engine = AlarmEngine()
    first = engine.process(observations_until(day, fault_line))
    engine.reset()  # the feed reconnected and reads the same history again
    again = engine.process(observations_until(day, fault_line))
    assert any(e.notify for e in first)
    assert not any(e.notify for e in again)
    assert [a.alarm_id for a in engine.active_alarms()] == [e.alarm.alarm_id for e in first if e.notify]


def test_normal_with_a_native_code_clears_only_that_code(day):
    fault = next(o for number, o in day if number == lines_with("|motion_cond|Fault|791|")[0])
    other = dict(fault, native_code="711", condition_id="711", sequence=fault["sequence"] + 1, value="UNIT DATA NOT FOUND")
    tracker = ConditionTracker()
    tracker.update(fault)
    tracker.update(other)
    changes = tracker.update(dict(fault, level="NORMAL", native_code="711", value=None, sequence=fault["sequence"] + 2))
    assert [c.key[2] for c in changes] == ["711"]
    assert [c.key[2] for c in tracker.active()] == ["791"]
    # NORMAL without a code clears everything on the item; so does UNAVAILABLE.
    assert len(tracker.update(dict(fault, level="NORMAL", native_code=None, value=None))) == 1
    assert tracker.active() == []


def test_warning_escalating_to_fault_notifies_once(day):
    fault = next(o for number, o in day if number == lines_with("|motion_cond|Fault|791|")[0])
    warning = dict(fault, level="WARNING")
    engine = AlarmEngine()
    events = engine.process([warning, fault, fault])
    assert [(e.kind, e.notify) for e in events] == [("raised", False), ("escalated", True)]
    assert events[0].alarm.alarm_id == events[1].alarm.alarm_id  # still the same activation


def test_alarm_id_format():
    assert alarm_id("mtc_adapter004", "Mazak03-path_17", "791", 1581) == "mtc_adapter004/Mazak03-path_17/791/1581"


def test_journal_is_bounded_newest_first_and_tracks_state(day):
    engine = AlarmEngine()
    journal = AlarmJournal(limit=5)
    for _, observation in day:
        journal.apply(engine.process([observation]))
    alarms = journal.alarms()
    assert len(alarms) == 5
    newest = [e.alarm.alarm_id for e in AlarmEngine().process([o for _, o in day]) if e.kind == "raised"][-1]
    assert alarms[0].alarm_id == newest
    assert journal.active_count() == sum(1 for a in alarms if a.state == "ACTIVE")
