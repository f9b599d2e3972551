"""The alarm table: time, machine, level, code, message and state of each alarm, newest first.

A Qt table model over the core `AlarmJournal`; it resets only when the journal's version
changed (the journal is bounded, so a reset is cheap). Active faults stand out in the level
colour; cleared alarms are dimmed.
"""
from __future__ import annotations

from datetime import datetime

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

from desktop.core.alarms import Alarm, AlarmJournal
from desktop.core.batch import parse_timestamp
from desktop.ui.theme import LEVEL_COLORS

COLUMNS = ("Time", "Machine", "Level", "Code", "Message", "State")


def local_time(timestamp: str) -> str:
    """An observation timestamp as local date and time, to the second."""
    try:
        return datetime.fromtimestamp(parse_timestamp(timestamp)).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return timestamp


class AlarmTableModel(QAbstractTableModel):
    def __init__(self, journal: AlarmJournal, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.journal = journal
        self._alarms: list[Alarm] = []
        self._version = -1
        self._bold = QFont()
        self._bold.setBold(True)

    def refresh(self) -> bool:
        """Re-read the journal if it changed; True when the rows changed."""
        if self.journal.version == self._version:
            return False
        self.beginResetModel()
        self._alarms = self.journal.alarms()
        self._version = self.journal.version
        self.endResetModel()
        return True

    def alarm_at(self, row: int) -> Alarm:
        return self._alarms[row]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._alarms)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        alarm = self._alarms[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                local_time(alarm.activated_at),
                alarm.device_name,
                alarm.level,
                alarm.native_code or "—",
                alarm.message or alarm.data_item_name,
                alarm.state,
            )[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            cleared = f"\ncleared {local_time(alarm.cleared_at)}" if alarm.cleared_at else ""
            return f"{alarm.alarm_id}\n{alarm.data_item_name} ({alarm.data_item_id}){cleared}"
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == 2:
                return QBrush(QColor(LEVEL_COLORS.get(alarm.level, "#c9d1d9")))
            if not alarm.is_active:
                return QBrush(QColor("#7d8590"))
        if role == Qt.ItemDataRole.FontRole and alarm.is_active and column in (2, 5):
            return self._bold
        return None


class AlarmTable(QTableView):
    def __init__(self, journal: AlarmJournal, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("alarmTable")
        self.table_model = AlarmTableModel(journal, self)
        self.setModel(self.table_model)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        for column in range(len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)

    def refresh(self) -> None:
        self.table_model.refresh()
