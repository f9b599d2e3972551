"""Notifications: a system-tray icon and pop-ups, or an in-window banner where there is no tray.

`AlarmNotifier.notify` gets the alarms the engine says to notify (each once per activation)
and shows one message per update: the alarm itself, or a summary when several arrive
together. Which levels pop up is a setting (faults; faults and warnings; none). The tray
icon carries a dot in the colour of the worst current machine state (alarm red, offline
grey, interrupted amber, setup blue, idle yellow, running green) and its tooltip the fleet
counts. Clicking a pop-up opens the machine it is about (`machine_requested`); since some
platforms report clicks only for some message kinds, the tray menu also has "Open last
alert". Without a tray (offscreen, some kiosk sessions) the banner at the top of the window
shows the message with an Open button until dismissed. `notification_shown` reports every
message, whichever way it went.

In the running app the window hands over the engine's `Notice`s (`show_notices`): noise
control has been applied already (no repeats, no chattering alarm, a flood is one summary),
and each pop-up is styled by priority (`desktop.core.alarms.table.popup_style`: critical as
a critical message, high as a warning, medium as information, low never pops up). The user's
setting narrows it further: "faults" pops up critical alarms and flood summaries only,
"none" nothing. The horn (`update_horn`, `mute_horn`) is on while unacknowledged critical or
high alarms exist (`Horn`): the app beeps every few seconds and asks the desktop for
attention for its window, until they are acknowledged or the horn is muted for a time.
"""
from __future__ import annotations

import time
from typing import Iterable

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QApplication, QFrame, QHBoxLayout, QLabel, QMenu, QPushButton, QSystemTrayIcon, QWidget

from desktop.core.alarms import Alarm, Notice
from desktop.core.alarms.model import PRIORITY_RANK
from desktop.core.alarms.table import Horn, popup_style
from desktop.core.machines import MachineStatus
from desktop.ui.theme import status_icon

TRAY_MESSAGE_MS = 15_000
_SUMMARY_LINES = 4
HORN_INTERVAL_MS = 3000
_TRAY_ICONS = {"critical": QSystemTrayIcon.MessageIcon.Critical, "warning": QSystemTrayIcon.MessageIcon.Warning,
               "information": QSystemTrayIcon.MessageIcon.Information}


def notices_message(notices: list[Notice]) -> tuple[str, str, str]:
    """(title, message, priority) of one pop-up for the notices of one update: a flood
    summary stands for everything, one alarm is itself, several are listed."""
    flood = [n for n in notices if n.kind == "flood"]
    if flood:
        return flood[-1].title, flood[-1].text, flood[-1].priority
    top = min((n.priority for n in notices), key=lambda p: PRIORITY_RANK.get(p, 9))
    if len(notices) == 1:
        return notices[0].title, notices[0].text, top
    lines = [f"{n.title}: {n.text}" for n in notices[:_SUMMARY_LINES]]
    if len(notices) > _SUMMARY_LINES:
        lines.append(f"… and {len(notices) - _SUMMARY_LINES} more")
    return f"{len(notices)} new alarms", "\n".join(lines), top


class AlarmBanner(QFrame):
    """A red strip at the top of the window with the latest notification, Open and Dismiss."""

    dismissed = Signal()
    clicked = Signal(str)  # device uuid of the alert shown

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("alarmBanner")
        self.device_uuid: str | None = None
        self.title_label = QLabel(objectName="bannerTitle")
        self.message_label = QLabel(objectName="bannerMessage")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open machine", objectName="bannerOpen")
        self.open_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.open_button.clicked.connect(self._on_open_clicked)
        self.dismiss_button = QPushButton("Dismiss", objectName="bannerDismiss")
        self.dismiss_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.dismiss_button.clicked.connect(self._on_dismiss_clicked)
        texts = QHBoxLayout()
        texts.addWidget(self.title_label)
        texts.addWidget(self.message_label, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(14, 8, 10, 8)
        layout.addLayout(texts, 1)
        layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.dismiss_button, 0, Qt.AlignmentFlag.AlignTop)
        self.setVisible(False)

    def show_message(self, title: str, message: str, device_uuid: str | None = None) -> None:
        self.device_uuid = device_uuid
        self.title_label.setText(title)
        self.message_label.setText(message)
        self.open_button.setVisible(device_uuid is not None)
        self.setVisible(True)

    def text(self) -> str:
        return f"{self.title_label.text()}\n{self.message_label.text()}"

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._on_open_clicked()
        super().mouseReleaseEvent(event)

    def _on_open_clicked(self) -> None:
        if self.device_uuid is not None:
            self.clicked.emit(self.device_uuid)

    def _on_dismiss_clicked(self) -> None:
        self.setVisible(False)
        self.dismissed.emit()


class AlarmNotifier(QObject):
    notification_shown = Signal(str, str)  # title, message
    popup_styled = Signal(str)  # the style of the pop-up just shown: critical, warning, information
    horn_changed = Signal(bool)  # sounding
    show_window_requested = Signal()
    quit_requested = Signal()
    machine_requested = Signal(str)  # device uuid: open that machine

    def __init__(self, banner: AlarmBanner, parent: QObject | None = None, use_tray: bool | None = None) -> None:
        super().__init__(parent)
        self.banner = banner
        if use_tray is None:
            use_tray = QSystemTrayIcon.isSystemTrayAvailable()
        self.tray: QSystemTrayIcon | None = None
        self.status: MachineStatus | None = None
        self.last_alert_device: str | None = None
        self.notify_level = "faults"
        self._message_device: str | None = None
        self.horn = Horn()
        self.horn_sounding = False
        self.attention_window: QWidget | None = None
        self._horn_timer = QTimer(self)
        self._horn_timer.setInterval(HORN_INTERVAL_MS)
        self._horn_timer.timeout.connect(self._on_horn_timer)
        if use_tray:
            self.tray = QSystemTrayIcon(status_icon(None), self)
            self.tray.setToolTip("Machine Monitor")
            menu = QMenu()
            menu.addAction("Show window", self.show_window_requested.emit)
            self.open_last_action = menu.addAction("Open last alert (none yet)", self._on_open_last_alert)
            self.open_last_action.setEnabled(False)
            menu.addSeparator()
            menu.addAction("Quit", self.quit_requested.emit)
            self._menu = menu  # the tray does not own its menu
            self.tray.setContextMenu(menu)
            self.tray.activated.connect(self._on_tray_activated)
            self.tray.messageClicked.connect(self._on_message_clicked)
            self.tray.show()

    @property
    def uses_tray(self) -> bool:
        return self.tray is not None

    def set_preferences(self, settings) -> None:
        self.notify_level = settings.notify

    def wanted_notice(self, notice: Notice) -> bool:
        if self.notify_level == "none" or popup_style(notice.priority) is None:
            return False
        if self.notify_level == "faults":
            return notice.kind == "flood" or notice.priority == "critical"
        return True

    def show_notices(self, notices: Iterable[Notice], devices: dict[str, str] | None = None) -> None:
        """One pop-up for the notices of one update (noise control is the engine's); `devices`
        maps alarm id to device uuid, for the pop-up's "open machine"."""
        notices = [notice for notice in notices if self.wanted_notice(notice)]
        if not notices:
            return
        title, message, priority = notices_message(notices)
        style = popup_style(priority) or "information"
        ids = [alarm_id for notice in notices for alarm_id in notice.alarm_ids]
        device = (devices or {}).get(ids[-1]) if ids else None
        if device is None and ids:
            device = ids[-1].split("/", 1)[0]  # alarm ids start with the device uuid
        self.last_alert_device = device
        if self.tray is not None:
            self._message_device = device
            self.open_last_action.setEnabled(device is not None)
            if device is not None:
                # Named after the alert it opens (the last one, when a pop-up lists several).
                last = next((n for n in reversed(notices) if ids[-1] in n.alarm_ids), None)
                self.open_last_action.setText(f"Open last alert: {last.title if last is not None else title}"[:80])
            self.tray.showMessage(title, message, _TRAY_ICONS[style], TRAY_MESSAGE_MS)
        else:
            self.banner.setProperty("priority", style)
            self.banner.style().unpolish(self.banner)
            self.banner.style().polish(self.banner)
            self.banner.show_message(title, message.replace("\n", "; "), device)
        self.popup_styled.emit(style)
        self.notification_shown.emit(title, message)

    # -- the horn -----------------------------------------------------------------------

    def update_horn(self, alarms: Iterable[Alarm], now: float | None = None) -> bool:
        """Sound while unacknowledged critical/high alarms exist (and are not muted)."""
        sounding = self.horn.sounding(list(alarms), time.time() if now is None else now)
        if sounding != self.horn_sounding:
            self.horn_sounding = sounding
            if sounding:
                self._on_horn_timer()
                self._horn_timer.start()
            else:
                self._horn_timer.stop()
            self.horn_changed.emit(sounding)
        return sounding

    def mute_horn(self, alarms: Iterable[Alarm], seconds: float, now: float | None = None) -> None:
        """Silence the alarms calling now for `seconds`; a new one sounds at once."""
        alarms = list(alarms)
        now = time.time() if now is None else now
        self.horn.mute(alarms, seconds, now)
        self.update_horn(alarms, now)

    def _on_horn_timer(self) -> None:
        QApplication.beep()
        if self.attention_window is not None:
            QApplication.alert(self.attention_window, HORN_INTERVAL_MS)

    def show_hint(self, title: str, message: str) -> None:
        if self.tray is not None:
            self._message_device = None
            self.tray.showMessage(title, message, QSystemTrayIcon.MessageIcon.Information, 8000)

    def set_status(self, status: MachineStatus | None, counts: dict[MachineStatus, int], unacknowledged: int = 0) -> None:
        """Tray icon in the colour of the worst state; tooltip with the fleet counts."""
        if self.tray is None:
            self.status = status
            return
        if status != self.status:
            self.status = status
            self.tray.setIcon(status_icon(status))
        parts = [f"{counts[s]} {s.value}" for s in MachineStatus if counts.get(s)]
        tooltip = "Machine Monitor" + (f" — {', '.join(parts)}" if parts else "")
        if unacknowledged:
            tooltip += f"\n{unacknowledged} alarm(s) to acknowledge"
        if self.tray.toolTip() != tooltip:
            self.tray.setToolTip(tooltip)

    def set_active_faults(self, count: int) -> None:
        """Kept for callers that only know a fault count."""
        self.set_status(MachineStatus.ALARM if count else None, {})

    def _on_message_clicked(self) -> None:
        if self._message_device is not None:
            self.machine_requested.emit(self._message_device)
        else:
            self.show_window_requested.emit()

    def _on_open_last_alert(self) -> None:
        if self.last_alert_device is not None:
            self.machine_requested.emit(self.last_alert_device)

    def _on_tray_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_window_requested.emit()

    def hide(self) -> None:
        if self.tray is not None:
            self.tray.hide()
