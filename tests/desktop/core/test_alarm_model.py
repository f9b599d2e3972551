"""The alarm engine inside the desktop model: notices, the wall-clock tick, shared records,
the journal written before anything is shown, and no Qt in any alarm module."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import recorded_nist as testing
from producer import wire
import alarm_support as support
import desktop.core.alarms
from desktop.core.alarms import AlarmEngine, AlarmJournal, load_rules, default_rules_path
from desktop.core.model import MonitorModel


def test_every_alarm_module_imports_without_qt():
    modules = sorted(f"desktop.core.alarms.{i.name}" for i in pkgutil.iter_modules(desktop.core.alarms.__path__))
    assert {"desktop.core.alarms.engine", "desktop.core.alarms.kpis", "desktop.core.alarms.acks"} <= set(modules)
    script = ("import importlib, sys\n"
              f"for name in {modules!r}: importlib.import_module(name)\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph')))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_model_notices_are_in_the_journal_when_returned(tmp_path):
    model = MonitorModel(rules=load_rules(default_rules_path()), journal=AlarmJournal(tmp_path / "alarms.sqlite3"))
    update = model.apply(testing.batch_of(support.devices(), support.day("Mazak03")), now=0.0)
    assert [(n.kind, n.title) for n in update.notices] == [("alarm", "Mazak03: FAULT 791"), ("alarm", "Mazak03: FAULT 711"),
                                                         ("alarm", "Mazak03: FAULT 711")]
    assert [a.native_code for a in update.notifications] == ["791", "711", "711"]
    stored = {e.alarm_id for e in AlarmJournal(tmp_path / "alarms.sqlite3").search(kinds=["raised"])}
    assert {e.alarm.alarm_id for e in update.alarm_events if e.kind == "raised"} == stored


def test_model_tick_raises_offline_and_shared_records_acknowledge():
    model = MonitorModel(rules=load_rules(default_rules_path()), station="cell-1")
    mazak03 = support.day("Mazak03", last_line=200)
    agent = mazak03[0]["agent"]
    status = wire.agent_status_value(agent, "unreachable", "1970-01-01T00:00:10Z", "timed out")
    model.apply(testing.batch_of(support.devices(), mazak03, agent_statuses=[status]), now=20.0)
    assert model.tick(now=39.0).alarm_events == ()
    update = model.tick(now=41.0)
    # Every NIST machine is served by that one agent: all of them are offline.
    assert sorted(n.text for n in update.notices) == sorted(
        f"{d['device_name']} offline: agent unreachable: timed out" for d in support.devices())
    offline = next(e.alarm for e in update.alarm_events if e.alarm.device_name == "Mazak03")
    other = AlarmEngine(station="cell-2")
    record, _ = other.acknowledge(offline.alarm_id, by="ben", now=50.0)
    update = model.apply_ack_records([record], now=51.0)
    assert [(e.kind, e.by, e.station) for e in update.alarm_events] == [("acknowledged", "ben", "cell-2")]
    offline_rows = [a for a in model.journal.alarms() if a.rule_id == "machine-offline"]
    assert sorted(a.device_name for a in offline_rows if a.is_acknowledged) == ["Mazak03"]
    assert len(offline_rows) == len(support.devices())
