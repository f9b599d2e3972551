"""Qt fixtures for the desktop tests: a styled application and main windows that are shut
down (feed thread joined, services stopped) at the end of each test."""
from __future__ import annotations

import socket

import pytest


@pytest.fixture
def closed_port() -> str:
    """`127.0.0.1:PORT` where nothing listens: a port the system just handed out, then freed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture(autouse=True)
def memory_keyring():
    """Every desktop test keeps secrets in memory, never in the OS keyring of this PC."""
    import keyring

    from keyring_support import MemoryKeyring

    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


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
