"""What the alarm views show, decided without Qt: the active-alarm table's rows and their order,
its filters, which machines need attention, when the horn sounds, and how a pop-up is routed.

The views only render what these functions return, so the rules an operator relies on
(unacknowledged alarms on top, a fault that came and went stays on its tile until someone
acknowledges it, the horn stops when muted or acknowledged) hold whatever widget shows them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from desktop.core.alarms.model import PRIORITY_RANK, Alarm, AlarmState
from desktop.core.alarms.timeutil import parse_timestamp

# The order of the table's groups: what needs an operator first, what is put aside last.
STATE_ORDER = {
    AlarmState.UNACKNOWLEDGED_ACTIVE: 0,
    AlarmState.UNACKNOWLEDGED_RETURNED: 1,
    AlarmState.ACKNOWLEDGED_ACTIVE: 2,
    AlarmState.SHELVED: 3,
    AlarmState.OUT_OF_SERVICE: 4,
}
# The states an operator still has to act on (a returned alarm waits for its acknowledgement).
UNACKNOWLEDGED = frozenset({AlarmState.UNACKNOWLEDGED_ACTIVE, AlarmState.UNACKNOWLEDGED_RETURNED})
# Priorities that keep the horn going while unacknowledged.
AUDIBLE_PRIORITIES = frozenset({"critical", "high"})
# How a pop-up of each priority is shown; None: listed in the table only.
POPUP_STYLES = {"critical": "critical", "high": "warning", "medium": "information", "low": None}


@dataclass(frozen=True)
class TableFilter:
    """What the operator narrowed the table to; an empty set means every value."""

    devices: frozenset[str] = frozenset()  # device names
    priorities: frozenset[str] = frozenset()
    states: frozenset[AlarmState] = frozenset()
    text: str = ""  # in the machine name, message, data item or native code, ignoring case

    def accepts(self, alarm: Alarm) -> bool:
        if self.devices and alarm.device_name not in self.devices:
            return False
        if self.priorities and alarm.priority not in self.priorities:
            return False
        if self.states and alarm.alarm_state not in self.states:
            return False
        needle = self.text.strip().casefold()
        if needle:
            haystack = " ".join((alarm.device_name, alarm.message, alarm.data_item_name, alarm.native_code)).casefold()
            return needle in haystack
        return True


def _newest_first(alarm: Alarm) -> float:
    return _negated_epoch(alarm.activated_at)


@lru_cache(maxsize=65_536)
def _negated_epoch(timestamp: str | None) -> float:
    # Cached: the table sorts a plant's alarms again whenever one changes, and each
    # alarm's activation time never changes.
    moment = parse_timestamp(timestamp)
    return -(moment if moment is not None else 0.0)


def table_order(alarm: Alarm) -> tuple:
    """Sort key of the default order: state group, then priority, then newest activation,
    then the id, so two stations with the same alarms list them identically."""
    return (STATE_ORDER.get(alarm.alarm_state, len(STATE_ORDER)), PRIORITY_RANK.get(alarm.priority, len(PRIORITY_RANK)),
            _newest_first(alarm), alarm.alarm_id)


def table_rows(alarms: Iterable[Alarm], table_filter: TableFilter | None = None) -> list[Alarm]:
    """The active-alarm table: every alarm that is not back to Normal (active, returned but
    unacknowledged, shelved, out of service), filtered, in the default order."""
    chosen = table_filter or TableFilter()
    return sorted((a for a in alarms if a.alarm_state is not AlarmState.NORMAL and chosen.accepts(a)), key=table_order)


@dataclass(frozen=True)
class Attention:
    """What a machine's tile shows about its alarms."""

    unacknowledged: int  # alarms waiting for an acknowledgement, returned ones included
    active: int  # alarm conditions present now, acknowledged or not (shelved ones left out)
    priority: str | None  # the highest priority among the unacknowledged, else among the active


def attention_by_device(alarms: Iterable[Alarm]) -> dict[str, Attention]:
    """Per device uuid, for the machines with something to show. A fault that came and went
    keeps its tile marked until it is acknowledged."""
    found: dict[str, tuple[list[Alarm], list[Alarm]]] = {}
    for alarm in alarms:
        state = alarm.alarm_state
        unacknowledged, active = found.setdefault(alarm.device_uuid, ([], []))
        if state in UNACKNOWLEDGED:
            unacknowledged.append(alarm)
        if state in (AlarmState.UNACKNOWLEDGED_ACTIVE, AlarmState.ACKNOWLEDGED_ACTIVE):
            active.append(alarm)
    result = {}
    for device, (unacknowledged, active) in found.items():
        if not unacknowledged and not active:
            continue
        ranked = unacknowledged or active
        top = min(ranked, key=lambda a: PRIORITY_RANK.get(a.priority, len(PRIORITY_RANK))).priority
        result[device] = Attention(len(unacknowledged), len(active), top)
    return result


class Horn:
    """The audible signal: on while unacknowledged critical or high alarms exist, unless muted.

    A mute lasts a given time and covers only the alarms unacknowledged when it was set; a
    new one raised during the mute sounds at once, so muting never hides a new emergency.
    """

    def __init__(self, priorities: frozenset[str] = AUDIBLE_PRIORITIES) -> None:
        self.priorities = priorities
        self.muted_until: float | None = None
        self._muted_ids: frozenset[str] = frozenset()

    def _calling(self, alarms: Iterable[Alarm]) -> set[str]:
        return {a.alarm_id for a in alarms if a.alarm_state in UNACKNOWLEDGED and a.priority in self.priorities}

    def mute(self, alarms: Iterable[Alarm], seconds: float, now: float) -> None:
        if seconds <= 0:
            raise ValueError(f"a mute lasts a positive number of seconds, not {seconds!r}")
        self.muted_until = now + seconds
        self._muted_ids = frozenset(self._calling(alarms))

    def unmute(self) -> None:
        self.muted_until = None
        self._muted_ids = frozenset()

    def sounding(self, alarms: Iterable[Alarm], now: float) -> bool:
        calling = self._calling(alarms)
        if self.muted_until is not None and now >= self.muted_until:
            self.unmute()
        if self.muted_until is None:
            return bool(calling)
        return bool(calling - self._muted_ids)


def popup_style(priority: str) -> str | None:
    """How a pop-up of this priority is shown: 'critical', 'warning', 'information', or None
    for alarms that are listed in the table only."""
    if priority not in POPUP_STYLES:
        raise ValueError(f"unknown priority {priority!r}; known: {', '.join(POPUP_STYLES)}")
    return POPUP_STYLES[priority]
