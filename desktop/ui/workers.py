"""The threads behind the window, and the Qt signals they report through.

`FeedWorker` runs the Kafka consumer (consume, decode, validate) from a plain Python thread:
by default in a process of its own (`desktop.core.feed_process.FeedProcess`, the thread
reads its batches), or with `separate_process=False` as `desktop.core.feed.Feed.run` on the
thread itself. With a `sink` (the window's `CoreWorker.offer_batch`) every batch
goes straight to the core thread without touching the GUI thread; without one (the self-test)
each batch is a queued `batch_received` signal and the receiver calls `batch_consumed`.
`status_changed` carries the connection state, `feed_failed` an error that ended the feed -
the thread never dies silently. `stop` sets the stop event and joins; the consumer is closed
by the feed in `finally`.

`CoreWorker` runs `desktop.core.monitor.CoreRunner`: model, machine state, alarm engine and
journal on their own thread; the GUI gets one `update_ready(ViewUpdate)` per (merged) update
and calls `update_consumed` once it has applied it. `submit(fn)` is the command path for
user actions (acknowledge, shelve, unshelve...): `fn(core)` runs on the core thread between
batches, its events come back with the next update, its result through the returned Future.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

from desktop.core.batch import Batch
from desktop.core.feed import Feed, FeedConfig
from desktop.core.feed_process import FeedProcess, failure_text
from desktop.core.gui_priority import no_pause
from desktop.core.monitor import CoreRunner, MonitorCore, ViewUpdate

BatchSink = Callable[[Batch, Callable[[], None]], None]


class FeedWorker(QObject):
    batch_received = Signal(object)  # Batch
    status_changed = Signal(str, str)  # state, detail
    feed_failed = Signal(str)  # why the feed ended
    feed_stopped = Signal()

    def __init__(self, config: FeedConfig, parent: QObject | None = None, sink: BatchSink | None = None,
                 pause: Callable[[], None] = no_pause, separate_process: bool = True) -> None:
        super().__init__(parent)
        self.config = config
        self._sink = sink
        self._feed: Feed | FeedProcess = FeedProcess(config) if separate_process else Feed(config, pause)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name="kafka-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._sink is not None:
                sink, release = self._sink, self._feed.gate.release
                on_batch = lambda batch: sink(batch, release)  # noqa: E731
            else:
                on_batch = self.batch_received.emit
            self._feed.run(self._stop_event, on_batch, self.status_changed.emit)
        except Exception as exc:  # noqa: BLE001 - any failure must reach the GUI, not vanish
            self.feed_failed.emit(failure_text(exc))
        finally:
            self.feed_stopped.emit()

    @property
    def feed(self) -> Feed | FeedProcess:
        return self._feed

    def batch_consumed(self) -> None:
        """The GUI has applied the last batch: the next one (or the merged backlog) may come."""
        self._feed.gate.release()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop and join; True when the thread ended within `timeout` seconds."""
        self._stop_event.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()



class CoreWorker(QObject):
    update_ready = Signal(object)  # ViewUpdate

    def __init__(self, core: MonitorCore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.core = core
        self.runner = CoreRunner(core, self.update_ready.emit)

    def start(self) -> None:
        self.runner.start()

    def stop(self, timeout: float = 10.0) -> bool:
        return self.runner.stop(timeout)

    @property
    def running(self) -> bool:
        return self.runner.running

    def offer_batch(self, batch: Batch, release: Callable[[], None] | None = None) -> None:
        self.runner.offer_batch(batch, release)

    def submit(self, command: Callable[[MonitorCore], Any]) -> Future:
        return self.runner.submit(command)

    def update_consumed(self) -> None:
        self.runner.update_consumed()


__all__ = ["BatchSink", "CoreWorker", "FeedWorker", "ViewUpdate"]
