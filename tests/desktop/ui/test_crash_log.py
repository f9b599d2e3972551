"""An unexpected error in the running app leaves a crash log in the logs folder, and the user
is told where it is.

Each case runs the whole app (`python -m desktop`, offscreen, remote mode on a port where
nothing listens, so no local services start) as its own process. A `sitecustomize` module
on the child's path plays the part of the bug: once the main window is shown it raises in a
Qt slot, raises in a worker thread, or sends a Qt fatal message; for the dialog cases it
also prints the text of the error dialog it finds among the app's windows - what the user
would read - and then quits the app.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from repo_paths import REPO_ROOT

APP_TIMEOUT = 120

HARNESS = textwrap.dedent('''
    import os
    import threading

    CASE = os.environ["CRASH_CASE"]

    from PySide6.QtCore import QTimer, qFatal
    from PySide6.QtWidgets import QApplication, QMessageBox

    import desktop.ui.main_window as main_window


    def deliberate_error_in_a_slot():
        raise RuntimeError("deliberate error in a slot, 1a2b")


    def deliberate_error_in_a_thread():
        raise ValueError("deliberate error in a worker thread, 3c4d")


    def look_for_the_dialog():
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QMessageBox) and widget.isVisible() and widget.objectName() == "crashLogBox":
                print("DIALOG " + widget.windowTitle() + " | " + widget.text().replace("\\n", " | "), flush=True)
                QApplication.instance().quit()
                return
        QTimer.singleShot(50, look_for_the_dialog)


    def give_up():
        print("NO DIALOG within 30 s", flush=True)
        QApplication.instance().quit()


    def misbehave():
        QTimer.singleShot(30_000, give_up)
        if CASE == "slot":
            QTimer.singleShot(0, deliberate_error_in_a_slot)
        elif CASE == "thread":
            threading.Thread(target=deliberate_error_in_a_thread, name="worker-5e6f").start()
        elif CASE == "qt-fatal":
            qFatal("deliberate Qt fatal message, 7a8b")
        QTimer.singleShot(50, look_for_the_dialog)


    original_show = main_window.MainWindow.show


    def show(self):
        original_show(self)
        QTimer.singleShot(500, misbehave)


    main_window.MainWindow.show = show
''')


def closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_app(tmp_path: Path, case: str) -> tuple[subprocess.CompletedProcess, Path]:
    harness = tmp_path / "harness"
    harness.mkdir()
    (harness / "sitecustomize.py").write_text(HARNESS)
    logs = tmp_path / "logs"
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "CRASH_CASE": case,
        "PYTHONPATH": os.pathsep.join([str(harness), str(REPO_ROOT)]),
        "MACHINE_MONITOR_CONFIG_DIR": str(tmp_path / "config"),
        "MACHINE_MONITOR_DATA_DIR": str(tmp_path / "data"),
        "MACHINE_MONITOR_LOG_DIR": str(logs),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "desktop", "--bootstrap", f"127.0.0.1:{closed_port()}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=APP_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    return completed, logs


def the_crash_log(logs: Path, output: str) -> Path:
    found = sorted(logs.glob("crash-*.log")) if logs.is_dir() else []
    assert len(found) == 1, f"expected one crash log in {logs}, found {found}:\n{output[-3000:]}"
    return found[0]


def reported_path(stderr: str) -> Path:
    match = re.search(r"crash log written to (\S+\.log)", stderr)
    assert match, f"no crash log path on stderr:\n{stderr[-3000:]}"
    return Path(match.group(1))


@pytest.mark.parametrize(
    "case, exception, where",
    [
        ("slot", "RuntimeError: deliberate error in a slot, 1a2b", "in deliberate_error_in_a_slot"),
        ("thread", "ValueError: deliberate error in a worker thread, 3c4d", "in deliberate_error_in_a_thread"),
    ],
)
def test_an_uncaught_exception_writes_the_crash_log_and_the_dialog_names_it(tmp_path, case, exception, where):
    completed, logs = run_app(tmp_path, case)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]

    log = the_crash_log(logs, output)
    text = log.read_text()
    assert exception in text and where in text and "Traceback (most recent call last)" in text
    if case == "thread":
        assert "thread worker-5e6f" in text
    # The user is told where the file is: on stderr and in the dialog.
    assert reported_path(completed.stderr) == log
    dialogs = [line for line in completed.stdout.splitlines() if line.startswith("DIALOG ")]
    assert dialogs, f"no error dialog was shown:\n{output[-3000:]}"
    assert str(log) in dialogs[0] and exception in dialogs[0]


def test_a_qt_fatal_message_writes_the_crash_log_before_qt_ends_the_app(tmp_path):
    completed, logs = run_app(tmp_path, "qt-fatal")
    output = completed.stdout + completed.stderr
    # Qt aborts the process after a fatal message: that is not ours to change.
    assert completed.returncode == -signal.SIGABRT, output[-3000:]
    log = the_crash_log(logs, output)
    text = log.read_text()
    assert "what: Qt fatal error" in text and "deliberate Qt fatal message, 7a8b" in text
    assert "in misbehave" in text  # the Python stack that led there
    assert reported_path(completed.stderr) == log
    # And the native crash handler recorded the abort with the Python stack of the GUI thread.
    faults = (logs / "faults.log").read_text()
    assert "Aborted" in faults and "misbehave" in faults
