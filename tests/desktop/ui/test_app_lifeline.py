"""Nothing the app starts outlives it: `python -m desktop` in local mode, killed with SIGKILL.

The app runs as a real process (offscreen, its own config and data folders) and starts the
real local services: a Kafka broker, the replay agent and the producer. Which processes
belong to it is read from the kernel, not from the app: every process whose environment
carries this test's data folder. After `kill -9` of the app, none of those may remain - and a
broker that was running before the app started (and that the app only used) must still run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from producer.broker import LocalBroker
from producer_process import process_state
from repo_paths import REPO_ROOT

pytestmark = pytest.mark.integration

SERVICES_TIMEOUT = 240.0  # a broker's first start formats its storage
GONE_TIMEOUT = 60.0


def processes_with_environment(name: str, value: str) -> dict[int, str]:
    """pid -> command line of every live (not zombie) process whose environment has name=value."""
    wanted = f"{name}={value}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if process_state(int(entry.name)) in (None, "Z"):
                continue
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
    return found


def where_it_is(pid: int) -> str:
    """What the kernel says of a process that should have ended: its state, signals, threads."""
    base = Path(f"/proc/{pid}")
    try:
        fields = dict(line.split(":", 1) for line in (base / "status").read_text().splitlines() if ":" in line)
        threads = [f"{(task / 'comm').read_text().strip()}@{(task / 'wchan').read_text() or '-'}"
                   for task in sorted((base / "task").iterdir())]
    except OSError as error:
        return f"({error})"
    shown = " ".join(f"{name}={fields[name].strip()}" for name in ("State", "PPid", "SigPnd", "ShdPnd", "SigIgn", "SigCgt") if name in fields)
    return f"{shown} threads: {', '.join(threads)}"


def wait_for(condition, timeout: float, what: str, app: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if app is not None and app.poll() is not None:
            pytest.fail(f"the app exited with {app.returncode} before {what}:\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.25)
    pytest.fail(f"not within {timeout:g} s: {what}" + (f"\napp output:\n{log.read_text()[-3000:]}" if log else ""))


class App:
    """`python -m desktop` in local mode with its own folders; everything it left is cleaned up."""

    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.config_dir = tmp_path / "config"
        self.log = tmp_path / "app.log"
        self.broker = LocalBroker(data_dir=self.data_dir / "broker", progress=lambda line: None)
        self.process: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        # The settings of someone past the first-run wizard: the defaults, local mode.
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "settings.json").write_text("{}")
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen",
               "MACHINE_MONITOR_DATA_DIR": str(self.data_dir), "MACHINE_MONITOR_CONFIG_DIR": str(self.config_dir)}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "desktop"], cwd=REPO_ROOT, env=env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self.process

    def family(self) -> dict[int, str]:
        """The app's processes and everything started from it (they inherit its environment)."""
        return processes_with_environment("MACHINE_MONITOR_DATA_DIR", str(self.data_dir))

    def producer_running(self) -> dict[int, str]:
        family = self.family()
        producers = [c for c in family.values() if " run --agent " in c]
        replays = [c for c in family.values() if " replay --port " in c]
        return family if producers and replays else {}

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        for pid in self.family():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.broker.stop()


@pytest.fixture
def app(tmp_path):
    app = App(tmp_path)
    try:
        yield app
    finally:
        app.cleanup()


def test_killed_app_leaves_no_broker_replay_or_producer(app):
    process = app.start()
    family = wait_for(app.producer_running, SERVICES_TIMEOUT, "the producer and replay agent run", process, app.log)
    broker_state = app.broker.status()
    assert broker_state is not None, f"no broker runs from {app.broker.data_dir}; processes: {family}"
    assert broker_state["pid"] in app.family(), "the broker is not one the app started"
    started = app.family()

    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    deadline = time.monotonic() + GONE_TIMEOUT
    while app.family() and time.monotonic() < deadline:
        time.sleep(0.25)
    left = app.family()
    assert not left, (f"{len(left)} of the app's {len(started)} processes outlived it by {GONE_TIMEOUT:g} s:\n"
                      + "\n".join(f"  {pid}: {command[:200]}\n    {where_it_is(pid)}" for pid, command in left.items()))
    assert app.broker.status() is None


def test_killed_app_leaves_a_broker_it_did_not_start_running(app):
    # The user's broker, started before the app (not from the app's environment).
    bootstrap = app.broker.start(timeout=180)
    broker_pid = app.broker.status()["pid"]
    process = app.start()
    family = wait_for(app.producer_running, SERVICES_TIMEOUT, "the producer and replay agent run", process, app.log)
    assert broker_pid not in family
    assert any(f"--bootstrap {bootstrap}" in command for command in family.values()), family

    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    wait_for(lambda: not app.family(), GONE_TIMEOUT, "the app's replay agent and producer end")
    # Whatever would stop the broker after the app's death has had time to do it.
    time.sleep(5)
    state = app.broker.status()
    assert state is not None and state["pid"] == broker_pid, "the app's death stopped a broker it did not start"
