"""The overview fed with the recorded NIST days: each state rule of the tiles, freshness, the
fleet summary, sort, filter, keyboard, and the layout at 1024x700 and with 200 machines.

The expected states come from reading the recorded SHDR lines in the test (`RecordedState`:
the latest Execution, ControllerMode, EmergencyStop and which conditions are at FAULT), not
from the code under test."""
from __future__ import annotations

import time

import pytest
from PySide6.QtCore import QPoint, Qt

import recorded_nist as testing
from desktop.core.machines import MachineStatus
from desktop.core.monitor import ViewUpdate
from desktop.core.settings import Settings

DAYS = {"Mazak03": "Mazak03-20161116-20161117.txt", "Mazak01": "Mazak01-20171030-20171031.txt",
        "GFAgie01": "GFAgie01-20160513-20160514.txt"}


@pytest.fixture(scope="module")
def devices():
    return testing.load_devices()


class RecordedState:
    """What a person reading the SHDR file sees at a line: the latest value per name and the
    conditions at FAULT."""

    def __init__(self, day: str) -> None:
        self.lines = testing.nist_shdr(day).read_text(encoding="utf-8").splitlines()

    def at(self, line: int) -> tuple[dict[str, str], set[tuple[str, str]]]:
        latest: dict[str, str] = {}
        faults: set[tuple[str, str]] = set()
        for text in self.lines[:line]:
            fields = text.split("|")[1:]
            index = 0
            while index + 1 < len(fields):
                name, value = fields[index], fields[index + 1]
                if value in ("Normal", "Warning", "Fault", "Unavailable") and index + 2 < len(fields) + 1:
                    code = fields[index + 2] if index + 2 < len(fields) else ""
                    if value == "Fault":
                        faults.add((name, code))
                    elif value == "Normal" and code:
                        faults.discard((name, code))
                    else:
                        faults = {f for f in faults if f[0] != name}
                    index += 6
                else:
                    latest[name] = value
                    index += 2
        return latest, faults

    def first(self, predicate, start: int = 1) -> int:
        for number in range(start, len(self.lines) + 1):
            latest, faults = self.at(number) if predicate.__code__.co_argcount == 3 else (None, None)
            if predicate(self.lines[number - 1], latest, faults):
                return number
        raise AssertionError("no such line in the recording")


def find_line(day: str, wanted) -> int:
    """The first line for which `wanted(latest, faults)` holds, reading the file incrementally."""
    reader = RecordedState(day)
    latest: dict[str, str] = {}
    faults: set[tuple[str, str]] = set()
    for number, text in enumerate(reader.lines, start=1):
        fields = text.split("|")[1:]
        index = 0
        while index + 1 < len(fields):
            name, value = fields[index], fields[index + 1]
            if value in ("Normal", "Warning", "Fault", "Unavailable"):
                code = fields[index + 2] if index + 2 < len(fields) else ""
                if value == "Fault":
                    faults.add((name, code))
                elif value == "Normal" and code:
                    faults.discard((name, code))
                else:
                    faults = {f for f in faults if f[0] != name}
                index += 6
            else:
                latest[name] = value
                index += 2
        if wanted(latest, faults):
            return number
    raise AssertionError(f"no line in {day} with that state")


def feed_until(window, devices, name: str, last_line: int, first_line: int = 1) -> None:
    device = testing.device_named(devices, name)
    observations = [o for _, o in testing.shdr_observations(testing.nist_shdr(DAYS[name]), device, first_line, last_line)]
    window.ingest(testing.batch_of(devices if first_line == 1 else (), observations))


def tile(window, uuid: str) -> dict[str, str]:
    return window.overview.grid.texts.get(uuid, {})


RULES = [
    # (machine, what the recording shows at the line, expected tile state)
    ("Mazak03", lambda l, f: l.get("execution") == "ACTIVE" and not f and l.get("avail") == "AVAILABLE", "RUNNING"),
    ("Mazak03", lambda l, f: ("motion_cond", "791") in f, "ALARM"),
    ("Mazak01", lambda l, f: l.get("estop") == "TRIGGERED" and not f, "ALARM"),
    ("Mazak01", lambda l, f: l.get("execution") == "FEED_HOLD" and not f and l.get("estop") != "TRIGGERED", "INTERRUPTED"),
    ("GFAgie01", lambda l, f: l.get("execution") == "INTERRUPTED" and not f and l.get("estop") != "TRIGGERED", "INTERRUPTED"),
    ("GFAgie01", lambda l, f: l.get("mode") in ("MANUAL", "MANUAL_DATA_INPUT") and l.get("execution") == "READY"
     and not f and l.get("estop") != "TRIGGERED", "SETUP"),
    ("Mazak01", lambda l, f: l.get("execution") == "STOPPED" and l.get("mode") == "AUTOMATIC" and not f
     and l.get("estop") != "TRIGGERED", "IDLE"),
    ("Mazak03", lambda l, f: l.get("execution") == "READY" and l.get("mode") == "AUTOMATIC" and not f, "IDLE"),
]


@pytest.mark.parametrize(("name", "wanted", "state"), RULES,
                         ids=[f"{name}-{state.lower()}-{index}" for index, (name, _, state) in enumerate(RULES)])
def test_tiles_derive_each_state_rule_from_the_recorded_day(make_window, qtbot, devices, name, wanted, state):
    window = make_window()
    window.show()
    line = find_line(DAYS[name], wanted)
    feed_until(window, devices, name, line)
    uuid = testing.device_named(devices, name)["device_uuid"]
    qtbot.waitUntil(lambda: tile(window, uuid).get("state") == state, timeout=10_000)
    # The colour follows the state (the summary counts it there too).
    assert window.overview.summary.counts[MachineStatus(state.lower())] >= 1


def test_wait_counts_as_interrupted_not_idle(make_window, qtbot, devices):
    # No recorded day has Execution WAIT; it is the Mazak03 READY line with only the value changed.
    window = make_window()
    window.show()
    line = find_line(DAYS["Mazak03"], lambda l, f: l.get("execution") == "READY" and l.get("mode") == "AUTOMATIC" and not f)
    feed_until(window, devices, "Mazak03", line)
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "IDLE")
    device = testing.device_named(devices, "Mazak03")
    ready = [o for _, o in testing.shdr_observations(testing.nist_shdr(DAYS["Mazak03"]), device, 1, line)
             if o["type"] == "EXECUTION"][-1]
    assert ready["value"] == "READY"
    window.ingest(testing.batch_of(observations=[dict(ready, value="WAIT", sequence=ready["sequence"] + 100_000)]))
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "INTERRUPTED")


def test_a_warning_is_a_badge_and_the_tile_shows_program_mode_parts_and_spindle(make_window, qtbot, devices):
    window = make_window()
    window.show()
    line = find_line(DAYS["Mazak03"], lambda l, f: l.get("execution") == "ACTIVE" and not f and l.get("Srpm") not in
                     (None, "UNAVAILABLE", "0") and l.get("program") not in (None, "UNAVAILABLE"))
    feed_until(window, devices, "Mazak03", line)
    latest, _ = RecordedState(DAYS["Mazak03"]).at(line)
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "RUNNING")
    texts = tile(window, "mtc_adapter004")
    assert texts["program"] == latest["program"]
    assert texts["mode"] == "Automatic"
    assert texts["spindle"] == f"{float(latest['Srpm']):,.0f} rpm"
    assert texts["warning"] == ""
    device = testing.device_named(devices, "Mazak03")
    condition = next(item for item in device["data_items"] if item["category"] == "CONDITION")
    warning = {"agent": testing.RECORDED_AGENT, "instance_id": 0, "sequence": 999_999, "timestamp": "2016-11-16T21:00:00Z",
               "device_uuid": device["device_uuid"], "device_name": "Mazak03", "component": condition.get("component"),
               "component_id": condition.get("component_id"), "data_item_id": condition["id"], "name": condition.get("name"),
               "category": "CONDITION", "type": condition.get("type"), "sub_type": None, "units": None, "value": "coolant low",
               "level": "WARNING", "native_code": "W1", "native_severity": None, "qualifier": None, "condition_id": "W1"}
    window.ingest(testing.batch_of(observations=[warning]))
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("warning") == "⚠ 1 warning")
    assert tile(window, "mtc_adapter004")["state"] == "RUNNING", "a warning is a badge, not a state"


def test_hovering_a_tile_shows_what_it_had_to_cut_in_full(make_window, qtbot, devices):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QHelpEvent
    from PySide6.QtWidgets import QApplication, QToolTip

    window = make_window()
    window.resize(1024, 700)
    window.show()
    line = find_line(DAYS["Mazak03"], lambda l, f: l.get("execution") == "ACTIVE" and not f and
                     l.get("program") not in (None, "UNAVAILABLE"))
    feed_until(window, devices, "Mazak03", line)
    latest, _ = RecordedState(DAYS["Mazak03"]).at(line)
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "RUNNING")
    grid = window.overview.grid
    # Narrow tiles (dense: no program line at all) still tell everything on hover.
    grid.density = "dense"
    grid.relayout()
    centre = grid.tile_rect("mtc_adapter004").center()
    QApplication.sendEvent(grid, QHelpEvent(QEvent.Type.ToolTip, centre, grid.mapToGlobal(centre)))
    qtbot.waitUntil(lambda: QToolTip.isVisible())
    lines = QToolTip.text().splitlines()
    assert lines[0].startswith("Mazak03")
    assert lines[1].startswith("RUNNING for ")
    assert f"Program: {latest['program']}" in lines and "Mode: Automatic" in lines
    # Between tiles: no tooltip.
    gap = grid.tile_rect(grid.order[0]).topRight() + QPoint(2, 0)
    QApplication.sendEvent(grid, QHelpEvent(QEvent.Type.ToolTip, gap, grid.mapToGlobal(gap)))
    qtbot.waitUntil(lambda: not QToolTip.isVisible())


def test_a_silent_machine_turns_grey_offline_and_an_unreachable_agent_at_once(make_window, qtbot, devices):
    window = make_window(Settings(offline_after=2.0))
    window.show()
    line = find_line(DAYS["Mazak03"], lambda l, f: l.get("execution") == "ACTIVE" and not f)
    feed_until(window, devices, "Mazak03", line)
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "RUNNING")
    quiet_from = time.monotonic()
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "OFFLINE", timeout=10_000)
    # Within the limit plus the once-a-second check (and the redraw): generous for a busy machine.
    assert time.monotonic() - quiet_from < 2.0 + 5.0
    assert tile(window, "mtc_adapter004")["reason"].startswith("no data for")
    assert "data" in tile(window, "mtc_adapter004")["age"] or tile(window, "mtc_adapter004")["age"].endswith("ago")

    # Data again, then the agent is reported unreachable: offline now, whatever the data said.
    device = testing.device_named(devices, "Mazak03")
    active = [o for _, o in testing.shdr_observations(testing.nist_shdr(DAYS["Mazak03"]), device, 1, line)
              if o["type"] == "EXECUTION"][-1]
    window.ingest(testing.batch_of(observations=[dict(active, sequence=active["sequence"] + 100_000)]))
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "RUNNING")
    agent = testing.device_named(devices, "Mazak03")["agent"]
    status = {"agent": agent, "state": "unreachable", "since": "2026-01-01T00:00:00Z", "last_error": "connection refused",
              "instance_id": 1}
    window.ingest(testing.batch_of(agent_statuses=[status]))
    qtbot.waitUntil(lambda: tile(window, "mtc_adapter004").get("state") == "OFFLINE")
    assert "connection refused" in tile(window, "mtc_adapter004")["reason"]


def test_summary_click_filters_keyboard_moves_and_enter_opens_the_detail(make_window, qtbot, devices):
    window = make_window()
    window.show()
    line = find_line(DAYS["Mazak03"], lambda l, f: l.get("execution") == "ACTIVE" and not f)
    feed_until(window, devices, "Mazak03", line)
    window.ingest(testing.batch_of(observations=[o for d in devices if d["device_name"].startswith("Hurco")
                                                 for o in testing.unavailable_observations(d, "2016-11-16T20:00:00Z")]))
    grid = window.overview.grid
    qtbot.waitUntil(lambda: len(grid.order) == 8 and tile(window, "mtc_adapter004").get("state") == "RUNNING")
    summary = window.overview.summary
    # The five Hurcos report every item UNAVAILABLE (their batch may come a redraw later).
    qtbot.waitUntil(lambda: summary.counts[MachineStatus.UNAVAILABLE] == 5)
    assert summary.counts[MachineStatus.RUNNING] == 1
    assert summary.counts[MachineStatus.OFFLINE] == 2  # GFAgie01 and Mazak01: no data yet
    qtbot.mouseClick(summary.buttons[MachineStatus.RUNNING], Qt.MouseButton.LeftButton)
    assert grid.order == ["mtc_adapter004"]
    qtbot.mouseClick(summary.buttons[MachineStatus.RUNNING], Qt.MouseButton.LeftButton)  # again: all
    assert len(grid.order) == 8

    names = [grid.views[uuid].name for uuid in grid.order]
    assert names == sorted(names, key=str.lower)
    grid.setFocus()
    qtbot.keyClick(grid, Qt.Key.Key_Home)
    assert grid.selected == grid.order[0]
    qtbot.keyClick(grid, Qt.Key.Key_Right)
    assert grid.selected == grid.order[1]
    qtbot.keyClick(grid, Qt.Key.Key_Down)
    assert grid.selected == grid.order[min(1 + grid.columns, 7)]
    target = grid.order.index("mtc_adapter004")
    grid.select(grid.order[target])
    with qtbot.waitSignal(window.detail_opened, timeout=5_000) as opened:
        qtbot.keyClick(grid, Qt.Key.Key_Return)
    assert opened.args == ["mtc_adapter004"]
    assert window.tabs.currentWidget() is window.details["mtc_adapter004"]

    window.show_view("overview")
    window.overview.sort_combo.setCurrentIndex(window.overview.sort_combo.findData("state"))
    # Worst first: the machines without data (offline) before the running one.
    assert grid.order.index("mtc_adapter004") > grid.order.index("mtc_adapter001")
    window.overview.filter_edit.setText("hurco0")
    assert {grid.views[u].name for u in grid.order} == {"Hurco01", "Hurco02", "Hurco03", "Hurco04", "Hurco06"}
    # A double click opens too.
    window.overview.filter_edit.setText("")
    rect = grid.tile_rect("mtc_adapter004")
    with qtbot.waitSignal(window.detail_opened, timeout=5_000):
        qtbot.mouseDClick(grid, Qt.MouseButton.LeftButton, pos=rect.center())


def test_nothing_is_clipped_at_1024x700_and_a_changed_machine_repaints_only_its_tile(make_window, qtbot, devices):
    window = make_window()
    window.resize(1024, 700)
    window.show()
    line = find_line(DAYS["Mazak03"], lambda l, f: l.get("execution") == "ACTIVE" and not f)
    feed_until(window, devices, "Mazak03", line)
    grid = window.overview.grid
    qtbot.waitUntil(lambda: len(grid.order) == 8)
    grid.repaint()
    for uuid in grid.order:
        rect = grid.tile_rect(uuid)
        assert rect.right() <= grid.width(), f"{uuid} tile cut off at the right"
    # The badge text fits its tile: the state word is drawn whole.
    from PySide6.QtGui import QFontMetrics

    widest = max(QFontMetrics(grid.font_state).horizontalAdvance(s.value.upper()) for s in MachineStatus)
    assert grid.tile_rect(grid.order[0]).width() > widest + QFontMetrics(grid.font_name).horizontalAdvance("Mazak03")
    qtbot.waitUntil(lambda: not window.state.dirty)
    # Times in state tick once a second on every tile by design; what is measured here is
    # what new data repaints, so that clock is held still.
    window.overview._clock.stop()
    qtbot.wait(200)
    grid.repainted.clear()
    # The spindle of Mazak03 speeds up: only its tile has anything new to show.
    device = testing.device_named(devices, "Mazak03")
    speed = [o for _, o in testing.shdr_observations(testing.nist_shdr(DAYS["Mazak03"]), device, 1, line)
             if o["name"] == "Srpm" and isinstance(o["value"], float)][-1]
    window.ingest(testing.batch_of(observations=[dict(speed, value=speed["value"] + 250.0, sequence=speed["sequence"] + 10**6)]))
    qtbot.waitUntil(lambda: "mtc_adapter004" in grid.repainted, timeout=5_000)
    assert tile(window, "mtc_adapter004")["spindle"] == f"{speed['value'] + 250.0:,.0f} rpm"
    assert grid.repainted <= {"mtc_adapter004"} | {u for u in grid.order if grid.tile_rect(u).intersects(
        grid.tile_rect("mtc_adapter004"))}, grid.repainted


def test_the_tiles_keep_ticking_and_painting_when_the_fleet_is_reset_between_redraws(make_window, qtbot, devices):
    # Changed alarm rules or settings reset the fleet (the core re-reads it). That reset can
    # land between two redraws, while the once-a-second clock and painting still draw the
    # tiles of the last redraw; the next redraw then empties the overview.
    window = make_window()
    window.show()
    line = find_line(DAYS["Mazak03"], lambda l, f: l.get("execution") == "ACTIVE" and not f)
    feed_until(window, devices, "Mazak03", line)
    grid = window.overview.grid
    qtbot.waitUntil(lambda: len(grid.order) == 8 and tile(window, "mtc_adapter004").get("state") == "RUNNING")
    window.refresh_timer.stop()
    window.state.apply(ViewUpdate(reset=True))
    grid.refresh_times(time.time() + 5)  # would raise for a machine that left the fleet
    grid.repaint()
    assert "mtc_adapter004" in grid.order and tile(window, "mtc_adapter004")["state"] == "RUNNING"
    window.refresh()
    assert grid.order == [] and not window.overview.tiles
    assert window.overview.summary.counts[MachineStatus.RUNNING] == 0


def test_two_hundred_machines_fit_one_1920x1080_screen_in_the_dense_layout(make_window, qtbot, devices):
    window = make_window()
    window.resize(1920, 1080)
    window.show()
    base = testing.device_named(devices, "Mazak03")
    fleet = []
    observations = []
    for index in range(200):
        device = dict(base, device_uuid=f"plant-{index:03d}", device_name=f"M{index:03d}")
        fleet.append(device)
        observations += testing.unavailable_observations(device, "2016-11-16T20:00:00Z")[:3]
    window.ingest(testing.batch_of(fleet, observations))
    grid = window.overview.grid
    qtbot.waitUntil(lambda: len(grid.order) == 200, timeout=20_000)
    qtbot.waitUntil(lambda: grid.dense)
    viewport = window.overview.scroll.viewport()
    last = grid.tile_rect(grid.order[-1])
    assert last.bottom() <= viewport.height(), f"last tile at {last.bottom()} px, viewport {viewport.height()} px"
    assert window.overview.scroll.verticalScrollBar().maximum() == 0
    # Large text: still every tile, now with scrolling instead of clipping.
    window.overview.large_check.setChecked(True)
    assert grid.tile_rect(grid.order[-1]).right() <= grid.width()
    hit = grid.tile_at(grid.tile_rect(grid.order[5]).center().x(), grid.tile_rect(grid.order[5]).center().y())
    assert hit == grid.order[5]
    assert QPoint(0, 0) is not None


def test_a_tiles_data_age_and_its_offline_reason_say_the_same_duration():
    from desktop.core.machines import offline_text
    from desktop.ui.tiles import age_text

    # A machine silent for 114 s read "no data for 114 s" beside "data 1 min ago"; 630 s read
    # "no data for 11 min" beside "10 min ago".
    for seconds in (45, 114, 630, 3599, 7300, 200_000):
        age = age_text(seconds)
        assert age.endswith(" ago") and offline_text(seconds) == f"no data for {age[:-4]}", (seconds, age)
