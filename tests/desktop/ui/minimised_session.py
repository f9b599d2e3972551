"""Run by test_tray_under_x11.py in its own process on a real X server with a tray host: the
app's real start (`desktop.ui.app.run`) with "Start minimised" ticked in the user's settings,
in remote mode at a broker address nobody answers (no local services). Prints one JSON line
with what a person would see: after the start, whether any window of the app is on screen and
whether its tray icon is; after activating the tray icon (the click the tray host reports),
whether the main window is shown. Then it quits through the tray menu's Quit."""
from __future__ import annotations

import argparse
import json
import sys
import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QSystemTrayIcon

from desktop.ui import app as desktop_app


def main_window(app: QApplication):
    return next(w for w in app.topLevelWidgets() if w.metaObject().className() == "MainWindow")


def main() -> int:
    config_dir = sys.argv[1]
    app = QApplication([sys.argv[0]])
    deadline = time.monotonic() + 15
    while not QSystemTrayIcon.isSystemTrayAvailable() and time.monotonic() < deadline:
        app.processEvents()  # the tray host may still be registering its selection
        time.sleep(0.05)
    result: dict = {}

    def after_start() -> None:
        window = main_window(app)
        result["visible_windows"] = [w.metaObject().className() for w in app.topLevelWidgets() if w.isVisible()
                                     and w.metaObject().className() != "QSystemTrayIconSys"]
        result["tray_visible"] = window.notifier.tray is not None and window.notifier.tray.isVisible()
        if window.notifier.tray is not None:
            window.notifier.tray.activated.emit(QSystemTrayIcon.ActivationReason.Trigger)
        QTimer.singleShot(1000, after_click)

    def after_click() -> None:
        window = main_window(app)
        result["shown_after_click"] = window.isVisible() and not window.isMinimized()
        print(json.dumps(result), flush=True)
        quit_action = next(a for a in window.notifier.tray.contextMenu().actions() if a.text() == "Quit") \
            if window.notifier.tray is not None else None
        if quit_action is not None:
            quit_action.trigger()
        else:
            window.shutdown(then=app.quit)

    QTimer.singleShot(3000, after_start)
    options = desktop_app_options(config_dir)
    return desktop_app.run(options)


def desktop_app_options(config_dir: str) -> argparse.Namespace:
    from desktop.__main__ import build_parser

    return build_parser().parse_args(["--config-dir", config_dir])


if __name__ == "__main__":
    sys.exit(main())
