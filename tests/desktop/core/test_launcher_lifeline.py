"""A child on the app's lifeline ends when the app is killed, even when its clean stop hangs.

Real processes, no Qt: a stand-in for the app starts a child that ties itself to it with
`desktop.launcher.tie_to_app`; the child's SIGTERM handler records the signal and then never
returns, as a clean stop stuck on a thread or a blocked write would. The stand-in is killed
with SIGKILL; the child must have been told (SIGTERM) and must then be gone soon after the
grace period, saying why on its stderr.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from producer_process import process_state
from repo_paths import REPO_ROOT

GRACE = 1.5

CHILD = textwrap.dedent(f"""
    import os, signal, sys, time
    from pathlib import Path
    from desktop import launcher

    marker = Path(sys.argv[1])

    def stuck_clean_stop(signum, frame):
        marker.write_text("SIGTERM")
        while True:  # a clean stop that never finishes
            time.sleep(0.05)

    signal.signal(signal.SIGTERM, stuck_clean_stop)
    launcher.tie_to_app(os.getppid(), exit_grace={GRACE})
    print(os.getpid(), flush=True)
    time.sleep(600)
""")

APP = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]],
                             stdout=subprocess.PIPE, stderr=open(sys.argv[3], "wb"), text=True)
    print(child.stdout.readline().strip(), flush=True)
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z")


def test_child_whose_clean_stop_hangs_still_ends_after_the_app_is_killed(tmp_path):
    marker, stderr = tmp_path / "sigterm", tmp_path / "child.err"
    app = subprocess.Popen([sys.executable, "-c", APP, CHILD, str(marker), str(stderr)], cwd=REPO_ROOT,
                           env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.PIPE, text=True)
    child_pid = 0
    try:
        child_pid = int(app.stdout.readline())
        assert alive(child_pid)
        time.sleep(0.5)
        assert alive(child_pid) and not marker.exists(), "the child ended while the app still ran"

        app.kill()
        app.wait(10)
        killed = time.monotonic()
        while alive(child_pid) and time.monotonic() - killed < GRACE + 10:
            time.sleep(0.05)
        waited = time.monotonic() - killed

        assert marker.read_text() == "SIGTERM", "the child was not asked to stop cleanly"
        assert not alive(child_pid), f"the child still runs {waited:.1f} s after the app was killed"
        assert waited >= GRACE, f"the child was cut off after {waited:.1f} s, before its {GRACE} s grace"
        assert "the clean stop has not finished; exiting now" in stderr.read_text()
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(10)
        app.stdout.close()
        if child_pid and alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)
