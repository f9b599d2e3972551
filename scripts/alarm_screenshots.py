"""Screenshots of the alarm views with real NIST alarms: docs/alarms-table.png, docs/alarms-journal.png
and docs/alarms-kpis.png.

The three recorded SHDR days (Mazak03, Mazak01, GFAgie01) go through the alarm engine with the
default rules, as the producer would publish them; every transition goes to a journal in a
temporary folder. An operator then acknowledges some alarms (returned ones go back to Normal,
an active one becomes Acknowledged-Active) and shelves one, so the table shows alarms in
several ISA states. Run offscreen: `QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/alarm_screenshots.py`.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import recorded_nist  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from desktop.core.alarms import AlarmEngine, AlarmJournal, AlarmState, default_rules_path, load_rules  # noqa: E402
from desktop.core.alarms.kpis import journal_kpis  # noqa: E402
from desktop.core.alarms.table import table_rows  # noqa: E402
from desktop.core.alarms.timeutil import parse_timestamp  # noqa: E402
from desktop.ui.alarm_views import ActiveAlarmsView, JournalView, KpiView  # noqa: E402
from desktop.ui.theme import apply_style  # noqa: E402

DAYS = {"Mazak03": "Mazak03-20161116-20161117.txt", "Mazak01": "Mazak01-20171030-20171031.txt",
        "GFAgie01": "GFAgie01-20160513-20160514.txt"}
BATCH = 1000


def main() -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_style(app)
    devices = recorded_nist.load_devices()
    engine = AlarmEngine(load_rules(default_rules_path()), station="cell-1")
    with tempfile.TemporaryDirectory(prefix="alarm-shots-") as folder:
        journal = AlarmJournal(Path(folder) / "alarms.sqlite3")
        ranges = {}
        for name, day in DAYS.items():
            device = recorded_nist.device_named(devices, name)
            observations = [o for _, o in recorded_nist.shdr_observations(recorded_nist.nist_shdr(day), device)]
            moments = [parse_timestamp(o["timestamp"]) for o in observations]
            ranges[name] = (min(moments), max(moments))
            for start in range(0, len(observations), BATCH):
                batch = observations[start:start + BATCH]
                journal.apply(engine.process(batch, now=parse_timestamp(batch[-1]["timestamp"])))
        rows = table_rows(engine.alarms())
        returned = [a for a in rows if a.alarm_state is AlarmState.UNACKNOWLEDGED_RETURNED]
        active = [a for a in rows if a.alarm_state is AlarmState.UNACKNOWLEDGED_ACTIVE]
        # What a shift's operator did: acknowledged all but six returned alarms, took on one active
        # alarm, shelved one point.
        end = max(e for _, e in ranges.values())
        for alarm in returned[6:]:
            _record, events = engine.acknowledge(alarm.alarm_id, by="j.smith", note="checked at the machine", now=end)
            journal.apply(events)
        if active:
            _record, events = engine.acknowledge(active[0].alarm_id, by="j.smith", note="maintenance called", now=end)
            journal.apply(events)
        if len(active) > 1:
            _record, events = engine.shelve(active[-1].alarm_id, by="j.smith", seconds=4 * 3600,
                                            reason="sensor to be replaced", now=end)
            journal.apply(events)
        states = {}
        for alarm in table_rows(engine.alarms()):
            states[alarm.alarm_state.value] = states.get(alarm.alarm_state.value, 0) + 1
        print(f"alarms in the table: {sum(states.values())}, by state: {states}")

        table = ActiveAlarmsView()
        table.resize(1280, 640)
        table.set_alarms(engine.alarms())
        table.table.resizeColumnsToContents()
        table.show()
        app.processEvents()
        table.grab().save(str(ROOT / "docs" / "alarms-table.png"))

        start, stop = ranges["Mazak03"]
        view = JournalView()
        view.resize(1280, 640)
        view.set_range(start - 60, stop)
        view.machine.setText("Mazak03")
        entries = journal.search(**view.filters())
        view.show_entries(entries)
        view.table.resizeColumnsToContents()
        view.show()
        app.processEvents()
        view.grab().save(str(ROOT / "docs" / "alarms-journal.png"))
        print(f"journal: {len(entries)} transitions of Mazak03 on its recorded day")

        report = journal_kpis(journal, start, stop + 1, engine.rules.settings if hasattr(engine, "rules") else None)
        kpis = KpiView()
        kpis.resize(1280, 720)
        kpis.show_report(report)
        kpis.show()
        app.processEvents()
        kpis.grab().save(str(ROOT / "docs" / "alarms-kpis.png"))
        print(f"KPIs of Mazak03's day: {report.overall.alarms} alarms, {report.overall.alarms_per_hour:.1f}/h, "
              f"{report.overall.flood_window_percent:.1f} % of 10-min windows in flood")
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
