"""The GUI thread first: the feed and core threads step aside while it draws.

The feed, core and GUI threads share one Python interpreter, and only one of them runs
Python at a time. Under a plant's stream the feed and core threads always have work, so each
time the GUI thread comes back from a Qt call it waited for the interpreter - up to the
interpreter's switch interval, and a frame makes many such calls. That is what made the
event loop seconds late while the GUI's own work was milliseconds.

`GuiPriority` is the arrangement between them: the GUI side says when it starts work (a
redraw, an update to apply: `gui_busy`) and when that work and the events it caused are
done (`gui_idle`); the worker threads call `step_aside` between chunks of their work, which
waits (without holding the interpreter) while the GUI is busy - for at most `max_wait`
seconds, so a GUI that is never idle slows the data path down but cannot stop it.
`favour_short_turns` sets the interpreter's switch interval to `SWITCH_INTERVAL`, so that
within a chunk, too, the GUI thread waits at most that long for its turn. Nothing here
imports Qt: the window calls `gui_busy` and `gui_idle`.
"""
from __future__ import annotations

import sys
import threading
import time

# Seconds a worker waits at most per `step_aside` for the GUI to finish.
MAX_WAIT = 0.02
# The interpreter's switch interval while the window runs (CPython's default is 5 ms).
SWITCH_INTERVAL = 0.0005


class GuiPriority:
    """Worker threads wait for an idle GUI between chunks of work (see the module docstring)."""

    def __init__(self, max_wait: float = MAX_WAIT) -> None:
        """Made on the GUI thread: that thread never waits for itself."""
        self.max_wait = max_wait
        self._gui_thread = threading.get_ident()
        self._idle = threading.Event()
        self._idle.set()
        # How often a worker waited, and for how long in all (seconds): for the benchmark.
        self.waits = 0
        self.waited = 0.0

    def gui_busy(self) -> None:
        self._idle.clear()

    def gui_idle(self) -> None:
        self._idle.set()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def step_aside(self) -> None:
        """From a worker thread between chunks: let a busy GUI thread run first."""
        if self._idle.is_set() or threading.get_ident() == self._gui_thread:
            return
        began = time.perf_counter()
        self._idle.wait(self.max_wait)
        self.waits += 1
        self.waited += time.perf_counter() - began


def favour_short_turns(interval: float = SWITCH_INTERVAL) -> float:
    """Set the interpreter's switch interval; returns the previous one."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    return previous


def no_pause() -> None:
    """The `step_aside` of a data path that has no GUI to give way to."""
