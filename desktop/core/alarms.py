"""Alarms from MTConnect conditions: what is active, what was raised, and what to notify.

`AlarmEngine.process` reads observations in order and returns alarm events. An alarm is one
activation of a condition, keyed by device, data item and native code; its id,
`{device_uuid}/{data_item_id}/{native_code}/{activation_sequence}`, uses the agent sequence of
the activating observation, so every desktop reading the same topic derives the same ids.
A FAULT is critical and asks for a notification once per activation: the same active fault
repeated, or re-read from history after a reconnect, does not notify again; NORMAL clears it,
and a later FAULT is a new activation that notifies again. WARNINGs are alarms too (listed,
not notified). `AlarmJournal` is the bounded list the alarm table shows.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from desktop.core.conditions import ActiveCondition, ConditionChange, ConditionTracker

ACTIVE = "ACTIVE"
CLEARED = "CLEARED"

RAISED = "raised"
ESCALATED = "escalated"  # WARNING became FAULT
RELEVELED = "releveled"  # FAULT became WARNING
CLEAREDEVENT = "cleared"

PRIORITY_BY_LEVEL = {"FAULT": "critical", "WARNING": "medium"}

# How many activation ids are remembered to recognise history read again after a reconnect.
_SEEN_LIMIT = 20_000


def alarm_id(device_uuid: str, data_item_id: str, native_code: str, activation_sequence: Any) -> str:
    return f"{device_uuid}/{data_item_id}/{native_code}/{activation_sequence}"


@dataclass(frozen=True)
class Alarm:
    alarm_id: str
    device_uuid: str
    device_name: str
    data_item_id: str
    data_item_name: str
    native_code: str
    level: str  # FAULT or WARNING (the latest level while active)
    priority: str  # critical, medium
    message: str
    activated_at: str  # observation timestamp (ISO-8601 UTC)
    activation_sequence: Any
    state: str = ACTIVE
    cleared_at: str | None = None

    @property
    def is_active(self) -> bool:
        return self.state == ACTIVE


@dataclass(frozen=True)
class AlarmEvent:
    kind: str  # raised, escalated, releveled, cleared
    alarm: Alarm
    # True when this event should pop up a notification (a FAULT not shown before).
    notify: bool = False


def _message_of(observation: Mapping[str, Any]) -> str:
    value = observation.get("value")
    if value is None or value == "UNAVAILABLE":
        return ""
    return str(value)


def _alarm_from(condition: ActiveCondition) -> Alarm:
    activation, latest = condition.activation, condition.latest
    device_uuid, data_item_id, native_code = condition.key
    sequence = activation.get("sequence")
    return Alarm(
        alarm_id=alarm_id(device_uuid, data_item_id, native_code, sequence),
        device_uuid=device_uuid,
        device_name=str(latest.get("device_name") or device_uuid),
        data_item_id=data_item_id,
        data_item_name=str(latest.get("name") or data_item_id),
        native_code=native_code,
        level=condition.level,
        priority=PRIORITY_BY_LEVEL.get(condition.level, "low"),
        message=_message_of(latest) or _message_of(activation),
        activated_at=str(activation.get("timestamp") or ""),
        activation_sequence=sequence,
    )


class AlarmEngine:
    def __init__(self, notify_levels: Iterable[str] = ("FAULT",)) -> None:
        self.notify_levels = frozenset(notify_levels)
        self._conditions = ConditionTracker()
        self._alarms: dict[tuple[str, str, str], Alarm] = {}
        # Alarm ids already notified (bounded, oldest forgotten first).
        self._notified: OrderedDict[str, None] = OrderedDict()

    def process(self, observations: Iterable[Mapping[str, Any]]) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        for observation in observations:
            if observation.get("category") != "CONDITION":
                continue
            for change in self._conditions.update(observation):
                events.append(self._event_for(change))
        return events

    def _event_for(self, change: ConditionChange) -> AlarmEvent:
        if change.after is None:
            alarm = self._alarms.pop(change.key)
            cleared = dataclasses.replace(
                alarm, state=CLEARED, cleared_at=str(change.observation.get("timestamp") or "")
            )
            return AlarmEvent(CLEAREDEVENT, cleared)
        alarm = _alarm_from(change.after)
        self._alarms[change.key] = alarm
        if change.before is None:
            kind = RAISED
        elif alarm.level == "FAULT":
            kind = ESCALATED
        else:
            kind = RELEVELED
        notify = alarm.level in self.notify_levels and alarm.alarm_id not in self._notified
        if notify:
            self._notified[alarm.alarm_id] = None
            while len(self._notified) > _SEEN_LIMIT:
                self._notified.popitem(last=False)
        return AlarmEvent(kind, alarm, notify)

    def reset(self) -> None:
        """Forget active conditions (the feed is about to re-read history from scratch) but
        remember what was notified, so re-read faults do not pop up again."""
        self._conditions = ConditionTracker()
        self._alarms.clear()

    def active_alarms(self, device_uuid: str | None = None) -> list[Alarm]:
        return [a for a in self._alarms.values() if device_uuid is None or a.device_uuid == device_uuid]


class AlarmJournal:
    """The alarms to list, newest activation first, bounded (cleared ones are dropped first)."""

    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self._alarms: OrderedDict[str, Alarm] = OrderedDict()
        self.version = 0

    def __len__(self) -> int:
        return len(self._alarms)

    def apply(self, events: Iterable[AlarmEvent]) -> None:
        changed = False
        for event in events:
            self._alarms[event.alarm.alarm_id] = event.alarm
            changed = True
        if not changed:
            return
        while len(self._alarms) > self.limit:
            oldest_cleared = next((k for k, a in self._alarms.items() if not a.is_active), None)
            self._alarms.pop(oldest_cleared if oldest_cleared is not None else next(iter(self._alarms)))
        self.version += 1

    def alarms(self) -> list[Alarm]:
        return list(reversed(self._alarms.values()))

    def active_count(self, level: str | None = None) -> int:
        return sum(1 for a in self._alarms.values() if a.is_active and (level is None or a.level == level))
