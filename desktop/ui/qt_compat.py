"""A guard against a reference-counting bug in PySide6 6.12.0 on CPython 3.11.

`SignalInstance.emit()` returns `True` without taking a reference to it, so every signal
emitted from Python code (ours and pyqtgraph's, many per frame) drops one reference to the
`True` object. On CPython 3.12+ `True` is immortal and nothing happens; on 3.11 its count
reaches zero after some thousands of emits and the interpreter aborts with "Fatal Python
error: bool_dealloc". `apply()` measures one emit and, only if the count went down, raises
the counts of `True` and `False` so far that they can never reach zero - what 3.12 does
for all builtin singletons. It is a no-op once PySide6 is fixed or on a newer Python.
"""
from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

# Far more emits than any session makes, far below overflow.
_PIN = 1 << 40
_applied = False


class _Probe(QObject):
    probed = Signal()


def emit_drops_a_reference_to_true() -> bool:
    probe = _Probe()
    before = sys.getrefcount(True)
    probe.probed.emit()
    after = sys.getrefcount(True)
    if after < before:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))  # give back what the probe took
        return True
    return False


def apply() -> bool:
    """Pin True/False if this PySide6 needs it; True when the guard was applied."""
    global _applied
    if _applied or sys.version_info >= (3, 12):
        return _applied
    if emit_drops_a_reference_to_true():
        for singleton in (True, False):
            ctypes.c_ssize_t.from_address(id(singleton)).value += _PIN
        _applied = True
    return _applied
