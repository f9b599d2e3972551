"""Each rule kind over recorded NIST data: events in a set, thresholds with on-delay,
off-delay and deadband, UNAVAILABLE, machine offline, and escalation when down too long.
Expected alarms come from the tests' own reading of the SHDR lines."""
from __future__ import annotations

import pytest

import recorded_nist as testing
import alarm_support as support
from desktop.core.alarms import AlarmState
from desktop.core.alarms.timeutil import format_epoch

STOPPED = {"STOPPED", "INTERRUPTED", "FEED_HOLD"}


@pytest.fixture(scope="module")
def mazak01():
    return support.day("Mazak01")


def raised(events):
    return [e for e in events if e.kind == "raised"]


def test_execution_in_a_set_of_values_alarms_from_entering_until_leaving_it(mazak01):
    engine = support.engine("""
version: 1
rules:
  - id: execution-stopped
    kind: event
    type: EXECUTION
    values: [STOPPED, INTERRUPTED, FEED_HOLD]
    priority: medium
""")
    events = engine.process(mazak01, now=0.0)
    expected = support.runs(support.item_values("Mazak01", "execution"), lambda v: v.strip() in STOPPED)
    assert len(expected) > 10
    got = [(e.alarm.activated_at, e.alarm.cleared_at) for e in raised(events)]
    cleared = {e.alarm.alarm_id: e.alarm.cleared_at for e in events if e.kind == "cleared"}
    assert [(e.alarm.activated_at, cleared.get(e.alarm.alarm_id)) for e in raised(events)] == expected
    assert all(e.alarm.level == "EVENT" and e.alarm.message.startswith("execution ") for e in raised(events))
    assert not any(e.notify for e in events)  # medium priority is listed, not popped up
    assert got


def test_event_values_match_stripped_and_ignoring_case(mazak01):
    engine = support.engine("""
version: 1
rules:
  - {id: estop, kind: event, type: EMERGENCY_STOP, values: [triggered], priority: critical}
""")
    estop = next(o for o in mazak01 if o["type"] == "EMERGENCY_STOP")
    events = engine.process([dict(estop, value=" TRIGGERED\t ", sequence=1)], now=0.0)
    assert [(e.kind, e.notify, e.alarm.priority) for e in events] == [("raised", True, "critical")]
    assert [e.kind for e in engine.process([dict(estop, value="ARMED", sequence=2)], now=0.0)] == ["cleared"]


def test_recorded_emergency_stop_raises_one_critical_alarm(mazak01):
    engine = support.engine("""
version: 1
rules:
  - {id: estop, kind: event, type: EMERGENCY_STOP, values: [TRIGGERED], priority: critical}
""")
    events = engine.process(mazak01, now=0.0)
    expected = support.runs(support.item_values("Mazak01", "estop"), lambda v: v.strip() == "TRIGGERED")
    assert expected == [("2017-10-30T10:01:23.618Z", "2017-10-30T10:01:28.606Z")]
    assert [(e.kind, e.at, e.notify) for e in events] == [("raised", expected[0][0], True), ("cleared", expected[0][1], False)]
    assert events[0].alarm.message == "estop TRIGGERED"


def test_recorded_spindle_load_above_a_limit_for_a_second_and_a_bit(mazak01):
    engine = support.engine("""
version: 1
rules:
  - id: spindle-load
    kind: threshold
    name: Sload
    above: 50
    for: 1050 ms
    priority: high
""")
    events = engine.process(mazak01, now=0.0)
    values = support.item_values("Mazak01", "Sload")
    over = lambda v: v.strip() != "UNAVAILABLE" and float(v) > 50
    peaks = support.runs(values, over)
    expected = [(format_epoch(support.epoch(start) + 1.05), end) for start, end in peaks
                if end is not None and support.epoch(end) - support.epoch(start) >= 1.05]
    assert len(expected) >= 3
    cleared = {e.alarm.alarm_id: e.alarm.cleared_at for e in events if e.kind == "cleared"}
    assert [(e.alarm.activated_at, cleared.get(e.alarm.alarm_id)) for e in raised(events)] == expected
    assert len(expected) < len(peaks)  # some peaks were shorter than the delay
    assert raised(events)[0].alarm.message == "Sload 98 PERCENT above 50 for 1.05 s"


def sload_sequence(mazak01, steps):
    """Sload observations at `base + seconds` with the given values (other items: None value = a clock tick)."""
    sload = next(o for o in mazak01 if o["name"] == "Sload")
    tick = next(o for o in mazak01 if o["name"] == "total_time")
    base = support.epoch("2017-10-30T19:00:00.000Z")
    return [support.with_value(sload if value is not None else tick, value if value is not None else 1.0,
                               format_epoch(base + seconds), index + 1)
            for index, (seconds, value) in enumerate(steps)]


THRESHOLD = """
version: 1
rules:
  - id: spindle-load
    kind: threshold
    name: Sload
    above: 80
    deadband: 10
    for: 5 s
    off_delay: 2 s
    priority: high
"""


def test_threshold_on_delay_completes_only_after_the_full_time(mazak01):
    engine = support.engine(THRESHOLD)
    events = engine.process(sload_sequence(mazak01, [(0, 85.0), (3, 83.0), (4.9, None)]), now=0.0)
    assert events == []
    events = engine.process(sload_sequence(mazak01, [(5.0, None)])[:1], now=0.0)
    assert [(e.kind, e.at) for e in events] == [("raised", "2017-10-30T19:00:05.000000Z")]


def test_threshold_that_drops_before_the_delay_raises_nothing(mazak01):
    engine = support.engine(THRESHOLD)
    assert engine.process(sload_sequence(mazak01, [(0, 85.0), (2, 60.0), (10, None), (20, None)]), now=0.0) == []


def test_threshold_deadband_holds_until_the_value_is_below_limit_minus_deadband(mazak01):
    engine = support.engine(THRESHOLD.replace("for: 5 s", "for: 0 s").replace("off_delay: 2 s", "off_delay: 0 s"))
    events = engine.process(sload_sequence(mazak01, [(0, 85.0), (1, 75.0), (2, 71.0), (3, 82.0), (4, 70.5)]), now=0.0)
    assert [e.kind for e in events] == ["raised"]
    events = engine.process(sload_sequence(mazak01, [(5, 70.0)]), now=0.0)
    assert [(e.kind, e.at) for e in events] == [("cleared", "2017-10-30T19:00:05.000000Z")]


def test_threshold_off_delay_clears_only_after_staying_low(mazak01):
    engine = support.engine(THRESHOLD.replace("for: 5 s", "for: 0 s"))
    steps = [(0, 85.0), (1, 60.0), (2, 90.0), (3, 60.0), (4.5, None), (5.0, None)]
    events = engine.process(sload_sequence(mazak01, steps), now=0.0)
    # Low at 1 s but high again at 2 s: the off-delay restarts at 3 s and ends at 5 s.
    assert [(e.kind, e.at) for e in events] == [("raised", "2017-10-30T19:00:00.000000Z"),
                                                 ("cleared", "2017-10-30T19:00:05.000000Z")]
    assert len({e.alarm.alarm_id for e in events}) == 1


def test_threshold_value_unavailable_clears_at_once(mazak01):
    engine = support.engine(THRESHOLD.replace("for: 5 s", "for: 0 s"))
    events = engine.process(sload_sequence(mazak01, [(0, 85.0)]), now=0.0)
    unavailable = dict(sload_sequence(mazak01, [(1, 1.0)])[0], value="UNAVAILABLE")
    events += engine.process([unavailable], now=0.0)
    assert [(e.kind, e.at) for e in events] == [("raised", "2017-10-30T19:00:00.000000Z"), ("cleared", "2017-10-30T19:00:01.000000Z")]


def test_data_unavailable_alarms_for_every_machine_that_reports_nothing():
    engine = support.engine("""
version: 1
rules:
  - {id: availability-unknown, kind: unavailable, type: AVAILABILITY, priority: low}
""")
    hurcos = [d for d in support.devices() if d["device_name"].startswith("Hurco")]
    observations = [o for d in hurcos for o in testing.unavailable_observations(d, "2016-11-16T20:00:00Z")]
    events = engine.process(observations, now=0.0)
    assert sorted(e.alarm.device_name for e in raised(events)) == sorted(d["device_name"] for d in hurcos)
    assert {(e.alarm.level, e.alarm.priority, e.alarm.message) for e in events} == {("UNAVAILABLE", "low", "avail UNAVAILABLE")}
    # Mazak03's day: unavailable until the adapter connects, then again at its end.
    mazak03 = support.engine("""
version: 1
rules:
  - {id: availability-unknown, kind: unavailable, type: AVAILABILITY, priority: low}
""").process(support.day("Mazak03"), now=0.0)
    expected = support.runs(support.item_values("Mazak03", "avail"), lambda v: v == "UNAVAILABLE")
    assert [(e.kind, e.at) for e in mazak03] == [("raised", expected[0][0]), ("cleared", expected[0][1]), ("raised", expected[1][0])]


OFFLINE = """
version: 1
rules:
  - id: machine-offline
    kind: offline
    after: 30 s
    no_data_after: 10 min
    priority: high
    escalate: {after: 30 min, priority: critical}
"""


def test_agent_unreachable_for_n_seconds_is_offline_until_it_connects_again():
    engine = support.engine(OFFLINE)
    mazak03 = support.day("Mazak03", last_line=200)
    engine.process(mazak03, now=1000.0)
    agent = mazak03[0]["agent"]
    since = "1970-01-01T00:16:50.000000Z"  # 1010 s
    assert engine.set_agent_status(agent, {"agent": agent, "state": "unreachable", "since": since,
                                           "last_error": "connection refused"}, now=1020.0) == []
    assert engine.tick(now=1039.0) == []
    events = engine.tick(now=1041.0)
    assert [(e.kind, e.notify, e.at, e.alarm.device_name) for e in events] == [("raised", True, "1970-01-01T00:17:20.000000Z", "Mazak03")]
    assert events[0].alarm.message == "Mazak03 offline: agent unreachable: connection refused"
    offline_id = events[0].alarm.alarm_id
    # Another station reading the same status derives the same alarm.
    other = support.engine(OFFLINE)
    other.process(mazak03, now=500.0)
    other.set_agent_status(agent, {"agent": agent, "state": "unreachable", "since": since}, now=2000.0)
    assert [a.alarm_id for a in other.active_alarms()] == [offline_id]

    assert engine.tick(now=1500.0) == []
    events = engine.set_agent_status(agent, {"agent": agent, "state": "connected", "since": "1970-01-01T00:25:00Z"}, now=1500.0)
    assert [(e.kind, e.detail, e.alarm.alarm_state) for e in events] == [("cleared", "agent connected again", AlarmState.UNACKNOWLEDGED_RETURNED)]


def test_no_observation_for_n_minutes_is_offline_and_data_brings_it_back_online():
    engine = support.engine(OFFLINE)
    mazak03 = support.day("Mazak03", last_line=400)
    engine.process(mazak03[:100], now=1000.0)
    assert engine.tick(now=1599.0) == []
    events = engine.tick(now=1600.0)
    assert [(e.kind, e.alarm.message) for e in events] == [("raised", "Mazak03 offline: no data for 10 min")]
    events = engine.process(mazak03[100:110], now=1700.0)
    assert [(e.kind, e.detail) for e in events] == [("cleared", "back online")]


def unreachable(agent: str, since: float) -> dict:
    return {"agent": agent, "state": "unreachable", "since": format_epoch(since), "last_error": "connection refused",
            "instance_id": 1}


def test_data_newer_than_the_outage_brings_the_machine_back_online_once():
    engine = support.engine(OFFLINE)
    mazak03 = support.day("Mazak03", last_line=200)
    last = support.epoch(mazak03[-1]["timestamp"])
    agent = mazak03[0]["agent"]
    engine.process(mazak03, now=last)
    engine.set_agent_status(agent, unreachable(agent, last + 10), now=last + 10)
    [raised] = engine.tick(now=last + 41)
    # The agent serves again before the producer's `connected` status arrives.
    newer = support.with_value(mazak03[-1], mazak03[-1]["value"], format_epoch(last + 60), mazak03[-1]["sequence"] + 1)
    events = engine.process([newer], now=last + 61)
    assert [(e.kind, e.detail, e.alarm.alarm_id) for e in events] == [("cleared", "back online", raised.alarm.alarm_id)]
    # The status still reads unreachable since then: that outage is over, no second raise.
    assert engine.tick(now=last + 62) == [] and engine.tick(now=last + 120) == []
    # A later outage is a new alarm.
    engine.set_agent_status(agent, unreachable(agent, last + 200), now=last + 200)
    [again] = engine.tick(now=last + 231)
    assert again.kind == "raised" and again.alarm.alarm_id != raised.alarm.alarm_id


def test_history_older_than_the_outage_leaves_the_machine_offline():
    engine = support.engine(OFFLINE)
    mazak03 = support.day("Mazak03", last_line=400)
    since = support.epoch(mazak03[-1]["timestamp"]) + 300  # the agent went away 5 min after this data
    agent = mazak03[0]["agent"]
    device = next(d for d in support.devices() if d["device_name"] == "Mazak03")
    # A station started later reads the device and the status first, then the older history.
    engine.set_device(device["device_uuid"], device, now=since + 100)
    [raised] = engine.set_agent_status(agent, unreachable(agent, since), now=since + 100)
    assert raised.kind == "raised"
    events = engine.process(mazak03, now=since + 101)
    assert [e for e in events if e.alarm.rule_id == "machine-offline"] == []
    assert [a.alarm_id for a in engine.active_alarms()] == [raised.alarm.alarm_id]


def test_offline_longer_than_the_escalation_time_escalates_and_pops_up_again():
    engine = support.engine(OFFLINE)
    mazak03 = support.day("Mazak03", last_line=100)
    engine.process(mazak03, now=0.0)
    agent = mazak03[0]["agent"]
    engine.set_agent_status(agent, {"agent": agent, "state": "unreachable", "since": "1970-01-01T00:00:10Z"}, now=10.0)
    [raised_event] = engine.tick(now=41.0)
    _, acked = engine.acknowledge(raised_event.alarm.alarm_id, by="ana", now=50.0)
    assert engine.tick(now=10 + 30 + 1799.0) == []
    events = engine.tick(now=10 + 30 + 1800.0)
    assert [(e.kind, e.notify, e.alarm.priority, e.detail) for e in events] == [("escalated", True, "critical", "active longer than 30 min")]


def test_down_longer_than_n_minutes_escalates_in_event_time(mazak01):
    engine = support.engine("""
version: 1
rules:
  - id: execution-stopped
    kind: event
    type: EXECUTION
    values: [STOPPED, INTERRUPTED, FEED_HOLD]
    priority: medium
    escalate: {after: 30 min, priority: high}
""")
    events = engine.process(mazak01, now=0.0)
    runs = support.runs(support.item_values("Mazak01", "execution"), lambda v: v.strip() in STOPPED)
    long_runs = [format_epoch(support.epoch(start) + 1800) for start, end in runs
                 if end is not None and support.epoch(end) - support.epoch(start) >= 1800]
    assert long_runs
    escalated = [e for e in events if e.kind == "escalated"]
    assert [e.at for e in escalated] == long_runs
    assert all(e.alarm.priority == "high" and e.notify for e in escalated)
