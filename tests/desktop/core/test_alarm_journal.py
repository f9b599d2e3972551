"""The alarm journal: every transition on disk, searchable, exportable, and nothing that was
shown is lost when the process is killed with SIGKILL."""
from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import recorded_nist as testing
import alarm_support as support
from desktop.core.alarms import AlarmEngine, AlarmJournal, AlarmState, default_journal_path
from desktop.core.model import MonitorModel
from repo_paths import REPO_ROOT


@pytest.fixture(scope="module")
def mazak03():
    return support.day("Mazak03")


def test_every_transition_is_stored_and_read_back_after_reopening(tmp_path, mazak03):
    path = tmp_path / "alarms.sqlite3"
    events = AlarmEngine().process(mazak03, now=0.0)
    journal = AlarmJournal(path)
    journal.apply(events[:7])
    journal.apply(events[7:])
    journal.close()
    reopened = AlarmJournal(path)
    entries = reopened.search()
    assert [(e.kind, e.alarm_id, e.at) for e in entries] == [(e.kind, e.alarm.alarm_id, e.at) for e in events]
    assert len(reopened) == 15 and reopened.alarms()[0].alarm_id == events[-1].alarm.alarm_id
    assert reopened.alarms()[0].alarm_state is AlarmState.UNACKNOWLEDGED_RETURNED
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_transitions_derived_twice_are_stored_once(tmp_path, mazak03):
    journal = AlarmJournal(tmp_path / "alarms.sqlite3")
    journal.apply(AlarmEngine().process(mazak03, now=0.0))
    journal.apply(AlarmEngine().process(mazak03, now=99.0))  # the same history read again
    assert len(journal.search()) == 30


def test_search_by_time_machine_and_text_and_csv_export(tmp_path, mazak03):
    journal = AlarmJournal(tmp_path / "alarms.sqlite3")
    journal.apply(AlarmEngine().process(mazak03 + support.day("GFAgie01"), now=0.0))
    expected_mazak = support.condition_activations("Mazak03")
    assert len(journal.search(device="Mazak03", kinds=["raised"])) == len(expected_mazak)
    assert len(journal.search(device="mtc_adapter001", kinds=["raised"])) == len(support.condition_activations("GFAgie01"))
    found = journal.search(text="cutting speed")
    assert [(e.kind, e.native_code) for e in found] == [("raised", "791"), ("cleared", "791")]
    start, end = support.epoch("2016-11-16T20:30:00Z"), support.epoch("2016-11-16T20:31:00Z")
    in_minute = journal.search(start=start, end=end, kinds=["raised"])
    assert [e.at for e in in_minute] == [a.timestamp for a in expected_mazak if start <= support.epoch(a.timestamp) < end]
    assert journal.search(text="cutting_speed") == [] and journal.search(text="100%") == []  # no LIKE wildcards

    out = io.StringIO()
    assert journal.export_csv(out, device="Mazak03", text="UNIT DATA") == 6
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["kind"], r["native_code"], r["device_name"]) for r in rows] == [("raised", "711", "Mazak03"), ("cleared", "711", "Mazak03")] * 3
    assert journal.export_csv(tmp_path / "all.csv") == len(journal.search())
    assert (tmp_path / "all.csv").read_text(encoding="utf-8").splitlines()[0].startswith("at,kind,device_name")


def test_open_alarms_survive_a_restart_and_are_cleared_by_later_data(tmp_path, mazak03):
    path = tmp_path / "alarms.sqlite3"
    fault_at = next(i for i, o in enumerate(mazak03) if o.get("native_code") == "791")
    first = MonitorModel(journal=AlarmJournal(path))
    first.apply(testing.batch_of(support.devices(), mazak03[: fault_at + 1]), now=0.0)
    first.journal.close()

    second = MonitorModel(journal=AlarmJournal(path))
    # The active fault and the warnings that came and went (unacknowledged) are still there.
    open_states = sorted(a.alarm_state.value for a in second.journal.open_alarms())
    assert open_states == ["unacknowledged-active"] + ["unacknowledged-returned"] * 9
    update = second.apply(testing.batch_of(observations=mazak03[fault_at + 1:]), now=1.0)
    assert ("cleared", "791") in [(e.kind, e.alarm.native_code) for e in update.alarm_events]
    assert not any(e.notify and e.alarm.native_code == "791" for e in update.alarm_events)
    warning = next(a for a in second.journal.alarms() if a.native_code == "416")
    _, events = second.alarm_engine.acknowledge(warning.alarm_id, by="ana", now=2.0)
    assert [(e.kind, e.alarm.alarm_state) for e in events] == [("acknowledged", AlarmState.NORMAL)]


def test_default_journal_lives_in_the_per_user_data_folder():
    assert default_journal_path() == __import__("pathlib").Path(os.environ["MACHINE_MONITOR_DATA_DIR"]) / "alarms.sqlite3"


_WRITER = textwrap.dedent("""
    import sys, itertools
    sys.path[:0] = [{repo!r}, {tests!r}, {core!r}]
    import alarm_support as support
    from desktop.core.alarms import AlarmEngine, AlarmJournal
    journal = AlarmJournal({path!r})
    engine = AlarmEngine()
    day = support.day("Mazak03")
    for round_ in itertools.count():
        for start in range(0, len(day), 50):
            batch = [dict(o, instance_id=round_) for o in day[start:start + 50]]
            events = engine.process(batch, now=0.0)
            journal.apply(events)
            # Only now is it shown: print what the views would draw.
            for event in events:
                print(event.transition_key, flush=True)
""")


def test_nothing_shown_is_lost_when_the_process_is_killed(tmp_path):
    path = tmp_path / "alarms.sqlite3"
    script = _WRITER.format(repo=str(REPO_ROOT), tests=str(REPO_ROOT / "tests"),
                            core=str(REPO_ROOT / "tests" / "desktop" / "core"), path=str(path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    shown = []
    try:
        for line in child.stdout:
            shown.append(line.strip())
            if len(shown) >= 200:  # several rounds of the day: the writer is mid-stream
                break
        os.kill(child.pid, signal.SIGKILL)
        shown += [line.strip() for line in child.stdout]  # printed before it died: shown too
    finally:
        child.kill()
        child.wait(30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(shown) >= 200
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {row[0] for row in db.execute("SELECT transition_key FROM transitions")}
    missing = [key for key in shown if key not in stored]
    assert missing == []
    reopened = AlarmJournal(path)
    assert len(reopened.search()) == len(stored) >= len(shown)


def test_a_full_journal_forgets_the_oldest_alarms_back_to_normal_first_and_keeps_the_open_ones(tmp_path, mazak03):
    engine = AlarmEngine()
    events = engine.process(mazak03, now=0.0)
    in_order = list(dict.fromkeys(e.alarm.alarm_id for e in events))
    assert len(in_order) == 15
    journal = AlarmJournal(tmp_path / "alarms.sqlite3", limit=5)
    journal.apply(events)
    # Nothing is back to normal yet (nobody acknowledged): the newest five are held.
    assert [a.alarm_id for a in journal.alarms()] == in_order[-5:][::-1]
    # Two of the held ones, already cleared, are acknowledged: back to normal.
    held = {a.alarm_id: a for a in journal.alarms()}
    returned = [i for i in in_order[-5:] if held[i].alarm_state is AlarmState.UNACKNOWLEDGED_RETURNED][:2]
    assert len(returned) == 2
    for alarm_id in returned:
        journal.apply(engine.acknowledge(alarm_id, by="ana", now=10.0)[1])
    # Two new alarms: the two normal ones make room, however old the open ones are.
    newcomers = AlarmEngine().process(support.day("GFAgie01"), now=0.0)
    new_ids = list(dict.fromkeys(e.alarm.alarm_id for e in newcomers if e.kind == "raised"))[:2]
    journal.apply([e for e in newcomers if e.alarm.alarm_id in new_ids and e.kind == "raised"])
    kept = {a.alarm_id for a in journal.alarms()}
    assert kept == (set(in_order[-5:]) - set(returned)) | set(new_ids)
    # Everything stays searchable on disk.
    assert {e.alarm_id for e in journal.search(kinds=["raised"])} >= set(in_order) | set(new_ids)
