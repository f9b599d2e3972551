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
    MachineStatus.IDLE: "#e8a317",
    MachineStatus.STOPPED: "#d9731a",
    MachineStatus.ALARM: "#e03131",
    MachineStatus.OFFLINE: "#5f6b76",
    MachineStatus.UNAVAILABLE: "#868e96",
}
# Text on the status colour: dark on the bright amber for contrast, white elsewhere.
STATUS_TEXT_COLORS = {MachineStatus.IDLE: "#1b1f24"}

LEVEL_COLORS = {"FAULT": "#e03131", "WARNING": "#e8a317", "NORMAL": "#2f9e44"}

PLOT_BACKGROUND = "#161a1f"
PLOT_FOREGROUND = "#c9d1d9"
PLOT_PEN = "#4dabf7"


def status_color(status: MachineStatus) -> QColor:
    return QColor(STATUS_COLORS[status])


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
