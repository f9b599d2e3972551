"""The machine overview: one tile per device with its status in a large, coloured badge.

A tile shows the machine's name, model, Availability, Execution and ControllerMode, the
derived status (running / idle / stopped / alarm / offline / unavailable) and, when there is
one, the reason (the active fault, "agent unreachable"). Tiles are created once per device
and updated in place from `MachineView`s on the redraw timer; a label is only touched when its
text changed, so a steady fleet costs nothing to refresh.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from desktop.core.machines import MachineStatus, MachineView
from desktop.ui.theme import STATUS_COLORS, STATUS_TEXT_COLORS

COLUMNS = 4


def readable(value: str | None) -> str:
    """MTConnect words for people: FEED_HOLD -> Feed hold; nothing reported -> an em dash."""
    if not value:
        return "—"
    if value == "UNAVAILABLE":
        return "Unavailable"
    return value.replace("_", " ").capitalize()


def _set_text(label: QLabel, text: str) -> None:
    if label.text() != text:
        label.setText(text)


class MachineTile(QFrame):
    clicked = Signal(str)  # device uuid

    def __init__(self, device_uuid: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.device_uuid = device_uuid
        self.status: MachineStatus | None = None
        self.setObjectName("machineTile")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

        self.name_label = QLabel(objectName="tileName")
        self.model_label = QLabel(objectName="tileModel")
        self.status_label = QLabel(objectName="tileStatus")
        self.status_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.status_label.setMinimumWidth(130)
        self.availability_label = QLabel(objectName="tileValue")
        self.execution_label = QLabel(objectName="tileValue")
        self.mode_label = QLabel(objectName="tileValue")
        self.reason_label = QLabel(objectName="tileReason")
        self.reason_label.setWordWrap(False)

        header = QHBoxLayout()
        names = QVBoxLayout()
        names.setSpacing(0)
        names.addWidget(self.name_label)
        names.addWidget(self.model_label)
        header.addLayout(names, 1)
        header.addWidget(self.status_label, 0, Qt.AlignmentFlag.AlignTop)

        values = QGridLayout()
        values.setHorizontalSpacing(12)
        values.setVerticalSpacing(2)
        for row, (caption, label) in enumerate(
            (("Availability", self.availability_label), ("Execution", self.execution_label), ("Mode", self.mode_label))
        ):
            caption_label = QLabel(caption, objectName="tileCaption")
            values.addWidget(caption_label, row, 0)
            values.addWidget(label, row, 1)
        values.setColumnStretch(1, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 8, 12, 8)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addLayout(values)
        layout.addWidget(self.reason_label)
        # Reserve the reason line even when empty, so all tiles (and rows) have one height.
        self.reason_label.setMinimumHeight(self.reason_label.fontMetrics().height())

    def update_view(self, view: MachineView) -> None:
        _set_text(self.name_label, view.name)
        model = " · ".join(part for part in (view.manufacturer, view.model) if part)
        _set_text(self.model_label, model or view.device_uuid)
        _set_text(self.availability_label, readable(view.availability))
        _set_text(self.execution_label, readable(view.execution))
        _set_text(self.mode_label, readable(view.controller_mode))
        _set_text(self.status_label, view.status.value.upper())
        reason = view.reason
        if view.warning_count and view.status != MachineStatus.ALARM:
            reason = "; ".join(part for part in (reason, f"{view.warning_count} warning(s) active") if part)
        _set_text(self.reason_label, reason if len(reason) <= 46 else reason[:45] + "…")
        self.reason_label.setToolTip(reason)
        tooltip = f"{view.name} ({view.device_uuid})\nagent: {view.agent or '—'}\nlast data: {view.last_timestamp or '—'}"
        if self.toolTip() != tooltip:
            self.setToolTip(tooltip)
        if view.status != self.status:
            self.status = view.status
            colour = STATUS_COLORS[view.status]
            text = STATUS_TEXT_COLORS.get(view.status, "#ffffff")
            # Per-tile colours are data, not theme: set them directly instead of via QSS selectors.
            self.status_label.setStyleSheet(f"background-color: {colour}; color: {text};")
            self.setStyleSheet(f"QFrame#machineTile {{ border-left: 8px solid {colour}; }}")

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.clicked.emit(self.device_uuid)
        super().mouseReleaseEvent(event)


class MachineOverview(QWidget):
    """The grid of tiles, in the fleet's order (by machine name)."""

    machine_selected = Signal(str)  # device uuid

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tiles: dict[str, MachineTile] = {}
        self._order: list[str] = []
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(10)
        self._empty = QLabel("Waiting for machines…", objectName="overviewEmpty")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._grid.addWidget(self._empty, 0, 0, 1, COLUMNS)
        for column in range(COLUMNS):
            self._grid.setColumnStretch(column, 1)

    def set_waiting_text(self, text: str) -> None:
        _set_text(self._empty, text)

    def update_views(self, views: list[MachineView]) -> None:
        order = [view.device_uuid for view in views]
        for view in views:
            tile = self.tiles.get(view.device_uuid)
            if tile is None:
                tile = self.tiles[view.device_uuid] = MachineTile(view.device_uuid, self)
                tile.clicked.connect(self.machine_selected)
            tile.update_view(view)
        for gone in set(self.tiles) - set(order):
            tile = self.tiles.pop(gone)
            self._grid.removeWidget(tile)
            tile.deleteLater()
        if order != self._order:
            # Re-lay out only when machines came, went or were renamed.
            self._order = order
            for tile in self.tiles.values():
                self._grid.removeWidget(tile)
            for index, uuid in enumerate(order):
                self._grid.addWidget(self.tiles[uuid], index // COLUMNS, index % COLUMNS)
            self._empty.setVisible(not order)
