"""A producer process that dies in native code says where: every thread's Python stack in its log.

The real replay agent CLI (`python -m producer replay`) is started and, once it serves, sent
SIGABRT - what glibc raises when it finds a corrupted heap, the way a crash in a native
library ends the process. Its stderr (the service's log) must name the fatal error and show
the stacks of its threads, down to the producer's own code.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from repo_paths import REPO_ROOT


def test_a_native_crash_leaves_every_threads_stack_in_the_log(tmp_path):
    log_path = tmp_path / "replay.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "producer", "replay", "--port", "0"], cwd=REPO_ROOT,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while "listening=" not in log_path.read_text(errors="replace"):
            assert process.poll() is None, f"the replay agent exited early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"the replay agent did not start:\n{log_path.read_text()}"
            time.sleep(0.1)
        process.send_signal(signal.SIGABRT)
        assert process.wait(30) == -signal.SIGABRT
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    text = log_path.read_text(errors="replace")
    assert "Fatal Python error: Aborted" in text, text[-3000:]
    # The serving thread and the main thread, each with the producer's code on its stack.
    assert text.count("(most recent call first)") >= 2, text[-3000:]
    assert f"producer{os.sep}replay.py" in text.split("Fatal Python error: Aborted", 1)[1], text[-3000:]
