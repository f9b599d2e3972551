"""The alarm pages in the real main window, fed by the real feed from a real broker with
Mazak03's recorded day: an operator's acknowledgement from the table changes the row's ISA
state and is shared through `monitor.alarm-acks`."""
from __future__ import annotations

import socket
import time

import pytest
from PySide6.QtCore import Qt

import kafka_readers
import recorded_nist as testing
from desktop.core.alarms.timeutil import parse_timestamp
from desktop.core.settings import Settings
from desktop.ui.alarm_views import NoteDialog, ShelveDialog
from desktop.ui.theme import PRIORITY_COLORS
from kafka_records import create_topics, device_messages, mazak03_observations, observation_messages, produce
from modal import when_modal
from producer import wire

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"
STATE, PRIORITY, MACHINE, ALARM, CODE, ACKED_BY = 0, 1, 2, 4, 6, 7


def fault_791_line() -> int:
    """The line of the recorded day's first Fault (791), found in the file itself."""
    lines = testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, start=1) if "|motion_cond|Fault|791|" in line)


@pytest.fixture(scope="module")
def devices():
    return testing.load_devices()


def open_live_window(make_window, qtbot, kafka_broker, topic_prefix, devices, **options):
    """A window on the broker that has read Mazak03's day up to its first Fault, live."""
    client = {"bootstrap.servers": kafka_broker.bootstrap}
    create_topics(client, topic_prefix)
    window = make_window(Settings(mode="remote", bootstrap_servers=kafka_broker.bootstrap, topic_prefix=topic_prefix),
                         **options)
    window.show()
    window.start()
    # Written once the feed runs, so it is live data (history pops nothing up).
    qtbot.waitUntil(lambda: window.feed_state == "connected", timeout=60_000)
    with qtbot.waitSignal(window.notifier.notification_shown, timeout=60_000):
        produce(client, device_messages(devices, topic_prefix)
                + observation_messages(mazak03_observations(devices, last_line=fault_791_line()), topic_prefix))
    return window


@pytest.fixture
def live_window(make_window, qtbot, kafka_broker, topic_prefix, devices):
    return open_live_window(make_window, qtbot, kafka_broker, topic_prefix, devices)


def rows(window) -> list[list[str]]:
    model = window.alarm_pages.active_view.model
    return [[model.index(r, c).data() for c in range(model.columnCount())] for r in range(model.rowCount())]


def row_of(window, code: str) -> int:
    return next(r for r, row in enumerate(rows(window)) if row[CODE] == code and row[PRIORITY] == "critical")


def select_only(view, row: int) -> None:
    """Select one row whatever was selected (selectRow toggles while a modifier seems held)."""
    selection = view.table.selectionModel()
    selection.select(view.model.index(row, 0), selection.SelectionFlag.ClearAndSelect | selection.SelectionFlag.Rows)
    assert [view.model.alarm_at(row).alarm_id] == view.selected_ids()


def focus_table(qtbot, window) -> None:
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=10_000)
    window.alarm_pages.active_view.table.setFocus()
    qtbot.waitUntil(window.alarm_pages.active_view.table.hasFocus, timeout=10_000)


def shared_state(bootstrap: str, prefix: str, alarm_id: str, what: str, timeout: float = 30.0) -> dict:
    """The alarm's latest record on the acks topic once it has `what` (read with a consumer of the test's own)."""
    topic = wire.topic_name(wire.ALARM_ACKS, prefix)
    deadline = time.monotonic() + timeout
    while True:
        value = kafka_readers.latest_by_key(bootstrap, topic).get(alarm_id)
        if value is not None and value.get(what):
            return value
        assert time.monotonic() < deadline, f"no {what} for {alarm_id} on {topic} within {timeout:.0f} s: {value}"
        time.sleep(0.2)


def test_acknowledging_from_the_alarms_page_changes_the_row_and_is_shared(live_window, qtbot, kafka_broker, topic_prefix):
    window = live_window
    # The page is reached by keyboard from the window.
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=10_000)
    qtbot.keyClick(window.tabs, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.alarm_pages.active_view
    qtbot.waitUntil(lambda: any(row[CODE] == "791" for row in rows(window)))
    row = row_of(window, "791")
    assert rows(window)[row][STATE] == "Unacknowledged"
    assert (rows(window)[row][MACHINE], rows(window)[row][ALARM]) == ("Mazak03", "MUST INPUT CUTTING SPEED")
    alarm_id = window.alarm_pages.active_view.model.alarm_at(row).alarm_id

    view = window.alarm_pages.active_view
    select_only(view, row)
    focus_table(qtbot, window)

    def fill(dialog):
        dialog.note.setText("speed entered on the panel")
        dialog.accept()

    when_modal(lambda w: isinstance(w, NoteDialog), fill)
    qtbot.keyClick(view.table, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)

    # The fault is still present: Acknowledged-Active, by this operator, back from the core thread.
    operator = window.alarm_pages.operator
    qtbot.waitUntil(lambda: rows(window)[row_of(window, "791")][STATE] == "Acknowledged", timeout=10_000)
    assert rows(window)[row_of(window, "791")][ACKED_BY] == operator
    # Off the top: unacknowledged alarms (the day's warnings) come first now.
    above = rows(window)[:row_of(window, "791")]
    assert above and all(r[STATE].split(" (")[0] in ("Unacknowledged", "Returned, unacknowledged") for r in above)

    value = shared_state(kafka_broker.bootstrap, topic_prefix, alarm_id, "acknowledged")
    assert value["alarm_id"] == alarm_id and value["device_uuid"] == "mtc_adapter004"
    assert (value["acknowledged"]["by"], value["acknowledged"]["station"], value["acknowledged"]["note"]) == \
        (operator, socket.gethostname(), "speed entered on the panel")
    # Read back by the station's own reader and merged: the journal holds the acknowledgement once.
    # (the journal is written before the row changed, so there is nothing to wait for)
    journal_acks = [e for e in window.alarm_pages.journal.search(kinds=["acknowledged"]) if e.alarm_id == alarm_id]
    assert [(e.by_user, e.note) for e in journal_acks] == [(operator, "speed entered on the panel")]


def test_shelving_and_unshelving_from_the_alarms_page(live_window, qtbot, kafka_broker, topic_prefix):
    window = live_window
    window.alarm_pages.show_page("alarms")
    qtbot.waitUntil(lambda: any(row[CODE] == "791" for row in rows(window)))
    view = window.alarm_pages.active_view
    alarm_id = view.model.alarm_at(row_of(window, "791")).alarm_id
    select_only(view, row_of(window, "791"))
    focus_table(qtbot, window)

    def fill(dialog):
        dialog.duration.setCurrentIndex(0)  # 15 min
        dialog.reason.setText("feed override test")
        dialog.accept()

    when_modal(lambda w: isinstance(w, ShelveDialog), fill)
    qtbot.keyClick(view.table, Qt.Key.Key_H, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: rows(window)[row_of(window, "791")][STATE] == "Shelved", timeout=10_000)
    value = shared_state(kafka_broker.bootstrap, topic_prefix, alarm_id, "shelve")
    assert (value["shelve"]["state"], value["shelve"]["reason"]) == ("shelved", "feed override test")
    assert 899 <= parse_timestamp(value["shelve"]["until"]) - parse_timestamp(value["shelve"]["at"]) <= 901

    select_only(view, row_of(window, "791"))
    focus_table(qtbot, window)
    qtbot.keyClick(view.table, Qt.Key.Key_U, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: rows(window)[row_of(window, "791")][STATE] == "Unacknowledged", timeout=10_000)
    deadline = time.monotonic() + 30
    while shared_state(kafka_broker.bootstrap, topic_prefix, alarm_id, "shelve")["shelve"]["state"] != "unshelved":
        assert time.monotonic() < deadline, "the unshelve never reached the acks topic"
        time.sleep(0.2)


# -- in the window without a broker: tiles, pop-ups and the horn from the recorded day -------


def line_of(text: str) -> int:
    lines = testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, start=1) if text in line)


def mazak03_lines(devices, first: int, last: int):
    device = testing.device_named(devices, "Mazak03")
    return [o for _, o in testing.shdr_observations(testing.nist_shdr(MAZAK03_DAY), device, first, last)]


def tile_frame_colour(window, uuid: str) -> str:
    """The colour painted on the tile's top edge, halfway along (where the alarm frame runs)."""
    grid = window.overview.grid
    rect = grid.tile_rect(uuid)
    image = grid.grab(rect).toImage()
    return image.pixelColor(rect.width() // 2, 1).name()


def test_tile_popups_and_horn_follow_the_priority_of_the_alarms(make_window, qtbot, devices):
    window = make_window(Settings(notify="faults_and_warnings"))
    window.show()
    styles: list[str] = []
    window.notifier.popup_styled.connect(styles.append)
    before = line_of("|system_cond|Warning|416|") - 1
    window.ingest(testing.batch_of(devices, mazak03_lines(devices, 1, before)))
    qtbot.waitUntil(lambda: "mtc_adapter004" in window.overview.grid.texts)
    unmarked = tile_frame_colour(window, "mtc_adapter004")
    warning = before + 1
    # A Warning is medium (the conditions rule): listed and marked on the tile, no pop-up, no horn.
    with qtbot.assertNotEmitted(window.notifier.notification_shown, wait=500):
        window.ingest(testing.batch_of(observations=mazak03_lines(devices, warning, warning)))
        qtbot.waitUntil(lambda: window.overview.grid.texts.get("mtc_adapter004", {}).get("alarm", "")
                        .startswith("MEDIUM · UNACK ALARM"))
    # The tile's frame is in the medium colour of the alarm table, not the red of a fault.
    assert tile_frame_colour(window, "mtc_adapter004") == PRIORITY_COLORS["medium"][0] != unmarked
    assert not window.notifier.horn_sounding and not window.horn_label.isVisible()

    # A Fault is critical: a critical pop-up, the tile says so, the horn sounds.
    fault = line_of("|motion_cond|Fault|791|")
    with qtbot.waitSignal(window.notifier.notification_shown):
        window.ingest(testing.batch_of(observations=mazak03_lines(devices, warning + 1, fault)))
    assert styles == ["critical"]
    qtbot.waitUntil(lambda: window.overview.grid.texts["mtc_adapter004"]["alarm"].startswith("CRITICAL · UNACK ALARM"))
    assert tile_frame_colour(window, "mtc_adapter004") == PRIORITY_COLORS["critical"][0]
    qtbot.waitUntil(lambda: window.notifier.horn_sounding)
    assert window.horn_label.isVisible()

    # Muted from the Alarms page: silent; acknowledged: silent for good, the tile still marked
    # (the fault is present) but acknowledged.
    window.alarm_pages.show_page("alarms")
    window.alarm_pages.active_view.mute_requested.emit(300.0)
    assert not window.notifier.horn_sounding and not window.horn_label.isVisible()
    window.notifier.horn.unmute()
    qtbot.waitUntil(lambda: window.notifier.horn_sounding)
    fault_id = next(a.alarm_id for a in window.alarm_pages.alarms.values() if a.native_code == "791")
    window.alarm_pages.active_view.acknowledge_requested.emit([fault_id], "")
    qtbot.waitUntil(lambda: not window.notifier.horn_sounding, timeout=10_000)
    # The fault, acknowledged, is the worst state left; the day's Warnings before it returned to
    # Normal and still wait for an acknowledgement, and the tile says how many.
    waiting = sum(1 for a in window.alarm_pages.alarms.values() if a.device_uuid == "mtc_adapter004"
                  and a.alarm_state.value in ("unacknowledged-active", "unacknowledged-returned") and a.alarm_id != fault_id)
    assert waiting > 0
    qtbot.waitUntil(lambda: window.overview.grid.texts["mtc_adapter004"]["alarm"]
                    == f"CRITICAL · ALARM ACK'D · {waiting} UNACK")
    assert tile_frame_colour(window, "mtc_adapter004") == PRIORITY_COLORS["critical"][0], "still active: still framed"
    # Every alarm of the machine shelved (the fault and the day's returned warnings): the tile
    # names it but is no longer framed.
    everything = [a.alarm_id for a in window.alarm_pages.alarms.values() if a.device_uuid == "mtc_adapter004"]
    assert len(everything) > 1
    window.alarm_pages.active_view.shelve_requested.emit(everything, 3600.0, "waiting for the service engineer")
    qtbot.waitUntil(lambda: window.overview.grid.texts["mtc_adapter004"]["alarm"].startswith("SHELVED"), timeout=10_000)
    assert tile_frame_colour(window, "mtc_adapter004") == unmarked


def test_journal_and_kpi_pages_are_filled_off_the_gui_thread_for_the_screenshot_views(make_window, qtbot, devices):
    from desktop.ui.views import get_view

    window = make_window()
    window.show()
    fault = line_of("|motion_cond|Fault|791|")
    window.ingest(testing.batch_of(devices, mazak03_lines(devices, 1, fault)))
    qtbot.waitUntil(lambda: any(a.native_code == "791" for a in window.alarm_pages.alarms.values()))
    # The file's own count: every Warning/Fault line with a code that is not active yet
    # starts an alarm (the conditions rule alarms both levels).
    lines = testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines()[:fault]
    active: set[tuple[str, str]] = set()
    activations = 0
    for line in lines:
        fields = line.split("|")
        if len(fields) > 3 and fields[1].endswith("_cond"):
            if fields[2] in ("Warning", "Fault") and (fields[1], fields[3]) not in active:
                active.add((fields[1], fields[3]))
                activations += 1
            elif fields[2] in ("Normal", "Unavailable"):
                active = {key for key in active if key[0] != fields[1] or (fields[3] and key[1] != fields[3])}

    journal = get_view("journal")
    widget = journal.show(window)
    qtbot.waitUntil(lambda: journal.ready(window, widget), timeout=10_000)
    assert window.tabs.currentWidget() is window.alarm_pages.journal_view
    table = window.alarm_pages.journal_view.table
    raised = [table.item(r, 4).text() for r in range(table.rowCount()) if table.item(r, 1).text() == "raised"]
    assert len(raised) == activations and raised[-1] == "MUST INPUT CUTTING SPEED"

    kpis = get_view("kpis")
    widget = kpis.show(window)
    qtbot.waitUntil(lambda: kpis.ready(window, widget), timeout=10_000)
    assert window.tabs.currentWidget() is window.alarm_pages.kpi_view
    assert window.alarm_pages.kpi_view.values["alarms"].text() == str(activations)


def test_alarm_journal_and_kpi_tables_are_dark_and_readable_in_the_window(make_window, qtbot, devices):
    from PySide6.QtGui import QPalette

    from contrast import contrast_ratio, luminance
    from desktop.ui.views import get_view

    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    fault = line_of("|motion_cond|Fault|791|")
    window.ingest(testing.batch_of(devices, mazak03_lines(devices, 1, fault)))
    qtbot.waitUntil(lambda: any(a.native_code == "791" for a in window.alarm_pages.alarms.values()))
    pages = window.alarm_pages
    tables = {}
    for name, found in (("alarms", [pages.active_view.table]), ("journal", [pages.journal_view.table]),
                        ("kpis", [pages.kpi_view.bad_actors, pages.kpi_view.breakdown])):
        view = get_view(name)
        widget = view.show(window)
        if view.ready is not None:
            qtbot.waitUntil(lambda: view.ready(window, widget), timeout=10_000)
        for table in found:
            qtbot.waitUntil(lambda: table.model().rowCount() > 0 and table.isVisible(), timeout=10_000)
            table.viewport().update()
            tables[f"{name} {table.model().headerData(0, Qt.Orientation.Horizontal) or 'breakdown'}"] = (
                table, table.viewport().grab().toImage())
    page = window.grab().toImage()
    window_background = page.pixelColor(2, page.height() // 2)  # the page margin beside the tables

    for label, (table, image) in tables.items():
        table.ensurePolished()
        model = table.model()
        # The body of the table is the dark theme's, not a white slab in a dark window.
        body = image.pixelColor(image.width() - 3, image.height() - 3)
        assert luminance(body) < 0.05 and contrast_ratio(body, window_background) < 1.6, \
            f"{label}: body {body.name()} in a window of {window_background.name()}"
        checked = 0
        for row in range(model.rowCount()):
            for column in range(model.columnCount()):
                index = model.index(row, column)
                rect = table.visualRect(index)
                if not index.data() or rect.bottom() >= image.height() or rect.right() >= image.width():
                    continue
                background = image.pixelColor(rect.left() + 2, rect.top() + 2)
                brush = index.data(Qt.ItemDataRole.ForegroundRole)
                text = brush.color() if brush is not None else table.palette().color(QPalette.ColorRole.Text)
                ratio = contrast_ratio(text, background)
                assert ratio >= 4.5, f"{label} row {row} column {column} {index.data()!r}: " \
                                     f"{text.name()} on {background.name()} is {ratio:.1f}:1"
                checked += 1
        assert checked > 0, label


def test_alarm_rules_changed_in_the_settings_dialog_apply_at_once(make_window, qtbot, kafka_broker, topic_prefix, devices,
                                                                   tmp_path):
    from desktop.core.alarms import AlarmJournal, default_rules_path, load_rules
    from desktop.core.alarms.common import USER_RULES_FILE, common_rules
    from desktop.core.model import MonitorModel
    from desktop.ui.settings_dialog import SettingsDialog
    from modal import when_modal

    config = tmp_path / "config"
    model = MonitorModel(rules=load_rules(default_rules_path()), journal=AlarmJournal(tmp_path / "journal.sqlite3"))
    window = open_live_window(make_window, qtbot, kafka_broker, topic_prefix, devices, config_dir=config, model=model)
    window.alarm_pages.show_page("alarms")
    qtbot.waitUntil(lambda: any(row[CODE] == "791" for row in rows(window)))
    fault = rows(window)[row_of(window, "791")]
    assert (fault[STATE], fault[PRIORITY]) == ("Unacknowledged", "critical")

    def change(edit):
        def action(dialog: SettingsDialog) -> None:
            edit(dialog)
            dialog._on_save_clicked()
        when_modal(lambda widget: isinstance(widget, SettingsDialog), action)
        window.open_settings()

    # Conditions off: every condition alarm is out of service at once, nothing else changed.
    change(lambda dialog: dialog.conditions_check.setChecked(False))
    qtbot.waitUntil(lambda: window.rules_status == "Alarm rules applied", timeout=10_000)
    assert not common_rules((config / USER_RULES_FILE).read_text(encoding="utf-8")).conditions_enabled
    before = rows(window)
    qtbot.waitUntil(lambda: all(row[STATE].startswith("Out of service") for row in rows(window) if row[CODE]),
                    timeout=10_000)
    # The other rules' alarms (execution stopped, unavailable) are as they were.
    assert [row for row in rows(window) if not row[CODE]] == [row for row in before if not row[CODE]]
    assert any(not row[CODE] for row in before)
    assert any(row[CODE] == "791" for row in rows(window))

    # Back on, with FAULT as high: the fault still present in the data is an alarm again, of the
    # new priority, derived from the history read again (so it does not pop up a second time).
    def conditions_on_fault_high(dialog: SettingsDialog) -> None:
        dialog.conditions_check.setChecked(True)
        dialog.fault_priority_combo.setCurrentIndex(dialog.fault_priority_combo.findData("high"))
    with qtbot.assertNotEmitted(window.notifier.notification_shown, wait=0):
        change(conditions_on_fault_high)
        qtbot.waitUntil(lambda: window.rules_status == "Alarm rules applied", timeout=10_000)
        qtbot.waitUntil(lambda: any(row[CODE] == "791" and row[STATE] == "Unacknowledged" for row in rows(window)),
                        timeout=30_000)
    assert [row[PRIORITY] for row in rows(window) if row[CODE] == "791"] == ["high"]
    assert not any(row[STATE].startswith("Out of service") for row in rows(window))

    # A rules file broken behind the dialog's back is named, and the rules in use stay.
    broken = tmp_path / "broken-rules.yaml"
    broken.write_text("version: 1\nrules:\n  - id: conditions\n    kind: no-such-kind\n", encoding="utf-8")
    shown = rows(window)
    window.apply_rules(broken)
    qtbot.waitUntil(lambda: window.rules_status.startswith("Alarm rules not applied"), timeout=10_000)
    assert str(broken) in window.rules_status and "kind" in window.rules_status
    assert rows(window) == shown
