"""The core thread: batches reduced to what changed, commands run on that thread between
batches, their alarm events journaled and handed out with the next update."""
from __future__ import annotations

import threading
import time

import pytest

import recorded_nist as testing
from desktop.core.alarms import AlarmJournal, AlarmState
from desktop.core.machines import MachineStatus
from desktop.core.model import MonitorModel
from desktop.core.monitor import CoreRunner, MonitorCore, ViewUpdate, merge_updates

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"


@pytest.fixture(scope="module")
def devices():
    return testing.load_devices()


def mazak03_lines(devices, last_line: int, first_line: int = 1):
    device = testing.device_named(devices, "Mazak03")
    return [o for _, o in testing.shdr_observations(testing.nist_shdr(MAZAK03_DAY), device, first_line, last_line)]


def fault_line() -> int:
    lines = testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if "|motion_cond|Fault|791|" in line)


class Collector:
    def __init__(self) -> None:
        self.updates: list[ViewUpdate] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, update: ViewUpdate) -> None:
        with self.lock:
            self.updates.append(update)
            self.threads.add(threading.current_thread().name)

    def wait_for(self, predicate, runner: CoreRunner, timeout: float = 20.0) -> ViewUpdate:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with self.lock:
                fresh = self.updates[seen:]
                seen = len(self.updates)
            for update in fresh:
                runner.update_consumed()
                if predicate(update):
                    return update
            time.sleep(0.02)
        raise AssertionError("no such update arrived")


def test_only_machines_whose_tile_changed_are_in_an_update(devices):
    core = MonitorCore(MonitorModel())
    first = core.apply(testing.batch_of(devices, mazak03_lines(devices, 200)), now=1000.0)
    assert set(first.machines) == {d["device_uuid"] for d in devices}  # every device, once
    # Mazak03 again, nothing else: only Mazak03 can have changed.
    again = core.apply(testing.batch_of(observations=mazak03_lines(devices, 400, 201)), now=1000.5)
    assert set(again.machines) <= {"mtc_adapter004"}
    # A tick one second later changes no tile: nothing went stale yet.
    assert core.tick(now=1001.0).machines == {}


def test_a_silent_machine_turns_offline_on_the_tick_without_any_record(devices):
    core = MonitorCore(MonitorModel(offline_after=60.0))
    core.apply(testing.batch_of(devices, mazak03_lines(devices, fault_line() - 1)), now=1000.0)
    assert core.tick(now=1059.0).machines.get("mtc_adapter004") is None
    view = core.tick(now=1121.0).machines["mtc_adapter004"]
    assert view.status == MachineStatus.OFFLINE and view.reason == "no data for 2 min"


def test_merged_updates_keep_every_alarm_event_and_the_latest_view(devices):
    core = MonitorCore(MonitorModel())
    a = core.apply(testing.batch_of(devices, mazak03_lines(devices, fault_line())), now=1000.0)
    b = core.apply(testing.batch_of(observations=mazak03_lines(devices, fault_line() + 40, fault_line() + 1)), now=1001.0)
    merged = merge_updates(a, b)
    assert merged.alarm_events == a.alarm_events + b.alarm_events
    assert merged.machines["mtc_adapter004"] == b.machines.get("mtc_adapter004", a.machines["mtc_adapter004"])
    assert merged.observation_records == a.observation_records + b.observation_records


def test_commands_run_on_the_core_thread_and_their_events_come_with_the_next_update(devices, tmp_path):
    journal = AlarmJournal(tmp_path / "journal.sqlite")
    core = MonitorCore(MonitorModel(journal=journal))
    collector = Collector()
    runner = CoreRunner(core, collector, tick_seconds=0.2)
    runner.start()
    try:
        runner.offer_batch(testing.batch_of(devices, mazak03_lines(devices, fault_line())))
        raised = collector.wait_for(lambda u: any(e.kind == "raised" for e in u.alarm_events), runner)
        alarm = next(e.alarm for e in raised.alarm_events if e.alarm.native_code == "791")
        tile = collector.wait_for(lambda u: "mtc_adapter004" in u.machines, runner) if "mtc_adapter004" not in raised.machines \
            else raised
        assert tile.machines["mtc_adapter004"].alarm_state == AlarmState.UNACKNOWLEDGED_ACTIVE.value
        waiting = tile.machines["mtc_adapter004"].unacknowledged
        assert waiting >= 1

        future = runner.submit(lambda c: (threading.current_thread().name, c.acknowledge(alarm.alarm_id, "ana", "checked")))
        thread_name, record = future.result(timeout=10)
        assert thread_name == "monitor-core"
        assert record["acknowledged"]["by"] == "ana"
        acked = collector.wait_for(lambda u: any(e.kind == "acknowledged" for e in u.alarm_events), runner)
        # The tile's worst alarm state is now that of the day's returned, unacknowledged alarms
        # (worse than acknowledged-active only when none of those is left).
        assert acked.machines["mtc_adapter004"].alarm_state in (AlarmState.UNACKNOWLEDGED_RETURNED.value,
                                                                 AlarmState.ACKNOWLEDGED_ACTIVE.value)
        # One alarm fewer waits for acknowledgement (earlier, cleared ones of the day still do).
        assert acked.machines["mtc_adapter004"].unacknowledged == waiting - 1
        # Written to the journal before the update went out.
        kinds = [entry.kind for entry in journal.search(device="Mazak03")]
        assert "acknowledged" in kinds

        failing = runner.submit(lambda c: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=10)
        assert runner.running, "a failing command must not end the core thread"
        assert collector.threads == {"monitor-core"}
    finally:
        runner.stop()
        journal.close()


def test_how_far_behind_the_stream_is_the_age_of_the_newest_record_read_until_the_feed_runs_dry(devices):
    from desktop.core.batch import build_batch
    from desktop.core.monitor import CAUGHT_UP_AFTER

    core = MonitorCore(MonitorModel(journal=AlarmJournal(":memory:")))
    now = 1_700_000_000.0
    records = testing.records(devices, mazak03_lines(devices, 200))
    # Published between 90 and 60 s before they are applied: the newest is 60 s old.
    stamps = [int((now - 90 + 30 * i / (len(records) - 1)) * 1000) for i in range(len(records))]
    batch = build_batch([record._replace(timestamp_ms=stamp) for record, stamp in zip(records, stamps)])
    assert core.apply(batch, now).behind_seconds == pytest.approx(60.0, abs=0.01)
    # Still reading (a batch came within CAUGHT_UP_AFTER): as far behind as the last batch said.
    assert core.tick(now + CAUGHT_UP_AFTER / 2).behind_seconds == pytest.approx(60.0, abs=0.01)
    # No batch for CAUGHT_UP_AFTER: everything there was has been read.
    assert core.tick(now + CAUGHT_UP_AFTER + 0.1).behind_seconds == 0.0


def test_one_partition_read_late_makes_the_app_behind_however_fresh_the_others_are(devices):
    # A plant's stream over two partitions: partition 0 is read as it is written, partition 1
    # (other machines) delivers records published 45 s ago, because the reading has fallen
    # behind there. The status bar must say 45 s, not the fresh partition's 1 s.
    from desktop.core.batch import build_batch

    core = MonitorCore(MonitorModel(journal=AlarmJournal(":memory:")))
    now = 1_700_000_000.0
    records = testing.records(devices, mazak03_lines(devices, 200))
    late = [record._replace(partition=index % 2, timestamp_ms=int((now - (45 if index % 2 else 1)) * 1000))
            for index, record in enumerate(records)]
    assert core.apply(build_batch(late), now).behind_seconds == pytest.approx(45.0, abs=0.01)
    caught_up = [record._replace(timestamp_ms=int((now + 1) * 1000)) for record in late]
    assert core.apply(build_batch(caught_up), now + 1.5).behind_seconds == pytest.approx(0.5, abs=0.01)


def test_alarms_restored_from_the_journal_mark_their_machines_after_a_restart_and_a_reset(devices, tmp_path):
    # Hurco01's adapter reports nothing: a low-priority "not reporting" alarm, still active
    # when the app is closed. Started again, the same data raises nothing new (the alarm is
    # carried over), and the tile must still be marked; so after a settings reset.
    from desktop.core.alarms import default_rules_path, load_rules

    rules = load_rules(default_rules_path())
    hurco = testing.device_named(devices, "Hurco01")
    uuid = hurco["device_uuid"]
    batch = testing.batch_of(devices, testing.unavailable_observations(hurco, "2016-11-16T20:00:00Z"))
    path = tmp_path / "alarms.sqlite3"
    first = MonitorCore(MonitorModel(rules=rules, journal=AlarmJournal(path)))
    view = first.apply(batch, now=1000.0).machines[uuid]
    assert (view.alarm_state, view.alarm_priority) == (AlarmState.UNACKNOWLEDGED_ACTIVE.value, "low")

    again = MonitorCore(MonitorModel(rules=rules, journal=AlarmJournal(path)))
    update = again.apply(batch, now=1010.0)
    assert not [e for e in update.alarm_events if e.alarm.device_uuid == uuid], "nothing new was raised"
    view = update.machines[uuid]
    assert (view.alarm_state, view.alarm_priority, view.unacknowledged) == (AlarmState.UNACKNOWLEDGED_ACTIVE.value, "low", 1)

    again.reset()
    view = again.apply(batch, now=1020.0).machines[uuid]
    assert (view.alarm_state, view.alarm_priority) == (AlarmState.UNACKNOWLEDGED_ACTIVE.value, "low")
