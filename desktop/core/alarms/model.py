"""What the alarm engine hands out: alarm snapshots, their transitions and notices.

Everything here is plain, immutable data, so the journal can store it and the views can
render it without knowing the engine. An `Alarm`'s `state` says whether the alarm condition
is present (ACTIVE) or gone (CLEARED); `alarm_state` combines that with acknowledgement,
shelving and out-of-service into the ISA-18.2 state shown to operators.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

ACTIVE = "ACTIVE"
CLEARED = "CLEARED"

# Transition kinds (`AlarmEvent.kind`).
RAISED = "raised"
CLEAREDEVENT = "cleared"
ESCALATED = "escalated"  # a higher priority: WARNING became FAULT, or active longer than the rule allows
RELEVELED = "releveled"  # a lower priority: FAULT became WARNING
ACKNOWLEDGED = "acknowledged"
SHELVED = "shelved"
UNSHELVED = "unshelved"
REMOVED_FROM_SERVICE = "removed_from_service"
RETURNED_TO_SERVICE = "returned_to_service"
MARKED_STALE = "marked_stale"
EVENT_KINDS = (RAISED, CLEAREDEVENT, ESCALATED, RELEVELED, ACKNOWLEDGED, SHELVED, UNSHELVED,
               REMOVED_FROM_SERVICE, RETURNED_TO_SERVICE, MARKED_STALE)

PRIORITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}


class AlarmState(str, Enum):
    NORMAL = "normal"
    UNACKNOWLEDGED_ACTIVE = "unacknowledged-active"
    ACKNOWLEDGED_ACTIVE = "acknowledged-active"
    UNACKNOWLEDGED_RETURNED = "unacknowledged-returned"  # came and went, still to be acknowledged
    SHELVED = "shelved"
    OUT_OF_SERVICE = "out-of-service"


def alarm_id(device_uuid: str, rule_id: str, identity: str, activation: str) -> str:
    """The id every station derives for one activation: device, rule, what inside the device
    (data item, native code), and the activating observation (`instance_id:sequence`)."""
    digest = hashlib.blake2b("\x1f".join((device_uuid, rule_id, identity, activation)).encode("utf-8"),
                             digest_size=8).hexdigest()
    return f"{device_uuid}/{rule_id}/{digest}"


def state_of(out_of_service: bool, retired: bool, shelved: bool, active: bool, acknowledged: bool) -> AlarmState:
    """The ISA state of an alarm from its flags (the snapshot's and the engine's)."""
    if out_of_service:
        return AlarmState.OUT_OF_SERVICE
    if retired:
        return AlarmState.NORMAL
    if shelved:
        return AlarmState.SHELVED
    if active:
        return AlarmState.ACKNOWLEDGED_ACTIVE if acknowledged else AlarmState.UNACKNOWLEDGED_ACTIVE
    return AlarmState.NORMAL if acknowledged else AlarmState.UNACKNOWLEDGED_RETURNED


@dataclass(frozen=True, slots=True)
class Alarm:
    alarm_id: str
    device_uuid: str
    device_name: str
    rule_id: str
    rule_kind: str
    identity: str  # data item id and native code (conditions), data item id, or "" (offline)
    data_item_id: str
    data_item_name: str
    native_code: str
    level: str  # FAULT/WARNING for conditions; EVENT, THRESHOLD, UNAVAILABLE, OFFLINE otherwise
    priority: str  # critical, high, medium, low (the latest, after any escalation)
    message: str
    activated_at: str  # ISO-8601 UTC: the observation's timestamp, or when a delay ended
    activation: str  # `instance_id:sequence` of the activating observation (or what stands for it)
    state: str = ACTIVE  # ACTIVE or CLEARED: is the alarm condition present
    cleared_at: str | None = None
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    acknowledged_station: str | None = None
    acknowledgement_note: str | None = None
    shelved: bool = False
    shelved_until: str | None = None
    shelve_reason: str | None = None
    shelved_by: str | None = None
    out_of_service: bool = False
    retired: bool = False  # closed when its rule returned to service
    chattering: bool = False
    stale: bool = False
    escalated: bool = False
    value: str | None = None

    @property
    def is_active(self) -> bool:
        return self.state == ACTIVE

    @property
    def is_acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    @property
    def alarm_state(self) -> AlarmState:
        return state_of(self.out_of_service, self.retired, self.shelved, self.is_active, self.is_acknowledged)

    @property
    def point(self) -> tuple[str, str, str]:
        """What repeats from one activation to the next: (device uuid, rule id, identity)."""
        return (self.device_uuid, self.rule_id, self.identity)


@dataclass(frozen=True)
class AlarmEvent:
    kind: str
    alarm: Alarm  # the alarm as it is after the transition
    at: str  # ISO-8601 UTC of the transition (event time for data rules, wall clock otherwise)
    # True when this event should pop up (shown once per alarm; not chattering, flooded, shelved ...).
    notify: bool = False
    detail: str = ""
    by: str | None = None
    station: str | None = None
    note: str | None = None

    @property
    def transition_key(self) -> str:
        """Names this transition; deriving it again (history read twice) gives the same key."""
        return f"{self.alarm.alarm_id}|{self.kind}|{self.at}"


@dataclass(frozen=True)
class Notice:
    """A notification to show: one alarm, or a flood summary that stands for many."""

    kind: str  # "alarm" or "flood"
    title: str
    text: str
    priority: str
    alarm_ids: tuple[str, ...]
    at: str
    count: int = 1
