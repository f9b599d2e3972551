"""Run by test_tray_under_x11.py in its own process on a real X server with a tray host:
the main window, left to detect the tray itself, is fed the recorded Mazak03 day up to
Fault 791. Prints one JSON line with what a person would see: whether the app chose the
tray, the texts of the tray balloon on screen, whether the in-window banner showed, the tray
icon's colour before and after, and - after a click on the balloon, as a person clicks it -
which tab the window shows; then the same through the tray menu's "Open last alert"."""
from __future__ import annotations

import json
import sys
import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QLabel, QSystemTrayIcon

import recorded_nist as testing
from desktop.core.settings import Settings
from desktop.ui.main_window import MainWindow

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"


def pump(app: QApplication, seconds: float, until=lambda: False) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        app.processEvents()
        time.sleep(0.05)


def main() -> int:
    app = QApplication(sys.argv)
    # The tray host may still be registering its selection.
    pump(app, 15, QSystemTrayIcon.isSystemTrayAvailable)
    window = MainWindow(Settings())
    window.show()
    icon_before = window.notifier.tray.icon().pixmap(22, 22).toImage().pixelColor(17, 17).name() if window.notifier.tray else ""
    devices = testing.load_devices()
    lines = testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines()
    fault_line = next(n for n, line in enumerate(lines, start=1) if "|motion_cond|Fault|791|" in line)
    mazak03 = testing.device_named(devices, "Mazak03")
    observations = [o for _, o in testing.shdr_observations(testing.nist_shdr(MAZAK03_DAY), mazak03, 1, fault_line)]
    window.ingest(testing.batch_of(devices, observations))

    def balloons() -> list[list[str]]:
        return [[label.text() for label in widget.findChildren(QLabel) if label.text()]
                for widget in app.topLevelWidgets()
                if widget.metaObject().className() == "QBalloonTip" and widget.isVisible()]

    pump(app, 10, lambda: bool(balloons()))
    shown = balloons()
    pump(app, 1)
    icon_after = window.notifier.tray.icon().pixmap(22, 22).toImage().pixelColor(17, 17).name() if window.notifier.tray else ""
    tips = [w for w in app.topLevelWidgets() if w.metaObject().className() == "QBalloonTip" and w.isVisible()]
    if tips:
        QTest.mouseClick(tips[0], Qt.MouseButton.LeftButton)
    pump(app, 5, lambda: type(window.tabs.currentWidget()).__name__ == "DetailView")
    after_click = getattr(window.tabs.currentWidget(), "device_uuid", None)
    window.show_view("overview")
    menu_entry = next((a for a in window.notifier.tray.contextMenu().actions() if a.text().startswith("Open last alert")),
                      None) if window.notifier.tray else None
    menu_text = menu_entry.text() if menu_entry is not None else ""
    if menu_entry is not None:
        menu_entry.trigger()
    pump(app, 3, lambda: type(window.tabs.currentWidget()).__name__ == "DetailView")
    after_menu = getattr(window.tabs.currentWidget(), "device_uuid", None)
    result = {
        "tray_available": QSystemTrayIcon.isSystemTrayAvailable(),
        "uses_tray": window.notifier.uses_tray,
        "balloons": shown,
        "banner_visible": window.banner.isVisible(),
        "icon_before": icon_before,
        "icon_after": icon_after,
        "opened_by_click": after_click,
        "opened_by_menu": after_menu,
        "menu_text": menu_text,
    }
    print(json.dumps(result), flush=True)
    # Shut down inside the event loop: shutdown may finish at once, before exec() would start.
    QTimer.singleShot(0, lambda: window.shutdown(then=app.quit))
    app.exec()
    return 0


if __name__ == "__main__":
    sys.exit(main())
