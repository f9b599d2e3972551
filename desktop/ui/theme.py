"""The app's look: status colours, the stylesheet and the icons, in one place.

Status colours are strong and few, readable from across a shop floor: green running, amber
idle, deep amber stopped (feed hold), red alarm, greys for offline and unavailable. The
stylesheet (`resources/style/app.qss`) does the rest; a missing resource degrades to Qt's
defaults rather than stopping the app (`--self-test` reports it).
"""
from __future__ import annotations

from PySide6.QtGui import QColor, QIcon
from PySide6.QtWidgets import QApplication

from desktop.core.machines import MachineStatus
from desktop.core.paths import resource_path

STATUS_COLORS = {
    MachineStatus.RUNNING: "#2f9e44",
    MachineStatus.IDLE: "#f2c94c",
    MachineStatus.INTERRUPTED: "#f08c00",
    MachineStatus.SETUP: "#3b82f6",
    MachineStatus.ALARM: "#e03131",
    MachineStatus.OFFLINE: "#6b7683",
    MachineStatus.UNAVAILABLE: "#4a525c",
}
# Text on the status colour: dark on the bright yellow and amber for contrast, white elsewhere.
STATUS_TEXT_COLORS = {MachineStatus.IDLE: "#1b1f24", MachineStatus.INTERRUPTED: "#1b1f24"}

TILE_BACKGROUND = "#1f252d"
TILE_SELECTED = "#e6edf3"
TILE_TEXT = "#e6edf3"
TILE_TEXT_DIM = "#a9b4c0"

LEVEL_COLORS = {"FAULT": "#e03131", "WARNING": "#e8a317", "NORMAL": "#2f9e44"}

# Alarm priority colours (swatch, text on it), the ISA-18.2 way: colour is kept for priority
# alone, and runs from red to blue as the urgency falls. Critical is the red of the tiles'
# alarm marks, high the amber of their warning marks; every text on its swatch has a
# contrast of at least 4.5:1.
PRIORITY_COLORS = {
    "critical": (STATUS_COLORS[MachineStatus.ALARM], "#ffffff"),
    "high": (STATUS_COLORS[MachineStatus.INTERRUPTED], "#1b1f24"),
    "medium": ("#f2c94c", "#1b1f24"),
    "low": ("#74c0fc", "#1b1f24"),
}
# Alarm table text: normal, and dimmed for alarms put aside (shelved, out of service), both
# readable on the table's dark rows.
ALARM_TEXT = "#e6edf3"
ALARM_TEXT_DIM = "#8b949e"

PLOT_BACKGROUND = "#161a1f"
PLOT_FOREGROUND = "#c9d1d9"
PLOT_PEN = "#4dabf7"
# One colour per pen of the detail plot, distinguishable on the dark background.
PEN_COLORS = ("#4dabf7", "#ffa94d", "#69db7c", "#f783ac", "#ffd43b", "#9775fa", "#3bc9db", "#ff8787")


def status_color(status: MachineStatus) -> QColor:
    return QColor(STATUS_COLORS[status])


def status_icon(status: MachineStatus | None, size: int = 64) -> QIcon:
    """The app icon with a dot in the colour of `status` (the tray shows the worst state)."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QPainter, QPen, QPixmap

    base = app_icon()
    pixmap = base.pixmap(size, size) if not base.isNull() else QPixmap(size, size)
    if base.isNull():
        pixmap.fill(QColor("#1f252d"))
    if status is not None:
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        diameter = size * 0.5
        painter.setPen(QPen(QColor("#0d1117"), size * 0.06))
        painter.setBrush(QColor(STATUS_COLORS[status]))
        painter.drawEllipse(QRectF(size - diameter - 1, size - diameter - 1, diameter, diameter))
        painter.end()
    icon = QIcon()
    icon.addPixmap(pixmap)
    return icon


def app_icon(alarm: bool = False) -> QIcon:
    icon = QIcon()
    name = "icons/app-alarm.png" if alarm else "icons/app.png"
    for candidate in (resource_path(name), resource_path("icons/app.svg")):
        if candidate.is_file():
            icon.addFile(str(candidate))
            break
    return icon


def apply_style(app: QApplication) -> None:
    path = resource_path("style/app.qss")
    if path.is_file():
        app.setStyleSheet(path.read_text(encoding="utf-8"))
    app.setWindowIcon(app_icon())
