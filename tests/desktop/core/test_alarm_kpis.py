"""Alarm KPIs from the journal of a recorded NIST day, checked against the tests' own count
of the SHDR condition lines."""
from __future__ import annotations

from collections import Counter

import pytest

import alarm_support as support
from desktop.core.alarms import AlarmEngine, AlarmJournal
from desktop.core.alarms.kpis import compute_kpis, journal_kpis, shift_intervals
from desktop.core.alarms.rules import EngineSettings, Shift

START, END = support.epoch("2016-11-16T20:00:00Z"), support.epoch("2016-11-16T21:00:00Z")


@pytest.fixture(scope="module")
def recorded():
    """The Mazak03 day in a journal, every alarm acknowledged 10 s x (its position + 1) after it came."""
    activations = support.condition_activations("Mazak03")
    engine = AlarmEngine(station="audit")
    journal = AlarmJournal()
    events = engine.process(support.day("Mazak03"), now=0.0)
    journal.apply(events)
    raised = [e.alarm for e in events if e.kind == "raised"]
    for index, alarm in enumerate(raised):
        _, acked = engine.acknowledge(alarm.alarm_id, by="ana", now=support.epoch(alarm.activated_at) + 10 * (index + 1))
        journal.apply(acked)
    return activations, journal


def test_rates_flood_windows_chattering_and_mean_times(recorded):
    activations, journal = recorded
    report = compute_kpis(journal.search(), START, END, flood_alarms=5)
    overall = report.overall
    assert overall.alarms == len(activations) == 15
    assert overall.hours == pytest.approx(1.0)
    assert overall.alarms_per_hour == pytest.approx(15.0)
    assert overall.alarms_per_10_minutes == pytest.approx(15 / 6)
    per_window = Counter(int((support.epoch(a.timestamp) - START) // 600) for a in activations)
    assert overall.windows == 6 and overall.peak_10_minutes == max(per_window.values())
    assert overall.flood_windows == sum(1 for n in per_window.values() if n > 5)
    assert overall.flood_window_percent == pytest.approx(100 * overall.flood_windows / 6)
    assert overall.chattering == sum(support.chattering_flags(activations))
    assert overall.stale == 0 and overall.standing == 0
    durations = [support.epoch(a.cleared_at) - support.epoch(a.timestamp) for a in activations if a.cleared_at]
    assert overall.mean_time_to_clear == pytest.approx(sum(durations) / len(durations), abs=1e-3)
    assert overall.acknowledged == 15
    assert overall.mean_time_to_acknowledge == pytest.approx(sum(10 * (i + 1) for i in range(15)) / 15, abs=1e-3)


def test_bad_actors_are_the_most_frequent_alarms(recorded):
    activations, journal = recorded
    report = compute_kpis(journal.search(), START, END)
    by_point = Counter((a.item, a.code) for a in activations).most_common()
    top = report.overall.bad_actors[0]
    assert (top.native_code, top.count) == (by_point[0][0][1], by_point[0][1]) == ("719", 7)
    assert top.message == "REVERSE SHAPE CONTOUR" and top.device_name == "Mazak03"
    assert [a.count for a in report.overall.bad_actors] == [n for _, n in by_point[:10]]
    assert report.overall.top_10_percent == pytest.approx(100.0)  # seven distinct alarms only


def test_per_machine_and_per_shift(recorded):
    activations, journal = recorded
    shifts = (Shift("a", "20:20"), Shift("b", "20:35"))
    report = compute_kpis(journal.search(), START, END, shifts=shifts, timezone_name="UTC")
    assert list(report.by_machine) == ["Mazak03"] and report.by_machine["Mazak03"].alarms == 15
    in_a = [a for a in activations if support.epoch("2016-11-16T20:20:00Z") <= support.epoch(a.timestamp) < support.epoch("2016-11-16T20:35:00Z")]
    assert report.by_shift["a"].alarms == len(in_a)
    assert report.by_shift["b"].alarms == 15 - len(in_a)
    assert report.by_shift["a"].hours == pytest.approx(0.25) and report.by_shift["b"].hours == pytest.approx(0.75)
    assert report.by_shift["a"].alarms_per_hour == pytest.approx(len(in_a) / 0.25)


def test_alarms_still_active_at_the_end_are_standing(recorded):
    activations, journal = recorded
    end = support.epoch("2016-11-16T20:30:00Z")
    report = compute_kpis(journal.search(), START, end)  # the clear after the end must not count
    expected = [a for a in activations if support.epoch(a.timestamp) < end and (a.cleared_at is None or support.epoch(a.cleared_at) >= end)]
    assert report.overall.standing == len(expected) == 1  # fault 791, cleared 29 ms after 20:30


def test_shifts_wrap_around_midnight_and_use_the_settings():
    shifts = (Shift("early", "06:00"), Shift("late", "14:00"), Shift("night", "22:00"))
    day = support.epoch("2016-11-16T00:00:00Z")
    intervals = shift_intervals(shifts, day, day + 86400, __import__("zoneinfo").ZoneInfo("UTC"))
    hours = {name: sum(hi - lo for lo, hi in parts) / 3600 for name, parts in intervals.items()}
    assert hours == {"early": 8.0, "late": 8.0, "night": 8.0}
    assert intervals["night"][0] == (day, day + 6 * 3600)
    journal = AlarmJournal()
    journal.apply(AlarmEngine().process(support.day("Mazak03"), now=0.0))
    report = journal_kpis(journal, day, day + 86400, EngineSettings(shifts=shifts, timezone="UTC"))
    # The day's alarms came 20:12-20:39 UTC: all in the late shift (14:00-22:00).
    assert {name: f.alarms for name, f in report.by_shift.items()} == {"early": 0, "late": 15, "night": 0}


def test_a_range_that_reaches_past_now_is_measured_up_to_now(recorded):
    # The journal page's default range ends an hour ahead; that hour has no alarms yet.
    _, journal = recorded
    report = journal_kpis(journal, START, END + 3600, now=END)
    assert report.end == END and report.overall.hours == pytest.approx(1.0)
    assert report.overall.alarms_per_hour == pytest.approx(15.0)
