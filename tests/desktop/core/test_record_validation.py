"""Every record the desktop reads is checked against the message schema (producer/wire.py).

What the producer writes from every recorded MTConnect document passes; each way a record
can break the schema is refused with a message naming the field; and nothing - random JSON,
random changes to real records, absurd nesting - can make the checks, the batch builder or
the model raise. Skipped records are logged once each, then summarised.
"""
from __future__ import annotations

import gzip
import json
import logging

import pytest
from hypothesis import given, settings, strategies as st

import recorded_nist as testing
from desktop.core.batch import Record, SkippedRecord, build_batch
from desktop.core.feed import SkippedRecordLog
from desktop.core.model import MonitorModel
from producer import wire
from producer.mtconnect import documents
from repo_paths import RECORDED_DATA

PREFIX = "plant1."
OBSERVATIONS = wire.topic_name(wire.OBSERVATIONS, PREFIX)
DEVICES = wire.topic_name(wire.DEVICES, PREFIX)
STATUSES = wire.topic_name(wire.AGENT_STATUS, PREFIX)


def recorded_documents():
    for path in sorted(RECORDED_DATA.rglob("*")):
        if path.suffix not in (".xml", ".gz"):
            continue
        payload = path.read_bytes()
        yield path, gzip.decompress(payload) if path.suffix == ".gz" else payload


@pytest.fixture(scope="module")
def produced():
    """What the producer's parsers make of every recorded document, through the wire encoding."""
    observations, devices = [], []
    for path, payload in recorded_documents():
        try:
            root = documents.parse_xml(payload, str(path))
            kind = documents.root_kind(root)
            if kind == "Streams":
                observations += documents.parse_streams(payload, "http://agent").observations
            elif kind == "Devices":
                devices += documents.parse_devices(payload, "http://agent").devices
        except documents.DocumentError:
            continue  # documents that are errors by design (MTConnectError, a broken asset)
    return [wire.encode(o) for o in observations], [wire.encode(d) for d in devices]


def test_everything_the_producer_writes_from_the_recorded_documents_is_valid(produced):
    observations, devices = produced
    assert len(observations) > 50_000 and len(devices) > 50
    problems = {}
    for payload in observations:
        value, problem = wire.decode_record(payload)
        problem = problem or wire.observation_problem(value)
        if problem:
            problems.setdefault(problem, payload[:300])
    for payload in devices:
        problem = wire.device_problem(wire.decode(payload))
        if problem:
            problems.setdefault(problem, payload[:300])
    assert not problems, problems
    status = wire.agent_status_value("http://agent", "unreachable", "2026-11-28T00:00:00.000000Z", "refused", 7)
    assert wire.agent_status_problem(status) is None
    assert wire.agent_status_problem(wire.agent_status_value("http://agent", "connected", "x")) is None


@pytest.fixture(scope="module")
def real():
    devices = testing.load_devices()
    mazak03 = testing.device_named(devices, "Mazak03")
    day = [o for _, o in testing.shdr_observations(testing.nist_shdr("Mazak03-20161116-20161117.txt"), mazak03,
                                                    last_line=3000)]
    sample = next(o for o in day if o["category"] == "SAMPLE" and isinstance(o["value"], float))
    event = next(o for o in day if o["category"] == "EVENT")
    condition = next(o for o in day if o["category"] == "CONDITION")
    return {"devices": devices, "day": day, "sample": sample, "event": event, "condition": condition}


@pytest.mark.parametrize("timestamp", [
    "2016-11-16T20:29:56Z", "2016-11-16T20:29:56.1Z", "2016-11-16T20:29:56.063Z", "2016-11-16T20:29:56.123456789Z",
    "2016-11-16T20:29:56.063", "2016-11-16T20:29:56+01:00", "2016-11-16T20:29:56.5-0530",
])
def test_timestamps_in_any_iso_form_the_agent_wrote(real, timestamp):
    assert wire.observation_problem({**real["sample"], "timestamp": timestamp}) is None


@pytest.mark.parametrize("category, value", [
    ("EVENT", ""), ("EVENT", "   "), ("EVENT", {"a": "1", "b": None, "row": {"c": "x"}}), ("EVENT", {}),
    ("SAMPLE", 3), ("SAMPLE", -1.5), ("SAMPLE", [1.0, 2.0, 3.0]), ("SAMPLE", []), ("SAMPLE", "UNAVAILABLE"),
    ("SAMPLE", "not a number"), ("SAMPLE", {"x": "1"}), ("CONDITION", None), ("CONDITION", "MUST INPUT"),
])
def test_values_of_each_category(real, category, value):
    base = real["condition"] if category == "CONDITION" else real["sample"]
    assert wire.observation_problem({**base, "category": category, "value": value}) is None


def test_optional_and_unknown_fields_are_accepted(real):
    extra = {"text": " 12.0 ", "attributes": {"assetType": ""}, "sample_count": 3, "sample_rate": 100.0,
             "reset_triggered": "DAY", "a_field_from_a_later_version": [1, {"x": 2}]}
    assert wire.observation_problem({**real["sample"], **extra}) is None


@pytest.mark.parametrize("change, named", [
    ({"agent": None}, "agent"), ({"instance_id": True}, "instance_id"), ({"instance_id": "1"}, "instance_id"),
    ({"sequence": -1}, "sequence"), ({"sequence": 1.0}, "sequence"), ({"sequence": False}, "sequence"),
    ({"timestamp": "yesterday"}, "timestamp"), ({"timestamp": "2016-13-16T20:29:56Z"}, "timestamp"),
    ({"timestamp": 1479328196}, "timestamp"), ({"device_uuid": ""}, "device_uuid"), ({"device_uuid": 4}, "device_uuid"),
    ({"device_name": {"x": 1}}, "device_name"), ({"data_item_id": ""}, "data_item_id"),
    ({"category": "ALARM"}, "category"), ({"category": None}, "category"), ({"type": None}, "type"),
    ({"units": 1}, "units"), ({"value": None}, "SAMPLE value"), ({"value": True}, "SAMPLE value"),
    ({"value": [1.0, "2"]}, "SAMPLE value"), ({"value": [[1.0]]}, "SAMPLE value"),
    ({"value": {"x": [1]}}, "value entry"), ({"text": 1}, "text"), ({"attributes": {"a": 1}}, "attribute"),
    ({"attributes": []}, "attributes"), ({"sample_count": "3"}, "sample_count"), ({"sample_rate": True}, "sample_rate"),
    ({"reset_triggered": None}, "reset_triggered"),
])
def test_each_broken_field_is_named(real, change, named):
    problem = wire.observation_problem({**real["sample"], **change})
    assert problem is not None and named in problem, problem


@pytest.mark.parametrize("missing", wire.OBSERVATION_FIELDS)
def test_a_missing_field_is_named(real, missing):
    observation = {k: v for k, v in real["sample"].items() if k != missing}
    problem = wire.observation_problem(observation)
    assert problem is not None and missing in problem, problem


def test_event_and_condition_rules(real):
    assert "EVENT value" in wire.observation_problem({**real["event"], "value": 3.0})
    assert "value entry" in wire.observation_problem({**real["event"], "value": {"row": {"c": None}}})
    assert "CONDITION value" in wire.observation_problem({**real["condition"], "value": {"a": "b"}})
    assert "level" in wire.observation_problem({**real["condition"], "level": "Fault"})
    assert "native_code" in wire.observation_problem({**real["condition"], "native_code": 791})
    without = {k: v for k, v in real["condition"].items() if k != "qualifier"}
    assert "qualifier" in wire.observation_problem(without)


def test_device_and_agent_status_rules(real):
    device = real["devices"][0]
    assert wire.device_problem(device) is None
    assert "device_name" in wire.device_problem({"device_uuid": "x", "agent": {"x": 1}})
    assert "agent" in wire.device_problem({**device, "agent": {"x": 1}})
    assert "data_items" in wire.device_problem({**device, "data_items": "all"})
    assert "data_items[0].id" in wire.device_problem({**device, "data_items": [{"name": "x"}]})
    assert "data_items[0].units" in wire.device_problem({**device, "data_items": [{"id": "a", "units": 1}]})
    assert "model" in wire.device_problem({**device, "model": ["x"]})
    assert "instance_id" in wire.device_problem({**device, "instance_id": "1"})
    status = wire.agent_status_value("http://agent", "connected", "2026-11-28T00:00:00Z")
    assert "state" in wire.agent_status_problem({**status, "state": "exploded"})
    assert "since" in wire.agent_status_problem({**status, "since": None})
    assert "instance_id" in wire.agent_status_problem({**status, "instance_id": True})
    assert "last_error" in wire.agent_status_problem({k: v for k, v in status.items() if k != "last_error"})


@pytest.mark.parametrize("payload, problem", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{not json", "not valid JSON"),
    (b'{"value": NaN}', "not valid JSON"),
    (b"1" * 5000, "not valid JSON"),
    (b'{"device_name": "\\ud800"}', "unpaired surrogate"),
])
def test_undecodable_payloads(payload, problem):
    value, found = wire.decode_record(payload)
    assert value is None and problem in found


def test_nesting_below_the_parser_limit_is_refused_without_recursion(real):
    deep = json.loads("[" * 900 + "]" * 900)
    for value in (deep, {**real["sample"], "value": deep}, {**real["event"], "value": {"k": deep}}):
        assert wire.observation_problem(value) is not None
    assert wire.device_problem({**real["devices"][0], "data_items": [{"id": "a", "x": deep}]}) is not None
    record = Record(OBSERVATIONS, 0, 1, b"k", json.dumps({**real["sample"], "value": deep}).encode())
    batch = build_batch([record], PREFIX)
    assert batch.skipped_count == 1 and batch.observations == ()


def test_batch_skips_bad_records_and_keeps_every_real_one(real):
    good = testing.records(real["devices"], real["day"][:200], topic_prefix=PREFIX)
    bad = [
        Record(DEVICES, 0, 100, b"x", b'{"device_uuid":"x","agent":{"x":1}}'),
        Record(DEVICES, 1, 101, b"other", wire.encode(real["devices"][0])),  # key is not its uuid
        Record(STATUSES, 2, 102, b"http://a", wire.encode({"agent": "http://b", "state": "connected", "since": "",
                                                           "last_error": None, "instance_id": None})),
        Record(OBSERVATIONS, 3, 103, b"k", None),
        Record(OBSERVATIONS, 4, 104, b"k", b"[" * 10_000),
    ]
    batch = build_batch(good[:5] + bad + good[5:], PREFIX)
    assert batch.skipped_count == len(bad)
    assert [(s.topic, s.partition, s.offset) for s in batch.skipped] == [(r.topic, r.partition, r.offset) for r in bad]
    assert batch.skipped[1].problem == "key 'other' is not the record's device_uuid"
    assert len(batch.devices) == len(real["devices"]) and len(batch.observations) == 200
    model = MonitorModel()
    model.apply(batch)
    assert {view.device_uuid for view in model.fleet.views()} == {d["device_uuid"] for d in real["devices"]}
    assert model.skipped_count == len(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(which=st.sampled_from(["sample", "event", "condition", "device", "status"]),
       field=st.text(max_size=12) | st.sampled_from(wire.OBSERVATION_FIELDS + wire.CONDITION_FIELDS
                                                    + ("data_items", "text", "attributes")),
       replacement=json_values)
def test_no_change_to_a_real_record_can_break_the_batch_or_the_model(real, which, field, replacement):
    """Validated or skipped, but never an exception, and what is accepted the model can apply."""
    if which == "device":
        topic, base = DEVICES, {k: v for k, v in real["devices"][0].items() if k != "device_xml"}
    elif which == "status":
        topic, base = STATUSES, wire.agent_status_value("http://agent", "connected", "2026-11-28T00:00:00Z")
    else:
        topic, base = OBSERVATIONS, real[which]
    changed = {**base, field: replacement}
    key = str(changed.get("device_uuid") or changed.get("agent") or "k").encode("utf-8", "replace")
    records = testing.records(real["devices"][:2], topic_prefix=PREFIX) + [Record(topic, 0, 7, key, wire.encode(changed))]
    batch = build_batch(records, PREFIX)
    assert batch.record_count == 3 and batch.skipped_count in (0, 1)
    model = MonitorModel()
    model.apply(batch)
    for view in model.fleet.views():
        assert isinstance(view.name, str) and isinstance(view.reason, str)
    model.default_series()


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_random_json_in_any_topic_is_skipped_or_used_never_raised(value):
    for topic in (OBSERVATIONS, DEVICES, STATUSES):
        batch = build_batch([Record(topic, 0, 1, b"k", json.dumps(value).encode())], PREFIX)
        assert batch.skipped_count + len(batch.observations) + len(batch.devices) + len(batch.agent_statuses) == 1
        MonitorModel().apply(batch)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_skipped_records_are_logged_once_each_then_summarised(caplog):
    logger = logging.getLogger("tests.skipped")
    clock = FakeClock()
    skipped_log = SkippedRecordLog(logger, individually=5, interval=60.0, clock=clock)
    records = [SkippedRecord("t", n % 3, n, "not valid JSON") for n in range(1000)]
    with caplog.at_level(logging.WARNING, logger="tests.skipped"):
        for start in range(0, 500, 50):
            skipped_log.add(records[start:start + 50], 50)
        clock.now += 61
        skipped_log.add(records[500:550], 50)
        skipped_log.add(records[550:600], 50)
        skipped_log.flush(force=True)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:5] == [f"skipped invalid record at t partition {n % 3} offset {n}: not valid JSON" for n in range(5)]
    assert lines[5] == "further invalid records are summarised every 60 s"
    assert lines[6] == "skipped 545 more invalid record(s) (550 in all); latest at t partition 0 offset 549: not valid JSON"
    assert lines[7] == "skipped 50 more invalid record(s) (600 in all); latest at t partition 2 offset 599: not valid JSON"
    assert len(lines) == 8 and skipped_log.total == 600
