"""The main window fed with recorded NIST data: tiles, plot, alarm table and the banner."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

import recorded_nist as testing
from desktop.core.batch import parse_timestamp

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"


@pytest.fixture(scope="module")
def devices():
    return testing.load_devices()


def line_of(text: str) -> int:
    lines = testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, start=1) if text in line)


def mazak03_until(devices, last_line: int, first_line: int = 1):
    device = testing.device_named(devices, "Mazak03")
    return [o for _, o in testing.shdr_observations(testing.nist_shdr(MAZAK03_DAY), device, first_line, last_line)]


def recorded_points(name: str, window_seconds: float) -> int:
    """How many numeric values of item `name` the SHDR file has within `window_seconds` of its last one."""
    lines = testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines()
    times = [parse_timestamp(f[0]) for f in (l.split("|") for l in lines) if f[1] == name and f[2] != "UNAVAILABLE"]
    return sum(1 for t in times if t >= times[-1] - window_seconds)


def hurco_unavailable(devices):
    return [o for d in devices if d["device_name"].startswith("Hurco")
            for o in testing.unavailable_observations(d, "2016-11-16T20:00:00Z")]


def tile(window, uuid: str) -> dict:
    return window.overview.grid.texts.get(uuid, {})


def test_devices_show_as_tiles_with_status(make_window, qtbot, devices):
    window = make_window()
    window.show()
    fault_line = line_of("|motion_cond|Fault|791|")
    window.ingest(testing.batch_of(devices, hurco_unavailable(devices) + mazak03_until(devices, fault_line - 1)))
    qtbot.waitUntil(lambda: len(window.overview.tiles) == 8 and tile(window, "mtc_adapter004").get("state") == "RUNNING")
    views = window.overview.tiles
    assert sorted(v.name for v in views.values()) == sorted(d["device_name"] for d in devices)
    for device in devices:
        if device["device_name"].startswith("Hurco"):
            qtbot.waitUntil(lambda d=device: tile(window, d["device_uuid"]).get("state") == "UNAVAILABLE")
    mazak03 = tile(window, "mtc_adapter004")
    assert mazak03["execution"] == "Active" and mazak03["mode"] == "Automatic"
    assert mazak03["model"] == "Mazak · QTN"
    assert tile(window, "mtc_adapter001")["state"] == "OFFLINE"  # GFAgie01: no data yet

    window.ingest(testing.batch_of(observations=mazak03_until(devices, fault_line, fault_line)))
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "ALARM")
    assert "MUST INPUT CUTTING SPEED" in tile(window, "mtc_adapter004")["reason"]
    # Marked with the priority of its worst alarm: FAULT is critical (the conditions rule).
    assert tile(window, "mtc_adapter004")["alarm"].startswith("CRITICAL · UNACK ALARM")
    assert "alarm" in window.windowTitle()


def test_the_detail_plots_the_spindle_of_the_device_model_the_same_on_every_run(make_window, qtbot, devices):
    window = make_window()
    window.show()
    window.ingest(testing.batch_of(devices, hurco_unavailable(devices) + mazak03_until(devices, 10_000)))
    qtbot.waitUntil(lambda: "mtc_adapter004" in window.state.machines and bool(window.state.sample_items("mtc_adapter004")))
    detail = window.open_detail("mtc_adapter004")
    # Srpm (the first spindle of Mazak03's model) and its load, not S2rpm sitting at 0.
    qtbot.waitUntil(lambda: detail.pens == ["Mazak03-S_2", "Mazak03-S_3"])
    srpm_lines = [l for l in testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines()
                  if l.split("|")[1] == "Srpm" and l.split("|")[2] != "UNAVAILABLE"]
    times = [parse_timestamp(line.split("|")[0]) for line in srpm_lines]
    # The live part holds what the core's buffer holds: the last `window_seconds` of samples.
    expected = sum(1 for t in times if t >= times[-1] - window.model.window_seconds)
    qtbot.waitUntil(lambda: detail.plot.points.get("Mazak03-S_2") == len(srpm_lines) or
                    detail.plot.points.get("Mazak03-S_2", 0) >= expected, timeout=10_000)
    assert 0 < detail.plot.points["Mazak03-S_2"] <= len(srpm_lines)
    index = [detail.pen_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(detail.pen_list.count())].index("Mazak03-S_4")
    detail.pen_list.item(index).setCheckState(Qt.CheckState.Checked)  # Stemp, spindle temperature
    stemp_count = recorded_points("Stemp", 10**9)
    qtbot.waitUntil(lambda: 0 < detail.plot.points.get("Mazak03-S_4", 0) <= stemp_count)
    assert "Mazak03-S_4" in detail.pens
    panel = detail.panel_labels
    # The panel says what the recording's last lines say.
    last = {}
    for line in testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines():
        fields = line.split("|")
        for name, value in zip(fields[1::2], fields[2::2]):
            last[name] = value
    qtbot.waitUntil(lambda: panel["execution"].text() == last["execution"].replace("_", " ").capitalize())
    assert panel["mode"].text() == last["mode"].replace("_", " ").capitalize()


def test_fault_shows_the_banner_once_without_a_tray(make_window, qtbot, devices):
    window = make_window()
    window.show()
    assert not window.notifier.uses_tray  # offscreen has no system tray
    assert not window.banner.isVisible()
    fault_line = line_of("|motion_cond|Fault|791|")
    with qtbot.waitSignal(window.notifier.notification_shown) as shown:
        window.ingest(testing.batch_of(devices, mazak03_until(devices, fault_line)))
    assert "MUST INPUT CUTTING SPEED" in shown.args[1]
    assert window.banner.isVisible()
    assert "Mazak03" in window.banner.text() and "MUST INPUT CUTTING SPEED" in window.banner.text()
    qtbot.mouseClick(window.banner.dismiss_button, Qt.MouseButton.LeftButton)
    assert not window.banner.isVisible()

    # The same fault again (still active) must not pop up again.
    fault = mazak03_until(devices, fault_line, fault_line)
    with qtbot.assertNotEmitted(window.notifier.notification_shown):
        window.ingest(testing.batch_of(observations=fault))
    assert not window.banner.isVisible()

    # In the Alarms page: the active fault on top, the day's earlier warnings below it.
    model = window.alarm_pages.active_view.model
    qtbot.waitUntil(lambda: model.rowCount() > 0)
    rows = [[model.index(r, c).data() for c in range(7)] for r in range(model.rowCount())]
    assert [rows[0][c] for c in (0, 1, 2, 4, 6)] == ["Unacknowledged", "critical", "Mazak03", "MUST INPUT CUTTING SPEED", "791"]
    assert [r[1] for r in rows[1:]] == ["medium"] * (len(rows) - 1)


def test_alarm_table_follows_clear_and_reactivation(make_window, qtbot, devices):
    window = make_window()
    window.show()
    faults_711 = [n for n, l in enumerate(testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines(), 1)
                  if "|motion_cond|Fault|711|" in l]
    with qtbot.waitSignal(window.notifier.notification_shown) as shown:
        window.ingest(testing.batch_of(devices, mazak03_until(devices, faults_711[1])))
    assert shown.args[0] == "3 new alarms"  # one summary pop-up for one batch
    assert [line.split(":")[1].strip() for line in shown.args[1].splitlines()] == ["FAULT 791", "FAULT 711", "FAULT 711"]
    model = window.alarm_pages.active_view.model
    qtbot.waitUntil(lambda: model.rowCount() > 3)
    faults = [(model.index(r, 6).data(), model.index(r, 0).data())
              for r in range(model.rowCount()) if model.index(r, 1).data() == "critical"]
    # The faults that came and went stay listed until acknowledged, below the active one.
    assert faults == [("711", "Unacknowledged"), ("711", "Returned, unacknowledged"), ("791", "Returned, unacknowledged")]



def test_the_alarms_page_lists_every_alarm_the_moment_it_is_shown(make_window, qtbot, devices):
    # While another page is shown the table is rebuilt only now and then (a plant's thousands of
    # alarms take a while to sort); the operator opening it must still see all of them at once.
    window = make_window()
    window.show()
    faults_711 = [n for n, l in enumerate(testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines(), 1)
                  if "|motion_cond|Fault|711|" in l]
    window.ingest(testing.batch_of(devices, mazak03_until(devices, faults_711[0] - 1)))
    model = window.alarm_pages.active_view.model
    qtbot.waitUntil(lambda: model.rowCount() > 0)
    before = model.rowCount()
    window.ingest(testing.batch_of(observations=mazak03_until(devices, faults_711[1], faults_711[0])))
    qtbot.waitUntil(lambda: len(window.alarm_pages.alarms) > before)
    assert window.tabs.currentWidget() is not window.alarm_pages.active_view
    window.alarm_pages.show_page("alarms")
    assert model.rowCount() == len(window.alarm_pages.alarms)
    assert {model.alarm_at(r).alarm_id for r in range(model.rowCount())} == set(window.alarm_pages.alarms)

def test_history_of_cleared_faults_does_not_pop_up(make_window, qtbot, devices):
    window = make_window()
    window.show()
    history = dataclasses.replace(testing.batch_of(devices, mazak03_until(devices, 20_000)), catching_up=True)
    with qtbot.assertNotEmitted(window.notifier.notification_shown):
        window.ingest(history)
    qtbot.waitUntil(lambda: window.alarm_pages.active_view.model.rowCount() > 0)
    assert not window.banner.isVisible()


def test_status_bar_shows_rate_and_last_data(make_window, qtbot, devices):
    window = make_window()
    window.show()
    with qtbot.waitSignal(window.first_observations_received):
        window.ingest(testing.batch_of(devices, mazak03_until(devices, 500)))
    qtbot.waitUntil(lambda: window.last_data_label.text() == "last data: just now")
    qtbot.waitUntil(lambda: window.rate_label.text() != "0 obs/s")
    assert window.rate_label.text().endswith("obs/s")


def test_screenshot_of_the_window(make_window, qtbot, devices, tmp_path):
    window = make_window()
    window.show()
    window.ingest(testing.batch_of(devices, hurco_unavailable(devices) + mazak03_until(devices, 3000)))
    qtbot.waitUntil(lambda: len(window.overview.grid.order) == 8)
    path = tmp_path / "shot.png"
    assert window.save_screenshot(path)
    assert path.stat().st_size > 10_000


def test_without_a_tray_the_banner_opens_the_machine_it_is_about(make_window, qtbot, devices):
    window = make_window()
    window.show()
    assert not window.notifier.uses_tray
    with qtbot.waitSignal(window.notifier.notification_shown):
        window.ingest(testing.batch_of(devices, mazak03_until(devices, line_of("|motion_cond|Fault|791|"))))
    assert window.banner.isVisible() and window.banner.open_button.isVisible()
    with qtbot.waitSignal(window.detail_opened, timeout=5_000) as opened:
        qtbot.mouseClick(window.banner.open_button, Qt.MouseButton.LeftButton)
    assert opened.args == ["mtc_adapter004"]
    assert window.tabs.currentWidget() is window.details["mtc_adapter004"]
    assert window.tabs.tabText(window.tabs.currentIndex()) == "Mazak03"


def test_closing_with_a_tray_hides_to_it_and_quit_really_quits(make_window, qtbot):
    window = make_window(use_tray=True)
    window.show()
    assert window.notifier.uses_tray
    hints = []
    window.notifier.tray.messageClicked.connect(lambda: None)
    original = window.notifier.show_hint
    window.notifier.show_hint = lambda title, text: (hints.append(title), original(title, text))
    window.close()
    assert not window.isVisible() and not window._shut_down, "closing must hide to the tray"
    assert hints == ["Machine Monitor is still running"]
    window.show()
    window.close()
    assert hints == ["Machine Monitor is still running"], "the hint is shown the first time only"
    with qtbot.waitSignal(window.shutdown_finished, timeout=30_000):
        window.quit()
    assert window._shut_down


def test_start_at_login_writes_a_valid_autostart_entry_and_unticking_removes_it(make_window, qtbot, tmp_path,
                                                                                 monkeypatch):
    import shlex
    import subprocess

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    entry = tmp_path / "config" / "autostart" / "machine-monitor.desktop"
    window = make_window()
    window.apply_settings(dataclasses.replace(window.settings, start_at_login=True))
    assert entry.is_file(), "ticking start at login must put an entry in the freedesktop autostart folder"
    # The freedesktop validator is the oracle for the entry's format.
    checked = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    fields = dict(line.split("=", 1) for line in entry.read_text().splitlines() if "=" in line)
    command = shlex.split(fields["Exec"])
    assert Path(command[0]).resolve() == Path(sys.executable).resolve() and command[1:] == ["-m", "desktop"]
    assert fields.get("Hidden", "false") == "false" and fields["Type"] == "Application"
    window.apply_settings(dataclasses.replace(window.settings, start_at_login=False))
    assert not entry.exists(), "unticking start at login must remove the entry"


def test_the_tray_counts_alarms_to_acknowledge_without_reading_the_core_threads_journal(make_window, qtbot, devices):
    import re
    import threading

    window = make_window(use_tray=True)
    window.show()
    assert window.notifier.uses_tray
    journal = window.model.journal
    original = journal.unacknowledged_count
    readers: list[int] = []

    def counted() -> int:
        readers.append(threading.get_ident())
        return original()
    # The core thread changes the journal while the GUI redraws: reading it there raced
    # ("OrderedDict mutated during iteration" under load).
    journal.unacknowledged_count = counted
    window.ingest(testing.batch_of(devices, mazak03_until(devices, line_of("|motion_cond|Fault|791|"))))
    to_acknowledge = re.compile(r"\b[1-9]\d* alarm\(s\) to acknowledge")
    qtbot.waitUntil(lambda: to_acknowledge.search(window.notifier.tray.toolTip()) is not None, timeout=15_000)
    assert threading.get_ident() not in readers, "the GUI thread read the journal the core thread writes"


MAZAK01_DAY = "Mazak01-20171030-20171031.txt"


def test_the_detail_lists_every_series_whole_and_says_whose_availability_it_shows(make_window, qtbot, devices):
    """Mazak01's adapter never sends Availability: its agent reports it UNAVAILABLE while the
    machine runs programs. The panel shows that value as the agent's, beside RUNNING."""
    lines = testing.nist_shdr(MAZAK01_DAY).read_text(encoding="utf-8").splitlines()
    assert not [line for line in lines if line.split("|")[1:2] == ["avail"]]
    running = next(number for number, line in enumerate(lines, start=1) if line.endswith("|execution|ACTIVE"))
    device = testing.device_named(devices, "Mazak01")
    window = make_window()
    window.show()
    window.ingest(testing.batch_of(devices, testing.unavailable_observations(device, "2017-10-30T08:00:00Z") + [
        o for _, o in testing.shdr_observations(testing.nist_shdr(MAZAK01_DAY), device, 1, running)]))
    uuid = device["device_uuid"]
    qtbot.waitUntil(lambda: uuid in window.state.machines and bool(window.state.sample_items(uuid)))
    detail = window.open_detail(uuid)
    qtbot.waitUntil(lambda: detail.pen_list.count() == len(window.state.sample_items(uuid)))
    qtbot.waitUntil(lambda: detail.state_label.text() == "RUNNING")
    availability = detail.panel_labels["availability"]
    assert availability.text().startswith("Unavailable") and "agent" in availability.text(), availability.text()
    assert "UNAVAILABLE" in availability.toolTip() and "RUNNING" in availability.toolTip()

    # Every series name fits the picker whole, nothing is cut off by a sideways scroll.
    pens = detail.pen_list
    qtbot.waitUntil(lambda: pens.isVisible() and pens.viewport().width() > 0)
    assert not pens.horizontalScrollBar().isVisible()
    metrics = pens.fontMetrics()
    for row in range(pens.count()):
        entry = pens.item(row)
        rect = pens.visualItemRect(entry)
        assert metrics.horizontalAdvance(entry.text()) + 20 <= pens.viewport().width(), \
            f"{entry.text()!r} is {metrics.horizontalAdvance(entry.text())} px in a list {pens.viewport().width()} px wide"
        assert rect.left() >= 0 and entry.toolTip() == entry.text()

    # The event log's times are whole ("2017-10-30 08:00:00", not cut to "2017-10-30 0…").
    log = detail.log_view
    qtbot.waitUntil(lambda: detail.log_model.rowCount() > 0)
    times = {detail.log_model.rows[row][0] for row in range(detail.log_model.rowCount())}
    widest = max(times, key=log.fontMetrics().horizontalAdvance)
    assert len(widest) == len("2017-10-30 08:00:00"), widest
    assert log.fontMetrics().horizontalAdvance(widest) + 8 <= log.columnWidth(0), \
        f"{widest!r} needs {log.fontMetrics().horizontalAdvance(widest)} px in a column {log.columnWidth(0)} px wide"


def test_the_feed_and_core_threads_give_way_to_the_gui_while_it_draws_and_go_on_after(make_window, qtbot):
    import threading

    window = make_window()
    priority = window.gui_priority
    priority.max_wait = 30.0
    window.refresh()
    assert priority.busy, "a redraw did not ask the feed and core threads to wait"
    # A worker that steps aside goes on once the frame's events are handled, long before max_wait.
    done = threading.Event()
    threading.Thread(target=lambda: (priority.step_aside(), done.set()), daemon=True).start()
    qtbot.waitUntil(done.is_set, timeout=10_000)
    assert not priority.busy


def test_the_detail_plot_shows_new_points_within_a_second_without_redrawing_every_frame(make_window, qtbot, devices):
    import time

    import numpy as np

    from desktop.ui.detail import MAX_PLOT_DELAY

    window = make_window()
    window.show()
    window.ingest(testing.batch_of(devices, mazak03_until(devices, 2_000)))
    qtbot.waitUntil(lambda: "mtc_adapter004" in window.state.machines and bool(window.state.sample_items("mtc_adapter004")))
    detail = window.open_detail("mtc_adapter004")
    qtbot.waitUntil(lambda: detail.pens[:1] == ["Mazak03-S_2"] and detail.plot.points.get("Mazak03-S_2", 0) > 0)
    window.refresh_timer.stop()  # the frames below are the only ones drawn
    buffer = window.state.series[("mtc_adapter004", "Mazak03-S_2")]
    start = buffer.last_time
    drawn = []  # (frame, newest point time the plot was given)
    set_data = detail.plot.set_data

    def recording(key, times, values, hold_to):
        if key == "Mazak03-S_2":
            drawn.append((frame, float(times[-1])))
        set_data(key, times, values, hold_to)

    detail.plot.set_data = recording
    began = time.time() + 10
    frames = 45  # 3 s at the window's 15 Hz, a new point in every frame
    for frame in range(frames):
        buffer.extend(np.array([start + frame + 1.0]), np.array([float(frame)]))
        detail.refresh(began + frame / 15)
    # Every frame's point is on the plot within MAX_PLOT_DELAY (15 frames) of arriving...
    for frame in range(frames - 15):
        shown = next((at for at, newest in drawn if newest >= start + frame + 1.0), None)
        assert shown is not None and shown - frame <= MAX_PLOT_DELAY * 15, f"the point of frame {frame} waited too long"
    # ...but the plot was not redrawn for each of them (once a second: three or four times).
    assert 2 <= len(drawn) <= 4, drawn


def test_the_status_bar_says_how_far_behind_the_stream_the_app_reads_and_clears_once_caught_up(make_window, qtbot,
                                                                                                devices):
    import time

    from desktop.core.batch import build_batch

    def published(observations, seconds_ago: float):
        stamp_ms = int((time.time() - seconds_ago) * 1000)
        records = testing.records(devices, observations)
        return build_batch([record._replace(timestamp_ms=stamp_ms) for record in records])

    window = make_window()
    window.show()
    observations = mazak03_until(devices, 400)
    # Records the producer published three minutes ago, read only now.
    window.ingest(published(observations[:200], 180))
    qtbot.waitUntil(lambda: window.behind_label.isVisible())
    assert window.behind_label.text() == "3 min behind"
    # Caught up: the newest records read were published just now.
    window.ingest(published(observations[200:], 0))
    qtbot.waitUntil(lambda: not window.behind_label.isVisible())


def test_the_tray_turns_red_for_an_urgent_alarm_not_for_machines_that_report_nothing(make_window, qtbot, devices):
    from desktop.core.alarms import default_rules_path, load_rules
    from desktop.core.machines import MachineStatus
    from desktop.core.model import MonitorModel

    window = make_window(model=MonitorModel(rules=load_rules(default_rules_path())))
    window.show()
    hurcos = [d["device_uuid"] for d in devices if d["device_name"].startswith("Hurco")]
    fault_line = line_of("|motion_cond|Fault|791|")
    window.ingest(testing.batch_of(devices, hurco_unavailable(devices) + mazak03_until(devices, fault_line - 1)))
    # The Hurcos' adapters report nothing: each has a low-priority alarm waiting for
    # acknowledgement, and Mazak03 runs.
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "RUNNING" and all(
        tile(window, uuid).get("alarm", "").startswith("LOW · UNACK") for uuid in hurcos))
    qtbot.waitUntil(lambda: window.notifier.status is not None)
    assert window.notifier.status is not MachineStatus.ALARM, "low-priority alarms alone must not turn the tray red"

    window.ingest(testing.batch_of(observations=mazak03_until(devices, fault_line, fault_line)))
    qtbot.waitUntil(lambda: window.notifier.status is MachineStatus.ALARM)
    assert tile(window, "mtc_adapter004")["state"] == "ALARM"


def mazak03_detail(make_window, qtbot, devices):
    """A window fed the first 10,000 lines of the Mazak03 day, its detail open on the default pens."""
    window = make_window()
    window.show()
    window.ingest(testing.batch_of(devices, hurco_unavailable(devices) + mazak03_until(devices, 10_000)))
    qtbot.waitUntil(lambda: bool(window.state.sample_items("mtc_adapter004")))
    detail = window.open_detail("mtc_adapter004")
    qtbot.waitUntil(lambda: detail.pens == ["Mazak03-S_2", "Mazak03-S_3"])
    return detail


def test_every_pen_shown_has_a_colour_of_its_own_however_the_pens_were_picked(make_window, qtbot, devices):
    detail = mazak03_detail(make_window, qtbot, devices)
    entries = [detail.pen_list.item(i) for i in range(detail.pen_list.count())]
    first, kept = detail.pens
    # The first default pen off, then two from the top of the list on: an order unlike the list's.
    next(e for e in entries if e.data(Qt.ItemDataRole.UserRole) == first).setCheckState(Qt.CheckState.Unchecked)
    added = [e for e in entries if e.data(Qt.ItemDataRole.UserRole) not in (first, kept)][:2]
    for entry in added:
        entry.setCheckState(Qt.CheckState.Checked)
    assert len(detail.pens) == 3 and kept in detail.pens
    colours = {key: detail.plot.curves[key].opts["pen"].color().name() for key in detail.pens}
    assert len(set(colours.values())) == 3, colours


def test_a_pen_in_other_units_is_drawn_against_an_axis_of_its_own(make_window, qtbot, devices):
    # Spindle load (%) beside spindle speed (rpm) on one axis was a flat line at 0.
    detail = mazak03_detail(make_window, qtbot, devices)
    plot = detail.plot
    left, right = plot.plot_item.getAxis("left"), plot.plot_item.getAxis("right")
    assert plot.on_right == {"Mazak03-S_3"} and right.isVisible()
    assert (left.labelText, right.labelText) == ("rpm", "%")
    qtbot.waitUntil(lambda: plot.points.get("Mazak03-S_3", 0) > 0)
    loads = detail.series("Mazak03-S_3")[1]

    def scaled_to_the_load() -> bool:
        low, high = plot.right_box.viewRange()[1]
        return low <= loads.min() and loads.max() <= high and high - low < 10 * max(1.0, loads.max() - loads.min())

    # The view box ranges itself on the next redraw (the window's timer).
    qtbot.waitUntil(scaled_to_the_load, timeout=5_000)
    assert plot.right_box.viewRange()[1][1] < 1000, "the load axis is scaled to the load, not to the spindle speed"

    speed = next(detail.pen_list.item(i) for i in range(detail.pen_list.count())
                 if detail.pen_list.item(i).data(Qt.ItemDataRole.UserRole) == "Mazak03-S_2")
    speed.setCheckState(Qt.CheckState.Unchecked)  # the load alone: on the left axis, no right axis
    assert detail.pens == ["Mazak03-S_3"] and plot.on_right == set()
    assert not right.isVisible() and left.labelText == "%"
