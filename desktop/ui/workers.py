"""The thread that owns the Kafka consumer, and the Qt signals it reports through.

`FeedWorker` runs `desktop.core.feed.Feed.run` on a plain Python thread and turns its
callbacks into queued Qt signals: one `batch_received` per batch, `status_changed` for
connection state, and `feed_failed` when the feed ends with an error - the thread never dies
silently. The GUI calls `batch_consumed` after applying a batch; until then further batches
are merged in the feed (see `BatchGate`), so the GUI never faces a queue of signals.
`stop` sets the stop event and joins; the consumer is closed by the feed in `finally`.
"""
from __future__ import annotations

import threading
import traceback

from PySide6.QtCore import QObject, Signal

from desktop.core.feed import Feed, FeedConfig


class FeedWorker(QObject):
    batch_received = Signal(object)  # Batch
    status_changed = Signal(str, str)  # state, detail
    feed_failed = Signal(str)  # why the feed ended
    feed_stopped = Signal()

    def __init__(self, config: FeedConfig, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self._feed = Feed(config)
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
            self._feed.run(self._stop_event, self.batch_received.emit, self.status_changed.emit)
        except Exception as exc:  # noqa: BLE001 - any failure must reach the GUI, not vanish
            if isinstance(exc, RuntimeError):
                detail = str(exc)  # the feed's own, already worded for people
            else:
                # Unexpected: name the exception and where, so a bug report can use it.
                detail = f"{type(exc).__name__}: {exc}"
                last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
                if last:
                    detail += f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})"
            self.feed_failed.emit(detail)
        finally:
            self.feed_stopped.emit()

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

