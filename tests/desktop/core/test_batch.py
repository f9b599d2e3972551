"""Kafka records to batches: decoding, numeric sample arrays, errors, merging, the gate."""
from __future__ import annotations

import numpy as np
import pytest

from producer import wire

import recorded_nist as testing
from desktop.core.batch import Batch, BatchGate, Record, build_batch, merge, merge_all, parse_timestamp

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"
PREFIX = "plant1."


@pytest.fixture(scope="module")
def devices():
    return testing.load_devices()


@pytest.fixture(scope="module")
def mazak03_observations(devices):
    mazak03 = testing.device_named(devices, "Mazak03")
    return [o for _, o in testing.shdr_observations(testing.nist_shdr(MAZAK03_DAY), mazak03)]


def recorded_srpm() -> tuple[list[float], list[float]]:
    """Spindle speed (Srpm) straight from the SHDR text: (epoch seconds, rpm) of numeric lines."""
    times, values = [], []
    for line in testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines():
        fields = line.split("|")
        if fields[1] == "Srpm" and fields[2] != "UNAVAILABLE":
            times.append(parse_timestamp(fields[0]))
            values.append(float(fields[2]))
    return times, values


def test_batch_from_recorded_day(devices, mazak03_observations):
    batch = testing.batch_of(devices, mazak03_observations, topic_prefix=PREFIX)
    assert batch.errors == ()
    assert batch.record_count == len(devices) + len(mazak03_observations)
    assert [uuid for uuid, _ in batch.devices] == [d["device_uuid"] for d in devices]
    assert len(batch.observations) == len(mazak03_observations)
    srpm = batch.samples[("mtc_adapter004", "Mazak03-S_2")]
    times, values = recorded_srpm()
    assert srpm.times.tolist() == pytest.approx(times)
    assert srpm.values.tolist() == values
    assert not srpm.times.flags.writeable and not srpm.values.flags.writeable  # immutable


def test_topics_of_another_prefix_are_not_interpreted(devices):
    batch = testing.batch_of(devices, topic_prefix="other.")
    assert build_batch(testing.records(devices, topic_prefix="other."), "plant1.").devices == ()
    assert len(batch.devices) == len(devices)


def test_undecodable_record_is_skipped_naming_where_and_the_rest_is_kept(devices, mazak03_observations):
    good = testing.records(observations=mazak03_observations[:3], topic_prefix=PREFIX)
    topic = wire.topic_name(wire.OBSERVATIONS, PREFIX)
    bad = Record(topic, 2, 4711, b"mtc_adapter004", b"{not json")
    batch = build_batch([good[0], bad, *good[1:]], PREFIX)
    assert batch.observations == tuple(mazak03_observations[:3])
    assert batch.skipped_count == 1 and batch.errors == ()
    assert batch.skipped[0].describe().startswith(f"{topic} partition 2 offset 4711: not valid JSON")


def test_device_tombstone_and_agent_status(devices):
    status = wire.agent_status_value("http://127.0.0.1:5000", "unreachable", "2026-11-28T00:00:00Z", "refused")
    records = testing.records(devices[:1], agent_statuses=[status], topic_prefix=PREFIX)
    records.append(Record(wire.topic_name(wire.DEVICES, PREFIX), 0, 9, b"mtc_adapter001", None))
    batch = build_batch(records, PREFIX)
    assert batch.devices[-1] == ("mtc_adapter001", None)
    assert batch.agent_statuses == (("http://127.0.0.1:5000", status),)


def test_unavailable_and_text_samples_are_observations_but_not_points(devices):
    hurco = testing.device_named(devices, "Hurco01")
    batch = testing.batch_of(observations=testing.unavailable_observations(hurco, "2016-11-16T20:00:00Z"))
    assert len(batch.observations) == len(hurco["data_items"])
    assert dict(batch.samples) == {}


def test_parse_timestamp_handles_agent_formats():
    assert parse_timestamp("2016-11-16T20:29:56.063Z") == pytest.approx(1479328196.063)
    assert parse_timestamp("2016-11-15T20:28:24.150524Z") == pytest.approx(1479241704.150524)
    assert parse_timestamp("2021-02-11T20:45:18.4845341Z") == pytest.approx(1613076318.484534)
    assert parse_timestamp("2021-02-11T20:45:18.484534") == parse_timestamp("2021-02-11T20:45:18.484534Z")


def test_merge_keeps_order_latest_devices_and_bounds(devices, mazak03_observations):
    first = testing.batch_of(devices, mazak03_observations[:2000])
    renamed = dict(devices[0], model="changed")
    second = testing.batch_of([renamed], mazak03_observations[2000:])
    merged = merge(first, second, max_points=50, max_observations=500)
    assert merged.record_count == first.record_count + second.record_count
    assert dict(merged.devices)[devices[0]["device_uuid"]]["model"] == "changed"
    assert len(merged.devices) == len(devices)
    # Every condition survives the compaction (alarms need each transition) ...
    conditions = [o for o in mazak03_observations if o["category"] == "CONDITION"]
    kept_conditions = [o for o in merged.observations if o["category"] == "CONDITION"]
    assert len(merged.observations) <= 500
    assert kept_conditions == conditions[-len(kept_conditions):]
    # ... and sample arrays keep their newest points, in time order.
    whole = testing.batch_of(observations=mazak03_observations).samples
    for key, series in merged.samples.items():
        assert len(series.times) <= 50
        assert series.times.tolist() == whole[key].times[-len(series.times):].tolist()
        assert np.all(np.diff(series.times) >= 0)


def test_gate_lets_one_batch_in_flight_and_merges_the_rest(mazak03_observations):
    gate = BatchGate()
    a = testing.batch_of(observations=mazak03_observations[:10])
    b = testing.batch_of(observations=mazak03_observations[10:20])
    c = testing.batch_of(observations=mazak03_observations[20:30])
    assert gate.offer(a) is a
    assert gate.offer(b) is None and gate.offer(c) is None  # GUI busy: merged, not queued
    assert gate.take_pending() is None  # still busy
    gate.release()
    pending = gate.take_pending()
    assert pending is not None and list(pending.observations) == mazak03_observations[10:30]
    assert gate.in_flight and not gate.has_pending
    gate.release()
    assert gate.take_pending() is None


def test_a_backlog_of_many_batches_reaches_the_model_whole_and_in_order(devices, mazak03_observations):
    # The GUI busy for 40 batches: what it gets next holds every observation of them, once, in
    # arrival order, every sample point of every series, and the newest device records.
    assert len(mazak03_observations) > 3000
    chunks = [mazak03_observations[i:i + 100] for i in range(0, len(mazak03_observations), 100)]
    gate = BatchGate()
    assert gate.offer(testing.batch_of(devices, chunks[0])) is not None
    for chunk in chunks[1:]:
        assert gate.offer(testing.batch_of(observations=chunk)) is None
    gate.release()
    backlog = gate.take_pending()
    assert list(backlog.observations) == mazak03_observations[100:]
    assert backlog.record_count == backlog.observation_records == len(mazak03_observations) - 100
    whole = testing.batch_of(observations=mazak03_observations[100:])
    assert backlog.samples.keys() == whole.samples.keys()
    for key, series in whole.samples.items():
        assert backlog.samples[key].times.tolist() == series.times.tolist()
        assert backlog.samples[key].values.tolist() == series.values.tolist()
    assert backlog.seen == whole.seen


def test_merging_at_once_gives_what_merging_two_by_two_gives(devices, mazak03_observations):
    batches = [testing.batch_of(devices if i == 0 else (), mazak03_observations[i:i + 300])
               for i in range(0, len(mazak03_observations), 300)]
    pairwise = None
    for batch in batches:
        pairwise = merge(pairwise, batch, max_points=100, max_observations=400)
    at_once = merge_all(batches, max_points=100, max_observations=400)
    assert at_once.record_count == pairwise.record_count == len(mazak03_observations) + len(devices)
    assert dict(at_once.devices) == dict(pairwise.devices)
    # The latest state of every data item is the same; compacting once keeps no fewer conditions.
    latest = lambda b: {(o["device_uuid"], o["data_item_id"]): o["value"] for o in b.observations}  # noqa: E731
    assert latest(at_once) == latest(pairwise)
    assert len(at_once.observations) <= 400
    for key, series in pairwise.samples.items():
        assert at_once.samples[key].times.tolist() == series.times.tolist()


def test_a_stalled_gui_makes_the_gate_hold_a_bounded_backlog(mazak03_observations):
    gate = BatchGate(max_observations=300)
    gate.offer(testing.batch_of(observations=mazak03_observations[:10]))
    stream = mazak03_observations * 3
    for start in range(0, len(stream), 200):
        gate.offer(testing.batch_of(observations=stream[start:start + 200]))
        assert sum(len(b.observations) for b in gate._pending) <= 600 + 200
    gate.release()
    backlog = gate.take_pending()
    # Compacted, not dropped: the newest value of every data item is there.
    newest = {o["data_item_id"]: o["value"] for o in stream}
    assert {o["data_item_id"]: o["value"] for o in backlog.observations} == newest
    assert backlog.observation_records == len(stream)


def test_empty_batch():
    assert Batch().is_empty
    assert build_batch([]).is_empty
