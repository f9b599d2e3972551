"""`python -m producer run` as a real subprocess for the tests: its log, its exit, its memory.

Every incarnation's output goes to one log file, so a failing test can show what the producer
said. `peak_rss_mb` reads the kernel's high-water mark of the process (VmHWM), sampled while it
runs, so it is the most memory the producer ever held.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from repo_paths import REPO_ROOT


def vm_hwm_mb(pid: int) -> float | None:
    """The peak resident set size of a live process, in MB (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process (R, S, D, Z...), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class ProducerProcess:
    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.started: list[subprocess.Popen] = []
        self._peak_rss_mb = 0.0

    def start(self, agents: Sequence[str], bootstrap: str, prefix: str, *extra: str,
              config: Path | None = None, verbose: bool = False) -> subprocess.Popen:
        assert self.process is None or self.process.poll() is not None, "the previous producer is still running"
        command = [sys.executable, "-m", "producer", *(["--verbose"] if verbose else []), "run",
                   "--bootstrap", bootstrap, "--topic-prefix", prefix]
        for agent in agents:
            command += ["--agent", agent]
        if config is not None:
            command += ["--config", str(config)]
        command += list(extra)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== producer #{len(self.started) + 1} started at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.started.append(self.process)
        return self.process

    def note(self, text: str) -> None:
        """A marker line in the producer's log, so the log shows what the test did when."""
        with open(self.log_path, "ab") as log:
            log.write(f"===== {text} at {time.strftime('%H:%M:%S')} =====\n".encode())

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.note(f"producer pid {self.process.pid} SIGKILLed")

    def grep(self, needle: str) -> list[str]:
        return [line for line in self.log().splitlines() if needle in line]

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def sample_rss(self) -> float:
        if self.process is not None:
            peak = vm_hwm_mb(self.process.pid)
            if peak is not None:
                self._peak_rss_mb = max(self._peak_rss_mb, peak)
        return self._peak_rss_mb

    @property
    def peak_rss_mb(self) -> float:
        return self.sample_rss()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def lines(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.log().splitlines() if regex.search(line)]

    def wait_for_log(self, pattern: str, timeout: float, count: int = 1) -> list[str]:
        """The log lines matching `pattern` once there are `count` of them; the process must stay up."""
        deadline = time.monotonic() + timeout
        while True:
            self.sample_rss()
            found = self.lines(pattern)
            if len(found) >= count:
                return found
            if not self.alive:
                raise AssertionError(f"the producer exited (code {self.process.returncode}) before logging "
                                     f"{pattern!r}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} log line(s) matching {pattern!r} within {timeout:.0f} s\n{self.tail()}")
            time.sleep(0.1)

    def terminate(self, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took). A producer that does not stop in time fails the test."""
        assert self.process is not None
        self.sample_rss()
        if self.process.poll() is not None:
            raise AssertionError(f"the producer had already exited with {self.process.returncode} before SIGTERM"
                                 f"\n{self.tail()}")
        self.note(f"SIGTERM to producer pid {self.process.pid}")
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
            raise AssertionError(f"the producer did not stop within {timeout:.0f} s of SIGTERM\n{self.tail()}") from None
        return code, time.monotonic() - started

    def tail(self, lines: int = 60) -> str:
        text = self.log().splitlines()
        return f"--- producer log {self.log_path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                try:
                    process.send_signal(signal.SIGCONT)  # a stopped process must be able to die
                    process.kill()
                except ProcessLookupError:
                    pass
                process.wait(30)
