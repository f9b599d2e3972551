"""Driving modal dialogs in tests: `exec()` blocks the test, so the interaction is queued first
and runs from inside the dialog's own event loop."""
from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication


def when_modal(check, action) -> None:
    """Once a modal widget for which `check(widget)` holds is up, run `action(widget)`."""
    def poll() -> None:
        widget = QApplication.activeModalWidget()
        if widget is not None and check(widget):
            action(widget)
        else:
            QTimer.singleShot(20, poll)
    QTimer.singleShot(0, poll)
