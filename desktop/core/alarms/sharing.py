"""A station's part in shared acknowledgement: its own records out, other stations' records in.

`AckSharing` runs the two Kafka clients of `monitor.alarm-acks` for the app, each on a thread
of its own and never on the GUI thread: an `AckOutbox` delivery thread (the station's own
acknowledge/shelve/unshelve records, stored in the local SQLite outbox first, so one made
while the broker is away is delivered when it returns) and an `AckReader` thread (every
station's records, the station's own included, handed to `on_records`). The window gives it
a callback that applies the records on the core thread, where the engine merges them: a
record read twice, or our own record read back, changes nothing.

`publish(record)` stores a record in the outbox; it is called on the core thread right after
the engine made the record, so the operator's action and its delivery cannot part.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from desktop.core.alarms.acks import AckOutbox
from desktop.core.alarms.reader import AckReader

log = logging.getLogger(__name__)

# How long the delivery thread waits in one poll for delivery reports; a new record is
# produced at the next pump, so this bounds how long a submitted record waits to be sent.
OUTBOX_INTERVAL = 0.05


class AckSharing:
    def __init__(self, outbox_path: str | Path, bootstrap_servers: str, topic_prefix: str = "",
                 properties: Mapping[str, Any] | None = None,
                 on_records: Callable[[tuple[dict[str, Any], ...]], None] = lambda records: None,
                 on_status: Callable[[str, str], None] | None = None,
                 on_failed: Callable[[str], None] | None = None) -> None:
        self.outbox = AckOutbox(outbox_path, bootstrap_servers, topic_prefix, properties=properties,
                                on_error=lambda text: log.warning("alarm acknowledgements: %s", text))
        self.reader = AckReader(bootstrap_servers, topic_prefix, properties)
        self._on_records = on_records
        self._on_status = on_status
        self._on_failed = on_failed
        self._delivery: threading.Thread | None = None
        self.failure: str | None = None

    def start(self) -> None:
        self._delivery = threading.Thread(target=self._deliver, name="alarm-acks-outbox", daemon=True)
        self._delivery.start()
        self.reader.start(self._on_records, on_status=self._on_status, on_failed=self._on_failed)

    def _deliver(self) -> None:
        try:
            self.outbox.run(OUTBOX_INTERVAL)
        except Exception as exc:  # noqa: BLE001 - reported: records stay in the outbox for the next start
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("alarm acknowledgements are no longer delivered: %s", self.failure)
            if self._on_failed is not None:
                self._on_failed(f"delivering acknowledgements: {self.failure}")

    def publish(self, record: Mapping[str, Any]) -> str:
        """Store one of this station's records for delivery (durable when this returns)."""
        return self.outbox.submit(record)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop both threads; what is not delivered stays in the outbox for the next start."""
        self.outbox.stop()
        stopped = self.reader.stop(timeout)
        if self._delivery is not None:
            self._delivery.join(timeout)
            stopped = stopped and not self._delivery.is_alive()
        self.outbox.close(timeout=min(timeout, 5.0))
        return stopped
