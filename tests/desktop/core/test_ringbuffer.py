"""Ring buffers: bounded by capacity and by time window, oldest-first, never back in time."""
from __future__ import annotations

import numpy as np
import pytest

from desktop.core.ringbuffer import RingBuffer, SeriesStore


def test_keeps_only_the_newest_capacity_points_in_order():
    buffer = RingBuffer(capacity=100)
    expected_times: list[float] = []
    for start in range(0, 1000, 7):  # many small appends: grows, wraps and compacts
        times = np.arange(start, start + 7, dtype=float)
        buffer.extend(times, times * 2)
        expected_times.extend(times)
    times, values = buffer.snapshot()
    assert len(buffer) == 100
    assert times.tolist() == expected_times[-100:]
    assert values.tolist() == [t * 2 for t in expected_times[-100:]]
    assert np.all(np.diff(times) > 0)


def test_a_single_append_larger_than_the_capacity_keeps_its_tail():
    buffer = RingBuffer(capacity=10)
    buffer.extend(np.arange(25.0), np.arange(25.0))
    times, _ = buffer.snapshot()
    assert times.tolist() == list(range(15, 25))


def test_storage_never_grows_past_twice_the_capacity():
    buffer = RingBuffer(capacity=1000)
    for start in range(0, 50_000, 333):
        times = np.arange(start, start + 333, dtype=float)
        buffer.extend(times, times)
    assert len(buffer) == 1000
    assert buffer._times.size <= 2 * 1000  # the bound on memory per data item


def test_time_going_backwards_starts_the_series_over():
    buffer = RingBuffer(capacity=50)
    buffer.extend(np.array([10.0, 11.0, 12.0]), np.array([1.0, 2.0, 3.0]))
    buffer.extend(np.array([5.0, 6.0]), np.array([7.0, 8.0]))  # the source restarted
    assert buffer.snapshot()[0].tolist() == [5.0, 6.0]
    # A jump back inside one append keeps only what follows the jump.
    buffer.extend(np.array([7.0, 8.0, 1.0, 2.0]), np.array([0.0, 0.0, 9.0, 9.0]))
    assert buffer.snapshot()[0].tolist() == [1.0, 2.0]


def test_equal_timestamps_are_kept():
    buffer = RingBuffer(capacity=10)
    buffer.extend(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert len(buffer) == 3


def test_snapshot_window_and_copies():
    buffer = RingBuffer(capacity=1000)
    times = np.arange(0.0, 1000.0)
    buffer.extend(times, times)
    recent_times, recent_values = buffer.snapshot(window_seconds=100)
    assert recent_times[0] == 899.0 and recent_times[-1] == 999.0
    recent_values[:] = -1  # the plot may keep or change what it was given
    assert buffer.snapshot()[1][-1] == 999.0
    assert buffer.last_time == 999.0 and buffer.last_value == 999.0


def test_version_changes_with_data():
    buffer = RingBuffer(capacity=10)
    before = buffer.version
    buffer.extend(np.array([]), np.array([]))
    assert buffer.version == before
    buffer.extend(np.array([1.0]), np.array([1.0]))
    assert buffer.version > before


def test_rejects_mismatched_arrays_and_bad_capacity():
    with pytest.raises(ValueError):
        RingBuffer(capacity=0)
    with pytest.raises(ValueError):
        RingBuffer(10).extend(np.array([1.0, 2.0]), np.array([1.0]))


def test_series_store_creates_buffers_on_first_data():
    store = SeriesStore(capacity=5)
    key = ("mtc_adapter004", "Mazak03-S_2")
    assert key not in store
    store.extend(key, np.array([1.0]), np.array([3194.0]))
    assert key in store and store.get(key).last_value == 3194.0
    assert store.get(("nope", "nope")) is None


def test_a_plant_of_series_shares_one_budget_of_live_points_and_each_keeps_its_newest():
    store = SeriesStore(capacity=1000, max_points=2000)
    times = np.arange(800, dtype=np.float64)
    # Two series: the budget does not bind (each may keep its full capacity).
    for item in ("a", "b"):
        store.extend(("m1", item), times, times * 2)
    assert store.per_series == 1000 and all(len(store.get(("m1", i))) == 800 for i in "ab")
    # Eight series: a quarter of the budget each, the newest points, in order.
    for item in "cdefgh":
        store.extend(("m1", item), times, times * 2)
    for item in "abcdefgh":
        store.extend(("m1", item), times + 800, (times + 800) * 2)
    assert store.per_series == 250
    series, points, allocated = store.footprint()
    assert series == 8 and points == 2000
    # Storage follows the share down (at most twice what a series may keep).
    assert allocated <= 8 * 2 * 250 * 16
    kept_times, kept_values = store.get(("m1", "a")).snapshot()
    assert kept_times.tolist() == list(range(1350, 1600)) and kept_values.tolist() == [2 * t for t in range(1350, 1600)]


def test_a_few_series_keep_their_window_whatever_the_budget():
    store = SeriesStore(capacity=20_000, window_seconds=600.0)  # the app's defaults
    for item in range(100):  # 8 NIST machines have about this many numeric items
        store.extend(("m", str(item)), np.arange(0.0, 600.0), np.zeros(600))
    assert store.per_series == 20_000
    assert store.footprint()[1] == 100 * 600
