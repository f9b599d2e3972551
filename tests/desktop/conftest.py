"""Qt fixtures for the desktop tests: a styled application and main windows that are shut
down (feed thread joined, services stopped) at the end of each test."""
from __future__ import annotations

import pytest


@pytest.fixture
def styled_qapp(qapp):
    from desktop.ui.theme import apply_style

    apply_style(qapp)
    return qapp


@pytest.fixture
def make_window(qtbot, styled_qapp):
    """Build `MainWindow(settings, **options)`; every window is shut down after the test."""
    from desktop.core.settings import Settings
    from desktop.ui.main_window import MainWindow

    windows = []

    def make(settings=None, **options):
        window = MainWindow(settings or Settings(), **options)
        windows.append(window)
        qtbot.addWidget(window)
        return window

    yield make
    for window in windows:
        if not window._shut_down:
            with qtbot.waitSignal(window.shutdown_finished, timeout=30_000):
                window.shutdown()
