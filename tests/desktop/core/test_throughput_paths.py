"""The shortcuts a plant-sized stream takes give the same result as the long way.

Each test compares a shortcut with an independent oracle: the inline shape check of
`build_batch` with the full schema check `wire.observation_problem`; a whole batch applied
to the fleet with the same observations applied one at a time; a ring buffer's time window
with the points fed to it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import recorded_nist as testing
from desktop.core.batch import Record, build_batch
from desktop.core.machines import Fleet
from desktop.core.ringbuffer import RingBuffer
from producer import wire

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"


@pytest.fixture(scope="module")
def mazak03():
    return testing.device_named(testing.load_devices(), "Mazak03")


def _recorded(device, last_line: int) -> list[dict]:
    return [o for _, o in testing.shdr_observations(testing.nist_shdr(MAZAK03_DAY), device, last_line=last_line)]


def _variants(observation: dict) -> list[dict]:
    """The observation, and copies with one field removed, mistyped or out of range."""
    variants = [observation]
    wrong_values = (None, "", 5, -1, 2.5, True, [1, 2], {"a": "b"}, "2016-02-30T00:00:00Z", "NOT_A_TIME")
    for name in list(observation) + ["text", "sample_count", "attributes"]:
        removed = dict(observation)
        removed.pop(name, None)
        variants.append(removed)
        for wrong in wrong_values:
            variants.append(dict(observation, **{name: wrong}))
    return variants


def test_the_inline_shape_check_accepts_and_refuses_exactly_what_the_schema_does(mazak03):
    observations = _recorded(mazak03, 400)
    by_category = {}
    for observation in observations:
        by_category.setdefault((observation["category"], type(observation.get("value")).__name__), observation)
    assert {category for category, _ in by_category} == {"SAMPLE", "EVENT", "CONDITION"}
    topic = wire.topic_name(wire.OBSERVATIONS)
    checked = refused = 0
    for observation in by_category.values():
        for variant in _variants(observation):
            payload = json.dumps(variant).encode()
            batch = build_batch([Record(topic, 0, 7, b"k", payload, 1)])
            expected = wire.observation_problem(variant)
            shown = f"{variant!r:.300}"
            if expected is None:
                assert batch.skipped_count == 0, f"refused a valid observation ({batch.skipped}): {shown}"
                assert batch.observations == (variant,)
            else:
                refused += 1
                assert batch.skipped_count == 1, f"accepted an observation the schema refuses ({expected}): {shown}"
                assert batch.skipped[0].problem == expected
                assert batch.observations == ()
            checked += 1
    assert checked > 500 and refused > 300


def _state(fleet: Fleet, uuid: str):
    tracker = fleet.tracker(uuid)
    view = fleet.view(uuid, now=0.0)
    return view, tracker.observation_count, tracker.last_timestamp, sorted(
        (c.key, c.level, c.activation["sequence"], c.latest["sequence"]) for c in tracker.conditions.active())


def test_a_batch_applied_whole_leaves_the_state_of_its_observations_applied_one_by_one(mazak03):
    uuid = mazak03["device_uuid"]
    observations = _recorded(mazak03, 6000)
    assert sum(o["category"] == "CONDITION" for o in observations) > 20
    # One Condition item carrying two codes at once, one of them repeated, within one chunk:
    # what a batch must not collapse to its latest observation.
    condition = next(o for o in observations[1000:] if o["category"] == "CONDITION")
    sequence = 10_000_000
    for offset, (level, code) in enumerate((("FAULT", "101"), ("WARNING", "102"), ("FAULT", "101"))):
        sequence += 1
        observations.insert(1210 + 40 * offset, dict(condition, level=level, native_code=code, condition_id=code,
                                                     value=f"recorded item, code {code}", sequence=sequence))
    whole, one_by_one = Fleet(offline_after=0), Fleet(offline_after=0)
    for fleet in (whole, one_by_one):
        fleet.set_device(uuid, mazak03)
    compared = 0
    for start in range(0, len(observations), 500):
        chunk = observations[start : start + 500]
        whole.observe(tuple(chunk), {uuid: 1.0})
        for observation in chunk:
            one_by_one.observe([observation], {uuid: 1.0})
        assert _state(whole, uuid) == _state(one_by_one, uuid), f"after observation {start + len(chunk)}"
        compared += 1
    assert compared == -(-len(observations) // 500) and len(observations) > 3000
    assert whole.tracker(uuid).observation_count == len(observations)


def test_a_ring_buffer_with_a_window_holds_only_that_window_of_what_it_was_fed():
    buffer = RingBuffer(capacity=10_000, window_seconds=30.0)
    fed_times: list[float] = []
    rng = np.random.default_rng(3)
    moment = 1_000.0
    for _ in range(400):
        count = int(rng.integers(1, 6))
        times = moment + np.cumsum(rng.uniform(0.1, 1.0, count))
        moment = float(times[-1])
        buffer.extend(times, times * 2.0)
        fed_times += times.tolist()
        expected = [t for t in fed_times if t >= fed_times[-1] - 30.0]
        held_times, held_values = buffer.snapshot()
        assert held_times.tolist() == expected
        assert held_values.tolist() == [t * 2.0 for t in expected]
    assert fed_times[-1] - fed_times[0] > 300  # ten windows fed, one held
