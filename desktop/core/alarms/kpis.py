"""Alarm-system KPIs from the journal, as an ISA-18.2 / IEC 62682 audit measures them.

For a time range: alarms per hour and per 10 minutes (activations, i.e. new alarms), the
peak 10 minutes and the share of 10-minute windows in flood (more than the flood limit, 10 by
default), the ten most frequent alarms ("bad actors") and their share of all alarms,
chattering and stale counts, alarms still standing at the end, and the mean times to
acknowledge and to clear. The same figures come per machine and per shift; shifts start at
local times of day (configurable, with an optional IANA time zone) and each lasts until the
next one starts.
"""
from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, time as day_time, timedelta, tzinfo
from typing import Iterable, Sequence

from desktop.core.alarms.journal import AlarmJournal, JournalEntry
from desktop.core.alarms.rules import EngineSettings, Shift

WINDOW_SECONDS = 600.0


@dataclass(frozen=True)
class BadActor:
    device_name: str
    rule_id: str
    identity: str
    native_code: str
    message: str
    count: int


@dataclass(frozen=True)
class KpiFigures:
    hours: float
    alarms: int
    alarms_per_hour: float
    alarms_per_10_minutes: float
    peak_10_minutes: int
    windows: int
    flood_windows: int
    flood_window_percent: float
    chattering: int
    stale: int
    standing: int
    acknowledged: int
    mean_time_to_acknowledge: float | None  # seconds
    mean_time_to_clear: float | None  # seconds
    bad_actors: tuple[BadActor, ...]
    top_10_percent: float  # share of all alarms that the ten bad actors caused


@dataclass(frozen=True)
class KpiReport:
    start: float
    end: float
    overall: KpiFigures
    by_machine: dict[str, KpiFigures] = field(default_factory=dict)
    by_shift: dict[str, KpiFigures] = field(default_factory=dict)


@dataclass
class _Activation:
    alarm_id: str
    at: float
    device_name: str
    rule_id: str
    identity: str
    native_code: str
    message: str
    chattering: bool
    stale: bool = False
    acknowledged_at: float | None = None
    cleared_at: float | None = None


def _zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _local(moment: float, zone: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(moment, zone) if zone else datetime.fromtimestamp(moment).astimezone()


def shift_intervals(shifts: Sequence[Shift], start: float, end: float, zone: tzinfo | None = None) -> dict[str, list[tuple[float, float]]]:
    """For each shift, the (start, end) epoch intervals it covers within [start, end)."""
    ordered = sorted(shifts, key=lambda s: s.start)
    intervals: dict[str, list[tuple[float, float]]] = {s.name: [] for s in ordered}
    if not ordered or end <= start:
        return intervals
    first_day = _local(start, zone).date() - timedelta(days=1)
    last_day = _local(end, zone).date() + timedelta(days=1)
    day = first_day
    while day <= last_day:
        for index, shift in enumerate(ordered):
            hour, minute = (int(part) for part in shift.start.split(":"))
            begins = datetime.combine(day, day_time(hour, minute))
            following = ordered[(index + 1) % len(ordered)]
            next_hour, next_minute = (int(part) for part in following.start.split(":"))
            ends = datetime.combine(day + timedelta(days=1 if index + 1 == len(ordered) else 0), day_time(next_hour, next_minute))
            if zone is not None:
                begins, ends = begins.replace(tzinfo=zone), ends.replace(tzinfo=zone)
            lo, hi = max(begins.timestamp(), start), min(ends.timestamp(), end)
            if hi > lo:
                intervals[shift.name].append((lo, hi))
        day += timedelta(days=1)
    return intervals


def _figures(activations: list[_Activation], intervals: list[tuple[float, float]], end: float, flood_alarms: int,
             window_starts: list[float]) -> KpiFigures:
    seconds = sum(hi - lo for lo, hi in intervals)
    hours = seconds / 3600
    count = len(activations)
    per_window = Counter(math.floor(a.at / WINDOW_SECONDS) * WINDOW_SECONDS for a in activations)
    windows = [w for w in window_starts if any(lo <= w < hi for lo, hi in intervals)]
    flood_windows = sum(1 for w in windows if per_window.get(w, 0) > flood_alarms)
    acked = [a.acknowledged_at - a.at for a in activations if a.acknowledged_at is not None]
    cleared = [a.cleared_at - a.at for a in activations if a.cleared_at is not None]
    actors = Counter((a.device_name, a.rule_id, a.identity) for a in activations)
    sample = {(a.device_name, a.rule_id, a.identity): a for a in activations}
    top = actors.most_common(10)
    bad_actors = tuple(BadActor(d, r, i, sample[(d, r, i)].native_code, sample[(d, r, i)].message, n) for (d, r, i), n in top)
    return KpiFigures(
        hours=hours,
        alarms=count,
        alarms_per_hour=count / hours if hours else 0.0,
        alarms_per_10_minutes=count / (seconds / WINDOW_SECONDS) if seconds else 0.0,
        peak_10_minutes=max((per_window.get(w, 0) for w in windows), default=0),
        windows=len(windows),
        flood_windows=flood_windows,
        flood_window_percent=100.0 * flood_windows / len(windows) if windows else 0.0,
        chattering=sum(a.chattering for a in activations),
        stale=sum(a.stale for a in activations),
        standing=sum(1 for a in activations if a.cleared_at is None),
        acknowledged=len(acked),
        mean_time_to_acknowledge=sum(max(0.0, t) for t in acked) / len(acked) if acked else None,
        mean_time_to_clear=sum(cleared) / len(cleared) if cleared else None,
        bad_actors=bad_actors,
        top_10_percent=100.0 * sum(n for _, n in top) / count if count else 0.0,
    )


def compute_kpis(entries: Iterable[JournalEntry], start: float, end: float,
                 shifts: Sequence[Shift] = EngineSettings().shifts, timezone_name: str | None = None,
                 flood_alarms: int = 10) -> KpiReport:
    """KPIs of the alarms activated in [start, end) from journal entries (acknowledgements and
    clears up to `end` count towards their alarm)."""
    activations: dict[str, _Activation] = {}
    later: list[JournalEntry] = []
    for entry in entries:
        if entry.kind == "raised" and entry.at_epoch is not None and start <= entry.at_epoch < end:
            if entry.alarm_id not in activations:
                activations[entry.alarm_id] = _Activation(entry.alarm_id, entry.at_epoch, entry.device_name, entry.rule_id,
                                                          entry.identity, entry.native_code, entry.message, entry.chattering)
        else:
            later.append(entry)
    for entry in later:
        activation = activations.get(entry.alarm_id)
        if activation is None or entry.at_epoch is None or entry.at_epoch >= end:
            continue  # what happened after the range is not part of it
        if entry.kind == "acknowledged" and activation.acknowledged_at is None:
            activation.acknowledged_at = entry.at_epoch
        elif entry.kind == "cleared" and activation.cleared_at is None:
            activation.cleared_at = entry.at_epoch
        elif entry.kind == "marked_stale":
            activation.stale = True
    every = sorted(activations.values(), key=lambda a: a.at)
    window_starts = []
    moment = math.floor(start / WINDOW_SECONDS) * WINDOW_SECONDS
    while moment < end:
        window_starts.append(moment)
        moment += WINDOW_SECONDS
    whole = [(start, end)]
    by_machine: dict[str, list[_Activation]] = defaultdict(list)
    for activation in every:
        by_machine[activation.device_name].append(activation)
    zone = _zone(timezone_name)
    by_shift = {}
    for name, intervals in shift_intervals(shifts, start, end, zone).items():
        inside = [a for a in every if any(lo <= a.at < hi for lo, hi in intervals)]
        by_shift[name] = _figures(inside, intervals, end, flood_alarms, window_starts)
    return KpiReport(
        start=start,
        end=end,
        overall=_figures(every, whole, end, flood_alarms, window_starts),
        by_machine={name: _figures(items, whole, end, flood_alarms, window_starts) for name, items in sorted(by_machine.items())},
        by_shift=by_shift,
    )


def journal_kpis(journal: AlarmJournal, start: float, end: float, settings: EngineSettings | None = None,
                 now: float | None = None) -> KpiReport:
    """KPIs over the journal with the shifts, time zone and flood limit of the rules' settings.
    A range that reaches past `now` (the journal page's default ends an hour ahead) ends at
    now: hours not lived yet would dilute the alarm rates."""
    settings = settings or EngineSettings()
    end = min(end, time.time() if now is None else now)
    start = min(start, end)
    return compute_kpis(journal.search(end=end), start, end, settings.shifts, settings.timezone, settings.flood_alarms)


__all__ = ["BadActor", "KpiFigures", "KpiReport", "compute_kpis", "journal_kpis", "shift_intervals"]
