"""The alarm journal: every alarm transition, kept on disk, and the alarms the table lists.

`AlarmJournal.apply` stores a batch of transitions in one SQLite transaction (WAL mode) in
the per-user data folder before the views can show them, so a crash or `kill -9` loses
nothing that was on screen; a transition derived again (history read twice) has the same
key and is stored once. The journal answers searches by time range, machine and text,
exports them as CSV, gives the KPIs their raw material and, after a restart, the alarms that
were still open. It also keeps the latest state of the most recent alarms in memory (bounded,
NORMAL ones dropped first) for the alarm table.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable

from desktop.core.alarms.model import Alarm, AlarmEvent, AlarmState
from desktop.core.alarms.timeutil import parse_timestamp

DATA_DIR_ENV = "MACHINE_MONITOR_DATA_DIR"
_ALARM_FIELDS = {f.name for f in dataclasses.fields(Alarm)}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transition_key TEXT NOT NULL UNIQUE,
    alarm_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    at_epoch REAL,
    device_uuid TEXT,
    device_name TEXT,
    rule_id TEXT,
    identity TEXT,
    data_item_id TEXT,
    native_code TEXT,
    level TEXT,
    priority TEXT,
    alarm_state TEXT,
    message TEXT,
    detail TEXT,
    by_user TEXT,
    station TEXT,
    note TEXT,
    chattering INTEGER,
    stale INTEGER,
    activated_at TEXT,
    activated_epoch REAL
);
CREATE INDEX IF NOT EXISTS transitions_at ON transitions (at_epoch);
CREATE INDEX IF NOT EXISTS transitions_alarm ON transitions (alarm_id);
CREATE TABLE IF NOT EXISTS alarms (
    alarm_id TEXT PRIMARY KEY,
    activated_epoch REAL,
    is_open INTEGER NOT NULL,
    snapshot TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_open ON alarms (is_open);
"""

CSV_COLUMNS = ("at", "kind", "device_name", "device_uuid", "rule_id", "data_item_id", "native_code", "level",
               "priority", "alarm_state", "message", "detail", "by_user", "station", "note", "alarm_id")


def default_journal_path() -> Path:
    """`alarms.sqlite3` in the per-user data folder (`MACHINE_MONITOR_DATA_DIR` overrides it)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        base = Path(override).expanduser()
    else:
        import platformdirs

        base = Path(platformdirs.user_data_dir("machine-monitor", appauthor=False))
    return base / "alarms.sqlite3"


@dataclass(frozen=True)
class JournalEntry:
    """One stored transition."""

    at: str
    at_epoch: float | None
    kind: str
    alarm_id: str
    device_uuid: str
    device_name: str
    rule_id: str
    identity: str
    data_item_id: str
    native_code: str
    level: str
    priority: str
    alarm_state: str
    message: str
    detail: str
    by_user: str | None
    station: str | None
    note: str | None
    chattering: bool
    stale: bool
    activated_at: str
    activated_epoch: float | None


_ENTRY_COLUMNS = tuple(f.name for f in dataclasses.fields(JournalEntry))


def alarm_from_json(text: str) -> Alarm:
    values = json.loads(text)
    return Alarm(**{k: v for k, v in values.items() if k in _ALARM_FIELDS})


class AlarmJournal:
    def __init__(self, path: str | Path | None = None, limit: int = 500) -> None:
        """`path` None keeps the journal in memory only (tests, and a model without a user folder)."""
        self.path = Path(path) if path is not None else None
        self.limit = limit
        self.version = 0
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", check_same_thread=False,
                                   isolation_level=None)
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            # A committed transaction is in the WAL file before apply returns, so killing the
            # process loses nothing; only a power cut could lose the last transactions.
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._alarms: OrderedDict[str, Alarm] = OrderedDict()
        rows = self._db.execute("SELECT snapshot FROM alarms ORDER BY activated_epoch DESC, rowid DESC LIMIT ?",
                                (limit,)).fetchall()
        for (snapshot,) in reversed(rows):
            alarm = alarm_from_json(snapshot)
            self._alarms[alarm.alarm_id] = alarm

    # -- what the table shows

    def __len__(self) -> int:
        return len(self._alarms)

    def alarms(self) -> list[Alarm]:
        """Newest activation first."""
        return list(reversed(self._alarms.values()))

    def active_count(self, level: str | None = None) -> int:
        return sum(1 for a in self._alarms.values() if a.is_active and not a.out_of_service and (level is None or a.level == level))

    def unacknowledged_count(self) -> int:
        return sum(1 for a in self._alarms.values()
                   if a.alarm_state in (AlarmState.UNACKNOWLEDGED_ACTIVE, AlarmState.UNACKNOWLEDGED_RETURNED))

    # -- recording

    def apply(self, events: Iterable[AlarmEvent]) -> None:
        events = list(events)
        if not events:
            return
        rows, snapshots = [], {}
        for event in events:
            alarm = event.alarm
            rows.append((
                event.transition_key, alarm.alarm_id, event.kind, event.at, parse_timestamp(event.at),
                alarm.device_uuid, alarm.device_name, alarm.rule_id, alarm.identity, alarm.data_item_id,
                alarm.native_code, alarm.level, alarm.priority, alarm.alarm_state.value, alarm.message, event.detail,
                event.by, event.station, event.note, int(alarm.chattering), int(alarm.stale), alarm.activated_at,
                parse_timestamp(alarm.activated_at),
            ))
            snapshots[alarm.alarm_id] = alarm
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO transitions (transition_key, alarm_id, kind, at, at_epoch, device_uuid, "
                    "device_name, rule_id, identity, data_item_id, native_code, level, priority, alarm_state, message, "
                    "detail, by_user, station, note, chattering, stale, activated_at, activated_epoch) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.executemany(
                    "INSERT INTO alarms (alarm_id, activated_epoch, is_open, snapshot) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (alarm_id) DO UPDATE SET is_open = excluded.is_open, snapshot = excluded.snapshot",
                    [(a.alarm_id, parse_timestamp(a.activated_at), int(a.alarm_state is not AlarmState.NORMAL),
                      json.dumps(dataclasses.asdict(a), separators=(",", ":"))) for a in snapshots.values()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        for alarm in snapshots.values():
            self._alarms[alarm.alarm_id] = alarm
        excess = len(self._alarms) - self.limit
        if excess > 0:
            # The oldest NORMAL ones go first, then the oldest of the rest: one pass, not one per alarm.
            drop = dict.fromkeys(itertools.islice(
                (k for k, a in self._alarms.items() if a.alarm_state is AlarmState.NORMAL), excess))
            drop.update(dict.fromkeys(itertools.islice((k for k in self._alarms if k not in drop), excess - len(drop))))
            for key in drop:
                del self._alarms[key]
        self.version += 1

    # -- reading back

    def open_alarms(self) -> list[Alarm]:
        """Alarms not yet NORMAL (active, or returned but unacknowledged), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT snapshot FROM alarms WHERE is_open = 1 ORDER BY activated_epoch").fetchall()
        return [alarm_from_json(row[0]) for row in rows]

    def search(self, start: float | None = None, end: float | None = None, device: str | None = None,
               text: str | None = None, kinds: Iterable[str] | None = None, limit: int | None = None) -> list[JournalEntry]:
        """Transitions with `start <= at < end` (epoch seconds), of a machine (name or uuid), whose
        message, rule, code, data item or note contains `text` (case-insensitive), oldest first."""
        where, arguments = [], []
        if start is not None:
            where.append("at_epoch >= ?")
            arguments.append(start)
        if end is not None:
            where.append("at_epoch < ?")
            arguments.append(end)
        if device:
            where.append("(device_name = ? OR device_uuid = ?)")
            arguments += [device, device]
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in
                                           ("message", "rule_id", "native_code", "data_item_id", "note", "detail", "device_name")) + ")")
            arguments += [pattern] * 7
        kinds = list(kinds or ())
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            arguments += kinds
        query = f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM transitions"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY at_epoch, id"
        if limit is not None:
            query += " LIMIT ?"
            arguments.append(int(limit))
        with self._lock:
            rows = self._db.execute(query, arguments).fetchall()
        entries = []
        for row in rows:
            values = dict(zip(_ENTRY_COLUMNS, row))
            values["chattering"], values["stale"] = bool(values["chattering"]), bool(values["stale"])
            for key in ("device_uuid", "device_name", "rule_id", "identity", "data_item_id", "native_code", "level",
                        "priority", "alarm_state", "message", "detail", "activated_at"):
                values[key] = values[key] or ""
            entries.append(JournalEntry(**values))
        return entries

    def export_csv(self, target: str | Path | IO[str], **filters: Any) -> int:
        """Write the transitions `search(**filters)` finds as CSV (header first); the row count."""
        entries = self.search(**filters)

        def write(stream: IO[str]) -> None:
            writer = csv.writer(stream)
            writer.writerow(CSV_COLUMNS)
            for entry in entries:
                writer.writerow(["" if getattr(entry, c) is None else getattr(entry, c) for c in CSV_COLUMNS])

        if isinstance(target, (str, Path)):
            with open(target, "w", newline="", encoding="utf-8") as stream:
                write(stream)
        else:
            write(target)
        return len(entries)

    def close(self) -> None:
        with self._lock:
            self._db.close()
