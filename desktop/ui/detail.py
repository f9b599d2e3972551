"""The machine detail view: trends with history from Kafka, state timeline, utilisation, log, panel.

Opened by double-click or Enter on a tile, as a tab of its own. On opening it subscribes its
machine on the core thread (`MonitorCore.subscribe_device`), so every update carries the
machine's new sample points, state bands and events - after a snapshot of what the core
already holds. The look-back picker (5 min, 1 h, 8 h, 24 h) loads older data from Kafka by
time (`desktop.core.history.load_history`, `offsets_for_times`) on a thread of its own with a
progress bar; history and live data are joined at the first live point, so the view goes on
live without a seam or a point drawn twice. The pen picker lists the machine's SAMPLE items
with their units (spindle speed and its load are on by default), as wide as the longest
name. The timeline strip shows the derived state as coloured bands under the plot's time
range, the utilisation line the share of running time per shift (shift starts from the
settings), the log the latest events and conditions, the panel program, mode, execution,
E-stop, overrides, part count, spindle and availability (marked as the agent's value when it
says UNAVAILABLE beside a state derived from execution). The panel follows every frame of the
window's timer; the plot is redrawn only when its time axis has moved a pixel, and at least
once a second (`MAX_PLOT_DELAY`).
"""
from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import Future
from datetime import datetime
from typing import Any, Callable, Mapping

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QRect, Qt, Signal
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from desktop.core.batch import parse_timestamp
from desktop.core.feed import FeedConfig
from desktop.core.history import HistoryError, HistoryResult, load_history
from desktop.core.machines import MachineStatus, rough_duration
from desktop.core.utilisation import DEFAULT_SHIFTS, shift_utilisation
from desktop.core.viewstate import ViewState
from desktop.ui.plot import TrendPlot, format_value, item_label, units_text
from desktop.ui.theme import STATUS_COLORS, STATUS_TEXT_COLORS, TILE_TEXT_DIM
from desktop.ui.tiles import duration_text, readable

LOOK_BACKS = (("5 min", 300.0), ("1 h", 3600.0), ("8 h", 8 * 3600.0), ("24 h", 24 * 3600.0))
DEFAULT_LOOK_BACK = 3600.0
# The widest the pen picker makes itself: the plot keeps most of the row; longer names are
# elided (whole in their tooltip) and the splitter can still widen the list.
PEN_LIST_MAX_WIDTH = 420
# The plot is redrawn when its time axis has moved by a pixel (an hour on 1,800 pixels: every
# 2 s), but at least this often, so new points show within this long. Drawing it at the
# window's 15 Hz repeated the same picture, and was most of the GUI thread's work under a
# plant's stream (axis ticks regenerated on every frame).
MAX_PLOT_DELAY = 1.0


class HistoryLoader(QObject):
    """Runs `load_history` on a thread of its own; reports through queued signals."""

    progress_changed = Signal(float)
    history_loaded = Signal(object)  # HistoryResult
    history_failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, config: FeedConfig, device_uuid: str, start: float, hints: Future | None = None,
              offline_after: float = 60.0) -> None:
        self.cancel()
        cancel = self._cancel = threading.Event()

        def run() -> None:
            partitions, device = None, None
            if hints is not None:
                try:
                    partitions, device = hints.result(timeout=5.0)
                except Exception:  # noqa: BLE001 - hints only narrow the read; without them it reads all
                    pass
            try:
                result = load_history(config, device_uuid, start, None, partitions=partitions, device=device,
                                      progress=self.progress_changed.emit, cancel=cancel, offline_after=offline_after)
            except HistoryError as exc:
                if not cancel.is_set():
                    self.history_failed.emit(str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - reported in the view, never lost
                if not cancel.is_set():
                    self.history_failed.emit(f"{type(exc).__name__}: {exc}")
                return
            if not cancel.is_set() and not result.cancelled:
                self.history_loaded.emit(result)

        self._thread = threading.Thread(target=run, name=f"history-{device_uuid}", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


class TimelineStrip(QWidget):
    """Coloured bands of the derived state over a time range."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("timelineStrip")
        self.setMinimumHeight(22)
        self.setMaximumHeight(22)
        self.bands: list[tuple[float, MachineStatus]] = []
        self.start = 0.0
        self.end = 1.0
        self.left_margin = 0
        self.right_margin = 0

    def set_bands(self, bands: list[tuple[float, MachineStatus]], start: float, end: float, left: int, right: int) -> None:
        if (bands, start, end, left, right) != (self.bands, self.start, self.end, self.left_margin, self.right_margin):
            self.bands, self.start, self.end = bands, start, max(end, start + 1e-3)
            self.left_margin, self.right_margin = left, right
            self.update()

    def status_at(self, moment: float) -> MachineStatus | None:
        current = None
        for begin, status in self.bands:
            if begin > moment:
                break
            current = status
        return current

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        width = self.width() - self.left_margin - self.right_margin
        painter.fillRect(QRect(self.left_margin, 0, width, self.height()), QColor("#11151a"))
        span = self.end - self.start
        for index, (begin, status) in enumerate(self.bands):
            finish = self.bands[index + 1][0] if index + 1 < len(self.bands) else self.end
            if finish <= self.start or begin >= self.end:
                continue
            x0 = self.left_margin + int((max(begin, self.start) - self.start) / span * width)
            x1 = self.left_margin + int((min(finish, self.end) - self.start) / span * width)
            painter.fillRect(QRect(x0, 2, max(1, x1 - x0), self.height() - 4), QColor(STATUS_COLORS[status]))


class LogModel(QAbstractTableModel):
    COLUMNS = ("Time", "Item", "Value", "Code")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.rows: list[tuple[str, str, str, str]] = []

    def set_entries(self, entries: list[Mapping[str, Any]]) -> None:
        self.beginResetModel()
        self.rows = [_log_row(entry) for entry in reversed(entries)]
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or role != Qt.ItemDataRole.DisplayRole:
            if role == Qt.ItemDataRole.ForegroundRole and index.isValid():
                value = self.rows[index.row()][2]
                if value.startswith("FAULT"):
                    return QColor(STATUS_COLORS[MachineStatus.ALARM])
                if value.startswith("WARNING"):
                    return QColor(STATUS_COLORS[MachineStatus.INTERRUPTED])
            return None
        return self.rows[index.row()][index.column()]


def _local(timestamp: str | None) -> str:
    if not timestamp:
        return ""
    return _local_text(timestamp)


@functools.lru_cache(maxsize=4096)  # the log shows the same entries on every refresh
def _local_text(timestamp: str) -> str:
    try:
        return datetime.fromtimestamp(parse_timestamp(timestamp)).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return timestamp


def _log_row(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    name = str(entry.get("name") or entry.get("data_item_id") or "")
    if entry.get("category") == "CONDITION":
        level = str(entry.get("level") or "")
        message = entry.get("value") or ""
        value = f"{level} {message}".strip()
        code = str(entry.get("native_code") or "")
    else:
        value = str(entry.get("value"))
        code = ""
    return _local(entry.get("timestamp")), name, value, code


class DetailView(QWidget):
    """One machine's detail, as a tab."""

    history_finished = Signal(bool)  # True: loaded, False: failed

    def __init__(self, device_uuid: str, state: ViewState, submit: Callable[[Callable], Future],
                 feed_config: Callable[[], FeedConfig | None], shifts: tuple[str, ...] = DEFAULT_SHIFTS,
                 offline_after: float = 60.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("detailView")
        self.device_uuid = device_uuid
        self.state = state
        self._submit = submit
        self._feed_config = feed_config
        self.shifts = shifts
        self.offline_after = offline_after
        self.look_back = DEFAULT_LOOK_BACK
        self.history: HistoryResult | None = None
        self.history_error = ""
        self.pens: list[str] = []  # data item ids shown
        self._pens_chosen = False
        self._drawn: dict[str, tuple] = {}
        self._items_version = -1
        self._device_version = -1
        self._log_drawn_at = 0.0
        self._plot_drawn_at = 0.0
        self._history_combined: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        # -- header and panel --
        self.name_label = QLabel(objectName="detailName")
        self.state_label = QLabel(objectName="detailState")
        self.state_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.since_label = QLabel(objectName="detailSince")
        header = QHBoxLayout()
        header.addWidget(self.name_label)
        header.addWidget(self.state_label)
        header.addWidget(self.since_label)
        header.addStretch(1)
        self.panel_labels: dict[str, QLabel] = {}
        panel = QFormLayout()
        panel.setHorizontalSpacing(14)
        panel.setVerticalSpacing(3)
        for key, caption in (("program", "Program"), ("mode", "Mode"), ("execution", "Execution"),
                             ("estop", "E-stop"), ("overrides", "Overrides"), ("parts", "Part count"),
                             ("spindle", "Spindle"), ("availability", "Availability"), ("reason", "Why"),
                             ("agent", "Agent"), ("age", "Newest data")):
            label = QLabel(objectName="panelValue")
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.panel_labels[key] = label
            caption_label = QLabel(caption, objectName="panelCaption")
            panel.addRow(caption_label, label)
        panel_frame = QFrame(objectName="section")
        panel_frame.setLayout(panel)
        panel_frame.setMinimumWidth(250)

        # -- tools --
        self.look_back_combo = QComboBox(objectName="lookBack")
        for label, seconds in LOOK_BACKS:
            self.look_back_combo.addItem(f"Last {label}", seconds)
        self.look_back_combo.setCurrentIndex([s for _, s in LOOK_BACKS].index(DEFAULT_LOOK_BACK))
        self.follow_button = QPushButton("Follow live", objectName="followLive")
        self.follow_button.setCheckable(True)
        self.follow_button.setChecked(True)
        self.progress = QProgressBar(objectName="historyProgress")
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(180)
        self.progress.setTextVisible(True)
        self.progress.setFormat("history %p%")
        self.progress.setVisible(False)
        self.history_label = QLabel(objectName="historyStatus")
        tools = QHBoxLayout()
        tools.addWidget(self.look_back_combo)
        tools.addWidget(self.follow_button)
        tools.addWidget(self.progress)
        tools.addWidget(self.history_label, 1)

        # -- plot, strip, utilisation --
        self.pen_list = QListWidget(objectName="penPicker")
        # The list is as wide as its longest series name (`_fit_pen_list`); narrowed by the
        # splitter, names are shortened with an ellipsis and shown whole in their tooltip
        # rather than cut off by a sideways scroll.
        self.pen_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.pen_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.plot = TrendPlot()
        self.plot.window_seconds = self.look_back
        self.strip = TimelineStrip()
        self.utilisation_label = QLabel(objectName="utilisation")
        self.utilisation_label.setWordWrap(True)
        self.value_label = QLabel(objectName="plotValue")
        plot_column = QVBoxLayout()
        plot_column.setSpacing(2)
        plot_column.addWidget(self.plot, 1)
        plot_column.addWidget(self.strip)
        plot_column.addWidget(self.utilisation_label)
        plot_box = QWidget()
        plot_box.setLayout(plot_column)
        plot_row = QSplitter(Qt.Orientation.Horizontal)
        plot_row.addWidget(self.pen_list)
        plot_row.addWidget(plot_box)
        plot_row.setStretchFactor(1, 1)
        plot_row.setSizes([220, 900])
        plot_row.setChildrenCollapsible(False)
        self.plot_row = plot_row

        # -- log --
        self.log_model = LogModel(self)
        self.log_view = QTableView(objectName="eventLog")
        self.log_view.setModel(self.log_model)
        self.log_view.verticalHeader().setVisible(False)
        self.log_view.setAlternatingRowColors(True)
        self.log_view.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        # Times are all one width ("2016-11-16 20:29:56"): sized once, not measured from the
        # rows on every refresh (that measuring was the costliest thing the GUI thread did).
        self.log_view.setColumnWidth(0, self.log_view.fontMetrics().horizontalAdvance("8888-88-88 88:88:88") + 16)
        self.log_view.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)

        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(panel_frame)
        lower.addWidget(self.log_view)
        lower.setSizes([320, 800])
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(plot_row)
        main.addWidget(lower)
        main.setSizes([520, 240])
        main.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(header)
        layout.addLayout(tools)
        layout.addWidget(main, 1)

        self.loader = HistoryLoader(self)
        self.loader.progress_changed.connect(self._on_progress_changed)
        self.loader.history_loaded.connect(self._on_history_loaded)
        self.loader.history_failed.connect(self._on_history_failed)
        self.look_back_combo.currentIndexChanged.connect(self._on_look_back_changed)
        self.follow_button.toggled.connect(self._on_follow_toggled)
        self.plot.follow_changed.connect(self.follow_button.setChecked)
        self.pen_list.itemChanged.connect(self._on_pen_toggled)

        self._submit(lambda core: core.subscribe_device(device_uuid))
        self.load_history()
        self.refresh()

    # -- history -----------------------------------------------------------------------------

    def load_history(self) -> None:
        config = self._feed_config()
        if config is None:
            self.history_label.setText("History: not connected to Kafka yet")
            return
        uuid = self.device_uuid
        hints = self._submit(lambda core: (core.partitions_of(uuid), core.device_model(uuid)))
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.history_label.setText(f"Loading the last {duration_text(self.look_back)} from Kafka…")
        self._requested_start = time.time() - self.look_back
        self.loader.start(config, uuid, self._requested_start, hints, self.offline_after)

    @property
    def history_loading(self) -> bool:
        return self.progress.isVisible()

    def _on_progress_changed(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 1000))

    def _on_history_loaded(self, result: HistoryResult) -> None:
        self.history = result
        self.history_error = ""
        self.progress.setVisible(False)
        self.history_label.setText(f"{result.observations:,} observations from the last {duration_text(self.look_back)} "
                                   f"({result.records_read:,} records read in {result.seconds:.1f} s)")
        self._history_combined.clear()
        self._drawn.clear()
        self._device_version = -1
        self.refresh()
        self.history_finished.emit(True)

    def _on_history_failed(self, message: str) -> None:
        self.history_error = message
        self.progress.setVisible(False)
        self.history_label.setText(f"History not loaded: {message}")
        self.history_finished.emit(False)

    def _on_look_back_changed(self, index: int) -> None:
        self.look_back = float(self.look_back_combo.itemData(index))
        self.plot.window_seconds = self.look_back
        self.plot.set_follow(True)
        self._plot_drawn_at = 0.0
        self.load_history()

    def _on_follow_toggled(self, on: bool) -> None:
        self.plot.set_follow(on)
        if on:
            self.plot.follow_now(time.time())

    # -- data ---------------------------------------------------------------------------------

    def series(self, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        """History joined to live data at the first live point: what the plot draws."""
        live_t, live_v = self.state.series_arrays((self.device_uuid, item_id))
        history = self.history.samples.get(item_id) if self.history is not None else None
        if history is None or history.times.size == 0:
            return live_t, live_v
        if live_t.size == 0:
            return np.asarray(history.times), np.asarray(history.values)
        cut = int(np.searchsorted(history.times, live_t[0], side="left"))
        return np.concatenate([history.times[:cut], live_t]), np.concatenate([history.values[:cut], live_v])

    def timeline(self) -> list[tuple[float, MachineStatus]]:
        device = self.state.devices.get(self.device_uuid)
        live = list(device.timeline) if device is not None else []
        if self.history is None or not self.history.timeline:
            return live
        first_live = live[0][0] if live else float("inf")
        joined = [band for band in self.history.timeline if band[0] < first_live]
        for band in live:
            if not joined or joined[-1][1] != band[1]:
                joined.append(band)
        return joined

    def log_entries(self) -> list[Mapping[str, Any]]:
        device = self.state.devices.get(self.device_uuid)
        live = list(device.log) if device is not None else []
        if self.history is None:
            return live
        seen = {(e.get("data_item_id"), e.get("sequence"), e.get("instance_id")) for e in live}
        older = [e for e in self.history.log if (e.get("data_item_id"), e.get("sequence"), e.get("instance_id")) not in seen]
        return (older + live)[-500:]

    # -- drawing ------------------------------------------------------------------------------

    def _refresh_pens(self) -> None:
        if self.state.items_version == self._items_version:
            return
        self._items_version = self.state.items_version
        items = self.state.sample_items(self.device_uuid)
        known = {self.pen_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.pen_list.count())}
        self.pen_list.blockSignals(True)
        try:
            for item in items:
                item_id = str(item["id"])
                if item_id in known:
                    continue
                entry = QListWidgetItem(item_label(item))
                entry.setToolTip(item_label(item))
                entry.setData(Qt.ItemDataRole.UserRole, item_id)
                entry.setFlags(entry.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                entry.setCheckState(Qt.CheckState.Unchecked)
                self.pen_list.addItem(entry)
        finally:
            self.pen_list.blockSignals(False)
        self._fit_pen_list()
        if not self._pens_chosen:
            self._choose_default_pens(items)

    def _fit_pen_list(self) -> None:
        """Widen the pen picker to its longest name (up to PEN_LIST_MAX_WIDTH), never narrow it;
        the plot takes the rest (the splitter gives it all of any later growth)."""
        if not self.pen_list.count():
            return
        needed = (self.pen_list.sizeHintForColumn(0) + 2 * self.pen_list.frameWidth()
                  + self.pen_list.verticalScrollBar().sizeHint().width() + 6)
        self.pen_list.setMinimumWidth(min(needed, 160))
        sizes = self.plot_row.sizes()
        wanted = min(needed, PEN_LIST_MAX_WIDTH)
        if sizes and sizes[0] < wanted:
            self.plot_row.setSizes([wanted, max(sizes[1] - (wanted - sizes[0]), 1)])

    def _choose_default_pens(self, items) -> None:
        """Spindle speed (the first of the device model) and the load of that spindle; else
        the first sample item - the same on every run."""
        spindles = [item for item in items if item.get("type") == "ROTARY_VELOCITY"]
        chosen: list[str] = []
        if spindles:
            spindle = spindles[0]
            chosen.append(str(spindle["id"]))
            load = next((item for item in items if item.get("type") == "LOAD"
                         and item.get("component_id") and item.get("component_id") == spindle.get("component_id")), None)
            if load is not None:
                chosen.append(str(load["id"]))
        elif items:
            chosen.append(str(items[0]["id"]))
        if chosen:
            self._pens_chosen = True
            self.set_pens(chosen)

    def set_pens(self, item_ids: list[str]) -> None:
        self.pen_list.blockSignals(True)
        try:
            for i in range(self.pen_list.count()):
                entry = self.pen_list.item(i)
                entry.setCheckState(Qt.CheckState.Checked if entry.data(Qt.ItemDataRole.UserRole) in item_ids
                                    else Qt.CheckState.Unchecked)
        finally:
            self.pen_list.blockSignals(False)
        self._apply_pens([i for i in item_ids])

    def _on_pen_toggled(self, entry: QListWidgetItem) -> None:
        self._pens_chosen = True
        ids = [self.pen_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.pen_list.count())
               if self.pen_list.item(i).checkState() == Qt.CheckState.Checked]
        self._apply_pens(ids)

    def _apply_pens(self, ids: list[str]) -> None:
        for gone in set(self.pens) - set(ids):
            self.plot.remove_pen(gone)
            self._drawn.pop(gone, None)
        # The first pen's units own the left value axis, every other unit the right one.
        units = {i: (self.state.data_item(self.device_uuid, i) or {}).get("units") for i in ids}
        left_units = units[ids[0]] if ids else None
        for index, item_id in enumerate(ids):
            item = self.state.data_item(self.device_uuid, item_id) or {"id": item_id}
            self.plot.set_pen(item_id, item_label(item), index, right=units[item_id] != left_units)
        self.pens = list(ids)
        right_units = {u for u in units.values() if u != left_units and u}
        self.plot.set_axis_labels(units_text(left_units) if left_units else "",
                                  ", ".join(sorted(units_text(u) for u in right_units)))
        self.refresh()

    def refresh(self, now: float | None = None) -> None:
        """The window's timer, while this tab is visible."""
        now = time.time() if now is None else now
        view = self.state.machines.get(self.device_uuid)
        self._refresh_pens()
        self._refresh_panel(view, now)
        hold_to = now
        if view is not None and view.last_timestamp:
            try:
                newest = parse_timestamp(view.last_timestamp)
            except (ValueError, OverflowError):
                newest = now
            # Recorded data far in the past is held to its machine's newest data, not to today.
            if now - newest > self.look_back:
                hold_to = newest
        values_text = []
        any_points = False
        drew = False
        due = now - self._plot_drawn_at >= min(MAX_PLOT_DELAY, self.look_back / max(1, self.plot.width()))
        if due:
            self._plot_drawn_at = now
        for item_id in self.pens:
            buffer = self.state.series.get((self.device_uuid, item_id))
            version = (buffer.version if buffer is not None else -1, id(self.history), int(hold_to))
            times, values = None, None
            drawn = self._drawn.get(item_id)
            # New live points wait for the next due redraw; a new pen or history is drawn at once.
            if drawn != version and (due or drawn is None or drawn[1] != version[1]):
                self._drawn[item_id] = version
                times, values = self.series(item_id)
                self.plot.set_data(item_id, times, values, hold_to)
                drew = True
            count = self.plot.points.get(item_id, 0)
            any_points = any_points or count > 0
            if buffer is not None and len(buffer):
                item = self.state.data_item(self.device_uuid, item_id) or {}
                values_text.append(f"{item.get('name') or item_id} {format_value(buffer.last_value, item.get('units'))}")
        self.plot.show_message("" if any_points or not self.pens else "No samples in this window yet")
        if not self.pens:
            self.plot.show_message("This machine reports no numeric samples")
        if due or drew:
            self.plot.follow_now(hold_to)
        # State bands are in publish (wall-clock) time; the plot in the machine's time, the
        # same in a live plant. For recordings far in the past the strip is shifted like the hold.
        self._refresh_strip(now, now - hold_to)
        if now - self._log_drawn_at > 0.5:
            device = self.state.devices.get(self.device_uuid)
            version = (device.version if device is not None else -1, id(self.history))
            if version != self._device_version:
                self._device_version = version
                self._log_drawn_at = now
                self.log_model.set_entries(self.log_entries())

    def _refresh_panel(self, view, now: float) -> None:
        if view is None:
            self.name_label.setText(self.device_uuid)
            return
        self.name_label.setText(f"{view.name}  ·  {' '.join(p for p in (view.manufacturer, view.model) if p)}")
        colour = STATUS_COLORS[view.status]
        text = view.status.value.upper()
        if self.state_label.text() != text:
            self.state_label.setText(text)
            self.state_label.setStyleSheet(f"background-color: {colour}; color: {STATUS_TEXT_COLORS.get(view.status, '#ffffff')};"
                                           " padding: 3px 12px; border-radius: 4px; font-weight: bold;")
        since = f"for {duration_text(now - view.state_since)}" if view.state_since else ""
        self.since_label.setText(since)
        spindle = ""
        if view.spindle_speed is not None:
            spindle = format_value(view.spindle_speed, view.spindle_units)
            if view.spindle_load is not None:
                spindle += f", load {view.spindle_load:.0f} %"
        values = {
            "program": view.program or "—",
            "mode": readable(view.controller_mode),
            "execution": readable(view.execution),
            "estop": readable(view.emergency_stop),
            "overrides": ", ".join(f"{name} {value}%" if value.replace(".", "", 1).isdigit() else f"{name} {value}"
                                   for name, value in view.overrides) or "—",
            "parts": view.part_count or "—",
            "spindle": spindle or "—",
            "availability": self._availability_text(view),
            "reason": view.reason or "—",
            "agent": view.agent or "—",
            "age": (f"{duration_text(now - view.last_seen)} ago" if view.last_seen else "—"),
        }
        for key, value in values.items():
            label = self.panel_labels[key]
            if label.text() != value:
                label.setText(value)

    def _availability_text(self, view) -> str:
        """Availability as the agent reported it. An agent reports UNAVAILABLE for an item its
        adapter never sends (NIST's Mazak01 sends no Availability while it runs programs), so
        beside a state derived from execution it is marked as the agent's value, not a verdict."""
        text = readable(view.availability)
        label = self.panel_labels["availability"]
        derived = view.status not in (MachineStatus.UNAVAILABLE, MachineStatus.OFFLINE)
        if view.availability == "UNAVAILABLE" and derived:
            text = "Unavailable (as the agent reports it)"
            tooltip = ("The agent reports Availability UNAVAILABLE, yet the machine reports its execution: "
                       f"the state {view.status.value.upper()} is derived from execution, mode and conditions.")
        else:
            tooltip = ""
        if label.toolTip() != tooltip:
            label.setToolTip(tooltip)
        return text

    def _refresh_strip(self, now: float, offset: float = 0.0) -> None:
        low, high = self.plot.x_range()
        low, high = low + offset, high + offset
        box = self.plot.plot_item.getViewBox().sceneBoundingRect()
        left = int(box.left())
        right = max(0, self.plot.width() - int(box.right()))
        bands = self.timeline()
        self.strip.set_bands(bands, low, high, left, right)
        start = now - self.look_back
        uses = shift_utilisation(bands, start, now, self.shifts)
        parts = []
        partly = False
        for use in uses[-4:]:
            fraction = use.fraction
            text = f"{use.label}: {fraction * 100:.0f} % running" if fraction is not None else f"{use.label}: no data"
            # A shift that began before the look-back is only partly in it: say which part.
            if fraction is not None and use.start < start - 1.0:
                text += f" in the last {rough_duration(min(use.end, now) - start)}"
                partly = True
            parts.append(text)
        text = "Utilisation  " + "   ·   ".join(parts) if parts else ""
        if self.utilisation_label.text() != text:
            self.utilisation_label.setText(text)
            self.utilisation_label.setToolTip(
                "Running time over the look-back shown; a shift that began before it counts only its part "
                "inside it. Choose 8 h or 24 h to see whole shifts." if partly else "")

    def close_view(self) -> None:
        """The tab closes: stop the history read, unsubscribe, drop the buffers."""
        self.loader.cancel()
        uuid = self.device_uuid
        self._submit(lambda core: core.unsubscribe_device(uuid))
        self.state.forget_device(uuid)


__all__ = ["DetailView", "HistoryLoader", "LOOK_BACKS", "TILE_TEXT_DIM"]
