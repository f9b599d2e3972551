"""The local services' command lines and output contract, without any process handling.

In local mode the desktop starts three CLIs of the producer package as child processes:
`broker start` (prints progress lines, then `bootstrap=HOST:PORT`, exits 0 when ready),
`replay --port 0 --speed X` (prints `listening=URL`, runs until SIGTERM) and
`run --agent URL --bootstrap HOST:PORT` (runs until SIGTERM). `broker status` tells whether a
broker is already running (exit 0, `running bootstrap=...`) or not (exit 3). This module
builds those command lines - the app's own hidden `--run-module producer ...` passthrough,
as `python -m desktop --run-module producer ...` from a checkout and as the frozen app itself
in a PyInstaller build, so every child runs on the app's lifeline (`desktop.launcher`:
children die with the app, even a killed one) - and reads their
output line by line. `desktop.ui.services` drives the processes with QProcess.
"""
from __future__ import annotations

import re
import sys
from collections import deque
from enum import Enum
from typing import Sequence

from desktop.core.paths import is_frozen

PRODUCER_MODULE = "producer"
RUN_MODULE_FLAG = "--run-module"

BROKER = "broker"
REPLAY = "replay"
PRODUCER = "producer"
SERVICE_NAMES = (BROKER, REPLAY, PRODUCER)
SERVICE_LABELS = {BROKER: "Kafka broker", REPLAY: "replay agent", PRODUCER: "producer"}

BROKER_STATUS_STOPPED_EXIT = 3


class ServiceState(str, Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"


# Set in every child's environment: the pid of the app whose lifeline it is on.
APP_PID_ENV = "MACHINE_MONITOR_APP_PID"


def module_command(args: Sequence[str], module: str = PRODUCER_MODULE) -> tuple[str, list[str]]:
    """(program, arguments) that run `<module> <args>` through the app's launcher."""
    if is_frozen():
        return sys.executable, [RUN_MODULE_FLAG, module, *args]
    return sys.executable, ["-m", "desktop", RUN_MODULE_FLAG, module, *args]


def _data_dir_args(data_dir: str | None) -> list[str]:
    return ["--data-dir", data_dir] if data_dir else []


def broker_status_args(data_dir: str | None = None) -> list[str]:
    return ["broker", "status", *_data_dir_args(data_dir)]


def broker_start_args(data_dir: str | None = None) -> list[str]:
    return ["broker", "start", *_data_dir_args(data_dir)]


def broker_stop_args(data_dir: str | None = None) -> list[str]:
    return ["broker", "stop", *_data_dir_args(data_dir)]


# Where the local replay starts in each recorded day: at 19:00 UTC GFAgie01 and Mazak01 are
# cutting; Mazak03's day begins later and plays from its start. A demo that opens on
# machines idling for hours would show nothing worth monitoring.
REPLAY_START = "19:00:00"


def replay_args(speed: float, port: int = 0, start: str = REPLAY_START) -> list[str]:
    return ["replay", "--port", str(port), "--speed", f"{speed:g}", "--start", start]


def producer_args(agent_url: str, bootstrap: str, topic_prefix: str = "") -> list[str]:
    args = ["run", "--agent", agent_url, "--bootstrap", bootstrap]
    if topic_prefix:
        args += ["--topic-prefix", topic_prefix]
    return args


def value_of(line: str, key: str) -> str | None:
    """The value of a `key=value` token anywhere in a line (`running bootstrap=h:p` -> `h:p`)."""
    for token in line.split():
        name, sep, value = token.partition("=")
        if sep and name == key and value:
            return value
    return None


class LineReader:
    """Splits a child's output, which arrives in arbitrary chunks, into complete lines, and
    remembers the last few for error messages."""

    def __init__(self, keep: int = 20) -> None:
        self._partial = ""
        self.recent: deque[str] = deque(maxlen=keep)

    def feed(self, chunk: bytes | str) -> list[str]:
        text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        text = (self._partial + text).replace("\r\n", "\n").replace("\r", "\n")
        *lines, self._partial = text.split("\n")
        lines = [line.rstrip() for line in lines if line.strip()]
        self.recent.extend(lines)
        return lines

    def flush(self) -> list[str]:
        """The unterminated last line, once the process has ended."""
        rest, self._partial = self._partial.strip(), ""
        if rest:
            self.recent.append(rest)
            return [rest]
        return []

    def tail(self, count: int = 3) -> str:
        return " | ".join(list(self.recent)[-count:])


# `2026-11-28 00:12:01,123 INFO producer.broker: message` -> `message`
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\s+[A-Z]+\s+[\w.]+:\s*")


def progress_text(line: str) -> str:
    """A child's output line as a progress message: logging prefixes off, whitespace tidied."""
    return " ".join(_LOG_PREFIX.sub("", line).split())


def exit_message(name: str, exit_code: int | None, output_tail: str) -> str:
    """A one-line explanation of a service ending on its own, for the status bar."""
    label = SERVICE_LABELS.get(name, name)
    how = "crashed" if exit_code is None else f"exited with code {exit_code}"
    return f"{label} {how}" + (f": {output_tail}" if output_tail else "")
