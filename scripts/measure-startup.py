"""Start-up figures of the installed app, as a user meets them, for docs/benchmarks.md:

    .venv/bin/python scripts/measure-startup.py dist/MachineMonitor [--rounds 3]

Each start runs `MachineMonitor --screenshot PNG --after 0` on its own Xvfb display (a real
X server, as on a desktop), with fresh per-user folders holding settings that are past the
first-run wizard (local mode). Measured from the moment the process is spawned:

- **window**: until the main window is mapped on the display (polled with `xwininfo`
  every 20 ms);
- **first data**: until the app prints that the first observations reached the window
  (they came from the replay agent through the producer and Kafka);
- **CPU to first data**: the CPU time (user + system) the app and every process it started
  (broker, replay agent, producer) had used since the spawn, from /proc/<pid>/stat - the figure that
  compares across machine loads, where the wall-clock ones stretch with the load. Each line
  also gives the load average.

Four kinds of start: *cold* - none of the app's files (nor the Java runtime's) are in the
page cache (each is dropped with posix_fadvise DONTNEED, which touches no other file), a new
data folder (the broker formats its storage) - and *warm* - the same start again; each with
no broker running (the app starts its own) and with the embedded broker already running
(started before with `MachineMonitor producer broker start`, which the app then uses).
`--broker none|running` measures only one of the two. A start that fails (the app gives up
when no data came within 120 s, which a heavily loaded machine can cause) is reported on its
line and the other starts still run; the exit status is then 1. The last line, `BENCH
startup ...`, has the cold starts' medians and the load average.
Needs Xvfb and xwininfo (x11-utils).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL_S = 0.02
TIMEOUT_S = 600.0  # a loaded machine can take minutes
WINDOW_TITLE = b"Machine Monitor"


def drop_from_page_cache(folder: Path) -> int:
    count = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                count += 1
            finally:
                os.close(fd)
    return count


def start_xvfb(display: int) -> subprocess.Popen:
    server = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if subprocess.run(["xwininfo", "-root", "-display", f":{display}"], capture_output=True).returncode == 0:
            return server
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"Xvfb :{display} did not start")


def window_mapped(display: int) -> bool:
    """A top-level window titled Machine Monitor... is on the screen (mapped and viewable)."""
    tree = subprocess.run(["xwininfo", "-root", "-tree", "-display", f":{display}"], capture_output=True).stdout
    for line in tree.splitlines():
        fields = line.split(None, 1)
        if len(fields) > 1 and fields[0].startswith(b"0x") and fields[1].startswith(b'"' + WINDOW_TITLE):
            info = subprocess.run(["xwininfo", "-id", fields[0].decode(), "-display", f":{display}"],
                                  capture_output=True).stdout
            if b"Map State: IsViewable" in info:
                return True
    return False


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int, marker: str) -> float:
    """User + system CPU seconds of `root`, of every process whose command line holds
    `marker` (the start's own folder: the broker runs detached from the app, and reads its
    configuration from there), and of all their descendants still running."""
    stats = {}
    roots = {root}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
            if marker.encode() in command:
                roots.add(int(entry.name))
    tree, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _ticks) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(stats[pid][1] for pid in tree if pid in stats) / CLOCK_TICKS


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def one_start(app: Path, env: dict, display: int, shot: Path) -> tuple[float, float, float]:
    marker = str(shot.parent)
    # A broker already running has spent CPU before this start: only what comes after counts.
    cpu_before = tree_cpu_s(-1, marker)
    started = time.monotonic()
    process = subprocess.Popen([str(app), "--screenshot", str(shot), "--after", "0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    window_s = first_data_s = cpu_s = None
    os.set_blocking(process.stdout.fileno(), False)
    buffer = ""
    while time.monotonic() - started < TIMEOUT_S:
        if window_s is None and window_mapped(display):
            window_s = time.monotonic() - started
        try:
            chunk = process.stdout.read()
        except (BlockingIOError, TypeError):
            chunk = None
        if chunk:
            buffer += chunk
            if first_data_s is None and "first observations received" in buffer:
                first_data_s = time.monotonic() - started
                cpu_s = tree_cpu_s(process.pid, marker) - cpu_before
        if process.poll() is not None and first_data_s is not None:
            break
        if process.poll() is not None:
            rest = process.stdout.read() or ""
            window = f"window at {window_s:.1f} s" if window_s is not None else "no window"
            raise SystemExit(f"the app exited with {process.returncode} before its first data ({window}):\n"
                             f"{(buffer + rest)[-3000:]}\n({window})")
        time.sleep(POLL_S)
    process.wait(120)
    if window_s is None or first_data_s is None:
        raise SystemExit(f"no window or no data within {TIMEOUT_S:g} s:\n{buffer[-3000:]}")
    return window_s, first_data_s, cpu_s


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, help="the app folder (dist/MachineMonitor)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--display", type=int, default=97)
    parser.add_argument("--broker", choices=("both", "none", "running"), default="both",
                        help="the starts with no broker running, with the broker already running, or both")
    args = parser.parse_args()
    folder = args.folder.resolve()
    app = folder / "MachineMonitor"
    if not shutil.which("Xvfb") or not shutil.which("xwininfo"):
        raise SystemExit("needs Xvfb and xwininfo (apt-get install xvfb x11-utils)")
    server = start_xvfb(args.display)
    results: dict[str, list[tuple[float, float, float]]] = {}
    failures = 0
    try:
        for round_number in range(args.rounds):
            for broker_running in {"both": (False, True), "none": (False,), "running": (True,)}[args.broker]:
                base = Path(tempfile.mkdtemp(prefix="mm-start-"))
                env = {**os.environ, "DISPLAY": f":{args.display}", "QT_QPA_PLATFORM": "xcb",
                       "MACHINE_MONITOR_DATA_DIR": str(base / "data"), "MACHINE_MONITOR_CONFIG_DIR": str(base / "config"),
                       "MACHINE_MONITOR_LOG_DIR": str(base / "logs"), "MACHINE_MONITOR_CACHE_DIR": str(base / "cache")}
                env.pop("JAVA_HOME", None)
                (base / "config").mkdir(parents=True)
                (base / "config" / "settings.json").write_text("{}")
                try:
                    if broker_running:
                        subprocess.run([str(app), "producer", "broker", "start"], env=env, check=True,
                                       capture_output=True, timeout=TIMEOUT_S)
                    for kind in ("cold", "warm"):
                        if kind == "cold":
                            drop_from_page_cache(folder)
                        load_before = load_average()
                        label = f"{kind}, {'broker already running' if broker_running else 'no broker running'}"
                        try:
                            window_s, data_s, cpu_s = one_start(app, env, args.display, base / "shot.png")
                        except SystemExit as failed:
                            # A start that fails (on a loaded machine: the app's own 120 s limit
                            # for the first data) is reported; the other starts still run.
                            print(f"round {round_number + 1}: {label}: FAILED (load average {load_before} before, "
                                  f"{load_average()} after): {' '.join(str(failed).strip().splitlines()[-2:])}", flush=True)
                            failures += 1
                            continue
                        results.setdefault(label, []).append((window_s, data_s, cpu_s))
                        print(f"round {round_number + 1}: {label}: window {window_s:.1f} s, first data {data_s:.1f} s, "
                              f"CPU to first data {cpu_s:.1f} s (load average {load_before} before, "
                              f"{load_average()} after)", flush=True)
                finally:
                    subprocess.run([str(app), "producer", "broker", "stop"], env=env, capture_output=True, timeout=120)
                    shutil.rmtree(base, ignore_errors=True)
    finally:
        server.terminate()
        server.wait(10)
    print("\n| start | window (median, min–max) | first data (median, min–max) | CPU to first data (median) |\n"
          "|---|---|---|---|")
    for label, values in results.items():
        windows = [w for w, _, _ in values]
        datas = [d for _, d, _ in values]
        cpus = [c for _, _, c in values]
        print(f"| {label} | {statistics.median(windows):.1f} s ({min(windows):.1f}–{max(windows):.1f}) "
              f"| {statistics.median(datas):.1f} s ({min(datas):.1f}–{max(datas):.1f}) | {statistics.median(cpus):.1f} s |")
    figures = []
    for label, key in (("cold, no broker running", "cold"), ("cold, broker already running", "cold_broker_running")):
        values = results.get(label)
        if values:
            figures.append(f"{key}_window_s={statistics.median(w for w, _, _ in values):.1f} "
                           f"{key}_first_data_s={statistics.median(d for _, d, _ in values):.1f} "
                           f"{key}_cpu_s={statistics.median(c for _, _, c in values):.1f}")
    print(f"BENCH startup {' '.join(figures) or 'no start succeeded'} rounds={args.rounds} failed={failures} "
          f"cores={os.cpu_count()} load_average={load_average()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
