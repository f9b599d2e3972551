"""How the app's child processes run: the producer's CLI on a lifeline to the app.

In local mode the app starts `broker start`, `replay` and `run` as child processes through
`python -m desktop --run-module producer ...` (the frozen app runs itself the same way). None
of them may outlive the app, however it ends - a SIGKILL or a crash runs none of the app's
own clean-up. The app passes its pid in `MACHINE_MONITOR_APP_PID`, and before the producer's
CLI starts, `tie_to_app` makes the child end when the app does:

- Linux: `prctl(PR_SET_PDEATHSIG, SIGTERM)`. The kernel sends SIGTERM the moment the parent
  dies, whatever killed it; the replay agent and the producer stop cleanly on SIGTERM.
- elsewhere (macOS, Windows): a daemon thread waits for the app to end (polling the parent
  pid on POSIX, a process handle on Windows) and raises SIGTERM in the child.

A clean stop that hangs must not keep a child alive either: the same thread (on Linux too)
ends the child with `os._exit` once `EXIT_GRACE_SECONDS` have passed since the app ended.

The broker needs more, because `broker start` starts it in a session of its own and exits
once it is ready: the broker must outlive that command, so no parent-death signal can reach
it. After a `broker start` that really started a broker (not one that was already running,
which the app reuses and never stops), the launcher starts a small watchdog process
(`--broker-watchdog`) that waits until either the app or that broker ends; if the app ends
first, it runs `broker stop`, the same clean stop as quitting the app. On Linux the watchdog
holds a pidfd of the app, handed over by the launcher while the app was still its parent,
so it cannot mistake a new process that got the app's pid for the app. If the app dies
while `broker start` is still starting the broker, the launcher's SIGTERM handler stops the
broker it was starting.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from desktop.core.services import APP_PID_ENV

WATCHDOG_FLAG = "--broker-watchdog"
_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 1.0
# How long a child may take to stop cleanly once the app is gone, before it exits at once.
EXIT_GRACE_SECONDS = 20.0
_IS_WINDOWS = sys.platform == "win32"


class _Terminated(Exception):
    """SIGTERM arrived while `broker start` was running."""


def app_pid_from_environment() -> int | None:
    text = os.environ.get(APP_PID_ENV, "")
    return int(text) if text.isdigit() and int(text) > 0 else None


# --------------------------------------------------------------------------- waiting for a pid


def _pid_alive(pid: int) -> bool:
    if _IS_WINDOWS:
        return _windows_wait(pid, 0) is False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _windows_wait(pid: int, milliseconds: int) -> bool | None:
    """True when the process ended within `milliseconds`, False when it still runs, None when
    it cannot be opened (already gone). Windows only."""
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    synchronize = 0x00100000
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        return None
    try:
        return kernel32.WaitForSingleObject(handle, milliseconds) == 0  # WAIT_OBJECT_0
    finally:
        kernel32.CloseHandle(handle)


def _set_parent_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _raise_sigterm() -> None:
    signal.raise_signal(signal.SIGTERM)


def _wait_for_app_end(app_pid: int) -> None:
    if _IS_WINDOWS:
        while _windows_wait(app_pid, 60_000) is False:
            pass
    else:
        # An orphan is adopted by another process: the parent pid changes when the app dies.
        while os.getppid() == app_pid:
            time.sleep(_POLL_SECONDS)


def _watch_parent(app_pid: int, send_sigterm: bool, exit_grace: float | None) -> None:
    """Once the app is gone: SIGTERM ourselves (where no parent-death signal did), then, if the
    clean stop has not ended the process within `exit_grace` seconds, end it at once."""
    _wait_for_app_end(app_pid)
    if send_sigterm:
        _raise_sigterm()
    if exit_grace is None:
        return
    time.sleep(exit_grace)
    # Still here: the clean stop hangs (a thread that does not end, a write that blocks).
    # The app is gone, so no one would ever stop this process; its stderr may be gone too.
    with contextlib.suppress(OSError, ValueError):
        print(f"{' '.join(sys.argv[:2])}: the app ended {exit_grace:g} s ago and the clean stop has not "
              "finished; exiting now", file=sys.stderr, flush=True)
    os._exit(128 + signal.SIGTERM)


def tie_to_app(app_pid: int, exit_grace: float | None = EXIT_GRACE_SECONDS) -> str:
    """End this process when the app `app_pid` ends: SIGTERM at once, which the producer's
    commands answer with a clean stop, and a hard exit `exit_grace` seconds later if that stop
    has not finished (None: never; for a command whose clean-up must not be cut short).
    Returns the mechanism that sends the SIGTERM."""
    mechanism = "thread"
    if _set_parent_death_signal(signal.SIGTERM):
        mechanism = "pdeathsig"
        # The app may have died before the signal was armed: then no one will send it.
        if os.getppid() != app_pid:
            _raise_sigterm()
        if exit_grace is None:
            return mechanism
    threading.Thread(target=_watch_parent, args=(app_pid, mechanism == "thread", exit_grace),
                     name="app-lifeline", daemon=True).start()
    return mechanism


# --------------------------------------------------------------------------- the broker


def _option(arguments: Sequence[str], name: str) -> str | None:
    for index, argument in enumerate(arguments):
        if argument == name and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
    return None


def _local_broker(data_dir: str | None):
    from producer.broker import LocalBroker

    return LocalBroker(data_dir=Path(data_dir)) if data_dir else LocalBroker()


def _open_app_pidfd(app_pid: int) -> int | None:
    """A pidfd of the app, while it is certainly our parent (Linux 5.3+), else None."""
    if not hasattr(os, "pidfd_open") or os.getppid() != app_pid:
        return None
    try:
        descriptor = os.pidfd_open(app_pid)
    except OSError:
        return None
    if os.getppid() != app_pid:  # the app died between the check and the open
        os.close(descriptor)
        return None
    return descriptor


def watchdog_command(app_pid: int, broker_pid: int, data_dir: str | None, app_pidfd: int | None) -> list[str]:
    if getattr(sys, "frozen", False):
        command = [sys.executable, WATCHDOG_FLAG]
    else:
        command = [sys.executable, "-m", "desktop", WATCHDOG_FLAG]
    command += ["--app-pid", str(app_pid), "--broker-pid", str(broker_pid)]
    if app_pidfd is not None:
        command += ["--app-pidfd", str(app_pidfd)]
    if data_dir:
        command += ["--data-dir", data_dir]
    return command


def _spawn_watchdog(app_pid: int, broker_pid: int, data_dir: str | None, app_pidfd: int | None, logs_dir: Path) -> None:
    logs_dir.mkdir(parents=True, exist_ok=True)
    options: dict = {"stdin": subprocess.DEVNULL, "close_fds": True}
    if _IS_WINDOWS:
        options["creationflags"] = 0x00000008 | 0x00000200  # DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
        app_pidfd = None
    else:
        # Its own session: a ^C in the app's terminal is the app's to handle, not the watchdog's.
        options["start_new_session"] = True
        if app_pidfd is not None:
            options["pass_fds"] = (app_pidfd,)
    with open(logs_dir / "watchdog.log", "ab") as log:
        subprocess.Popen(watchdog_command(app_pid, broker_pid, data_dir, app_pidfd),
                         stdout=log, stderr=subprocess.STDOUT, **options)


def _run_broker_start(arguments: list[str], app_pid: int) -> int:
    from producer.__main__ import main as producer_main

    data_dir = _option(arguments, "--data-dir")
    broker = _local_broker(data_dir)
    already = broker.status()
    app_pidfd = _open_app_pidfd(app_pid)

    def on_sigterm(signum: int, frame: object) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        code = int(producer_main(arguments) or 0)
        started = broker.status()
        if code == 0 and already is None and started:
            _spawn_watchdog(app_pid, int(started["pid"]), data_dir, app_pidfd, broker.logs_dir)
        return code
    except _Terminated:
        # The app is gone or is stopping us: a broker this start brought up must not remain.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        started = broker.status()
        if started and (already is None or started.get("pid") != already.get("pid")):
            print(f"stopping the broker this start brought up (pid {started['pid']})", file=sys.stderr, flush=True)
            broker.stop()
        return 128 + signal.SIGTERM
    finally:
        if app_pidfd is not None:
            os.close(app_pidfd)


def run_producer_cli(arguments: list[str]) -> int:
    """`--run-module producer ARGS`: the producer's CLI, tied to the app when it asks for it."""
    from producer.__main__ import main as producer_main

    app_pid = app_pid_from_environment()
    if app_pid is None:
        return int(producer_main(arguments) or 0)
    if arguments[:2] == ["broker", "start"]:
        # Its clean-up stops the broker it was bringing up: cutting that short would leave one.
        tie_to_app(app_pid, exit_grace=None)
        return _run_broker_start(arguments, app_pid)
    tie_to_app(app_pid)
    return int(producer_main(arguments) or 0)


# --------------------------------------------------------------------------- the watchdog


def _wait_with_pidfds(app_pidfd: int, broker_pid: int) -> str:
    try:
        broker_fd = os.pidfd_open(broker_pid)
    except OSError:
        return "broker"
    try:
        poller = select.poll()
        poller.register(app_pidfd, select.POLLIN)
        poller.register(broker_fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if app_pidfd in ready:
                return "app"
            if broker_fd in ready:
                return "broker"
    finally:
        os.close(broker_fd)


def _wait_by_polling(app_pid: int, broker_pid: int) -> str:
    while True:
        if not _pid_alive(app_pid):
            return "app"
        if not _pid_alive(broker_pid):
            return "broker"
        time.sleep(_POLL_SECONDS)


def run_broker_watchdog(argv: list[str]) -> int:
    """`--broker-watchdog --app-pid P --broker-pid B [--app-pidfd FD] [--data-dir D]`."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"machine-monitor {WATCHDOG_FLAG}")
    parser.add_argument("--app-pid", type=int, required=True)
    parser.add_argument("--broker-pid", type=int, required=True)
    parser.add_argument("--app-pidfd", type=int)
    parser.add_argument("--data-dir")
    options = parser.parse_args(argv)
    # The app's SIGINT/SIGTERM are for the app; this process ends with the broker or the app.
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if options.app_pidfd is not None:
        ended = _wait_with_pidfds(options.app_pidfd, options.broker_pid)
    else:
        ended = _wait_by_polling(options.app_pid, options.broker_pid)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    if ended == "broker":
        # The app stopping its broker on Quit ends it this way too: nothing is wrong, nothing to do.
        print(f"{stamp} broker pid {options.broker_pid} ended before the app (pid {options.app_pid}): stopped by "
              "the app, or restarted by it; nothing for the watchdog to do", flush=True)
        return 0
    broker = _local_broker(options.data_dir)
    state = broker.status()
    if not state or state.get("pid") != options.broker_pid:
        print(f"{stamp} app pid {options.app_pid} ended; broker pid {options.broker_pid} is already gone", flush=True)
        return 0
    print(f"{stamp} app pid {options.app_pid} ended without stopping its broker: stopping broker pid "
          f"{options.broker_pid}", flush=True)
    broker.stop()
    return 0
