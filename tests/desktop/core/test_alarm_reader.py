"""Reading shared acknowledgements from `monitor.alarm-acks` on a real broker: the topic from
its beginning and then new records, bad records skipped and logged once with where they are,
the reader inside a consumer loop of someone else's, and failures that are reported instead
of ending a thread silently."""
from __future__ import annotations

import logging
import queue
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer

import alarm_support as support
from desktop.core.alarms import AckReader, AlarmEngine
from desktop.core.alarms.acks import AckOutbox, validate_ack_value
from producer import wire
from producer.topics import ensure_topics


@pytest.fixture(scope="module")
def fault_791():
    return next(o for o in support.day("Mazak03") if o.get("native_code") == "791")


def ack_records(count: int, fault):
    """`count` acknowledgement records, each for an alarm of its own (the recorded fault under
    other native codes)."""
    engine = AlarmEngine(station="cell-1")
    records = []
    for number in range(count):
        alarm = engine.process([dict(fault, native_code=str(791 + number))], now=float(number))[0].alarm
        record, _ = engine.acknowledge(alarm.alarm_id, by=f"operator-{number}", note=f"note {number}", now=10.0 + number)
        records.append(record)
    return records


def deliver(bootstrap: str, prefix: str, records, tmp_path) -> None:
    with AckOutbox(tmp_path / f"outbox-{time.monotonic_ns()}.sqlite3", bootstrap, prefix) as outbox:
        for record in records:
            outbox.submit(record)
        assert outbox.flush(60) == 0, outbox.last_error


def ids(records) -> list[str]:
    return sorted(r["record_id"] for r in records)


class Collected:
    """What a reader handed out, batch by batch, and the statuses it reported."""

    def __init__(self) -> None:
        self.batches: queue.Queue = queue.Queue()
        self.records: list[dict] = []
        self.statuses: list[tuple[str, str]] = []
        self.failures: list[str] = []

    def on_records(self, records) -> None:
        assert isinstance(records, tuple) and records
        self.batches.put(records)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(self.records)} of {count} records within {timeout} s; statuses {self.statuses}"
            try:
                self.records += self.batches.get(timeout=remaining)
            except queue.Empty:
                pass
        return self.records


@pytest.mark.integration
def test_reader_reads_the_topic_from_its_beginning_then_follows_it(kafka_broker, topic_prefix, tmp_path, fault_791):
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap}, topic_prefix)
    first, later = ack_records(5, fault_791)[:3], ack_records(5, fault_791)[3:]
    deliver(kafka_broker.bootstrap, topic_prefix, first, tmp_path)
    reader = AckReader(kafka_broker.bootstrap, topic_prefix)
    seen = Collected()
    reader.start(seen.on_records, on_status=lambda state, detail: seen.statuses.append((state, detail)),
                 on_failed=seen.failures.append)
    try:
        # Records of different alarms may sit in different partitions: no order between them.
        assert ids(seen.wait_for(3)) == ids(first)
        deliver(kafka_broker.bootstrap, topic_prefix, later, tmp_path)
        assert ids(seen.wait_for(5)) == ids(first + later)
        assert sorted(r["acknowledged"]["by"] for r in seen.records) == [f"operator-{n}" for n in (0, 1, 2, 3, 4)]
    finally:
        assert reader.stop(30)
    assert seen.failures == [] and reader.failure is None
    assert ("connected", kafka_broker.bootstrap) in seen.statuses and seen.statuses[-1] == ("stopped", "")
    # A second station started later reads the same records from the topic's beginning.
    again = AckReader(kafka_broker.bootstrap, topic_prefix)
    seen_again = Collected()
    again.start(seen_again.on_records)
    try:
        assert ids(seen_again.wait_for(5)) == ids(first + later)
    finally:
        assert again.stop(30)


def produce_raw(bootstrap: str, topic: str, messages) -> list[tuple[int, int]]:
    """Writes (key, value) pairs as they are; the (partition, offset) each one got."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    positions: list = [None] * len(messages)

    def delivered(index):
        def report(error, message):
            assert error is None, error
            positions[index] = (message.partition(), message.offset())
        return report

    for index, (key, value) in enumerate(messages):
        producer.produce(topic, key=key, value=value, on_delivery=delivered(index))
    assert producer.flush(30) == 0
    return positions


@pytest.mark.integration
def test_bad_records_are_skipped_and_logged_once_with_where_they_are(kafka_broker, topic_prefix, tmp_path, fault_791, caplog):
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap}, topic_prefix)
    topic = wire.topic_name(wire.ALARM_ACKS, topic_prefix)
    good = ack_records(2, fault_791)
    key = wire.alarm_ack_key(good[0]["alarm_id"])
    by_object = dict(good[0], acknowledged=dict(good[0]["acknowledged"], by={"name": "ana"}))
    bad = [
        (key, b"\xff\xfe not text"),
        (key, b'{"alarm_id": '),
        (key, b"[1, 2, 3]"),
        (key, wire.encode(by_object)),  # the journal stores `by` as text
        (key, wire.encode(dict(good[0], shelve={"state": "shelved", "at": "2016-11-16T20:30:00Z", "until": None}))),
        (b"someone-else/condition/0000000000000000", wire.encode(good[0])),  # would replace another alarm's state
    ]
    positions = produce_raw(kafka_broker.bootstrap, topic, [(key, wire.encode(good[0]))] + bad + [(key, None)])
    deliver(kafka_broker.bootstrap, topic_prefix, good[1:], tmp_path)

    caplog.set_level(logging.WARNING, logger="desktop.core.alarms.reader")
    reader = AckReader(kafka_broker.bootstrap, topic_prefix)
    seen = Collected()
    reader.start(seen.on_records, on_failed=seen.failures.append)
    try:
        records = seen.wait_for(2)
    finally:
        assert reader.stop(30)
    # The good records on both sides of the bad ones arrive; the tombstone carries nothing.
    assert ids(records) == ids(good)
    assert seen.failures == [] and reader.skipped_count == len(bad)
    lines = [r.getMessage() for r in caplog.records if r.name == "desktop.core.alarms.reader"]
    problems = ["not UTF-8", "not valid JSON", "a list where a JSON object belongs",
                "acknowledged.by: an object where text", "shelve.until: null where an ISO-8601 time",
                "is not the record's alarm_id"]
    # One line per bad record, naming where it is and what is wrong with it.
    expected = {f"skipped invalid record at {topic} partition {partition} offset {offset}: ": problem
                for (partition, offset), problem in zip(positions[1:len(bad) + 1], problems)}
    assert len(lines) == len(bad), lines
    for line in lines:
        where = line[:line.index(": ") + 2]
        assert where in expected and expected.pop(where) in line, line
    assert expected == {}


def test_every_field_the_station_uses_is_checked():
    record = wire.alarm_ack_value("m/condition/0123456789abcdef", "m", "condition",
                                  wire.acknowledgement("2016-11-16T20:30:00Z", "ana", "cell-1", None),
                                  wire.shelve_action("shelved", "2016-11-16T20:31:00Z", "ana", "cell-1",
                                                     "2016-11-16T21:31:00Z", "probe"),
                                  record_id="r1", station="cell-1", written_at="2016-11-16T20:31:00Z")
    assert validate_ack_value(record) is None
    broken = {
        "alarm_id": (7, "alarm_id: a number where text belongs"),
        "device_uuid": (["m"], "device_uuid: a list where text or null belongs"),
        "acknowledged": ("yes", "acknowledged: text where an object or null belongs"),
    }
    for field, (value, problem) in broken.items():
        assert validate_ack_value(dict(record, **{field: value})) == problem
    assert validate_ack_value(dict(record, alarm_id="x" * 1001)) == "alarm_id: longer than 1000 characters"
    assert validate_ack_value(dict(record, acknowledged=dict(record["acknowledged"], at="yesterday"))) == \
        "acknowledged.at: text where an ISO-8601 time belongs"
    assert validate_ack_value(dict(record, shelve=dict(record["shelve"], state="hidden"))) == \
        "shelve.state: must be 'shelved' or 'unshelved'"
    assert validate_ack_value(dict(record, shelve=dict(record["shelve"], reason=3))) == \
        "shelve.reason: a number where text or null belongs"
    assert validate_ack_value(None) == "null where a JSON object belongs"


@pytest.mark.integration
def test_reader_runs_inside_a_consumer_loop_that_reads_other_topics_too(kafka_broker, topic_prefix, tmp_path, fault_791):
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap}, topic_prefix)
    records = ack_records(3, fault_791)
    deliver(kafka_broker.bootstrap, topic_prefix, records, tmp_path)
    other_topic = wire.topic_name(wire.AGENT_STATUS, topic_prefix)
    status = wire.agent_status_value("http://agent:5000", "connected", "2016-11-16T20:00:00Z", None)
    produce_raw(kafka_broker.bootstrap, other_topic, [(wire.agent_key("http://agent:5000"), wire.encode(status))])

    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": f"loop-{topic_prefix}",
                         "enable.auto.commit": False})
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer.assign([TopicPartition(other_topic, 0, OFFSET_BEGINNING)])  # the loop's own topic
    reader = AckReader(kafka_broker.bootstrap, topic_prefix)
    try:
        assert reader.attach(consumer)
        taken, others = [], []
        deadline = time.monotonic() + 60
        while (len(taken) < 3 or not others) and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=100, timeout=0.5)
            taken += reader.take(messages)
            others += [m for m in messages if m.error() is None and m.topic() == other_topic]
        # Each alarm's records go to the partition of its key: three alarms, no order across them.
        assert ids(taken) == ids(records)
        # The loop's own topic is still its own: assigned and read as before.
        assert [wire.decode(m.value())["state"] for m in others] == ["connected"]
        assert reader.attach(consumer)  # nothing new: the positions are kept, nothing read twice
        assert reader.take(consumer.consume(num_messages=100, timeout=1.0)) == ()
    finally:
        consumer.close()


def test_settings_the_client_refuses_are_reported_not_swallowed(closed_port):
    reader = AckReader(closed_port, properties={"no.such.property": "1"})
    failures, statuses = [], []
    done = threading.Event()
    reader.start(lambda records: None, on_status=lambda state, detail: statuses.append(state),
                 on_failed=lambda text: (failures.append(text), done.set()))
    assert done.wait(30)
    assert reader.stop(10)
    assert len(failures) == 1 and "invalid Kafka settings" in failures[0] and "no.such.property" in failures[0]
    assert reader.failure == failures[0]
    assert statuses[0] == "connecting" and statuses[-1] == "stopped"


@pytest.mark.integration
def test_an_error_in_the_callback_ends_the_reader_with_a_report(kafka_broker, topic_prefix, tmp_path, fault_791):
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap}, topic_prefix)
    deliver(kafka_broker.bootstrap, topic_prefix, ack_records(1, fault_791), tmp_path)
    reader = AckReader(kafka_broker.bootstrap, topic_prefix)
    failures, statuses = [], []
    done = threading.Event()

    def on_records(records):
        raise KeyError("alarm table out of step")

    reader.start(on_records, on_status=lambda state, detail: statuses.append(state),
                 on_failed=lambda text: (failures.append(text), done.set()))
    assert done.wait(60)
    assert reader.stop(10) and not reader.running
    assert len(failures) == 1 and failures[0].startswith("KeyError: 'alarm table out of step' (at test_alarm_reader.py:")
    assert statuses[-1] == "stopped"  # the consumer was closed on the way out


def test_an_unreachable_broker_is_a_status_and_the_reader_keeps_trying(closed_port):
    reader = AckReader(closed_port, properties={"reconnect.backoff.max.ms": "500"})
    statuses = []
    unreachable = threading.Event()

    def on_status(state, detail):
        statuses.append((state, detail))
        if state == "unreachable":
            unreachable.set()

    reader.start(lambda records: None, on_status=on_status)
    try:
        assert unreachable.wait(60), statuses
        assert reader.running and reader.failure is None
    finally:
        assert reader.stop(30)
    assert statuses[-1] == ("stopped", "")
