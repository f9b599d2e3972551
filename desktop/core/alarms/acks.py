"""Shared acknowledgements: merging `monitor.alarm-acks` records, and delivering our own.

Every station writes an alarm's whole shared state under its alarm id (layout in
`producer.wire`, section "alarm acknowledgements"). `merge_ack_values` combines two states:
the earliest acknowledgement wins and stays, the latest shelve/unshelve wins; the merge is
commutative, associative and idempotent, so records can be applied in any order, any number
of times. Because the topic is compacted, a record that lacks an action this station wrote
(two stations acted at once) would hide that action from stations that start later;
`AckBook.repairs_for` finds such records so the station writes the merged state again.

`AckOutbox` makes our own records durable before they are sent: each is stored in a local
SQLite outbox first, then produced with an idempotent producer; the row is marked delivered
only from the delivery report. Records written while the broker is away wait in the outbox
(and in the producer's queue) and go out when it is back, also after the app restarts; a
record is never lost, and one sent again after a crash carries the same `record_id`, which
receivers recognise, so it is never applied twice.
"""
from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from producer import wire

from desktop.core.alarms.timeutil import format_epoch, parse_timestamp


def _ack_order(ack: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(ack.get("at") or ""), str(ack.get("station") or ""), str(ack.get("by") or ""))


def _shelve_order(shelve: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (str(shelve.get("at") or ""), str(shelve.get("station") or ""), str(shelve.get("state") or ""),
            str(shelve.get("until") or ""))


def merge_ack_values(first: Mapping[str, Any] | None, second: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The shared state that includes both `first` and `second` (None: nothing known)."""
    if not first:
        return dict(second) if second else None
    if not second:
        return dict(first)
    merged = dict(second)
    acks = [a for a in (first.get("acknowledged"), second.get("acknowledged")) if a]
    merged["acknowledged"] = dict(min(acks, key=_ack_order)) if acks else None
    shelves = [s for s in (first.get("shelve"), second.get("shelve")) if s]
    merged["shelve"] = dict(max(shelves, key=_shelve_order)) if shelves else None
    for key in ("device_uuid", "rule_id"):
        merged[key] = second.get(key) or first.get(key)
    return merged


def same_state(first: Mapping[str, Any] | None, second: Mapping[str, Any] | None) -> bool:
    """Whether two records say the same about acknowledgement and shelving."""
    first, second = first or {}, second or {}
    return first.get("acknowledged") == second.get("acknowledged") and first.get("shelve") == second.get("shelve")


def new_record(alarm_id: str, known: Mapping[str, Any] | None, station: str, now: float,
               acknowledged: Mapping[str, Any] | None = None, shelve: Mapping[str, Any] | None = None,
               device_uuid: str | None = None, rule_id: str | None = None) -> dict[str, Any]:
    """A record to write: what is known about the alarm plus this station's new action."""
    action = wire.alarm_ack_value(alarm_id, device_uuid, rule_id, acknowledged, shelve,
                                  record_id=uuid.uuid4().hex, station=station, written_at=format_epoch(now))
    merged = merge_ack_values(known, action) or action
    merged["record_id"], merged["station"], merged["written_at"] = action["record_id"], station, action["written_at"]
    return merged


class AckBook:
    """What this station knows of every alarm's shared state, and which records to repair."""

    def __init__(self, station: str) -> None:
        self.station = station
        self._states: dict[str, dict[str, Any]] = {}

    def known(self, alarm_id: str) -> dict[str, Any] | None:
        return self._states.get(alarm_id)

    def add(self, value: Mapping[str, Any]) -> dict[str, Any]:
        alarm_id = str(value["alarm_id"])
        merged = merge_ack_values(self._states.get(alarm_id), value) or dict(value)
        self._states[alarm_id] = merged
        return merged

    def repairs_for(self, received: Mapping[str, Any], now: float) -> dict[str, Any] | None:
        """A record to write when `received` (the topic's newest for its key) misses an action
        of this station; None when it is complete. Only the station whose action is missing
        repairs, so two stations never answer each other forever."""
        alarm_id = str(received["alarm_id"])
        before = self._states.get(alarm_id)
        merged = self.add(received)
        if same_state(merged, received) or before is None:
            return None
        ours = [part for part in (merged.get("acknowledged"), merged.get("shelve"))
                if part and part.get("station") == self.station and part not in (received.get("acknowledged"), received.get("shelve"))]
        if not ours:
            return None
        repaired = dict(merged)
        repaired.update(record_id=uuid.uuid4().hex, station=self.station, written_at=format_epoch(now))
        return repaired


# Longest alarm id accepted from the topic: ids are `{device_uuid}/{rule_id}/{16 hex}`.
MAX_ALARM_ID_LENGTH = 1000
# Seconds before the delivery thread reports the same kind of client error again.
REPEAT_ERROR_AFTER = 600.0


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _optional_text(part: Mapping[str, Any], names: tuple[str, ...], where: str = "") -> str | None:
    for name in names:
        field = part.get(name)
        if field is not None and not isinstance(field, str):
            return f"{where}{name}: {_type_name(field)} where text or null belongs"
    return None


def _time_problem(part: Mapping[str, Any], name: str, where: str) -> str | None:
    if parse_timestamp(part.get(name)) is None:
        return f"{where}{name}: {_type_name(part.get(name))} where an ISO-8601 time belongs"
    return None


def validate_ack_value(value: Any) -> str | None:
    """Why a decoded record cannot be applied (naming the field), or None when it can.

    Every field the engine and the journal use is checked for its type, so a record from the
    topic, whoever wrote it, can neither stop the model nor put an object where the journal
    stores text. Fields not described in `producer.wire` are accepted (newer writers)."""
    if not isinstance(value, Mapping):
        return f"{_type_name(value)} where a JSON object belongs"
    alarm_id = value.get("alarm_id")
    if not isinstance(alarm_id, str):
        return "alarm_id: missing" if alarm_id is None else f"alarm_id: {_type_name(alarm_id)} where text belongs"
    if not alarm_id.strip():
        return "alarm_id: empty"
    if len(alarm_id) > MAX_ALARM_ID_LENGTH:
        return f"alarm_id: longer than {MAX_ALARM_ID_LENGTH} characters"
    problem = _optional_text(value, ("device_uuid", "rule_id", "record_id", "station", "written_at"))
    if problem:
        return problem
    ack = value.get("acknowledged")
    if ack is not None:
        if not isinstance(ack, Mapping):
            return f"acknowledged: {_type_name(ack)} where an object or null belongs"
        problem = _time_problem(ack, "at", "acknowledged.") or _optional_text(ack, ("by", "station", "note"), "acknowledged.")
        if problem:
            return problem
    shelve = value.get("shelve")
    if shelve is not None:
        if not isinstance(shelve, Mapping):
            return f"shelve: {_type_name(shelve)} where an object or null belongs"
        if shelve.get("state") not in (wire.SHELVED, wire.UNSHELVED):
            return "shelve.state: must be 'shelved' or 'unshelved'"
        problem = _time_problem(shelve, "at", "shelve.") or _optional_text(shelve, ("until", "reason", "by", "station"), "shelve.")
        if problem:
            return problem
        if shelve["state"] == wire.SHELVED:
            problem = _time_problem(shelve, "until", "shelve.")
            if problem:
                return problem + " (a shelve ends at a time)"
    return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    alarm_id TEXT NOT NULL,
    value BLOB NOT NULL,
    created_at REAL NOT NULL,
    delivered_at REAL,
    topic TEXT,
    partition INTEGER,
    offset INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (delivered_at, id);
"""


class AckOutbox:
    """Our own ack records: stored locally first, then delivered to Kafka exactly as stored.

    `submit` is cheap and safe from any thread (one SQLite insert). `pump` (called by the
    thread that owns Kafka I/O, never the GUI) produces what is pending and serves delivery
    reports; `run` loops on it until `stop`. Client properties pass through to librdkafka.
    """

    def __init__(self, path: str | Path, bootstrap_servers: str, topic_prefix: str = "",
                 properties: Mapping[str, Any] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.topic = wire.topic_name(wire.ALARM_ACKS, topic_prefix)
        self.bootstrap_servers = bootstrap_servers
        self.properties = dict(properties or {})
        self.on_error = on_error or (lambda message: None)
        self.last_error: str | None = None
        # librdkafka's own lines while the broker is away (one per retry) once per kind until
        # a record is delivered again, not on stderr.
        self._log_throttle = None
        # Client errors (error_cb) while the broker is away come once per reconnect attempt:
        # each kind is reported once, then again only after REPEAT_ERROR_AFTER seconds (with
        # how many were held back) or once a record was delivered in between.
        self._reported_errors: dict[Any, float] = {}
        self._held_errors = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._producer: Any = None
        self._in_flight: set[str] = set()
        self._stop = threading.Event()

    # -- any thread

    def submit(self, value: Mapping[str, Any]) -> str:
        """Store a record for delivery (durable when this returns); its record_id."""
        problem = validate_ack_value(value)
        if problem:
            raise ValueError(f"not an alarm ack record: {problem}")
        record_id = str(value.get("record_id") or uuid.uuid4().hex)
        value = dict(value, record_id=record_id)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO outbox (record_id, alarm_id, value, created_at) VALUES (?, ?, ?, ?)",
                             (record_id, value["alarm_id"], wire.encode(value), time.time()))
        return record_id

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT value FROM outbox WHERE delivered_at IS NULL ORDER BY id").fetchall()
        return [wire.decode(row[0]) for row in rows]

    def delivered(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT record_id, alarm_id, topic, partition, offset, delivered_at FROM outbox "
                                    "WHERE delivered_at IS NOT NULL ORDER BY id").fetchall()
        return [dict(zip(("record_id", "alarm_id", "topic", "partition", "offset", "delivered_at"), row)) for row in rows]

    def stop(self) -> None:
        self._stop.set()

    # -- the Kafka thread

    def _client(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            config = {
                "bootstrap.servers": self.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                # Keep retrying while the broker is away: the outbox, not a timeout, decides
                # when a record is given up on (never).
                "message.timeout.ms": 0,
                "linger.ms": 5,
                "error_cb": self._on_kafka_error,
            }
            config.update(self.properties)
            if "logger" not in config:
                from desktop.core.feed import KafkaLogThrottle

                self._log_throttle = KafkaLogThrottle()
                config["logger"] = self._log_throttle
            self._producer = Producer(config)
        return self._producer

    def _on_kafka_error(self, error: Any) -> None:
        self.last_error = error.str() if hasattr(error, "str") else str(error)
        kind = error.code() if hasattr(error, "code") else self.last_error
        now = time.monotonic()
        reported = self._reported_errors.get(kind)
        if reported is not None and now - reported < REPEAT_ERROR_AFTER:
            self._held_errors += 1
            return
        self._reported_errors[kind] = now
        held, self._held_errors = self._held_errors, 0
        self.on_error(self.last_error + (f" ({held} similar client error(s) before this not repeated)" if held else ""))

    def _on_delivered(self, record_id: str) -> Callable[[Any, Any], None]:
        def report(error: Any, message: Any) -> None:
            self._in_flight.discard(record_id)
            if error is not None:
                # Left pending in the outbox: the next pump sends it again.
                self.last_error = f"ack record {record_id} not delivered: {error}"
                self.on_error(self.last_error)
                return
            if self._log_throttle is not None:
                self._log_throttle.state_changed("delivering")
            # Delivered again: the next outage is reported at once.
            self._reported_errors.clear()
            self._held_errors = 0
            with self._lock:
                self._db.execute("UPDATE outbox SET delivered_at = ?, topic = ?, partition = ?, offset = ? WHERE record_id = ?",
                                 (time.time(), message.topic(), message.partition(), message.offset(), record_id))

        return report

    def pump(self, timeout: float = 0.1) -> int:
        """Send pending records not yet in flight and serve delivery reports; how many are pending."""
        producer = self._client()
        with self._lock:
            rows = self._db.execute("SELECT record_id, alarm_id, value FROM outbox WHERE delivered_at IS NULL ORDER BY id").fetchall()
        for record_id, alarm_id, value in rows:
            if record_id in self._in_flight:
                continue
            while True:
                try:
                    producer.produce(self.topic, key=wire.alarm_ack_key(alarm_id), value=bytes(value),
                                     on_delivery=self._on_delivered(record_id))
                    break
                except BufferError:
                    producer.poll(0.1)
            self._in_flight.add(record_id)
        producer.poll(timeout)
        return len(rows)

    def run(self, interval: float = 0.2) -> None:
        while not self._stop.is_set():
            self.pump(interval)

    def flush(self, timeout: float = 10.0) -> int:
        """Deliver what is pending within `timeout`; how many records are still pending."""
        deadline = time.monotonic() + timeout
        while True:
            pending = self.pump(0.05)
            if not pending or time.monotonic() > deadline:
                return len([r for r in self.pending()])

    def close(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed; the rest stays in the outbox for the next start."""
        try:
            if self._producer is not None:
                self._producer.flush(timeout)
                self._producer.poll(0)
        finally:
            self._producer = None
            with self._lock:
                self._db.close()

    def __enter__(self) -> "AckOutbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def ack_record_problem(key: bytes | None, payload: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """One `monitor.alarm-acks` record as Kafka holds it: (the checked record, None), (None,
    None) for a tombstone (an alarm's shared state deleted: nothing to apply), or (None, why
    it cannot be used). Nothing a record holds makes this raise."""
    if payload is None:
        return None, None
    value, problem = wire.decode_record(payload)
    if problem is not None:
        return None, problem
    problem = validate_ack_value(value)  # a JSON `null` value is no tombstone: it is refused here
    if problem is not None:
        return None, problem
    if key is not None and key != wire.alarm_ack_key(value["alarm_id"]):
        # The topic is compacted by key: a record under another alarm's key would replace
        # that alarm's shared state.
        return None, f"key {key[:80].decode('utf-8', 'replace')!r} is not the record's alarm_id"
    return dict(value), None


def read_ack_records(consumer_messages: Iterable[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Decoded, checked ack records from Kafka messages, and an error naming each bad one."""
    records, errors = [], []
    for message in consumer_messages:
        record, problem = ack_record_problem(message.key(), message.value())
        if problem is not None:
            errors.append(f"{message.topic()} partition {message.partition()} offset {message.offset()}: {problem}")
        elif record is not None:
            records.append(record)
    return records, errors
