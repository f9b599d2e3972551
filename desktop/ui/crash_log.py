"""The crash log: what an unexpected error leaves behind, and telling the user where it is.

`install()` is called once when the GUI starts (`desktop/__main__.py`). From then on:

- an uncaught exception - in a Qt slot, in any thread, or one that ends the program - is
  written with its traceback and the versions of everything involved to
  `crash-<time>.log` in the per-user logs folder (`paths.logs_dir()`), the path is printed
  on stderr, and an error dialog names the file (one dialog at a time; errors while it is
  open are only logged);
- a Qt fatal message (`qFatal`, after which Qt aborts the process) is written the same way
  before Qt ends the process; Qt's other messages are passed on as before;
- a crash in native code (a segmentation fault) leaves the Python stacks of every thread in
  `faults.log` there (`faulthandler`).

Nothing here may raise: a crash handler that fails hides the crash it was meant to report,
so every failure to write or show is reduced to a line on stderr.
"""
from __future__ import annotations

import datetime
import faulthandler
import os
import platform
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QObject, Qt, QThread, QtMsgType, Signal, Slot, qInstallMessageHandler

from desktop.core import paths

DIALOG_NAME = "crashLogBox"
TITLE = "Machine Monitor: unexpected error"
# One run that fails in a loop must not fill the disk: after this many logs, only stderr.
MAX_LOGS_PER_RUN = 20

_state: dict = {"installed": False, "written": 0, "dialog": None, "faults": None, "relay": None}


def _versions() -> str:
    lines = [f"python {platform.python_version()} ({sys.executable})"]
    try:
        import PySide6
        from PySide6.QtCore import qVersion

        lines.append(f"PySide6 {PySide6.__version__}, Qt {qVersion()}")
    except Exception:  # noqa: BLE001 - a report must not fail on a version lookup
        pass
    try:
        from importlib.metadata import version

        lines.append(f"machine-monitor {version('machine-monitor')}")
    except Exception:  # noqa: BLE001 - an installed app carries no package metadata
        pass
    lines.append(f"installed app: {'yes' if getattr(sys, 'frozen', False) else 'no (run from a checkout)'}")
    lines.append(f"platform {platform.platform()}")
    return "\n".join(lines)


def write_crash_log(kind: str, details: str) -> Path | None:
    """Write one crash log; its path, or None when it could not be written (said on stderr)."""
    if _state["written"] >= MAX_LOGS_PER_RUN:
        print(f"Machine Monitor: {kind} (no more crash logs in this run):\n{details}", file=sys.stderr, flush=True)
        return None
    now = datetime.datetime.now().astimezone()
    text = (
        f"Machine Monitor crash log\n"
        f"what: {kind}\n"
        f"when: {now.isoformat(timespec='seconds')}\n"
        f"command line: {' '.join(sys.argv)}\n"
        f"process: {os.getpid()}, thread {threading.current_thread().name}\n"
        f"{_versions()}\n\n{details.rstrip()}\n"
    )
    try:
        folder = paths.logs_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = now.strftime("%Y%m%d-%H%M%S")
        path = folder / f"crash-{stamp}-{os.getpid()}.log"
        number = 1
        while path.exists():
            number += 1
            path = folder / f"crash-{stamp}-{os.getpid()}-{number}.log"
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"Machine Monitor: {kind}; the crash log could not be written ({exc}):\n{text}",
              file=sys.stderr, flush=True)
        return None
    _state["written"] += 1
    print(f"Machine Monitor: {kind}; crash log written to {path}", file=sys.stderr, flush=True)
    return path


def dialog_text(path: Path | None, summary: str) -> str:
    where = f"The details were written to\n{path}" if path else "The details could not be written to a file (see the terminal output)."
    return (f"Machine Monitor ran into an unexpected error:\n{summary}\n\n{where}\n\n"
            "Please send that file along when you report the problem.")


def _show_dialog(path: Path | None, summary: str) -> None:
    """The error dialog naming the log. Non-modal while the app runs (the app goes on; a
    second error while it is open is only logged); modal when the program is ending."""
    from PySide6.QtWidgets import QApplication, QMessageBox

    app = QApplication.instance()
    if not isinstance(app, QApplication) or _state["dialog"] is not None:
        return
    box = QMessageBox(QMessageBox.Icon.Critical, TITLE, dialog_text(path, summary))
    box.setObjectName(DIALOG_NAME)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)  # the path can be copied
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    _state["dialog"] = box
    box.finished.connect(lambda _result: _state.update(dialog=None))
    if QThread.currentThread().loopLevel() > 0:
        box.open()
    elif app.platformName() not in ("offscreen", "minimal"):
        box.exec()  # the program is ending: the user must still see where the log is
        _state["dialog"] = None


class _Relay(QObject):
    """Brings a crash in another thread to the GUI thread, where dialogs live."""

    crashed = Signal(object, str)  # log path (or None), one-line summary

    def __init__(self) -> None:
        super().__init__()
        # A method of an object of the GUI thread: emitted elsewhere, it runs there (queued).
        self.crashed.connect(self._on_crashed)

    @Slot(object, str)
    def _on_crashed(self, path: Path | None, summary: str) -> None:
        _show_dialog(path, summary)


def _summary(exc_type: type[BaseException], exc: BaseException) -> str:
    text = f"{exc_type.__name__}: {exc}"
    return text if len(text) <= 300 else text[:299] + "…"


def _report_exception(kind: str, exc_type, exc, tb: TracebackType | None) -> None:
    try:
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        path = write_crash_log(kind, details)
        summary = _summary(exc_type, exc)
        relay = _state["relay"]
        if relay is not None and QThread.currentThread() is not relay.thread():
            relay.crashed.emit(path, summary)
        else:
            _show_dialog(path, summary)
    except Exception as failure:  # noqa: BLE001 - see the module docstring
        print(f"Machine Monitor: the crash handler failed: {failure!r}", file=sys.stderr, flush=True)
        traceback.print_exception(exc_type, exc, tb)


def _excepthook(exc_type, exc, tb) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    _report_exception("uncaught exception", exc_type, exc, tb)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    _report_exception(f"uncaught exception in thread {name}", args.exc_type, args.exc_value, args.exc_traceback)


_previous_handler = None


def _qt_message_handler(mode: QtMsgType, context, message: str) -> None:
    if mode == QtMsgType.QtFatalMsg:
        where = ""
        if context is not None and getattr(context, "file", None):
            where = f" ({context.file}:{context.line}, {context.function})"
        stacks = "".join(traceback.format_stack())
        write_crash_log("Qt fatal error", f"Qt: {message}{where}\n\nPython stack at the time:\n{stacks}")
    if _previous_handler is not None:
        _previous_handler(mode, context, message)
    else:
        print(message, file=sys.stderr, flush=True)


def install() -> Path:
    """Install the handlers (once per process); returns the logs folder they write to."""
    global _previous_handler
    folder = paths.logs_dir()
    if _state["installed"]:
        return folder
    _state["installed"] = True
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    _previous_handler = qInstallMessageHandler(_qt_message_handler)
    _state["relay"] = _Relay()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Kept open for the life of the process: faulthandler writes from a signal handler.
        _state["faults"] = open(folder / "faults.log", "a", encoding="utf-8")  # noqa: SIM115
        faulthandler.enable(_state["faults"], all_threads=True)
    except OSError as exc:
        print(f"Machine Monitor: native crashes will not be logged ({exc})", file=sys.stderr, flush=True)
    return folder
