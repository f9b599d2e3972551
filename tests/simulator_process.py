"""`python -m producer simulate` as a subprocess for the tests: many simulated agents over real
HTTP from one process, started until it has written its agents' URLs, stopped with SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from repo_paths import REPO_ROOT


class Simulator:
    def __init__(self, tmp_path: Path, agents: int, rate: float, buffers: list[int], *extra: str):
        self.urls_file = tmp_path / "agents.json"
        self.log_path = tmp_path / "simulator.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "producer", "simulate", "--agents", str(agents), "--rate", str(rate),
                 "--buffer", ",".join(map(str, buffers)), "--urls-file", str(self.urls_file), *extra],
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while not self.urls_file.exists():
            assert self.process.poll() is None, f"the simulator exited\n{self.log_path.read_text()}"
            assert time.monotonic() < deadline, "the simulator did not start within 60 s"
            time.sleep(0.1)
        self.urls: list[str] = json.loads(self.urls_file.read_text())
        self.buffers = {url: buffers[i % len(buffers)] for i, url in enumerate(self.urls)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
