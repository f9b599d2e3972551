"""The alarm engine over recorded NIST data: conditions, ids, states, chattering, flood.

Expected alarms come from the tests' own reading of the SHDR lines (alarm_support),
never from the engine's code."""
from __future__ import annotations

import pytest

import alarm_support as support
from desktop.core.alarms import AlarmEngine, AlarmState
from desktop.core.alarms.timeutil import parse_timestamp

CONDITIONS_HIGH_WARNINGS = """
version: 1
rules:
  - id: conditions
    kind: condition
    levels: {FAULT: critical, WARNING: high}
"""


@pytest.fixture(scope="module")
def mazak03():
    return support.day("Mazak03")


def raised(events):
    return [e for e in events if e.kind == "raised"]


@pytest.mark.parametrize("machine", ["Mazak03", "Mazak01", "GFAgie01"])
def test_recorded_conditions_raise_exactly_the_recorded_activations(machine):
    expected = support.condition_activations(machine)
    assert expected, "the recorded day has conditions"
    events = AlarmEngine().process(support.day(machine), now=0.0)
    got = [(e.alarm.data_item_name, e.alarm.native_code, e.alarm.level, e.alarm.message, e.alarm.activated_at)
           for e in raised(events)]
    assert got == [(a.item, a.code, a.level, a.text, a.timestamp) for a in expected]
    cleared = {e.alarm.alarm_id: e.alarm.cleared_at for e in events if e.kind == "cleared"}
    ids = [e.alarm.alarm_id for e in raised(events)]
    assert [cleared.get(i) for i in ids] == [a.cleared_at for a in expected]
    priorities = {e.alarm.level: e.alarm.priority for e in raised(events)}
    assert priorities.get("FAULT", "critical") == "critical" and priorities.get("WARNING", "medium") == "medium"


def test_mazak03_day_has_the_four_faults_and_eleven_warnings(mazak03):
    events = raised(AlarmEngine().process(mazak03, now=0.0))
    assert sum(e.alarm.level == "FAULT" for e in events) == 4
    assert sum(e.alarm.level == "WARNING" for e in events) == 11
    fault = next(e.alarm for e in events if e.alarm.native_code == "791")
    assert (fault.device_name, fault.data_item_id, fault.message) == ("Mazak03", "Mazak03-path_17", "MUST INPUT CUTTING SPEED")
    assert fault.alarm_state is AlarmState.UNACKNOWLEDGED_ACTIVE


def test_faults_pop_up_once_except_chattering_ones(mazak03):
    activations = support.condition_activations("Mazak03")
    chattering = support.chattering_flags(activations)
    expected = [(a.code, a.timestamp) for a, c in zip(activations, chattering) if a.level == "FAULT" and not c]
    assert len(expected) == 3  # the third 711 within a minute is chattering
    events = AlarmEngine().process(mazak03, now=0.0)
    assert [(e.alarm.native_code, e.alarm.activated_at) for e in events if e.notify] == expected
    assert [e.alarm.chattering for e in raised(events)] == chattering
    # The same active fault reported again (an agent's current, a producer restart) is no news.
    engine = AlarmEngine()
    fault = next(o for o in mazak03 if o.get("native_code") == "791")
    first = engine.process([fault], now=0.0)
    assert engine.process([fault, dict(fault, sequence=fault["sequence"] + 1000)], now=0.0) == []
    assert [e.notify for e in first] == [True]


def test_chattering_warnings_are_flagged_and_kept_out_of_pop_ups(mazak03):
    activations = support.condition_activations("Mazak03")
    flags = support.chattering_flags(activations)
    assert sum(flags) >= 3  # warning 719 came back every few seconds
    events = support.engine(CONDITIONS_HIGH_WARNINGS).process(mazak03, now=0.0)
    notified = [(e.alarm.native_code, e.alarm.activated_at) for e in events if e.notify]
    assert notified == [(a.code, a.timestamp) for a, f in zip(activations, flags) if not f]
    assert all(e.alarm.chattering for e in raised(events) if (e.alarm.native_code, e.alarm.activated_at) not in notified)


def test_replaying_the_same_observations_gives_identical_ids_and_transitions(mazak03):
    def run():
        return [(e.kind, e.alarm.alarm_id, e.at, e.alarm.alarm_state) for e in AlarmEngine(station="other").process(mazak03, now=5.0)]

    first, second = run(), run()
    assert first == second and len(first) == 2 * 15
    # Ids depend on what was observed, not on when it was read or by which station.
    later = [(e.kind, e.alarm.alarm_id) for e in AlarmEngine(station="late").process(mazak03, now=1e9)]
    assert later == [(k, i) for k, i, _, _ in first]
    assert len({i for _, i, _, _ in first}) == 15
    assert all(i.startswith("mtc_adapter004/conditions/") for _, i, _, _ in first)


def test_reading_history_again_after_reset_updates_in_place_without_pop_ups(mazak03):
    fault_at = next(i for i, o in enumerate(mazak03) if o.get("native_code") == "791")
    engine = AlarmEngine()
    first = engine.process(mazak03[: fault_at + 1], now=0.0)
    engine.reset()
    again = engine.process(mazak03[: fault_at + 1], now=0.0)
    assert [e.kind for e in again if e.notify] == []
    assert [e.alarm.alarm_id for e in first if e.notify] == [engine.active_alarms()[0].alarm_id]
    assert [a.alarm_id for a in engine.active_alarms()] == [e.alarm.alarm_id for e in first if e.notify]
    # ... and the rest of the day clears it as if nothing had happened.
    rest = engine.process(mazak03[fault_at + 1:], now=0.0)
    assert engine.active_alarms() == []
    assert any(e.kind == "cleared" and e.alarm.native_code == "791" for e in rest)


def test_normal_with_a_code_clears_that_code_and_without_one_clears_the_item(mazak03):
    fault = next(o for o in mazak03 if o.get("native_code") == "791")
    other = dict(fault, native_code="711", condition_id="711", sequence=fault["sequence"] + 1, value="UNIT DATA NOT FOUND")
    engine = AlarmEngine()
    engine.process([fault, other], now=0.0)
    events = engine.process([dict(fault, level="NORMAL", native_code="711", value=None, sequence=fault["sequence"] + 2)], now=0.0)
    assert [(e.kind, e.alarm.native_code) for e in events] == [("cleared", "711")]
    assert [a.native_code for a in engine.active_alarms()] == ["791"]
    events = engine.process([dict(fault, level="NORMAL", native_code=None, value=None, sequence=fault["sequence"] + 3)], now=0.0)
    assert [(e.kind, e.alarm.native_code) for e in events] == [("cleared", "791")]
    engine.process([dict(fault, sequence=fault["sequence"] + 4)], now=0.0)
    events = engine.process([dict(fault, level="UNAVAILABLE", native_code=None, value=None, sequence=fault["sequence"] + 5)], now=0.0)
    assert [e.kind for e in events] == ["cleared"]


def test_warning_escalating_to_fault_is_the_same_alarm_and_pops_up_once(mazak03):
    fault = next(o for o in mazak03 if o.get("native_code") == "791")
    warning = dict(fault, level="WARNING")
    events = AlarmEngine().process([warning, dict(fault, sequence=fault["sequence"] + 1), dict(fault, sequence=fault["sequence"] + 2)], now=0.0)
    assert [(e.kind, e.notify, e.alarm.priority) for e in events] == [("raised", False, "medium"), ("escalated", True, "critical")]
    assert events[0].alarm.alarm_id == events[1].alarm.alarm_id


def test_state_machine_acknowledge_before_and_after_return_to_normal(mazak03):
    engine = AlarmEngine(station="cell-2")
    fault_791 = next(o for o in mazak03 if o.get("native_code") == "791")
    faults_711 = [o for o in mazak03 if o.get("native_code") == "711" and o["level"] == "FAULT"]
    normal_after = lambda o: next(n for n in mazak03 if n["sequence"] > o["sequence"] and n["data_item_id"] == o["data_item_id"])
    a = engine.process([fault_791], now=100.0)[0].alarm
    assert a.alarm_state is AlarmState.UNACKNOWLEDGED_ACTIVE
    record, events = engine.acknowledge(a.alarm_id, by="ana", note="tool changed", now=110.0)
    assert [(e.kind, e.alarm.alarm_state, e.by, e.note) for e in events] == [("acknowledged", AlarmState.ACKNOWLEDGED_ACTIVE, "ana", "tool changed")]
    assert record["acknowledged"]["station"] == "cell-2" and record["alarm_id"] == a.alarm_id
    events = engine.process([normal_after(fault_791)], now=120.0)
    assert [(e.kind, e.alarm.alarm_state) for e in events] == [("cleared", AlarmState.NORMAL)]

    b = engine.process([faults_711[0]], now=130.0)[0].alarm
    events = engine.process([normal_after(faults_711[0])], now=140.0)
    # A fault that came and went stays visible until someone acknowledges it.
    assert [(e.kind, e.alarm.alarm_state) for e in events] == [("cleared", AlarmState.UNACKNOWLEDGED_RETURNED)]
    _, events = engine.acknowledge(b.alarm_id, by="ben", now=150.0)
    assert [(e.kind, e.alarm.alarm_state) for e in events] == [("acknowledged", AlarmState.NORMAL)]
    # Acknowledging again changes nothing.
    assert engine.acknowledge(b.alarm_id, by="ben", now=160.0)[1] == []


def test_shelving_hides_the_point_until_it_expires_then_pops_up_what_is_still_active(mazak03):
    engine = AlarmEngine(station="cell-2")
    fault_791 = next(o for o in mazak03 if o.get("native_code") == "791")
    a = engine.process([fault_791], now=1000.0)[0].alarm
    record, events = engine.shelve(a.alarm_id, by="ana", seconds=600, reason="maintenance on the spindle", now=1000.0)
    assert [(e.kind, e.alarm.alarm_state, e.detail) for e in events] == [("shelved", AlarmState.SHELVED, "maintenance on the spindle")]
    assert record["shelve"]["until"] == "1970-01-01T00:26:40.000000Z"
    # While shelved the same fault coming back is listed as shelved and does not pop up.
    normal = next(n for n in mazak03 if n["sequence"] > fault_791["sequence"] and n["data_item_id"] == fault_791["data_item_id"])
    again = dict(fault_791, sequence=normal["sequence"] + 1, timestamp="2016-11-16T20:31:00.000Z")
    events = engine.process([normal, again], now=1100.0)
    assert [(e.kind, e.notify, e.alarm.alarm_state) for e in events] == [
        ("cleared", False, AlarmState.SHELVED), ("raised", False, AlarmState.SHELVED)]
    assert engine.tick(now=1599.0) == []
    events = engine.tick(now=1600.0)
    # Automatic unshelve: the earlier (cleared, unacknowledged) one is back in view, the active one pops up now.
    assert sorted((e.kind, e.alarm.is_active, e.notify, e.alarm.alarm_state, e.detail) for e in events) == sorted([
        ("unshelved", False, False, AlarmState.UNACKNOWLEDGED_RETURNED, "shelve expired"),
        ("unshelved", True, True, AlarmState.UNACKNOWLEDGED_ACTIVE, "shelve expired")])


def test_unshelve_ends_shelving_and_a_stale_record_does_not_undo_it(mazak03):
    engine = AlarmEngine(station="a")
    fault = next(o for o in mazak03 if o.get("native_code") == "791")
    alarm = engine.process([fault], now=0.0)[0].alarm
    shelve_record, _ = engine.shelve(alarm.alarm_id, by="ana", seconds=3600, reason="noisy sensor", now=10.0)
    unshelve_record, events = engine.unshelve(alarm.alarm_id, by="ana", now=20.0)
    assert [(e.kind, e.alarm.alarm_state) for e in events] == [("unshelved", AlarmState.UNACKNOWLEDGED_ACTIVE)]
    # The older shelve record arriving late (another partition, a replay) changes nothing.
    assert engine.apply_ack_records([shelve_record, unshelve_record, shelve_record], now=30.0) == []
    assert engine.alarm(alarm.alarm_id).alarm_state is AlarmState.UNACKNOWLEDGED_ACTIVE


def test_an_acknowledgement_for_an_alarm_not_yet_seen_waits_for_it_and_applies_once(mazak03):
    fault = next(o for o in mazak03 if o.get("native_code") == "791")
    fast = AlarmEngine(station="fast")
    alarm = fast.process([fault], now=0.0)[0].alarm
    record, _ = fast.acknowledge(alarm.alarm_id, by="ana", now=5.0)

    slow = AlarmEngine(station="slow")
    assert slow.apply_ack_records([record], now=6.0) == []  # nothing to apply to yet
    events = slow.process([fault], now=7.0)
    assert [(e.kind, e.notify, e.alarm.alarm_state) for e in events] == [
        ("raised", False, AlarmState.UNACKNOWLEDGED_ACTIVE), ("acknowledged", False, AlarmState.ACKNOWLEDGED_ACTIVE)]
    assert events[0].alarm.alarm_id == alarm.alarm_id
    assert slow.apply_ack_records([record, record], now=8.0) == []
    assert slow.drain_notices() == []


def test_out_of_service_rule_raises_nothing_until_returned_to_service(mazak03):
    engine = AlarmEngine()
    fault_at = next(i for i, o in enumerate(mazak03) if o.get("native_code") == "791")
    before = raised(engine.process(mazak03[: fault_at + 1], now=0.0))
    assert len(before) == 10  # nine warnings (returned, unacknowledged) and the active fault
    events = engine.set_rule_enabled("conditions", False, now=10.0)
    assert {(e.kind, e.alarm.alarm_state) for e in events} == {("removed_from_service", AlarmState.OUT_OF_SERVICE)}
    assert sorted(e.alarm.alarm_id for e in events) == sorted(e.alarm.alarm_id for e in before)
    rest = mazak03[fault_at + 1:]
    assert engine.process(rest, now=20.0) == []
    events = engine.set_rule_enabled("conditions", True, now=30.0)
    assert [(e.kind, e.alarm.alarm_state) for e in events] == [("returned_to_service", AlarmState.NORMAL)] * 10
    assert len(raised(engine.process(mazak03, now=40.0))) == 15  # evaluated again from scratch


def test_a_disabled_rule_in_the_file_is_out_of_service(mazak03):
    engine = support.engine("""
version: 1
rules:
  - {id: conditions, kind: condition, enabled: false}
""")
    assert engine.process(mazak03, now=0.0) == []


def test_flood_of_new_alarms_becomes_one_summary_notice(mazak03):
    fault = next(o for o in mazak03 if o.get("native_code") == "791")
    base = parse_timestamp(fault["timestamp"])
    faults = [dict(fault, native_code=str(900 + n), sequence=fault["sequence"] + n,
                   timestamp=f"2016-11-16T20:{30 + n // 2:02d}:{(n % 2) * 30:02d}.000Z") for n in range(14)]
    assert parse_timestamp(faults[-1]["timestamp"]) - base < 600
    engine = AlarmEngine()
    first_ten = engine.process(faults[:10], now=0.0)
    assert sum(e.notify for e in first_ten) == 10
    assert [n.kind for n in engine.drain_notices()] == ["alarm"] * 10
    rest = engine.process(faults[10:], now=1.0)
    assert not any(e.notify for e in rest) and len(raised(rest)) == 4
    notices = engine.drain_notices()
    assert [(n.kind, n.count, len(n.alarm_ids)) for n in notices] == [("flood", 14, 4)]
    assert engine.flood_active
    # Eleven at once: no single pop-up at all, one summary.
    fresh = AlarmEngine()
    events = fresh.process(faults[:11], now=0.0)
    assert not any(e.notify for e in events)
    assert [(n.kind, n.count, len(n.alarm_ids)) for n in fresh.drain_notices()] == [("flood", 11, 11)]
    # After the flood, a new fault pops up again.
    later = dict(fault, native_code="999", sequence=fault["sequence"] + 99, timestamp="2016-11-16T21:30:00.000Z")
    assert [e.notify for e in fresh.process([later], now=2.0)] == [True]
    assert not fresh.flood_active


def test_stale_alarms_are_marked_after_a_day_of_device_time(mazak03):
    fault = next(o for o in mazak03 if o.get("native_code") == "791")
    later = next(o for o in mazak03 if o["sequence"] > fault["sequence"] and o["category"] == "SAMPLE")
    engine = AlarmEngine()
    engine.process([fault], now=0.0)
    assert engine.process([dict(later, timestamp="2016-11-17T20:29:56.000Z")], now=0.0) == []
    events = engine.process([dict(later, timestamp="2016-11-17T20:29:56.100Z", sequence=later["sequence"] + 1)], now=0.0)
    assert [(e.kind, e.alarm.stale, e.at) for e in events] == [("marked_stale", True, "2016-11-17T20:29:56.063000Z")]
    assert engine.counts()["stale"] == 1 and engine.counts()["standing"] == 1


def test_timestamps_with_3_6_or_7_digits_and_without_zone_are_read():
    assert parse_timestamp("2016-11-16T20:29:56.063Z") == pytest.approx(support.epoch("2016-11-16T20:29:56.063Z"))
    assert parse_timestamp("2016-11-16T20:29:56.063123Z") == pytest.approx(support.epoch("2016-11-16T20:29:56.063123"))
    assert parse_timestamp("2016-11-16T20:29:56.0631234Z") == pytest.approx(support.epoch("2016-11-16T20:29:56.063123"))
    assert parse_timestamp("2016-11-16T20:29:56.063") == pytest.approx(support.epoch("2016-11-16T20:29:56.063"))
    assert parse_timestamp("not a time") is None


def test_a_machines_alarm_states_are_those_of_its_alarms(mazak03):
    engine = AlarmEngine()
    events = engine.process(mazak03 + support.day("GFAgie01"), now=0.0)
    first = raised(events)[0].alarm
    engine.acknowledge(first.alarm_id, by="ana", now=10.0)
    alarms = engine.alarms()
    assert {a.alarm_state for a in alarms} >= {AlarmState.UNACKNOWLEDGED_RETURNED, AlarmState.NORMAL}
    for device_uuid in {a.device_uuid for a in alarms}:
        expected = sorted((a.alarm_state.value, a.priority) for a in alarms if a.device_uuid == device_uuid)
        got = sorted((state.value, priority) for state, priority in engine.device_alarm_states(device_uuid))
        assert got == expected
    assert engine.device_alarm_states("no-such-machine") == []


def test_a_full_registry_forgets_normal_alarms_and_keeps_every_open_one(mazak03, monkeypatch):
    from desktop.core.alarms import engine as engine_module

    monkeypatch.setattr(engine_module, "_REGISTRY_LIMIT", 10)
    engine = AlarmEngine()
    ids = [e.alarm.alarm_id for e in raised(engine.process(mazak03, now=0.0))]
    assert len(ids) == 15
    # Nobody acknowledged: all fifteen are open and kept, over the limit.
    assert {a.alarm_id for a in engine.alarms()} == set(ids)
    # Acknowledging the cleared ones makes them normal; the next new alarms let them go.
    for alarm_id in ids:
        engine.acknowledge(alarm_id, by="ana", now=10.0)
    still_open = {a.alarm_id for a in engine.alarms() if a.alarm_state is not AlarmState.NORMAL}
    engine.process(support.day("GFAgie01"), now=20.0)
    held = {a.alarm_id for a in engine.alarms()}
    assert still_open <= held
    assert len(held & set(ids)) < len(ids)
    for device_uuid in {a.device_uuid for a in engine.alarms()}:
        assert len(engine.device_alarm_states(device_uuid)) == sum(a.device_uuid == device_uuid for a in engine.alarms())


def test_an_alarm_that_cleared_and_was_acknowledged_is_not_held_for_its_day_long_stale_check(mazak03, monkeypatch):
    # A machine whose fault comes and goes all shift long, acknowledged each time: once the
    # registry forgets those alarms (normal ones first, past its limit), nothing may still
    # hold them - not the stale check that would have waited 24 h.
    import gc
    from datetime import datetime, timezone

    from desktop.core.alarms import engine as engine_module
    from desktop.core.alarms.engine import _Live

    monkeypatch.setattr(engine_module, "_REGISTRY_LIMIT", 100)
    fault = next(o for o in mazak03 if o.get("native_code") == "791")
    normal = next(n for n in mazak03 if n["sequence"] > fault["sequence"] and n["data_item_id"] == fault["data_item_id"])
    engine = AlarmEngine()
    base = parse_timestamp(fault["timestamp"])

    def at(observation, seconds: float, sequence: int) -> dict:
        moment = base + seconds
        stamp = datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return dict(observation, timestamp=stamp, sequence=sequence)

    def live_alarms() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is _Live)

    held_before = live_alarms()
    for cycle in range(500):
        [raised_event] = raised(engine.process([at(fault, 60 * cycle, 10 * cycle + 1)], now=float(cycle)))
        engine.process([at(normal, 60 * cycle + 20, 10 * cycle + 2)], now=float(cycle))
        engine.acknowledge(raised_event.alarm.alarm_id, by="ana", now=float(cycle))
    assert engine.counts()["standing"] == 0
    assert live_alarms() - held_before <= 150, "cleared, acknowledged alarms are still held"
