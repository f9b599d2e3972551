"""An operator station without Qt, for the end-to-end alarm tests and the alarm benchmark.

`ModelStation` wires the desktop's core the way the app does: the Kafka `Feed` runs on a
thread of its own and hands over batches; one model thread (standing in for the GUI thread)
applies them to a `MonitorModel`, releases the feed's gate after each batch as the GUI does,
calls `tick` on a timer for the wall-clock rules, and applies shared acknowledgements read by
an `AckReader`. Every alarm transition is kept with the wall-clock time the model produced it,
so tests can ask what the operator would have seen and when. Reading the model from another
thread goes through `read`, under the lock the model thread holds while it works.

Run as a script it is one station as its own OS process: JSON lines on stdin are commands
(`acknowledge`, `outbox`, `stop`), JSON lines on stdout report every transition, the
acknowledgements it submits, the state of its outbox and how it ended. Its own records go
through an `AckOutbox` in its data folder, delivered by a thread of their own.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from desktop.core.alarms import AckReader, AlarmEvent, AlarmJournal, RuleSet, default_rules_path, load_rules
from desktop.core.alarms.acks import AckOutbox
from desktop.core.feed import Feed, FeedConfig
from desktop.core.model import ModelUpdate, MonitorModel

TICK_SECONDS = 0.1
# librdkafka reconnects within a second or two after a broker restart (the feed's default is 2 s).
CLIENT_PROPERTIES = {"reconnect.backoff.max.ms": "1000"}


@dataclass(frozen=True)
class Seen:
    """One alarm transition as the station's model produced it."""

    wall: float  # time.time() when the model returned it
    event: AlarmEvent
    notified: bool  # it was among the pop-ups of its update


class ModelStation:
    def __init__(self, bootstrap: str, topic_prefix: str, station: str = "station", rules: RuleSet | None = None,
                 journal: AlarmJournal | None = None, start_time: float | None = None, read_acks: bool = False,
                 on_update: Callable[[ModelUpdate, float], None] | None = None) -> None:
        self.config = FeedConfig(bootstrap, topic_prefix, dict(CLIENT_PROPERTIES), start_time=start_time)
        self.model = MonitorModel(rules=rules or load_rules(default_rules_path()), journal=journal, station=station)
        self.station = station
        self.feed = Feed(self.config)
        self.acks = AckReader.for_feed(self.config) if read_acks else None
        self.lock = threading.RLock()
        self.seen: list[Seen] = []
        self.statuses: list[tuple[float, str, str, str]] = []  # (wall, source, state, detail)
        self.failures: list[str] = []
        self.batches = 0
        self._on_update = on_update
        self._inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- running

    def start(self) -> "ModelStation":
        self._threads = [threading.Thread(target=self._run_feed, name="feed", daemon=True),
                         threading.Thread(target=self._run_model, name="model", daemon=True)]
        for thread in self._threads:
            thread.start()
        if self.acks is not None:
            self.acks.start(lambda records: self._inbox.put(("acks", records)),
                            on_status=lambda state, detail: self._status("acks", state, detail),
                            on_failed=lambda text: self.failures.append(f"ack reader: {text}"))
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self.acks is not None:
            assert self.acks.stop(timeout), "the ack reader did not stop"
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"the {thread.name} thread did not stop"

    def __enter__(self) -> "ModelStation":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _status(self, source: str, state: str, detail: str) -> None:
        self.statuses.append((time.time(), source, state, detail))

    def _run_feed(self) -> None:
        try:
            self.feed.run(self._stop, lambda batch: self._inbox.put(("batch", batch)),
                          lambda state, detail: self._status("feed", state, detail))
        except Exception as exc:  # noqa: BLE001 - reported, as the app's worker does
            self.failures.append(f"feed: {type(exc).__name__}: {exc}")

    def submit(self, action: Callable[[MonitorModel], Any]) -> None:
        """Run `action(model)` on the model thread (operator actions go where the GUI would run them)."""
        self._inbox.put(("call", action))

    def _run_model(self) -> None:
        next_tick = time.monotonic() + TICK_SECONDS
        try:
            while not self._stop.is_set():
                try:
                    kind, item = self._inbox.get(timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    kind, item = "tick", None
                with self.lock:
                    if kind == "batch":
                        update = self.model.apply(item)
                        self.batches += 1
                        self.feed.gate.release()
                    elif kind == "acks":
                        update = self.model.apply_ack_records(item)
                    elif kind == "call":
                        update = item(self.model)
                    else:
                        update = None
                    if time.monotonic() >= next_tick:
                        tick = self.model.tick()
                        next_tick = time.monotonic() + TICK_SECONDS
                        self._record(tick)
                    if isinstance(update, ModelUpdate):
                        self._record(update)
        except Exception:  # noqa: BLE001 - a model failure must fail the test, not hang it
            self.failures.append("model: " + traceback.format_exc())

    def _record(self, update: ModelUpdate) -> None:
        if not update.alarm_events:
            return
        wall = time.time()
        notified = {alarm.alarm_id for alarm in update.notifications}
        for event in update.alarm_events:
            self.seen.append(Seen(wall, event, event.alarm.alarm_id in notified and event.kind == "raised"))
        if self._on_update is not None:
            self._on_update(update, wall)

    # -- asking

    def read(self, question: Callable[[MonitorModel], Any]) -> Any:
        with self.lock:
            return question(self.model)

    def events(self, where: Callable[[AlarmEvent], bool] = lambda event: True) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if where(seen.event)]

    def check(self) -> None:
        assert not self.failures, "station failed: " + "\n".join(self.failures)

    def wait_until(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Polls `condition` (reading through `read`/`events`) until it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                last = self.statuses[-5:]
                raise AssertionError(f"{self.station}: not within {timeout:.0f} s: {what}; last statuses {last}")
            time.sleep(0.05)


def acknowledge(model: MonitorModel, alarm_id: str, by: str, note: str | None, outbox: AckOutbox) -> tuple[dict, ModelUpdate]:
    """What the alarm table's acknowledge does: the engine's record, its transitions stored in
    the journal before anything is shown, and the record handed to the outbox."""
    record, events = model.alarm_engine.acknowledge(alarm_id, by=by, note=note)
    model.journal.apply(events)
    outbox.submit(record)
    return record, ModelUpdate(alarm_events=tuple(events))


# ---------------------------------------------------------------------- station as a process


def _event_line(seen: Seen) -> dict[str, Any]:
    alarm = seen.event.alarm
    return {"report": "transition", "wall": seen.wall, "kind": seen.event.kind, "alarm_id": alarm.alarm_id,
            "device_name": alarm.device_name, "rule_id": alarm.rule_id, "state": alarm.state,
            "alarm_state": alarm.alarm_state.value, "acknowledged_by": alarm.acknowledged_by,
            "acknowledged_station": alarm.acknowledged_station, "note": alarm.acknowledgement_note,
            "by": seen.event.by, "station": seen.event.station}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one operator station without a window, for tests")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic-prefix", default="")
    parser.add_argument("--station", required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="journal and outbox of this station")
    parser.add_argument("--start-time", type=float, default=None, help="read observations from this epoch second")
    args = parser.parse_args(argv)

    output_lock = threading.Lock()

    def say(line: dict[str, Any]) -> None:
        with output_lock:
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()

    args.data_dir.mkdir(parents=True, exist_ok=True)
    outbox = AckOutbox(args.data_dir / "ack-outbox.sqlite3", args.bootstrap, args.topic_prefix,
                       properties=CLIENT_PROPERTIES, on_error=lambda text: None)
    reported = 0
    station = ModelStation(args.bootstrap, args.topic_prefix, args.station,
                           journal=AlarmJournal(args.data_dir / "alarms.sqlite3"), start_time=args.start_time,
                           read_acks=True)
    outbox_failure: list[str] = []

    def deliver() -> None:
        try:
            outbox.run(0.05)
        except Exception as exc:  # noqa: BLE001 - reported below
            outbox_failure.append(f"{type(exc).__name__}: {exc}")

    commands: queue.Queue = queue.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            if line.strip():
                commands.put(json.loads(line))
        commands.put({"command": "stop"})

    station.start()
    delivery = threading.Thread(target=deliver, name="ack-outbox", daemon=True)
    delivery.start()
    threading.Thread(target=read_commands, name="commands", daemon=True).start()
    say({"report": "started", "station": args.station, "wall": time.time()})
    code = 0
    try:
        while True:
            for seen in station.events()[reported:]:
                say(_event_line(seen))
                reported += 1
            if station.failures or outbox_failure:
                say({"report": "failed", "why": station.failures + outbox_failure})
                code = 1
                break
            try:
                command = commands.get(timeout=0.02)
            except queue.Empty:
                continue
            if command["command"] == "stop":
                break
            if command["command"] == "acknowledge":
                done: queue.Queue = queue.Queue()

                def act(model: MonitorModel, command=command, done=done) -> ModelUpdate:
                    record, update = acknowledge(model, command["alarm_id"], command["by"], command.get("note"), outbox)
                    done.put(record)
                    return update

                station.submit(act)
                record = done.get(timeout=30)
                say({"report": "acknowledgement_submitted", "wall": time.time(), "alarm_id": command["alarm_id"],
                     "record_id": record["record_id"]})
            elif command["command"] == "outbox":
                say({"report": "outbox", "pending": [r["record_id"] for r in outbox.pending()],
                     "delivered": outbox.delivered(), "last_error": outbox.last_error})
    finally:
        outbox.stop()
        delivery.join(30)
        station.stop()
        outbox.close(timeout=5.0)
        say({"report": "stopped", "code": code})
    return code


if __name__ == "__main__":
    sys.exit(main())
