"""Utilisation per shift from a machine's state bands.

A shift plan is a list of local start times ("06:00", "14:00", "22:00"): each shift runs from
its start to the next one's (the last to the first of the next day). For each shift that
overlaps a window, `shift_utilisation` tells how long the machine was running and how much of
the shift the bands cover at all (time before the first band is unknown, not idle), so
"45 % running" is never computed over time nobody observed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

from desktop.core.machines import MachineStatus

DEFAULT_SHIFTS = ("06:00", "14:00", "22:00")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class ShiftError(ValueError):
    pass


def parse_shifts(text: str | Sequence[str]) -> tuple[str, ...]:
    """'06:00, 14:00, 22:00' -> ('06:00', '14:00', '22:00'); errors name the bad entry."""
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if not parts:
        raise ShiftError("Shift start times: at least one time (HH:MM) is needed")
    minutes = []
    for part in parts:
        match = _TIME.match(part)
        if not match:
            raise ShiftError(f"Shift start times: {part!r} is not a time of day HH:MM")
        minutes.append(int(match.group(1)) * 60 + int(match.group(2)))
    if len(set(minutes)) != len(minutes):
        raise ShiftError("Shift start times: a time appears twice")
    return tuple(f"{m // 60:02d}:{m % 60:02d}" for m in sorted(minutes))


@dataclass(frozen=True)
class ShiftUse:
    label: str  # e.g. "Tue 06:00–14:00"
    start: float
    end: float
    running: float  # seconds running within the shift (and the window)
    known: float  # seconds covered by any band

    @property
    def fraction(self) -> float | None:
        return self.running / self.known if self.known > 0 else None


def shifts_between(start: float, end: float, shifts: Sequence[str]) -> list[tuple[str, float, float]]:
    """(label, start, end) of every shift overlapping [start, end], in local time."""
    starts = [tuple(int(x) for x in s.split(":")) for s in shifts]
    day = datetime.fromtimestamp(start).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    result = []
    while day.timestamp() < end:
        for index, (hour, minute) in enumerate(starts):
            begin = day.replace(hour=hour, minute=minute)
            if index + 1 < len(starts):
                finish = day.replace(hour=starts[index + 1][0], minute=starts[index + 1][1])
            else:
                finish = (day + timedelta(days=1)).replace(hour=starts[0][0], minute=starts[0][1])
            if finish.timestamp() > start and begin.timestamp() < end:
                label = f"{begin:%a} {begin:%H:%M}–{finish:%H:%M}"
                result.append((label, begin.timestamp(), finish.timestamp()))
        day += timedelta(days=1)
    return result


def shift_utilisation(bands: Sequence[tuple[float, MachineStatus]], start: float, end: float,
                      shifts: Sequence[str] = DEFAULT_SHIFTS) -> list[ShiftUse]:
    """Running time per shift over [start, end]; the last band lasts until `end`."""
    spans = []
    for index, (begin, status) in enumerate(bands):
        finish = bands[index + 1][0] if index + 1 < len(bands) else end
        spans.append((begin, min(finish, end), status))
    result = []
    for label, shift_start, shift_end in shifts_between(start, end, shifts):
        lo, hi = max(shift_start, start), min(shift_end, end)
        running = known = 0.0
        for begin, finish, status in spans:
            overlap = min(finish, hi) - max(begin, lo)
            if overlap > 0:
                known += overlap
                if status == MachineStatus.RUNNING:
                    running += overlap
        result.append(ShiftUse(label, shift_start, shift_end, running, known))
    return result
