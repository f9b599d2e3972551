"""Bounded, time-ordered buffers of (epoch seconds, value) samples, one per data item.

The plot redraws from these many times a second, so appends are vectorised numpy copies and
memory is bounded twice: by a point capacity per data item and, when the buffer has one, by a
time window applied as points arrive (older points are dropped, so a plant's thousands of
series hold only the window the app reads from Kafka, not `capacity` points each - that is
what kept the app's memory growing for half an hour; the oldest points go once they are an
eighth of a window past it, and `snapshot` cuts at the window exactly). `snapshot` can
narrow it further. A `SeriesStore` also bounds the sum over all its series (`max_points`): a
plant of thousands of series at tens of thousands of samples a second would otherwise hold
hundreds of MB for its window; each series then keeps at most an equal share of that budget,
so at plant rates a series' live window is shorter than the time window (a detail view loads
its look-back from Kafka in any case), and for a few machines the budget never binds. Storage grows on demand up to twice the capacity and is compacted in
place, which keeps
the live points contiguous (a cheap slice to read) without a per-append shift. Time never
goes backwards in a buffer: plotting needs a monotonic x axis, and a timestamp earlier than
the last one means the source restarted (e.g. a replay looping), so the old points are
dropped rather than drawn as a line back in time.
"""
from __future__ import annotations

from typing import Hashable

import numpy as np

DEFAULT_CAPACITY = 20_000
DEFAULT_WINDOW_SECONDS = 600.0
# Live points held over all series at most (16 bytes each, storage up to twice that).
DEFAULT_MAX_POINTS = 3_000_000
# A series keeps at least this many points, however many series share the budget.
MIN_POINTS_PER_SERIES = 100
_INITIAL_SIZE = 256
_SMALL = 16  # appends of up to this many points are checked for order without numpy


class RingBuffer:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, window_seconds: float | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        # Points older than the newest minus this are dropped as new ones arrive (None: keep).
        self.window_seconds = window_seconds
        size = min(_INITIAL_SIZE, 2 * capacity)
        self._times = np.empty(size, dtype=np.float64)
        self._values = np.empty(size, dtype=np.float64)
        self._start = 0
        self._end = 0
        # Bumped on every change so a view can skip redrawing unchanged data.
        self.version = 0

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def last_time(self) -> float | None:
        return float(self._times[self._end - 1]) if len(self) else None

    @property
    def last_value(self) -> float | None:
        return float(self._values[self._end - 1]) if len(self) else None

    def clear(self) -> None:
        self._start = self._end = 0
        self.version += 1

    @property
    def allocated_bytes(self) -> int:
        return self._times.nbytes + self._values.nbytes

    def extend(self, times: np.ndarray, values: np.ndarray) -> None:
        """Append samples in time order; keeps only the newest `capacity` of them."""
        times = np.asarray(times, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        if times.shape != values.shape or times.ndim != 1:
            raise ValueError(f"times and values must be 1-D and equal length, got {times.shape} and {values.shape}")
        if times.size == 0:
            return
        # Most appends carry a few points (a batch per series): compared in Python then, as
        # numpy's per-call cost is larger than the work.
        if times.size <= _SMALL:
            listed = times.tolist()
            backwards = [i for i in range(len(listed) - 1) if listed[i + 1] < listed[i]]
        else:
            backwards = np.flatnonzero(np.diff(times) < 0)
        if len(backwards):
            # Only what follows the last jump back is in order with what comes next.
            cut = int(backwards[-1]) + 1
            times, values = times[cut:], values[cut:]
            self._start = self._end = 0
        elif len(self) and times[0] < self._times[self._end - 1]:
            self._start = self._end = 0
        if times.size > self.capacity:
            times, values = times[-self.capacity :], values[-self.capacity :]
        self._make_room(times.size)
        end = self._end + times.size
        self._times[self._end : end] = times
        self._values[self._end : end] = values
        self._end = end
        if len(self) > self.capacity:
            self._start = self._end - self.capacity
        if self.window_seconds is not None:
            # Trimmed once the oldest point is an eighth of a window past it, not on every
            # append (a search per append per series was a fifth of the core thread's time on a
            # plant's stream); `snapshot` cuts at the window exactly.
            cutoff = times[-1] - self.window_seconds * 1.125
            if self._times[self._start] < cutoff:
                self._start += int(np.searchsorted(self._times[self._start : self._end], cutoff, side="left"))
        self.version += 1

    def _make_room(self, count: int) -> None:
        size = self._times.size
        if self._end + count <= size <= 2 * self.capacity:
            return
        keep = min(len(self), self.capacity - count)
        needed = keep + count
        if size > 2 * self.capacity:
            size = 2 * self.capacity  # the capacity was lowered (a smaller share): storage goes back
        elif needed > size // 2 and size < 2 * self.capacity:
            # Grow geometrically, never past twice the capacity.
            size = min(2 * self.capacity, max(2 * size, 2 * needed))
        times = np.empty(size, dtype=np.float64) if size != self._times.size else self._times
        values = np.empty(size, dtype=np.float64) if size != self._values.size else self._values
        # Compact: the newest `keep` points move to the front (copy() because they may overlap).
        times[:keep] = self._times[self._end - keep : self._end].copy()
        values[:keep] = self._values[self._end - keep : self._end].copy()
        self._times, self._values = times, values
        self._start, self._end = 0, keep

    def snapshot(self, window_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the points (oldest first), optionally only those within `window_seconds`
        of the newest point. Copies, because the plot keeps the arrays it is given."""
        times = self._times[self._start : self._end]
        values = self._values[self._start : self._end]
        if self.window_seconds is not None:
            window_seconds = self.window_seconds if window_seconds is None else min(window_seconds, self.window_seconds)
        if window_seconds is not None and times.size:
            first = int(np.searchsorted(times, times[-1] - window_seconds, side="left"))
            times, values = times[first:], values[first:]
        return times.copy(), values.copy()


class SeriesStore:
    """One `RingBuffer` per series key (device uuid, data item id), created on first data."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, window_seconds: float | None = None,
                 max_points: int | None = DEFAULT_MAX_POINTS) -> None:
        self.capacity = capacity
        self.window_seconds = window_seconds
        self.max_points = max_points
        self._buffers: dict[Hashable, RingBuffer] = {}
        # The points each series may keep now: `capacity`, or its share of `max_points`.
        self._per_series = capacity

    @property
    def per_series(self) -> int:
        return self._per_series

    def __contains__(self, key: Hashable) -> bool:
        return key in self._buffers and len(self._buffers[key]) > 0

    def __len__(self) -> int:
        return len(self._buffers)

    def keys(self) -> list[Hashable]:
        return list(self._buffers)

    def get(self, key: Hashable) -> RingBuffer | None:
        return self._buffers.get(key)

    def extend(self, key: Hashable, times: np.ndarray, values: np.ndarray) -> None:
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = RingBuffer(self.capacity, self.window_seconds)
            if self.max_points is not None:
                share = max(MIN_POINTS_PER_SERIES, self.max_points // len(self._buffers))
                self._per_series = min(self.capacity, share)
        if buffer.capacity != self._per_series:
            # A new series made every share smaller: applied as each series next gets data.
            buffer.capacity = self._per_series
        buffer.extend(times, values)

    def clear(self) -> None:
        self._buffers.clear()
        self._per_series = self.capacity

    def footprint(self) -> tuple[int, int]:
        """(series, points held, bytes allocated for them): what the live window costs."""
        buffers = list(self._buffers.values())
        return (len(buffers), sum(len(buffer) for buffer in buffers),
                sum(buffer.allocated_bytes for buffer in buffers))
