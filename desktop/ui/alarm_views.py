"""The alarm views: the active-alarm table, the journal and the alarm KPIs.

They render what they are given and emit what the operator asked for; they never touch the
journal, the engine or Kafka themselves, so no I/O runs on the GUI thread. Which rows the
table shows and in what order comes from `desktop.core.alarms.table` (unacknowledged on top).
Colour in the table is the priority's alone (`desktop.ui.theme.PRIORITY_COLORS`); the ISA
state shows as words, weight and a marker shape. The window that hosts the views feeds them
alarms, journal entries and KPI reports and acts on their requests (acknowledge, shelve,
unshelve, mute, search, export).
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable, Sequence

from PySide6.QtCore import QAbstractTableModel, QDateTime, QModelIndex, QPersistentModelIndex, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QIcon, QKeySequence, QPainter, QPen, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.core.alarms import Alarm, AlarmState, JournalEntry
from desktop.core.alarms.kpis import KpiFigures, KpiReport
from desktop.core.alarms.model import PRIORITY_RANK
from desktop.core.alarms.table import STATE_ORDER, TableFilter, table_order, table_rows
from desktop.core.alarms.timeutil import parse_timestamp
from desktop.ui.theme import ALARM_TEXT, ALARM_TEXT_DIM, PRIORITY_COLORS

# How an ISA-18.2 state shows without colour (colour is the priority's alone): the words in
# the State cell, a marker shape beside them drawn in the text colour (filled: active and
# waiting for someone; ring: came and went, still waiting; bar: put aside; none once taken
# on, an empty one so the words line up), bold while an operator has to act, dimmed text for
# alarms put aside. Nothing blinks.
STATE_MARKERS = {
    AlarmState.UNACKNOWLEDGED_ACTIVE: "filled",
    AlarmState.UNACKNOWLEDGED_RETURNED: "ring",
    AlarmState.ACKNOWLEDGED_ACTIVE: "none",
    AlarmState.SHELVED: "bar",
    AlarmState.OUT_OF_SERVICE: "bar",
    AlarmState.NORMAL: "none",
}
STATE_COLUMN, PRIORITY_COLUMN = 0, 1
_PUT_ASIDE = frozenset({AlarmState.SHELVED, AlarmState.OUT_OF_SERVICE})
_WAITING = frozenset({AlarmState.UNACKNOWLEDGED_ACTIVE, AlarmState.UNACKNOWLEDGED_RETURNED})
STATE_NAMES = {
    AlarmState.UNACKNOWLEDGED_ACTIVE: "Unacknowledged",
    AlarmState.UNACKNOWLEDGED_RETURNED: "Returned, unacknowledged",
    AlarmState.ACKNOWLEDGED_ACTIVE: "Acknowledged",
    AlarmState.SHELVED: "Shelved",
    AlarmState.OUT_OF_SERVICE: "Out of service",
    AlarmState.NORMAL: "Normal",
}
SHELVE_DURATIONS = (("15 min", 900.0), ("1 h", 3600.0), ("4 h", 4 * 3600.0), ("8 h", 8 * 3600.0), ("24 h", 86400.0))
ACTIVE_COLUMNS = ("State", "Priority", "Machine", "Since", "Alarm", "Data item", "Code", "Acknowledged by")
ALL = "All"
# Picks the stylesheet's dark table look (resources/style/app.qss) for every alarm table.
TABLE_OBJECT_NAME = "alarmTable"
_markers: dict[tuple[str, str], QIcon] = {}


def state_marker(shape: str, colour: str = ALARM_TEXT, size: int = 12) -> QIcon:
    """The marker of a state: a filled dot, a ring, a bar or nothing, in the text colour."""
    key = (shape, colour)
    if key not in _markers:
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        box = QRectF(1.5, 1.5, size - 3.0, size - 3.0)
        if shape == "filled":
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(colour))
            painter.drawEllipse(box)
        elif shape == "none":
            pass
        elif shape == "ring":
            painter.setPen(QPen(QColor(colour), 2.0))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(box)
        else:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(colour))
            painter.drawRect(QRectF(1.5, size / 2 - 1.5, size - 3.0, 3.0))
        painter.end()
        _markers[key] = QIcon(pixmap)
    return _markers[key]


def local_time(timestamp: str | float | None) -> str:
    """An ISO-8601 time or epoch seconds as local date and time, to the second."""
    moment = timestamp if isinstance(timestamp, (int, float)) else parse_timestamp(timestamp)
    if moment is None:
        return "" if timestamp is None else str(timestamp)
    return datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class ActiveAlarmsModel(QAbstractTableModel):
    """The active-alarm table's rows: `table_rows` of the alarms given, or sorted by a column."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._alarms: list[Alarm] = []
        self._rows: list[Alarm] = []
        self.table_filter = TableFilter()
        self._sort: tuple[int, Qt.SortOrder] | None = None
        self._bold = QFont()
        self._bold.setBold(True)

    def set_alarms(self, alarms: Sequence[Alarm]) -> None:
        self._alarms = list(alarms)
        self._rebuild()

    def set_filter(self, table_filter: TableFilter) -> None:
        self.table_filter = table_filter
        self._rebuild()

    def alarms(self) -> list[Alarm]:
        return list(self._alarms)

    def alarm_at(self, row: int) -> Alarm:
        return self._rows[row]

    def _rebuild(self) -> None:
        self.beginResetModel()
        rows = table_rows(self._alarms, self.table_filter)
        if self._sort is not None:
            column, order = self._sort
            keys: dict[int, Callable[[Alarm], object]] = {
                0: lambda a: STATE_ORDER.get(a.alarm_state, 9), 1: lambda a: PRIORITY_RANK.get(a.priority, 9),
                2: lambda a: a.device_name.casefold(), 3: lambda a: parse_timestamp(a.activated_at) or 0.0,
                4: lambda a: a.message.casefold(), 5: lambda a: a.data_item_name, 6: lambda a: a.native_code,
                7: lambda a: a.acknowledged_by or ""}
            rows.sort(key=lambda a: (keys[column](a), table_order(a)), reverse=order == Qt.SortOrder.DescendingOrder)
        self._rows = rows
        self.endResetModel()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._sort = None if column < 0 or column >= len(ACTIVE_COLUMNS) else (column, order)
        self._rebuild()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(ACTIVE_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return ACTIVE_COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        alarm = self._rows[index.row()]
        state = alarm.alarm_state
        if role == Qt.ItemDataRole.DisplayRole:
            marks = " (chattering)" if alarm.chattering else ""
            marks += " (stale)" if alarm.stale else ""
            return (STATE_NAMES[state] + marks, alarm.priority, alarm.device_name, local_time(alarm.activated_at),
                    alarm.message or alarm.data_item_name, alarm.data_item_name, alarm.native_code,
                    alarm.acknowledged_by or "")[index.column()]
        column = index.column()
        if role == Qt.ItemDataRole.BackgroundRole:
            # Only the priority cell is coloured: a low alarm must not look like a critical one.
            if column == PRIORITY_COLUMN and alarm.priority in PRIORITY_COLORS:
                return QBrush(QColor(PRIORITY_COLORS[alarm.priority][0]))
            return None
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == PRIORITY_COLUMN and alarm.priority in PRIORITY_COLORS:
                return QBrush(QColor(PRIORITY_COLORS[alarm.priority][1]))
            return QBrush(QColor(ALARM_TEXT_DIM if state in _PUT_ASIDE else ALARM_TEXT))
        if role == Qt.ItemDataRole.FontRole and state in _WAITING:
            return self._bold
        if role == Qt.ItemDataRole.DecorationRole and column == STATE_COLUMN and state in STATE_MARKERS:
            return state_marker(STATE_MARKERS[state], ALARM_TEXT_DIM if state in _PUT_ASIDE else ALARM_TEXT)
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [f"{alarm.device_name}: {alarm.message or alarm.data_item_name}", f"state: {STATE_NAMES[state]}",
                     f"priority: {alarm.priority}"]
            if alarm.acknowledgement_note:
                lines.append(f"note: {alarm.acknowledgement_note}")
            if alarm.shelved:
                lines.append(f"shelved until {local_time(alarm.shelved_until)} by {alarm.shelved_by}: {alarm.shelve_reason}")
            return "\n".join(lines)
        return None


class ShelveDialog(QDialog):
    """How long and why: a reason is required, so a shelved alarm always says why it is hidden."""

    def __init__(self, count: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Shelve {count} alarm(s)")
        self.duration = QComboBox()
        for text, seconds in SHELVE_DURATIONS:
            self.duration.addItem(text, seconds)
        self.duration.setCurrentIndex(1)
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("why it may be put aside (required)")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.reason.textChanged.connect(self._on_reason_changed)
        self._on_reason_changed(self.reason.text())
        form = QFormLayout(self)
        form.addRow("Duration", self.duration)
        form.addRow("Reason", self.reason)
        form.addRow(self.buttons)

    def _on_reason_changed(self, text: str) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(text.strip()))


class NoteDialog(QDialog):
    """An optional note with an acknowledgement."""

    def __init__(self, count: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Acknowledge {count} alarm(s)")
        self.note = QLineEdit()
        self.note.setPlaceholderText("optional note, e.g. what was done")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Note", self.note)
        form.addRow(buttons)


class ActiveAlarmsView(QWidget):
    """Filters, the table (multi-select), and the operator's actions with keyboard shortcuts:
    Ctrl+Return acknowledge, Ctrl+H shelve, Ctrl+U unshelve, Ctrl+M mute the horn."""

    acknowledge_requested = Signal(list, str)  # alarm ids, note ("" for none)
    shelve_requested = Signal(list, float, str)  # alarm ids, seconds, reason
    unshelve_requested = Signal(list)
    mute_requested = Signal(float)  # seconds

    MUTE_SECONDS = 300.0

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ActiveAlarmsModel(self)
        self.table = QTableView(objectName=TABLE_OBJECT_NAME)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSortIndicatorShown(True)
        # Every column as wide as its text (states and times are read at a glance), the alarm
        # text takes the rest.
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.model.sort(-1)  # the default order until a header is clicked

        self.machine = QComboBox()
        self.priority = QComboBox()
        self.priority.addItems([ALL, *PRIORITY_RANK])
        self.state = QComboBox()
        self.state.addItem(ALL, None)
        for state in STATE_ORDER:
            self.state.addItem(STATE_NAMES[state], state)
        self.text = QLineEdit()
        self.text.setPlaceholderText("search machine, alarm, data item, code")
        for combo in (self.machine, self.priority, self.state):
            combo.currentIndexChanged.connect(self._on_filter_changed)
        self.text.textChanged.connect(self._on_filter_changed)
        self._refresh_machines()

        self.acknowledge_button = QPushButton("Acknowledge…")
        self.shelve_button = QPushButton("Shelve…")
        self.unshelve_button = QPushButton("Unshelve")
        self.mute_button = QPushButton("Mute horn 5 min")
        self.acknowledge_button.clicked.connect(self._on_acknowledge_clicked)
        self.shelve_button.clicked.connect(self._on_shelve_clicked)
        self.unshelve_button.clicked.connect(self._on_unshelve_clicked)
        self.mute_button.clicked.connect(self._on_mute_clicked)
        for keys, handler in (("Ctrl+Return", self._on_acknowledge_clicked), ("Ctrl+H", self._on_shelve_clicked),
                              ("Ctrl+U", self._on_unshelve_clicked), ("Ctrl+M", self._on_mute_clicked)):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(handler)
        self.summary = QLabel()

        filters = QHBoxLayout()
        for label, widget in (("Machine", self.machine), ("Priority", self.priority), ("State", self.state)):
            filters.addWidget(QLabel(label))
            filters.addWidget(widget)
        filters.addWidget(self.text, 1)
        actions = QHBoxLayout()
        for button in (self.acknowledge_button, self.shelve_button, self.unshelve_button, self.mute_button):
            actions.addWidget(button)
        actions.addStretch(1)
        actions.addWidget(self.summary)
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addLayout(actions)

    def set_alarms(self, alarms: Sequence[Alarm]) -> None:
        selected = set(self.selected_ids())
        self.model.set_alarms(alarms)
        self._refresh_machines()
        self._select(selected)
        rows = [self.model.alarm_at(r) for r in range(self.model.rowCount())]
        waiting = sum(a.alarm_state in (AlarmState.UNACKNOWLEDGED_ACTIVE, AlarmState.UNACKNOWLEDGED_RETURNED) for a in rows)
        self.summary.setText(f"{len(rows)} listed, {waiting} to acknowledge")

    def selected_ids(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.model.alarm_at(row).alarm_id for row in rows]

    def _select(self, alarm_ids: set[str]) -> None:
        selection = self.table.selectionModel()
        for row in range(self.model.rowCount()):
            if self.model.alarm_at(row).alarm_id in alarm_ids:
                selection.select(self.model.index(row, 0),
                                 selection.SelectionFlag.Select | selection.SelectionFlag.Rows)

    def _refresh_machines(self) -> None:
        names = sorted({a.device_name for a in self.model.alarms()})
        current = self.machine.currentText() or ALL
        if [self.machine.itemText(i) for i in range(self.machine.count())] == [ALL, *names]:
            return
        self.machine.blockSignals(True)
        self.machine.clear()
        self.machine.addItems([ALL, *names])
        self.machine.setCurrentText(current if current in names else ALL)
        self.machine.blockSignals(False)

    def _on_filter_changed(self, *_args) -> None:
        machine, priority, state = self.machine.currentText(), self.priority.currentText(), self.state.currentData()
        self.model.set_filter(TableFilter(
            devices=frozenset() if machine in ("", ALL) else frozenset({machine}),
            priorities=frozenset() if priority == ALL else frozenset({priority}),
            states=frozenset() if state is None else frozenset({state}), text=self.text.text()))

    def _on_acknowledge_clicked(self) -> None:
        ids = [i for i in self.selected_ids() if self._alarm(i).alarm_state in
               (AlarmState.UNACKNOWLEDGED_ACTIVE, AlarmState.UNACKNOWLEDGED_RETURNED)]
        if not ids:
            return
        dialog = NoteDialog(len(ids), self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.acknowledge_requested.emit(ids, dialog.note.text().strip())

    def _on_shelve_clicked(self) -> None:
        ids = [i for i in self.selected_ids() if self._alarm(i).alarm_state is not AlarmState.OUT_OF_SERVICE]
        if not ids:
            return
        dialog = ShelveDialog(len(ids), self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.shelve_requested.emit(ids, float(dialog.duration.currentData()), dialog.reason.text().strip())

    def _on_unshelve_clicked(self) -> None:
        ids = [i for i in self.selected_ids() if self._alarm(i).shelved]
        if ids:
            self.unshelve_requested.emit(ids)

    def _on_mute_clicked(self) -> None:
        self.mute_requested.emit(self.MUTE_SECONDS)

    def _alarm(self, alarm_id: str) -> Alarm:
        return next(a for a in self.model.alarms() if a.alarm_id == alarm_id)


def _state_name(value: str) -> str:
    """A journal's stored state (`unacknowledged-active`) in the alarm table's words."""
    try:
        return STATE_NAMES[AlarmState(value)]
    except ValueError:
        return value


JOURNAL_COLUMNS = ("Time", "Transition", "Machine", "Priority", "Alarm", "Code", "State", "By", "Note")


class JournalView(QWidget):
    """Transitions found in the journal, with date range, machine and text search and CSV export."""

    search_requested = Signal(dict)  # keyword arguments of AlarmJournal.search
    export_requested = Signal(dict)  # the same filters; the host asks where to write

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.start = QDateTimeEdit(QDateTime.currentDateTime().addDays(-1))
        self.end = QDateTimeEdit(QDateTime.currentDateTime().addSecs(3600))
        for edit in (self.start, self.end):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
        self.machine = QLineEdit()
        self.machine.setPlaceholderText("machine name")
        self.text = QLineEdit()
        self.text.setPlaceholderText("text in message, rule, code, item, note")
        self.search_button = QPushButton("Search")
        self.export_button = QPushButton("Export CSV…")
        self.search_button.clicked.connect(self._on_search_clicked)
        self.export_button.clicked.connect(self._on_export_clicked)
        self.text.returnPressed.connect(self._on_search_clicked)
        self.table = QTableWidget(0, len(JOURNAL_COLUMNS), objectName=TABLE_OBJECT_NAME)
        self.table.setAlternatingRowColors(True)
        self.table.setHorizontalHeaderLabels(JOURNAL_COLUMNS)
        # Times and states on one line, as wide as their text; the alarm text takes the rest.
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.summary = QLabel()
        bar = QHBoxLayout()
        for label, widget in (("From", self.start), ("to", self.end), ("Machine", self.machine)):
            bar.addWidget(QLabel(label))
            bar.addWidget(widget)
        bar.addWidget(self.text, 1)
        bar.addWidget(self.search_button)
        bar.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary)

    def filters(self) -> dict:
        found = {"start": self.start.dateTime().toSecsSinceEpoch(), "end": self.end.dateTime().toSecsSinceEpoch()}
        if self.machine.text().strip():
            found["device"] = self.machine.text().strip()
        if self.text.text().strip():
            found["text"] = self.text.text().strip()
        return found

    def set_range(self, start: float, end: float) -> None:
        self.start.setDateTime(QDateTime.fromSecsSinceEpoch(int(start)))
        self.end.setDateTime(QDateTime.fromSecsSinceEpoch(int(end) + 60))

    def _on_search_clicked(self) -> None:
        self.search_requested.emit(self.filters())

    def _on_export_clicked(self) -> None:
        self.export_requested.emit(self.filters())

    def show_entries(self, entries: Sequence[JournalEntry]) -> None:
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            values = (local_time(entry.at), entry.kind.replace("_", " "), entry.device_name, entry.priority,
                      entry.message, entry.native_code, _state_name(entry.alarm_state), entry.by_user or "", entry.note or "")
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
        self.summary.setText(f"{len(entries)} transitions")


class KpiView(QWidget):
    """The alarm KPIs of a report: the ISA-18.2 figures, the bad actors, per machine and shift."""

    FIGURES = (("Alarms", "alarms", "{:d}"), ("Alarms per hour", "alarms_per_hour", "{:.1f}"),
               ("Alarms per 10 min", "alarms_per_10_minutes", "{:.2f}"), ("Peak 10 min", "peak_10_minutes", "{:d}"),
               ("10-min windows in flood", "flood_window_percent", "{:.1f} %"), ("Chattering", "chattering", "{:d}"),
               ("Stale", "stale", "{:d}"), ("Standing", "standing", "{:d}"),
               ("Top 10 share", "top_10_percent", "{:.0f} %"))
    BREAKDOWN_COLUMNS = ("", "Alarms", "Per hour", "Flood windows", "Chattering", "Standing", "Mean to ack", "Mean to clear")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel()
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.values: dict[str, QLabel] = {}
        grid = QGridLayout()
        figures = [*self.FIGURES, ("Mean time to acknowledge", "mean_time_to_acknowledge", None),
                   ("Mean time to clear", "mean_time_to_clear", None)]
        for index, (label, key, _format) in enumerate(figures):
            self.values[key] = QLabel("—")
            grid.addWidget(QLabel(label), index // 4, (index % 4) * 2)
            grid.addWidget(self.values[key], index // 4, (index % 4) * 2 + 1)
        self.bad_actors = QTableWidget(0, 4, objectName=TABLE_OBJECT_NAME)
        self.bad_actors.setHorizontalHeaderLabels(("Machine", "Alarm", "Code", "Count"))
        self.bad_actors.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.breakdown = QTableWidget(0, len(self.BREAKDOWN_COLUMNS), objectName=TABLE_OBJECT_NAME)
        self.breakdown.setHorizontalHeaderLabels(self.BREAKDOWN_COLUMNS)
        self.breakdown.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.breakdown.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for table in (self.bad_actors, self.breakdown):
            table.setAlternatingRowColors(True)
            table.verticalHeader().hide()
            table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(grid)
        layout.addWidget(QLabel("Bad actors (most frequent alarms)"))
        layout.addWidget(self.bad_actors, 1)
        layout.addWidget(QLabel("Per machine and shift"))
        layout.addWidget(self.breakdown, 1)

    def show_report(self, report: KpiReport) -> None:
        overall = report.overall
        self.title.setText(f"Alarm KPIs {local_time(report.start)} – {local_time(report.end)} ({overall.hours:.1f} h)")
        for _label, key, form in self.FIGURES:
            self.values[key].setText(form.format(getattr(overall, key)))
        self.values["mean_time_to_acknowledge"].setText(_duration(overall.mean_time_to_acknowledge))
        self.values["mean_time_to_clear"].setText(_duration(overall.mean_time_to_clear))
        self.bad_actors.setRowCount(len(overall.bad_actors))
        for row, actor in enumerate(overall.bad_actors):
            for column, value in enumerate((actor.device_name, actor.message, actor.native_code, str(actor.count))):
                self.bad_actors.setItem(row, column, QTableWidgetItem(value))
        rows: list[tuple[str, KpiFigures]] = [(f"machine {name}", figures) for name, figures in report.by_machine.items()]
        rows += [(f"shift {name}", figures) for name, figures in report.by_shift.items()]
        self.breakdown.setRowCount(len(rows))
        for row, (name, figures) in enumerate(rows):
            values = (name, str(figures.alarms), f"{figures.alarms_per_hour:.1f}", f"{figures.flood_windows}/{figures.windows}",
                      str(figures.chattering), str(figures.standing), _duration(figures.mean_time_to_acknowledge),
                      _duration(figures.mean_time_to_clear))
            for column, value in enumerate(values):
                self.breakdown.setItem(row, column, QTableWidgetItem(value))
