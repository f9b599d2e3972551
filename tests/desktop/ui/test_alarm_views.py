"""The alarm views with the alarms of the recorded days: the active-alarm table (order,
priority colours and ISA state markers, filters, multi-select acknowledge with a note, shelve
with duration and reason, keyboard shortcuts), the journal view and the KPI view.

How many alarms there are and what they say comes from the tests' own reading of the SHDR
lines (alarm_support), never from the views or the engine."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QDialog, QDialogButtonBox

# The recorded-day helpers and the tests' own SHDR reading live beside the core tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
import alarm_support as support  # noqa: E402
from desktop.core.alarms import AlarmEngine, AlarmJournal  # noqa: E402
from desktop.core.alarms.kpis import journal_kpis  # noqa: E402
from desktop.ui.alarm_views import ActiveAlarmsView, JournalView, KpiView, NoteDialog, ShelveDialog  # noqa: E402
from modal import when_modal  # noqa: E402


@pytest.fixture(scope="module")
def mazak03():
    return support.day("Mazak03")


@pytest.fixture(scope="module")
def day_events(mazak03):
    engine = AlarmEngine()
    events = engine.process(mazak03, now=0.0)
    return engine, events


@pytest.fixture
def engine_after_day(mazak03):
    engine = AlarmEngine()
    engine.process(mazak03, now=0.0)
    return engine


def activate(qtbot, view: ActiveAlarmsView) -> None:
    """Shortcuts reach a window that is active and has the focus, as on a real desk."""
    view.show()
    view.activateWindow()
    qtbot.waitUntil(view.isActiveWindow, timeout=10_000)
    view.table.setFocus()
    qtbot.waitUntil(view.table.hasFocus, timeout=10_000)


def shown(view: ActiveAlarmsView) -> list:
    return [view.model.alarm_at(row) for row in range(view.model.rowCount())]


def cell(view: ActiveAlarmsView, row: int, column: int, role=Qt.ItemDataRole.DisplayRole):
    return view.model.data(view.model.index(row, column), role)


def test_the_table_lists_every_alarm_waiting_for_someone_unacknowledged_on_top(qtbot, styled_qapp, mazak03):
    activations = support.condition_activations("Mazak03")
    last = max(activations, key=lambda a: support.epoch(a.timestamp))
    engine = AlarmEngine()
    engine.process([o for o in mazak03 if support.epoch(o["timestamp"]) <= support.epoch(last.timestamp)],
                   now=0.0)
    view = ActiveAlarmsView()
    qtbot.addWidget(view)
    view.set_alarms(engine.alarms())
    assert view.model.rowCount() == len(activations)
    assert (cell(view, 0, 0), cell(view, 0, 5), cell(view, 0, 6)) == ("Unacknowledged", last.item, last.code)
    assert {cell(view, row, 0).split(" (")[0] for row in range(1, len(activations))} == {"Returned, unacknowledged"}
    # An active alarm and a returned one look different: their words and their state markers.
    top, below = (cell(view, r, 0, Qt.ItemDataRole.DecorationRole) for r in (0, 1))
    assert top is not None and below is not None and top.cacheKey() != below.cacheKey()
    assert view.summary.text() == f"{len(activations)} listed, {len(activations)} to acknowledge"


def test_filters_and_sorting_by_machine_priority_and_state(qtbot, styled_qapp, engine_after_day):
    faults = [a for a in support.condition_activations("Mazak03") if a.level == "FAULT"]
    view = ActiveAlarmsView()
    qtbot.addWidget(view)
    view.set_alarms(engine_after_day.alarms())
    everything = view.model.rowCount()
    view.priority.setCurrentText("critical")
    assert view.model.rowCount() == len(faults)
    assert sorted(cell(view, r, 6) for r in range(view.model.rowCount())) == sorted(a.code for a in faults)
    view.priority.setCurrentText("All")
    assert [view.machine.itemText(i) for i in range(view.machine.count())] == ["All", "Mazak03"]
    view.state.setCurrentIndex(view.state.findText("Acknowledged"))
    assert view.model.rowCount() == 0
    view.state.setCurrentIndex(0)
    view.text.setText(faults[0].text.lower())
    assert {cell(view, r, 4) for r in range(view.model.rowCount())} == {faults[0].text}
    view.text.clear()
    assert view.model.rowCount() == everything
    # A click on the Priority header sorts by priority: the Faults (critical) first.
    view.table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    assert [cell(view, r, 1) for r in range(len(faults))] == ["critical"] * len(faults)
    assert cell(view, len(faults), 1) == "medium"


def test_acknowledging_several_with_a_note_by_keyboard(qtbot, styled_qapp, engine_after_day):
    view = ActiveAlarmsView()
    qtbot.addWidget(view)
    view.show()
    view.set_alarms(engine_after_day.alarms())
    before = view.model.rowCount()
    view.table.selectRow(0)
    view.table.selectionModel().select(view.model.index(2, 0), view.table.selectionModel().SelectionFlag.Select
                                       | view.table.selectionModel().SelectionFlag.Rows)
    chosen = [view.model.alarm_at(0).alarm_id, view.model.alarm_at(2).alarm_id]
    activate(qtbot, view)

    def fill(dialog):
        dialog.note.setText("coolant topped up")
        dialog.accept()

    when_modal(lambda w: isinstance(w, NoteDialog), fill)
    with qtbot.waitSignal(view.acknowledge_requested, timeout=10_000) as signal:
        qtbot.keyClick(view.table, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert signal.args == [chosen, "coolant topped up"]
    for alarm_id in signal.args[0]:
        engine_after_day.acknowledge(alarm_id, by="operator", note=signal.args[1])
    view.set_alarms(engine_after_day.alarms())
    assert view.model.rowCount() == before - 2  # returned and acknowledged: back to Normal, off the table
    assert not set(chosen) & {a.alarm_id for a in shown(view)}


def test_shelving_needs_a_reason_and_says_for_how_long(qtbot, styled_qapp, engine_after_day):
    view = ActiveAlarmsView()
    qtbot.addWidget(view)
    view.show()
    view.set_alarms(engine_after_day.alarms())
    view.table.selectRow(1)
    chosen = view.model.alarm_at(1).alarm_id
    activate(qtbot, view)
    seen = {}

    def fill(dialog):
        ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
        seen["enabled_without_reason"] = ok.isEnabled()
        dialog.duration.setCurrentIndex(dialog.duration.findText("4 h"))
        dialog.reason.setText("sensor being replaced")
        seen["enabled_with_reason"] = ok.isEnabled()
        ok.click()

    when_modal(lambda w: isinstance(w, ShelveDialog), fill)
    with qtbot.waitSignal(view.shelve_requested, timeout=10_000) as signal:
        qtbot.keyClick(view.table, Qt.Key.Key_H, Qt.KeyboardModifier.ControlModifier)
    assert signal.args == [[chosen], 4 * 3600.0, "sensor being replaced"]
    assert seen == {"enabled_without_reason": False, "enabled_with_reason": True}
    engine_after_day.shelve(chosen, by="operator", seconds=signal.args[1], reason=signal.args[2], now=0.0)
    view.set_alarms(engine_after_day.alarms())
    shelved_rows = [r for r in range(view.model.rowCount()) if cell(view, r, 0).startswith("Shelved")]
    assert shelved_rows and "sensor being replaced" in cell(view, shelved_rows[0], 0, Qt.ItemDataRole.ToolTipRole)
    activate(qtbot, view)
    with qtbot.waitSignal(view.mute_requested, timeout=5_000) as muted:
        qtbot.keyClick(view.table, Qt.Key.Key_M, Qt.KeyboardModifier.ControlModifier)
    assert muted.args == [300.0]
    # Escape leaves a dialog without a request.
    when_modal(lambda w: isinstance(w, QDialog), lambda dialog: dialog.reject())
    with qtbot.assertNotEmitted(view.acknowledge_requested, wait=200):
        view.table.selectRow(0)
        activate(qtbot, view)
        qtbot.keyClick(view.table, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def test_journal_view_shows_what_the_journal_found_and_asks_for_searches(qtbot, styled_qapp, tmp_path, day_events):
    _engine, events = day_events
    activations = support.condition_activations("Mazak03")
    journal = AlarmJournal(tmp_path / "alarms.sqlite3")
    try:
        journal.apply(events)
        view = JournalView()
        qtbot.addWidget(view)
        first, last = support.epoch(activations[0].timestamp), support.epoch(activations[-1].cleared_at)
        view.set_range(first - 60, last)
        view.machine.setText("Mazak03")
        view.text.setText(activations[0].text)
        with qtbot.waitSignal(view.search_requested) as signal:
            qtbot.mouseClick(view.search_button, Qt.MouseButton.LeftButton)
        filters = signal.args[0]
        assert filters["device"] == "Mazak03" and filters["text"] == activations[0].text
        assert filters["start"] <= first and filters["end"] >= last
        entries = journal.search(**filters)
        view.show_entries(entries)
        same_text = [a for a in activations if a.text == activations[0].text]
        # Each activation with that text was raised and cleared: two transitions apiece.
        assert view.table.rowCount() == 2 * len(same_text) == len(entries)
        assert {view.table.item(r, 4).text() for r in range(view.table.rowCount())} == {activations[0].text}
        assert [view.table.item(r, 1).text() for r in range(2)] == ["raised", "cleared"]
        # In the alarm table's words: raised and waiting, then gone but still to be acknowledged.
        assert [view.table.item(r, 6).text() for r in range(2)] == ["Unacknowledged", "Returned, unacknowledged"]
        with qtbot.waitSignal(view.export_requested) as export:
            qtbot.mouseClick(view.export_button, Qt.MouseButton.LeftButton)
        assert export.args[0] == filters
    finally:
        journal.close()


def test_kpi_view_shows_the_audit_figures_of_the_day(qtbot, styled_qapp, tmp_path, day_events):
    _engine, events = day_events
    activations = support.condition_activations("Mazak03")
    journal = AlarmJournal(tmp_path / "alarms.sqlite3")
    try:
        journal.apply(events)
        start = support.epoch(activations[0].timestamp)
        report = journal_kpis(journal, start, start + 3600)
    finally:
        journal.close()
    in_hour = [a for a in activations if support.epoch(a.timestamp) < start + 3600]
    view = KpiView()
    qtbot.addWidget(view)
    view.show_report(report)
    assert view.values["alarms"].text() == str(len(in_hour))
    assert view.values["alarms_per_hour"].text() == f"{len(in_hour):.1f}"
    codes = {}
    for a in in_hour:
        codes[(a.item, a.code)] = codes.get((a.item, a.code), 0) + 1
    assert view.bad_actors.item(0, 3).text() == str(max(codes.values()))
    rows = [view.breakdown.item(r, 0).text() for r in range(view.breakdown.rowCount())]
    assert "machine Mazak03" in rows and any(r.startswith("shift ") for r in rows)


# -- priority colours and ISA states, as painted ---------------------------------------------

# Every priority from the recorded days: Faults critical, Warnings high, a program stop
# medium, a machine not reporting (avail UNAVAILABLE) low.
PRIORITY_RULES = """
version: 1
rules:
  - id: condition
    kind: condition
    title: Controller condition
    levels: {FAULT: critical, WARNING: high}
  - id: execution-stopped
    kind: event
    title: Program stopped
    type: EXECUTION
    values: [STOPPED]
    priority: medium
  - id: machine-data-unavailable
    kind: unavailable
    title: Machine not reporting
    type: AVAILABILITY
    priority: low
"""


@pytest.fixture
def plant_alarms():
    """GFAgie01 and Mazak01 before their adapters report (avail UNAVAILABLE), Mazak01's first
    Faults, Mazak03 up to its second Fault; one Fault acknowledged, one low alarm shelved."""
    engine = support.engine(PRIORITY_RULES)
    engine.process(support.day("GFAgie01", last_line=34) + support.day("Mazak01", last_line=115)
                   + support.day("Mazak03", last_line=1622), now=0.0)
    alarms = engine.alarms()
    servo = next(a for a in alarms if (a.device_name, a.native_code) == ("Mazak01", "31"))
    engine.acknowledge(servo.alarm_id, by="operator", now=0.0)
    unavailable = next(a for a in alarms if (a.device_name, a.data_item_name) == ("Mazak01", "avail"))
    engine.shelve(unavailable.alarm_id, by="operator", seconds=3600.0, reason="adapter being replaced", now=0.0)
    return engine.alarms()


def painted(view: ActiveAlarmsView):
    """The table as drawn: the colour of a cell is a pixel inside it, clear of its text."""
    view.table.viewport().update()
    image = view.table.viewport().grab().toImage()

    def colour(row: int, column: int) -> str:
        rect = view.table.visualRect(view.model.index(row, column))
        return image.pixelColor(rect.left() + 2, rect.top() + 2).name()

    return image, colour


def test_the_priority_colours_the_row_and_the_state_shows_without_colour(qtbot, styled_qapp, plant_alarms):
    from contrast import contrast_ratio
    from desktop.core.alarms import AlarmState
    from desktop.core.machines import MachineStatus
    from desktop.ui.theme import STATUS_COLORS

    view = ActiveAlarmsView()
    qtbot.addWidget(view)
    view.resize(1400, 900)
    view.show()
    qtbot.waitExposed(view)
    view.set_alarms(plant_alarms)
    alarms = shown(view)
    states = {a.alarm_state for a in alarms}
    assert {a.priority for a in alarms} == {"critical", "high", "medium", "low"}
    assert {AlarmState.UNACKNOWLEDGED_ACTIVE, AlarmState.UNACKNOWLEDGED_RETURNED, AlarmState.ACKNOWLEDGED_ACTIVE,
            AlarmState.SHELVED} <= states
    image, colour = painted(view)
    assert view.table.visualRect(view.model.index(len(alarms) - 1, 0)).bottom() < image.height() - 5
    body = image.pixelColor(image.width() // 2, image.height() - 3).name()  # below the last row

    # One colour per priority, whatever the state; critical in the red of the tiles' alarm marks.
    swatches: dict[str, set[str]] = {}
    for row, alarm in enumerate(alarms):
        swatches.setdefault(alarm.priority, set()).add(colour(row, 1))
    assert all(len(found) == 1 for found in swatches.values()), swatches
    swatch = {priority: found.pop() for priority, found in swatches.items()}
    assert len(set(swatch.values())) == 4, swatch
    assert swatch["critical"] == STATUS_COLORS[MachineStatus.ALARM]
    # Only the priority cell is coloured: the rest of every row is the table's own background,
    # so a low alarm waiting for acknowledgement is not a red row like a critical one.
    others = {colour(row, column) for row in range(len(alarms)) for column in range(view.model.columnCount())
              if column != 1}
    assert others == {body}, f"row cells painted {sorted(others)}, the table body {body}"
    low = next(r for r, a in enumerate(alarms) if a.priority == "low" and a.alarm_state is AlarmState.UNACKNOWLEDGED_ACTIVE)
    assert swatch["critical"] not in {colour(low, column) for column in range(view.model.columnCount())}

    # The text says the priority (the rules': Faults critical, Warnings high) and the state.
    for row, alarm in enumerate(alarms):
        if alarm.rule_id == "condition":
            expected = {"FAULT": "critical", "WARNING": "high"}[alarm.level]
        else:
            expected = {"execution-stopped": "medium", "machine-data-unavailable": "low"}[alarm.rule_id]
        assert cell(view, row, 1) == expected, (alarm.device_name, alarm.message)
    words = {AlarmState.UNACKNOWLEDGED_ACTIVE: "Unacknowledged", AlarmState.UNACKNOWLEDGED_RETURNED: "Returned, unacknowledged",
             AlarmState.ACKNOWLEDGED_ACTIVE: "Acknowledged", AlarmState.SHELVED: "Shelved"}
    looks: dict[AlarmState, set] = {}
    for row, alarm in enumerate(alarms):
        font = cell(view, row, 0, Qt.ItemDataRole.FontRole)
        icon = cell(view, row, 0, Qt.ItemDataRole.DecorationRole)
        ink = 0
        if icon is not None:
            marker = icon.pixmap(12, 12).toImage()
            ink = sum(marker.pixelColor(x, y).alpha() > 128 for x in range(marker.width()) for y in range(marker.height()))
        text_colour = cell(view, row, 4, Qt.ItemDataRole.ForegroundRole).color()
        looks.setdefault(alarm.alarm_state, set()).add(
            (cell(view, row, 0).split(" (")[0], bool(font is not None and font.bold()), ink, text_colour.name()))
        assert contrast_ratio(text_colour, image.pixelColor(2, 2)) >= 4.5
    assert all(len(look) == 1 for look in looks.values()), looks
    look = {state: found.pop() for state, found in looks.items()}
    assert {state: look[state][0] for state in words} == words
    # Bold while someone has to act; acknowledged and shelved plain.
    assert [look[state][1] for state in words] == [True, True, False, False]
    # A marker told apart by its shape: a filled dot (active), a ring (came and went), none
    # once acknowledged; shelved text dimmed.
    active_ink, returned_ink = look[AlarmState.UNACKNOWLEDGED_ACTIVE][2], look[AlarmState.UNACKNOWLEDGED_RETURNED][2]
    assert active_ink > returned_ink > 0 and look[AlarmState.ACKNOWLEDGED_ACTIVE][2] == 0
    dim, normal = QColor(look[AlarmState.SHELVED][3]), QColor(look[AlarmState.ACKNOWLEDGED_ACTIVE][3])
    assert dim.lightness() < normal.lightness()
