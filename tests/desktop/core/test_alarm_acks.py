"""Shared acknowledgements: the merge rules, and the outbox against a real Kafka broker,
including a broker outage (a broker of the test's own, stopped and started on its ports)."""
from __future__ import annotations

import itertools
import time

import pytest

import alarm_support as support
from desktop.core.alarms import AlarmEngine, AlarmState
from desktop.core.alarms.acks import AckBook, AckOutbox, merge_ack_values, read_ack_records
from producer import wire
from producer.broker import LocalBroker
from producer.topics import ensure_topics, read_to_end


@pytest.fixture(scope="module")
def fault_791():
    return next(o for o in support.day("Mazak03") if o.get("native_code") == "791")


def records_for(engine_a: AlarmEngine, alarm_id: str):
    acked, _ = engine_a.acknowledge(alarm_id, by="ana", note="coolant topped up", now=100.0)
    shelved, _ = engine_a.shelve(alarm_id, by="ben", seconds=3600, reason="sensor swap", now=200.0)
    unshelved, _ = engine_a.unshelve(alarm_id, by="ben", now=300.0)
    return acked, shelved, unshelved


def test_merging_records_is_order_free_and_idempotent(fault_791):
    a, b = AlarmEngine(station="a"), AlarmEngine(station="b")
    alarm = a.process([fault_791], now=0.0)[0].alarm
    b.process([fault_791], now=0.0)
    ack, _ = a.acknowledge(alarm.alarm_id, by="ana", now=10.0)
    late_ack, _ = b.acknowledge(alarm.alarm_id, by="ben", now=15.0)  # b did not know of a's
    shelve, _ = b.shelve(alarm.alarm_id, by="ben", seconds=600, reason="probe", now=20.0)
    unshelve, _ = a.unshelve(alarm.alarm_id, by="ana", now=30.0)  # a did not know of the shelve
    results = set()
    for order in itertools.permutations([ack, late_ack, shelve, unshelve, ack]):
        merged = None
        for record in order:
            merged = merge_ack_values(merged, record)
        results.add((repr(merged["acknowledged"]), repr(merged["shelve"])))
    assert len(results) == 1
    merged = merge_ack_values(merge_ack_values(unshelve, shelve), late_ack)
    # The first acknowledgement stays; the latest shelve action (the unshelve) wins.
    assert (merged["acknowledged"]["by"], merged["acknowledged"]["at"]) == ("ana", "1970-01-01T00:00:10.000000Z")
    assert merged["shelve"]["state"] == "unshelved"


def test_a_station_repairs_a_record_that_hides_its_action(fault_791):
    a, b = AlarmEngine(station="a"), AlarmEngine(station="b")
    alarm = a.process([fault_791], now=0.0)[0].alarm
    ack, _ = a.acknowledge(alarm.alarm_id, by="ana", now=10.0)
    shelve, _ = b.shelve(alarm.alarm_id, by="ben", seconds=600, reason="probe", now=20.0)
    book_a, book_b, book_c = AckBook("a"), AckBook("b"), AckBook("c")
    book_a.add(ack)
    book_b.add(shelve)
    book_c.add(ack)  # c only watched: it read a's record first
    # The topic ends with b's record (no acknowledgement): only a must write again.
    repair = book_a.repairs_for(shelve, now=30.0)
    assert repair["acknowledged"]["station"] == "a" and repair["shelve"]["station"] == "b"
    assert book_b.repairs_for(shelve, now=30.0) is None
    assert book_c.repairs_for(shelve, now=30.0) is None  # not c's action: a repairs, not everyone
    assert book_b.repairs_for(repair, now=31.0) is None and book_a.repairs_for(repair, now=31.0) is None


def read_records(bootstrap: str, prefix: str):
    messages = list(read_to_end({"bootstrap.servers": bootstrap}, wire.topic_name(wire.ALARM_ACKS, prefix), timeout=60))
    records, errors = read_ack_records(messages)
    assert errors == []
    return messages, records


def deliver(outbox: AckOutbox, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while outbox.pending():
        assert time.monotonic() < deadline, f"ack records not delivered in {timeout} s: {outbox.last_error}"
        outbox.pump(0.2)


@pytest.mark.integration
def test_acknowledgements_travel_through_kafka_to_another_station(kafka_broker, topic_prefix, tmp_path, fault_791):
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap}, topic_prefix)
    station_a, station_b = AlarmEngine(station="cell-1"), AlarmEngine(station="cell-2")
    alarm = station_a.process([fault_791], now=0.0)[0].alarm
    with AckOutbox(tmp_path / "outbox.sqlite3", kafka_broker.bootstrap, topic_prefix) as outbox:
        for record in records_for(station_a, alarm.alarm_id):
            outbox.submit(record)
        deliver(outbox)
        delivered = outbox.delivered()
    messages, records = read_records(kafka_broker.bootstrap, topic_prefix)
    assert [m.key() for m in messages] == [alarm.alarm_id.encode()] * 3
    assert [r["record_id"] for r in records] == [d["record_id"] for d in delivered]
    # Station B sees the alarm later than the records: they wait for it and apply once.
    assert station_b.apply_ack_records(records, now=400.0) == []
    events = station_b.process([fault_791], now=401.0)
    assert [(e.kind, e.notify) for e in events] == [("raised", False), ("acknowledged", False)]
    assert station_b.alarm(alarm.alarm_id).alarm_state is AlarmState.ACKNOWLEDGED_ACTIVE
    assert station_b.alarm(alarm.alarm_id).acknowledgement_note == "coolant topped up"
    assert station_b.apply_ack_records(records + records, now=402.0) == []


@pytest.fixture
def own_broker(tmp_path):
    broker = LocalBroker(data_dir=tmp_path / "kafka", progress=lambda line: None)
    broker.start(timeout=180)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.integration
def test_acks_made_while_the_broker_is_away_are_delivered_exactly_once(own_broker, tmp_path, fault_791):
    bootstrap = own_broker.bootstrap
    ensure_topics({"bootstrap.servers": bootstrap}, "")
    engine = AlarmEngine(station="cell-1")
    alarm = engine.process([fault_791], now=0.0)[0].alarm
    path = tmp_path / "outbox.sqlite3"
    properties = {"reconnect.backoff.max.ms": 500}

    own_broker.stop()
    # 1. The app keeps running: the record waits in the outbox and the producer's queue.
    reported: list[str] = []
    outbox = AckOutbox(path, bootstrap, properties=properties, on_error=reported.append)
    ack, _ = engine.acknowledge(alarm.alarm_id, by="ana", now=10.0)
    outbox.submit(ack)
    for _ in range(30):
        outbox.pump(0.1)
    assert [r["record_id"] for r in outbox.pending()] == [ack["record_id"]]
    # The outage is reported, but not once per reconnect attempt (one every 0.5 s here).
    assert reported and any("Connection refused" in line or "failed" in line for line in reported), reported
    assert len(reported) <= 2, reported
    # 2. The app is closed before the broker is back: the second record stays on disk only.
    shelve, _ = engine.shelve(alarm.alarm_id, by="ana", seconds=600, reason="waiting for parts", now=20.0)
    restarted = AckOutbox(tmp_path / "outbox-2.sqlite3", bootstrap, properties=properties)
    restarted.submit(shelve)
    restarted.pump(0.1)
    restarted.close(timeout=1.0)

    assert own_broker.start(timeout=180) == bootstrap  # the same ports again
    deliver(outbox, timeout=120)
    outbox.close()
    again = AckOutbox(tmp_path / "outbox-2.sqlite3", bootstrap, properties=properties)
    assert [r["record_id"] for r in again.pending()] == [shelve["record_id"]]
    deliver(again, timeout=120)
    again.close()

    _, records = read_records(bootstrap, "")
    delivered = [r["record_id"] for r in records]
    assert sorted(delivered) == sorted([ack["record_id"], shelve["record_id"]])  # each exactly once
    other = AlarmEngine(station="cell-2")
    other.apply_ack_records(records, now=30.0)
    other.process([fault_791], now=31.0)
    assert other.alarm(alarm.alarm_id).alarm_state is AlarmState.SHELVED
    assert other.alarm(alarm.alarm_id).is_acknowledged
