"""What the alarm views show: the active-alarm table's rows, order and filters, the machines
whose tiles are marked, the horn and its mute, pop-up routing by priority.

The alarms are the engine's over Mazak03's recorded day (AlarmEngine() watches conditions
only); how many there are and what they say comes from the tests' own reading of the SHDR
lines (alarm_support), the expected order from the ISA-18.2 rule written out here."""
from __future__ import annotations

import pytest

import alarm_support as support
from desktop.core.alarms import AlarmEngine, AlarmState
from desktop.core.alarms.table import Horn, TableFilter, attention_by_device, popup_style, table_rows

ACTIVE_STATES = (AlarmState.UNACKNOWLEDGED_ACTIVE, AlarmState.ACKNOWLEDGED_ACTIVE)


@pytest.fixture(scope="module")
def mazak03():
    return support.day("Mazak03")


def day_until(mazak03, last_timestamp: str):
    return [o for o in mazak03 if support.epoch(o["timestamp"]) <= support.epoch(last_timestamp)]


def test_a_fault_that_came_and_went_stays_in_the_table_and_on_its_tile_until_acknowledged(mazak03):
    activations = support.condition_activations("Mazak03")
    assert all(a.cleared_at for a in activations), "every condition of the day ends"
    engine = AlarmEngine()
    engine.process(mazak03, now=0.0)
    rows = table_rows(engine.alarms())
    # Every activation of the day is still listed, returned to normal and waiting for someone.
    assert sorted((a.data_item_name, a.native_code, a.activated_at) for a in rows) == \
        sorted((a.item, a.code, a.timestamp) for a in activations)
    assert {a.alarm_state for a in rows} == {AlarmState.UNACKNOWLEDGED_RETURNED}
    (device, marked), = attention_by_device(engine.alarms()).items()
    assert rows[0].device_uuid == device
    assert (marked.unacknowledged, marked.active, marked.priority) == (len(activations), 0, "critical")

    for alarm in rows:
        engine.acknowledge(alarm.alarm_id, by="operator")
    assert table_rows(engine.alarms()) == []
    assert attention_by_device(engine.alarms()) == {}


def test_unacknowledged_alarms_come_first_then_priority_then_newest(mazak03):
    activations = support.condition_activations("Mazak03")
    # Stop the day at its last activation: that one active, every earlier one returned to normal.
    last = max(activations, key=lambda a: support.epoch(a.timestamp))
    earlier = [a for a in activations if a is not last]
    assert {a.level for a in earlier} == {"FAULT", "WARNING"}
    assert all(support.epoch(a.cleared_at) <= support.epoch(last.timestamp) for a in earlier)
    engine = AlarmEngine()
    engine.process(day_until(mazak03, last.timestamp), now=0.0)
    rows = table_rows(engine.alarms())
    assert [(a.data_item_name, a.native_code, a.alarm_state) for a in rows[:1]] == \
        [(last.item, last.code, AlarmState.UNACKNOWLEDGED_ACTIVE)]
    returned = rows[1:]
    assert len(returned) == len(earlier)
    assert {a.alarm_state for a in returned} == {AlarmState.UNACKNOWLEDGED_RETURNED}
    # Within a group: critical (FAULT) before medium (WARNING), newest first.
    rank = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    keys = [(rank[a.priority], -support.epoch(a.activated_at)) for a in returned]
    assert keys == sorted(keys)
    assert [a.level for a in returned] == sorted((a.level for a in earlier), key=lambda level: level != "FAULT")
    # Acknowledged, the active one moves below every alarm still waiting for an acknowledgement.
    engine.acknowledge(rows[0].alarm_id, by="operator", note="tool changed")
    after = table_rows(engine.alarms())
    assert [a.alarm_id for a in after] == [a.alarm_id for a in returned] + [rows[0].alarm_id]
    assert after[-1].alarm_state is AlarmState.ACKNOWLEDGED_ACTIVE
    # The same alarms, handed over in another order, give the same table (every station agrees).
    assert table_rows(list(reversed(engine.alarms()))) == after


def test_filters_by_machine_priority_state_and_text(mazak03):
    engine = AlarmEngine()
    engine.process(mazak03, now=0.0)
    rows = table_rows(engine.alarms())
    activations = support.condition_activations("Mazak03")
    faults = [a for a in activations if a.level == "FAULT"]
    assert len(table_rows(rows, TableFilter(priorities=frozenset({"critical"})))) == len(faults) == 4
    assert table_rows(rows, TableFilter(devices=frozenset({"Mazak01"}))) == []
    assert len(table_rows(rows, TableFilter(devices=frozenset({"Mazak03"})))) == len(activations)
    text = faults[0].text
    by_text = table_rows(rows, TableFilter(text=text.lower()))
    assert by_text and all(a.message == text for a in by_text)
    assert len(by_text) == sum(a.text == text for a in activations)
    assert table_rows(rows, TableFilter(states=frozenset(ACTIVE_STATES))) == []
    shelved = rows[0]
    engine.shelve(shelved.alarm_id, by="operator", seconds=3600, reason="known sensor fault", now=0.0)
    # Shelving puts the point aside: every activation of that data item and code.
    point = [a for a in activations if (a.item, a.code) == (shelved.data_item_name, shelved.native_code)]
    only_shelved = table_rows(engine.alarms(), TableFilter(states=frozenset({AlarmState.SHELVED})))
    assert sorted(a.activated_at for a in only_shelved) == sorted(a.timestamp for a in point)
    assert {(a.data_item_name, a.native_code, a.shelve_reason) for a in only_shelved} == \
        {(shelved.data_item_name, shelved.native_code, "known sensor fault")}
    # Shelved alarms go to the bottom of the table, below everything still to be acknowledged.
    assert {a.alarm_id for a in table_rows(engine.alarms())[-len(point):]} == {a.alarm_id for a in only_shelved}


def test_the_horn_sounds_for_unacknowledged_critical_alarms_and_a_mute_lasts_its_time(mazak03):
    faults = [a for a in support.condition_activations("Mazak03") if a.level == "FAULT"]
    first, second = faults[0], faults[1]
    assert support.epoch(first.cleared_at) <= support.epoch(second.timestamp)
    engine, horn = AlarmEngine(), Horn()
    engine.process(day_until(mazak03, first.timestamp), now=0.0)
    assert horn.sounding(engine.alarms(), now=100.0)
    horn.mute(engine.alarms(), seconds=300, now=100.0)
    assert not horn.sounding(engine.alarms(), now=399.0)
    assert horn.sounding(engine.alarms(), now=400.0), "the mute ends after its time"
    horn.mute(engine.alarms(), seconds=300, now=400.0)
    # A new critical alarm during the mute sounds at once: muting never hides a new emergency.
    engine.process(day_until(mazak03, second.timestamp), now=0.0)
    assert horn.sounding(engine.alarms(), now=401.0)
    for alarm in engine.alarms():
        engine.acknowledge(alarm.alarm_id, by="operator")
    assert not horn.sounding(engine.alarms(), now=402.0)
    with pytest.raises(ValueError, match="positive number of seconds"):
        horn.mute(engine.alarms(), seconds=0, now=0.0)


def test_warnings_alone_keep_the_horn_quiet(mazak03):
    activations = support.condition_activations("Mazak03")
    first_fault = next(a for a in activations if a.level == "FAULT")
    before = [a for a in activations if support.epoch(a.timestamp) < support.epoch(first_fault.timestamp)]
    assert before and all(a.level == "WARNING" for a in before), "the day starts with warnings"
    engine = AlarmEngine()
    last_warning = max(before, key=lambda a: support.epoch(a.timestamp))
    engine.process(day_until(mazak03, last_warning.timestamp), now=0.0)
    assert table_rows(engine.alarms()), "the warnings are listed"
    assert not Horn().sounding(engine.alarms(), now=0.0)


def test_pop_ups_are_routed_by_priority():
    assert [popup_style(p) for p in ("critical", "high", "medium", "low")] == ["critical", "warning", "information", None]
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        popup_style("urgent")
