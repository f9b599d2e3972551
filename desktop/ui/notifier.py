"""Alarm notifications: a system-tray pop-up, or an in-window banner where there is no tray.

`AlarmNotifier.notify` gets the alarms the engine says to notify (new FAULTs, each once per
activation) and shows one message per batch: the alarm itself, or a summary when several
arrive together (a flood of pop-ups helps nobody). With a system tray the message is a
critical tray balloon and the tray icon turns to its alarm variant while faults are active;
without one (offscreen, some kiosk sessions) the banner at the top of the window shows it
until dismissed. `notification_shown` reports every message, whichever way it went.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QMenu, QPushButton, QSystemTrayIcon, QWidget

from desktop.core.alarms import Alarm
from desktop.ui.alarm_table import local_time
from desktop.ui.theme import app_icon

TRAY_MESSAGE_MS = 15_000
_SUMMARY_LINES = 4


def describe(alarm: Alarm) -> tuple[str, str]:
    """(title, message) for one alarm."""
    code = f" {alarm.native_code}" if alarm.native_code else ""
    title = f"{alarm.device_name}: {alarm.level}{code}"
    message = alarm.message or alarm.data_item_name
    return title, f"{message}\n{alarm.data_item_name} · {local_time(alarm.activated_at)}"


def summarize(alarms: list[Alarm]) -> tuple[str, str]:
    """(title, message) for several alarms at once."""
    if len(alarms) == 1:
        return describe(alarms[0])
    lines = [f"{a.device_name}: {a.native_code + ' ' if a.native_code else ''}{a.message or a.data_item_name}" for a in alarms]
    if len(lines) > _SUMMARY_LINES:
        lines = lines[:_SUMMARY_LINES] + [f"… and {len(alarms) - _SUMMARY_LINES} more"]
    return f"{len(alarms)} new faults", "\n".join(lines)


class AlarmBanner(QFrame):
    """A red strip at the top of the window with the latest notification and a dismiss button."""

    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("alarmBanner")
        self.title_label = QLabel(objectName="bannerTitle")
        self.message_label = QLabel(objectName="bannerMessage")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.dismiss_button = QPushButton("Dismiss", objectName="bannerDismiss")
        self.dismiss_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.dismiss_button.clicked.connect(self._on_dismiss_clicked)
        texts = QHBoxLayout()
        texts.addWidget(self.title_label)
        texts.addWidget(self.message_label, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(14, 8, 10, 8)
        layout.addLayout(texts, 1)
        layout.addWidget(self.dismiss_button, 0, Qt.AlignmentFlag.AlignTop)
        self.setVisible(False)

    def show_message(self, title: str, message: str) -> None:
        self.title_label.setText(title)
        self.message_label.setText(message)
        self.setVisible(True)

    def text(self) -> str:
        return f"{self.title_label.text()}\n{self.message_label.text()}"

    def _on_dismiss_clicked(self) -> None:
        self.setVisible(False)
        self.dismissed.emit()


class AlarmNotifier(QObject):
    notification_shown = Signal(str, str)  # title, message
    show_window_requested = Signal()
    quit_requested = Signal()

    def __init__(self, banner: AlarmBanner, parent: QObject | None = None, use_tray: bool | None = None) -> None:
        super().__init__(parent)
        self.banner = banner
        if use_tray is None:
            use_tray = QSystemTrayIcon.isSystemTrayAvailable()
        self.tray: QSystemTrayIcon | None = None
        self._alarm_shown = False
        if use_tray:
            self.tray = QSystemTrayIcon(app_icon(), self)
            self.tray.setToolTip("Machine Monitor")
            menu = QMenu()
            menu.addAction("Show window", self.show_window_requested.emit)
            menu.addSeparator()
            menu.addAction("Quit", self.quit_requested.emit)
            self._menu = menu  # the tray does not own its menu
            self.tray.setContextMenu(menu)
            self.tray.activated.connect(self._on_tray_activated)
            self.tray.messageClicked.connect(self.show_window_requested.emit)
            self.tray.show()

    @property
    def uses_tray(self) -> bool:
        return self.tray is not None

    def notify(self, alarms: list[Alarm]) -> None:
        if not alarms:
            return
        title, message = summarize(alarms)
        if self.tray is not None:
            self.tray.showMessage(title, message, QSystemTrayIcon.MessageIcon.Critical, TRAY_MESSAGE_MS)
        else:
            self.banner.show_message(title, message.replace("\n", " — ", 1).replace("\n", "; "))
        self.notification_shown.emit(title, message)

    def set_active_faults(self, count: int) -> None:
        """Switch the tray icon to its alarm variant while faults are active."""
        if self.tray is None:
            return
        if (count > 0) != self._alarm_shown:
            self._alarm_shown = count > 0
            self.tray.setIcon(app_icon(alarm=self._alarm_shown))
        tooltip = f"Machine Monitor — {count} active fault(s)" if count else "Machine Monitor"
        if self.tray.toolTip() != tooltip:
            self.tray.setToolTip(tooltip)

    def _on_tray_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_window_requested.emit()

    def hide(self) -> None:
        if self.tray is not None:
            self.tray.hide()
