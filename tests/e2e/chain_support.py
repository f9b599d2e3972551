"""The whole chain for the end-to-end tests and the alarm benchmark: seeding the producer's
checkpoint, waiting for it to catch up, counting what the feed reads, and the processes the
tests start - `python -m producer replay` (killable like a crash) and a station of its own
(`alarm_station.py`) that takes commands on stdin and reports on stdout."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Producer

import kafka_readers
from producer import wire
from producer_process import ProducerProcess
from repo_paths import REPO_ROOT

E2E = Path(__file__).resolve().parent


def seed_checkpoint(bootstrap: str, prefix: str, agent_url: str, instance_id: int) -> None:
    """A checkpoint at sequence 1 for the agent's instance, so the producer publishes every
    observation the agent holds instead of starting from `current` (which folds the past
    into one snapshot)."""
    seed = Producer({"bootstrap.servers": bootstrap, "acks": "all", "logger": kafka_readers.KAFKA_LOG})
    seed.produce(wire.topic_name(wire.CHECKPOINTS, prefix), key=wire.agent_key(agent_url),
                 value=wire.encode(wire.checkpoint_value(agent_url, instance_id, 1)))
    assert seed.flush(30) == 0


def wait_for_checkpoint(bootstrap: str, prefix: str, agent_url: str, next_sequence: int, timeout: float = 180.0,
                        producer: ProducerProcess | None = None) -> None:
    """Until the producer has committed everything below `next_sequence`."""
    deadline = time.monotonic() + timeout
    while True:
        checkpoint = kafka_readers.latest_checkpoint(bootstrap, prefix, agent_url)
        if checkpoint is not None and checkpoint["next_sequence"] >= next_sequence:
            return
        if producer is not None and not producer.alive:
            raise AssertionError(f"the producer exited\n{producer.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"producer at {checkpoint} after {timeout:.0f} s, agent at {next_sequence}"
                                 + (f"\n{producer.tail()}" if producer else ""))
        time.sleep(0.5)


def records_in_feed_topics(bootstrap: str, prefix: str) -> int:
    """How many records the desktop's feed reads in all: devices, agent status, observations."""
    return sum(len(kafka_readers.read_topic(bootstrap, wire.topic_name(base, prefix)))
               for base in (wire.DEVICES, wire.AGENT_STATUS, wire.OBSERVATIONS))


class ReplayProcess:
    """`python -m producer replay` as its own process, so the test can kill it as a crash would."""

    def __init__(self, log_path: Path, *arguments: str) -> None:
        self.log_path = log_path
        self.arguments = arguments
        self.process: subprocess.Popen | None = None
        self.started: list[tuple[subprocess.Popen, threading.Thread]] = []
        self.url: str | None = None

    def start(self, port: int = 0, timeout: float = 120.0) -> str:
        command = [sys.executable, "-m", "producer", "replay", "--port", str(port), *self.arguments]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        deadline = time.monotonic() + timeout
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda out=self.process.stdout: [lines.put(line) for line in out], daemon=True)
        reader.start()
        self.started.append((self.process, reader))
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic())).decode().strip()
            except queue.Empty:
                raise AssertionError(f"the replay agent did not say where it listens within {timeout:.0f} s\n"
                                     + self.log_path.read_text(errors="replace")[-3000:]) from None
            if line.startswith("listening="):
                self.url = line.split("=", 1)[1]
                return self.url

    @property
    def port(self) -> int:
        assert self.url is not None
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> float:
        """SIGKILL, as a crash or a pulled plug; the wall-clock time it was sent."""
        assert self.process is not None
        killed_at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        return killed_at

    def cleanup(self) -> None:
        for process, reader in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(30)
            reader.join(30)  # the pipe ends with the process
            process.stdout.close()


class StationProcess:
    """`alarm_station.py` as its own OS process: commands in on stdin, reports out on stdout."""

    def __init__(self, name: str, bootstrap: str, prefix: str, data_dir: Path, start_time: float) -> None:
        self.name = name
        self.stderr_path = data_dir.parent / f"{name}.stderr.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(E2E / "alarm_station.py"), "--bootstrap", bootstrap, "--topic-prefix", prefix,
                   "--station", name, "--data-dir", str(data_dir), "--start-time", str(start_time)]
        path = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=stderr, text=True, bufsize=1,
                                            env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"})
        self.reports: list[dict] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"{name}-reports", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.strip():
                report = json.loads(line)
                with self._lock:
                    self.reports.append(report)

    def tail(self) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            text = ""
        return f"--- {self.name} stderr (last 3000 characters) ---\n{text[-3000:]}"

    def send(self, **command) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def found(self, report: str, **fields) -> list[dict]:
        with self._lock:
            return [r for r in self.reports if r["report"] == report and all(r.get(k) == v for k, v in fields.items())]

    def wait_for(self, report: str, timeout: float, what: str = "", count: int = 1, **fields) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.found(report, **fields)
            if len(found) >= count:
                return found
            failed = self.found("failed")
            if failed or self.process.poll() is not None:
                raise AssertionError(f"station {self.name} ended: {failed}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"station {self.name}: no {report} {fields} within {timeout:.0f} s {what}\n{self.tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 60.0) -> int:
        """Ask the station to stop (it closes its clients and journal); its exit code."""
        try:
            if self.process.poll() is None:
                try:
                    self.send(command="stop")
                except (BrokenPipeError, ValueError):
                    pass
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(30)
                    raise AssertionError(f"station {self.name} did not stop within {timeout:.0f} s\n{self.tail()}") from None
            return self.process.returncode
        finally:
            self._close_pipes()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._close_pipes()

    def _close_pipes(self) -> None:
        self._reader.join(30)  # the reports end with the process
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except (BrokenPipeError, OSError):
                pass
