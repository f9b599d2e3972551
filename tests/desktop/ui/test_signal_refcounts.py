"""Signals must not leak or steal references to what they carry.

PySide6 6.12.0 loses a reference to `True`/`False`/`None` whenever a signal carries one (or
returns one from `emit`); on CPython 3.11, where those singletons are not immortal, their
count runs down until the interpreter aborts with `Fatal Python error: bool_dealloc` (or
`none_dealloc`) - the app died within minutes of live data. The app's feed thread emits
queued signals to the GUI thread all day, so this test does the same at volume: a worker
thread emits queued signals carrying True, False, None and plain objects to a QObject on the
GUI thread, the GUI thread delivers them, and the reference counts of the singletons must be
what they were before. On 3.12+ the singletons are immortal and their counts never move, so
the test then checks only that delivery is complete and the process survives.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading

from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal

EMITS = 100_000
PROCESS_EVENTS_CALLS = 10_000
# Other code may hold or drop a handful of references while the test runs (pytest, the
# logging machinery, Qt's own Python wrappers). A leak of one reference per emit would move
# a count by tens of thousands, so a slack of a few references cannot hide it.
SLACK = 16


class Receiver(QObject):
    """Lives on the GUI thread; counts what it received, keeps nothing."""

    value_received = Signal(object)
    pair_received = Signal(bool, object)

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.objects_received = 0
        self.value_received.connect(self._on_value_received, Qt.ConnectionType.QueuedConnection)
        self.pair_received.connect(self._on_pair_received, Qt.ConnectionType.QueuedConnection)

    def _on_value_received(self, value: object) -> None:
        self.received += 1
        if value is not None and not isinstance(value, bool):
            self.objects_received += 1

    def _on_pair_received(self, flag: bool, value: object) -> None:
        self.received += 1


class Marker:
    """A plain object: must be released once delivered."""


def singleton_counts() -> dict[str, int]:
    return {"True": sys.getrefcount(True), "False": sys.getrefcount(False), "None": sys.getrefcount(None)}


def run_probe() -> dict:
    """Emit from a worker thread, deliver on this (the GUI) thread; the counts before and after."""
    app = QCoreApplication.instance() or QCoreApplication([sys.argv[0]])
    receiver = Receiver()
    gc.collect()
    before = singleton_counts()
    marker_refs_before = sys.getrefcount(Marker)

    def emit_from_worker() -> None:
        values = (True, False, None)
        for index in range(EMITS):
            receiver.value_received.emit(values[index % 3])
            if index % 10 == 0:
                receiver.value_received.emit(Marker())
                receiver.pair_received.emit(index % 20 == 0, None)

    worker = threading.Thread(target=emit_from_worker, name="signal-emitter")
    worker.start()
    expected = EMITS + 2 * (EMITS // 10)
    calls = 0
    # Deliver on the GUI thread, the way the event loop does, while the worker is emitting.
    while (worker.is_alive() or receiver.received < expected) and calls < 50_000_000:
        app.processEvents()
        calls += 1
    worker.join()
    # Idle processEvents() calls must not touch the counts either.
    for _ in range(PROCESS_EVENTS_CALLS):
        app.processEvents()
    gc.collect()
    after = singleton_counts()
    result = {
        "expected": expected,
        "received": receiver.received,
        "objects_received": receiver.objects_received,
        "before": before,
        "after": after,
        "marker_refs_drift": sys.getrefcount(Marker) - marker_refs_before,
        "markers_alive": sum(1 for o in gc.get_objects() if isinstance(o, Marker)),
        "process_events_calls": calls + PROCESS_EVENTS_CALLS,
    }
    receiver.deleteLater()
    app.processEvents()
    gc.collect()
    return result


def test_queued_signals_keep_singleton_refcounts_and_the_process_alive():
    # In a process of its own: a PySide6 with the bug aborts the interpreter, and that must
    # be this test's failure (with Python's fatal error text), not the end of the test run.
    completed = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=240,
                               env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert completed.returncode == 0, (
        f"the process died (exit {completed.returncode}) emitting signals that carry True/False/None:\n"
        + completed.stderr[-3000:]
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["received"] == result["expected"], result
    assert result["objects_received"] == EMITS // 10, result
    before, after = result["before"], result["after"]
    drift = {name: after[name] - before[name] for name in before}
    assert all(abs(change) <= SLACK for change in drift.values()), (
        f"reference counts moved by {drift} over {result['expected']} queued signals and "
        f"{result['process_events_calls']} processEvents() calls (before {before}, after {after})"
    )
    # Delivered objects are released: nothing keeps the markers (or their class) alive.
    assert result["marker_refs_drift"] <= SLACK and result["markers_alive"] == 0, result


if __name__ == "__main__":
    print(json.dumps(run_probe()), flush=True)
