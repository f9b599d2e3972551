"""The alarm engine: observations in, alarm transitions and notices out, no Qt and no I/O.

`AlarmEngine.process` reads observations in Kafka order. Each (device, data item) is bound
once, on first sight, to the rules that watch it, so an observation no rule watches costs two
dictionary look-ups. Data rules (condition, event, threshold, unavailable) run in event
time: delays, escalations and staleness count in the device's own observation timestamps
and complete with the first observation of that device at or after their end, so replaying
the same observations yields the same alarms, with the same ids, as the live data did.
Offline rules and shelving run on the wall clock given to `process` and `tick`.

Alarm ids derive from (device, rule, identity, activating observation), so every station
derives the same ids. Shared acknowledgements and shelving arrive as records
(`apply_ack_records`); one for an alarm not seen yet waits for it. Noise control lives
here too: each alarm pops up at most once, chattering alarms never, a flood becomes one
summary `Notice`.
"""
from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import OrderedDict, deque
from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping

from producer import wire

from desktop.core.alarms import model as m
from desktop.core.alarms.acks import _shelve_order, merge_ack_values, new_record, validate_ack_value
from desktop.core.alarms.model import Alarm, AlarmEvent, Notice, alarm_id
from desktop.core.alarms.rules import Rule, RuleSet
from desktop.core.alarms.timeutil import format_epoch, parse_timestamp

_REGISTRY_LIMIT = 20_000  # alarms kept in memory (NORMAL ones are forgotten first)
_NOTIFIED_LIMIT = 20_000
_NOTHING: tuple = ()
_UNBOUND = object()


class _Timer:
    __slots__ = ("deadline", "action", "live")

    def __init__(self, deadline: float, action: Callable[[float], None]) -> None:
        self.deadline = deadline
        self.action = action
        self.live = True


class _Clock:
    """A device's event time and its pending deadlines."""

    __slots__ = ("now", "text", "heap", "due", "cancelled")

    def __init__(self) -> None:
        self.now = float("-inf")
        self.text: Any = None
        self.heap: list[tuple[float, int, _Timer]] = []
        self.cancelled = 0  # cancelled timers still in the heap
        self.due = ""  # the next deadline's second as `YYYY-MM-DDTHH:MM:SS` (UTC)

    def update_due(self) -> None:
        self.due = format_epoch(math.floor(self.heap[0][0]))[:19] if self.heap else ""


class _Device:
    __slots__ = ("uuid", "name", "agent", "last_observation", "last_seen", "clock")

    def __init__(self, uuid: str, name: str, agent: str | None, now: float) -> None:
        self.uuid, self.name, self.agent = uuid, name, agent
        self.last_observation: Mapping[str, Any] | None = None
        self.last_seen = now  # wall clock of the last observation (or when the device became known)
        self.clock = _Clock()


class _Point:
    """One thing that can alarm again and again: (rule, device, identity)."""

    __slots__ = ("rule", "device", "identity", "item_id", "item_name", "alarm", "pending", "off_pending",
                 "activations", "shelve", "open")

    def __init__(self, rule: Rule, device: _Device, identity: str, item_id: str, item_name: str) -> None:
        self.rule, self.device, self.identity = rule, device, identity
        self.item_id, self.item_name = item_id, item_name
        self.alarm: _Live | None = None  # the alarm whose condition is present now
        self.pending: tuple[Mapping[str, Any], _Timer] | None = None  # on-delay running
        self.off_pending: _Timer | None = None
        self.activations: deque[float] = deque()
        self.shelve: Mapping[str, Any] | None = None
        self.open: list[_Live] = []  # alarms of this point that are not NORMAL


class _Live:
    """The engine's mutable view of one alarm; `snapshot` gives the immutable `Alarm`."""

    __slots__ = ("id", "point", "level", "priority", "message", "value", "activated_at", "activated_epoch",
                 "activation", "active", "cleared_at", "ack", "shelved", "out_of_service", "retired",
                 "chattering", "stale", "escalated", "wall", "native_code", "age_checks")

    def __init__(self, alarm_id_: str, point: _Point, level: str, priority: str, message: str, value: Any,
                 activated_at: str, activated_epoch: float, activation: str, native_code: str, wall: bool) -> None:
        self.id, self.point = alarm_id_, point
        self.level, self.priority, self.message, self.value = level, priority, message, value
        self.activated_at, self.activated_epoch, self.activation = activated_at, activated_epoch, activation
        self.native_code = native_code
        self.active = True
        self.cleared_at: str | None = None
        self.ack: Mapping[str, Any] | None = None
        self.shelved = False
        self.out_of_service = False
        self.retired = False
        self.chattering = False
        self.stale = False
        self.escalated = False
        self.wall = wall
        # The escalation and stale deadlines of an active alarm (cancelled when it clears).
        self.age_checks: tuple[_Timer, ...] = ()

    def is_normal(self) -> bool:
        return self.retired or (not self.active and self.ack is not None and not self.out_of_service)

    def alarm_state(self) -> m.AlarmState:
        """`snapshot().alarm_state`, without building the snapshot."""
        return m.state_of(self.out_of_service, self.retired, self.shelved, self.active,
                          self.ack is not None and self.ack.get("at") is not None)

    def snapshot(self) -> Alarm:
        point, ack, shelve = self.point, self.ack or {}, (self.point.shelve or {}) if self.shelved else {}
        return Alarm(
            alarm_id=self.id, device_uuid=point.device.uuid, device_name=point.device.name, rule_id=point.rule.id,
            rule_kind=point.rule.kind, identity=point.identity, data_item_id=point.item_id,
            data_item_name=point.item_name, native_code=self.native_code, level=self.level,
            priority=self.priority, message=self.message, activated_at=self.activated_at,
            activation=self.activation, state=m.ACTIVE if self.active else m.CLEARED, cleared_at=self.cleared_at,
            acknowledged_at=ack.get("at"), acknowledged_by=ack.get("by"), acknowledged_station=ack.get("station"),
            acknowledgement_note=ack.get("note"), shelved=self.shelved, shelved_until=shelve.get("until"),
            shelve_reason=shelve.get("reason"), shelved_by=shelve.get("by"), out_of_service=self.out_of_service,
            retired=self.retired, chattering=self.chattering, stale=self.stale, escalated=self.escalated,
            value=None if self.value is None else str(self.value),
        )


def _activation_of(observation: Mapping[str, Any]) -> str:
    sequence = observation.get("sequence")
    if sequence is None:
        return f"at:{observation.get('timestamp')}"
    return f"{observation.get('instance_id')}:{sequence}"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class _Template(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# ------------------------------------------------------------------------------------ handlers


class _ConditionHandler:
    """MTConnect Condition: identity is data item + native code; NORMAL without a code (or
    UNAVAILABLE) clears every code of the item."""

    __slots__ = ("engine", "rule", "device", "item_id", "item_name", "codes")

    def __init__(self, engine: "AlarmEngine", rule: Rule, device: _Device, observation: Mapping[str, Any]) -> None:
        self.engine, self.rule, self.device = engine, rule, device
        self.item_id = _text(observation.get("data_item_id"))
        self.item_name = _text(observation.get("name")) or self.item_id
        self.codes: dict[str, _Point] = {}
        prefix = self.item_id + "/"
        for key in [k for k in engine._carried if k[0] == rule.id and k[1] == device.uuid and k[2].startswith(prefix)]:
            code = key[2][len(prefix):]
            self.codes[code] = engine._point(rule, device, key[2], self.item_id, self.item_name)

    def observe(self, observation: Mapping[str, Any]) -> None:
        level = observation.get("level")
        code = observation.get("native_code")
        code = "" if code is None else str(code)
        rule = self.rule
        if level == "FAULT" or level == "WARNING":
            priority = rule.level_priority(level)
            if priority is not None and (not rule.native_codes or code in rule.native_codes) \
                    and code not in rule.exclude_native_codes:
                point = self.codes.get(code)
                if point is None:
                    point = self.codes[code] = self.engine._point(rule, self.device, f"{self.item_id}/{code}",
                                                                  self.item_id, self.item_name)
                live = point.alarm
                text = _text(observation.get("value")).strip()
                if live is None:
                    message = self.engine._message(rule, point, observation, text or f"{self.item_name} {level}",
                                                   level=level, code=code)
                    self.engine._activate(point, observation, None, level, priority, message, text or None, code)
                elif live.level != level:
                    self.engine._relevel(live, level, priority, observation, text)
                return
            self._clear_code(code, observation)
            return
        if level == "NORMAL" and code:
            self._clear_code(code, observation)
            return
        for code in list(self.codes):
            self._clear_code(code, observation)

    def _clear_code(self, code: str, observation: Mapping[str, Any]) -> None:
        point = self.codes.get(code)
        if point is not None and point.alarm is not None:
            self.engine._clear(point.alarm, observation.get("timestamp"), None)


class _SwitchHandler:
    """Event, threshold and unavailable rules: a condition that is on or off per data item,
    with an on-delay (`for`), an off-delay and, for thresholds, a deadband."""

    __slots__ = ("engine", "rule", "point", "kind", "values", "above", "below", "clear_above", "clear_below")

    def __init__(self, engine: "AlarmEngine", rule: Rule, device: _Device, observation: Mapping[str, Any]) -> None:
        self.engine, self.rule, self.kind = engine, rule, rule.kind
        item_id = _text(observation.get("data_item_id"))
        self.point = engine._point(rule, device, item_id, item_id, _text(observation.get("name")) or item_id)
        self.values = rule.values
        self.above, self.below = rule.above, rule.below
        self.clear_above = None if rule.above is None else rule.above - rule.deadband
        self.clear_below = None if rule.below is None else rule.below + rule.deadband

    def observe(self, observation: Mapping[str, Any]) -> None:
        kind = self.kind
        value = observation.get("value")
        if kind == "threshold":
            if value.__class__ is not float and value.__class__ is not int:
                if value == wire.UNAVAILABLE or value is None:
                    # Nothing is known any more: no alarm stands on a value that is gone.
                    self.engine._switch(self.point, observation, False, immediate=True)
                return  # text or vectors: not comparable with a threshold
            above, below = self.above, self.below
            point = self.point
            if (above is not None and value > above) or (below is not None and value < below):
                if point.alarm is None or point.off_pending is not None:
                    self.engine._switch(point, observation, True)
            elif point.alarm is None and point.pending is None:
                return  # the common case: below the limit and nothing going on
            elif (self.clear_above is not None and value > self.clear_above) or \
                    (self.clear_below is not None and value < self.clear_below):
                self.engine._hold(point)  # within the deadband: neither raise nor clear
            else:
                self.engine._switch(point, observation, False)
        elif kind == "event":
            text = "" if value is None else str(value).strip().casefold()
            self.engine._switch(self.point, observation, text in self.values)
        else:  # unavailable
            if observation.get("category") == "CONDITION":
                unavailable = observation.get("level") == wire.UNAVAILABLE
            else:
                unavailable = value is None or (value.__class__ is str and value.strip() == wire.UNAVAILABLE)
            self.engine._switch(self.point, observation, unavailable)


# -------------------------------------------------------------------------------------- engine


class AlarmEngine:
    def __init__(self, rules: RuleSet | None = None, station: str = "", clock: Callable[[], float] = time.time) -> None:
        self.rules = rules or RuleSet.conditions_only()
        self.settings = self.rules.settings
        self.station = station
        self._clock = clock
        self._disabled: set[str] = {r.id for r in self.rules.rules if not r.enabled}
        self._data_rules = [r for r in self.rules.rules if r.kind != "offline"]
        self._offline_rules = [r for r in self.rules.rules if r.kind == "offline"]
        self._handlers: dict[str, dict[str, tuple]] = {}
        self._devices: dict[str, _Device] = {}
        self._points: dict[tuple[str, str, str], _Point] = {}
        self._alarms: OrderedDict[str, _Live] = OrderedDict()
        # The same alarms by device, for the per-machine summaries of the tiles.
        self._device_alarms: dict[str, dict[str, _Live]] = {}
        self._trim_after = 0  # with the registry full of open alarms, trim again only past this
        self._notified: OrderedDict[str, None] = OrderedDict()
        self._ledger: dict[str, dict[str, Any]] = {}
        self._carried: dict[tuple[str, str, str], _Live] = {}
        self._agents: dict[str, Mapping[str, Any]] = {}
        self._shelved_points: set[_Point] = set()
        self._timed: dict[str, _Clock] = {}  # devices with pending deadlines
        self._timer_order = itertools.count()
        self._flood_times: deque[float] = deque()
        self._flood_reference = float("-inf")
        self.flood_active = False
        self.flood_since: str | None = None
        self._flood_window_start = float("-inf")
        self._events: list[AlarmEvent] = []
        self._candidates: list[int] = []
        self._flood_started = False
        self._notices: list[Notice] = []
        self.errors: list[str] = []

    # ------------------------------------------------------------------ inputs

    def process(self, observations: Iterable[Mapping[str, Any]], now: float | None = None) -> list[AlarmEvent]:
        """Apply observations in order; the transitions they caused."""
        now = self._clock() if now is None else now
        self._begin(now)
        handlers = self._handlers
        timed = self._timed
        seen: dict[str, Mapping[str, Any]] = {}
        for observation in observations:
            try:
                device_uuid = observation["device_uuid"]
                by_item = handlers.get(device_uuid)
                if by_item is None:
                    by_item = self._new_device(observation, now)
                bound = by_item.get(observation["data_item_id"], _UNBOUND)
            except (KeyError, TypeError):
                self.errors.append(f"observation without device_uuid or data_item_id ignored: {observation!r:.200}")
                continue
            if bound is _UNBOUND:
                bound = self._bind(by_item, observation)
            seen[device_uuid] = observation
            clock = timed.get(device_uuid)
            if clock is not None:
                text = observation.get("timestamp")
                if text != clock.text:
                    clock.text = text
                    # UTC times compare as text to the second: most are clearly before the
                    # next deadline and need no parsing.
                    if text.__class__ is not str or text[-1:] != "Z" or text[:19] >= clock.due:
                        moment = parse_timestamp(text)
                        if moment is not None and moment > clock.now:
                            clock.now = moment
                            if clock.heap and clock.heap[0][0] <= moment:
                                self._fire(device_uuid, clock, moment)
            if bound:
                for handler in bound:
                    handler.observe(observation)
        for device_uuid, observation in seen.items():
            device = self._devices.get(device_uuid)
            if device is None:
                continue
            device.last_observation = observation
            device.last_seen = now
            device.agent = observation.get("agent") or device.agent
            for rule in self._offline_rules:
                point = self._points.get((rule.id, device_uuid, ""))
                if point is not None and point.alarm is not None and self._ends_outage(point.alarm, observation):
                    self._clear(point.alarm, format_epoch(now), now, detail="back online")
        self._wall_checks(now)
        return self._finish()

    @staticmethod
    def _ends_outage(live: _Live, observation: Mapping[str, Any]) -> bool:
        """Whether data from the device ends its offline alarm. For an agent reported
        unreachable, only data stamped at or after the moment it became unreachable does:
        history read at start-up (older data, in any order with the status records) must not
        show a machine online whose agent is still away. A timestamp that cannot be read
        counts as new; an agent whose clock lags is cleared by its `connected` status."""
        if not live.activation.startswith("agent:"):
            return True
        stamp = parse_timestamp(observation.get("timestamp"))
        return stamp is None or stamp >= live.activated_epoch - (live.point.rule.after or 0)

    def tick(self, now: float | None = None) -> list[AlarmEvent]:
        """Wall-clock work when no data comes: offline detection and shelve expiry."""
        now = self._clock() if now is None else now
        self._begin(now)
        self._wall_checks(now)
        return self._finish()

    def set_device(self, device_uuid: str, device: Mapping[str, Any] | None, now: float | None = None) -> None:
        """A device record from the devices topic: its name and agent, and that it exists
        (a machine that never sends anything can still be offline)."""
        now = self._clock() if now is None else now
        if device is None:
            return
        known = self._devices.get(device_uuid)
        name = _text(device.get("device_name")) or device_uuid
        if known is None:
            self._devices[device_uuid] = _Device(device_uuid, name, device.get("agent"), now)
            self._handlers.setdefault(device_uuid, {})
        else:
            known.name = name
            known.agent = device.get("agent") or known.agent

    def set_agent_status(self, agent: str, status: Mapping[str, Any] | None, now: float | None = None) -> list[AlarmEvent]:
        now = self._clock() if now is None else now
        self._begin(now)
        if status is None:
            self._agents.pop(agent, None)
        else:
            self._agents[agent] = status
            if status.get("state") == "connected":
                for device in self._devices.values():
                    if device.agent == agent:
                        for rule in self._offline_rules:
                            point = self._points.get((rule.id, device.uuid, ""))
                            if point is not None and point.alarm is not None and point.alarm.activation.startswith("agent:"):
                                self._clear(point.alarm, format_epoch(now), now, detail="agent connected again")
        self._wall_checks(now)
        return self._finish()

    def apply_ack_records(self, records: Iterable[Mapping[str, Any]], now: float | None = None) -> list[AlarmEvent]:
        """Shared acknowledgement/shelve records from `monitor.alarm-acks` (any station's,
        ours included), in any order, any number of times."""
        now = self._clock() if now is None else now
        self._begin(now)
        for record in records:
            problem = validate_ack_value(record)
            if problem:
                self.errors.append(f"alarm ack record ignored: {problem}")
                continue
            self._merge_record(record, now)
        self._wall_checks(now)
        return self._finish()

    # ------------------------------------------------------------------ operator actions

    def acknowledge(self, alarm_id_: str, by: str, note: str | None = None, now: float | None = None) -> tuple[dict[str, Any], list[AlarmEvent]]:
        """The record to publish for acknowledging, and its effect here at once."""
        now = self._clock() if now is None else now
        action = wire.acknowledgement(format_epoch(now), by, self.station, note)
        return self._act(alarm_id_, now, acknowledged=action)

    def shelve(self, alarm_id_: str, by: str, seconds: float, reason: str, now: float | None = None) -> tuple[dict[str, Any], list[AlarmEvent]]:
        now = self._clock() if now is None else now
        if seconds <= 0:
            raise ValueError("shelve for a positive time")
        action = wire.shelve_action(wire.SHELVED, format_epoch(now), by, self.station, format_epoch(now + seconds), reason)
        return self._act(alarm_id_, now, shelve=action)

    def unshelve(self, alarm_id_: str, by: str, now: float | None = None) -> tuple[dict[str, Any], list[AlarmEvent]]:
        now = self._clock() if now is None else now
        action = wire.shelve_action(wire.UNSHELVED, format_epoch(now), by, self.station)
        return self._act(alarm_id_, now, shelve=action)

    def _act(self, alarm_id_: str, now: float, **action: Any) -> tuple[dict[str, Any], list[AlarmEvent]]:
        live = self._alarms.get(alarm_id_)
        record = new_record(alarm_id_, self._ledger.get(alarm_id_), self.station, now,
                            device_uuid=live.point.device.uuid if live else None,
                            rule_id=live.point.rule.id if live else None, **action)
        return record, self.apply_ack_records([record], now)

    def set_rule_enabled(self, rule_id: str, enabled: bool, now: float | None = None) -> list[AlarmEvent]:
        """Take a rule out of service (its alarms show so, nothing new is raised) or back."""
        now = self._clock() if now is None else now
        self.rules.rule(rule_id)  # KeyError for an unknown rule
        self._begin(now)
        at = format_epoch(now)
        if not enabled and rule_id not in self._disabled:
            self._disabled.add(rule_id)
            for live in list(self._alarms.values()):
                if live.point.rule.id == rule_id and not live.is_normal() and not live.out_of_service:
                    live.out_of_service = True
                    self._emit(m.REMOVED_FROM_SERVICE, live, at)
            self._forget_rule(rule_id)
        elif enabled and rule_id in self._disabled:
            self._disabled.discard(rule_id)
            for live in list(self._alarms.values()):
                if live.point.rule.id == rule_id and live.out_of_service:
                    live.out_of_service = False
                    live.retired = True
                    if live.active:
                        live.active, live.cleared_at = False, at
                    self._emit(m.RETURNED_TO_SERVICE, live, at)
            self._handlers = {uuid: {} for uuid in self._handlers}
        return self._finish()

    def reset(self) -> None:
        """Forget what the observations said (the feed is about to read history again), but keep
        the alarms, their acknowledgements and what was notified: alarms derived again get the
        same ids and update in place, and what is still open stays attached to its point."""
        self._carried.update({key: point.alarm for key, point in self._points.items() if point.alarm is not None})
        for point in self._points.values():
            if point.pending:
                point.pending[1].live = False
        self._points = {key: point for key, point in self._points.items() if point.shelve is not None}
        for point in self._points.values():
            point.alarm, point.pending, point.off_pending = None, None, None
        self._handlers = {uuid: {} for uuid in self._handlers}
        for device in self._devices.values():
            device.clock = _Clock()
        self._timed.clear()

    def restore(self, alarms: Iterable[Alarm]) -> None:
        """Alarms that were open when the app last stopped (from the journal): kept as they
        were, attached to their points, so later observations clear them."""
        for alarm in alarms:
            if alarm.alarm_id in self._alarms:
                continue
            try:
                rule = self.rules.rule(alarm.rule_id)
            except KeyError:
                continue  # the rule is gone: the alarm stays in the journal only
            device = self._devices.get(alarm.device_uuid)
            if device is None:
                device = self._devices[alarm.device_uuid] = _Device(alarm.device_uuid, alarm.device_name, None, self._clock())
                self._handlers.setdefault(alarm.device_uuid, {})
            point = _Point(rule, device, alarm.identity, alarm.data_item_id, alarm.data_item_name)
            live = _Live(alarm.alarm_id, point, alarm.level, alarm.priority, alarm.message, alarm.value,
                         alarm.activated_at, parse_timestamp(alarm.activated_at) or 0.0, alarm.activation,
                         alarm.native_code, rule.kind == "offline")
            live.active, live.cleared_at = alarm.is_active, alarm.cleared_at
            if alarm.acknowledged_at:
                live.ack = wire.acknowledgement(alarm.acknowledged_at, alarm.acknowledged_by or "",
                                                alarm.acknowledged_station or "", alarm.acknowledgement_note)
            live.chattering, live.stale, live.escalated = alarm.chattering, alarm.stale, alarm.escalated
            live.out_of_service = alarm.out_of_service
            self._register(live, trim=False)
            self._notified[live.id] = None  # it was shown before the restart
            if live.active:
                self._carried[(rule.id, alarm.device_uuid, alarm.identity)] = live
            else:
                point.open.append(live)

    # ------------------------------------------------------------------ outputs

    def active_alarms(self, device_uuid: str | None = None) -> list[Alarm]:
        return [live.snapshot() for live in self._alarms.values()
                if live.active and (device_uuid is None or live.point.device.uuid == device_uuid)]

    def alarm(self, alarm_id_: str) -> Alarm | None:
        live = self._alarms.get(alarm_id_)
        return live.snapshot() if live else None

    def alarms(self) -> list[Alarm]:
        return [live.snapshot() for live in self._alarms.values()]

    def device_alarm_states(self, device_uuid: str) -> list[tuple[m.AlarmState, str]]:
        """(state, priority) of each alarm of one machine: what its tile's summary needs,
        at the cost of that machine's alarms, not the plant's."""
        return [(live.alarm_state(), live.priority) for live in self._device_alarms.get(device_uuid, {}).values()]

    def counts(self) -> dict[str, int]:
        """How many alarms are in each state, plus standing (active), stale and chattering."""
        counts = {state.value: 0 for state in m.AlarmState}
        standing = stale = chattering = 0
        for live in self._alarms.values():
            snapshot_state = live.snapshot().alarm_state
            counts[snapshot_state.value] += 1
            if live.active and not live.out_of_service:
                standing += 1
                stale += live.stale
                chattering += live.chattering
        counts.update(standing=standing, stale=stale, chattering=chattering)
        return counts

    def drain_notices(self) -> list[Notice]:
        notices, self._notices = self._notices, []
        return notices

    def watches(self, observation: Mapping[str, Any]) -> bool:
        """Whether any rule looks at this observation's data item (for callers that compact
        observations: these must all reach the engine, in order)."""
        device_uuid = observation.get("device_uuid")
        by_item = self._handlers.get(device_uuid)
        bound = by_item.get(observation.get("data_item_id"), _UNBOUND) if by_item is not None else _UNBOUND
        if bound is _UNBOUND:
            name = _text(observation.get("device_name"))
            return any(r.id not in self._disabled and r.matches_device(_text(device_uuid), name)
                       and r.matches_item(observation) for r in self._data_rules)
        return bool(bound)

    # ------------------------------------------------------------------ binding

    def _new_device(self, observation: Mapping[str, Any], now: float) -> dict[str, tuple]:
        device_uuid = _text(observation.get("device_uuid"))
        if device_uuid not in self._devices:
            self._devices[device_uuid] = _Device(device_uuid, _text(observation.get("device_name")) or device_uuid,
                                                 observation.get("agent"), now)
        by_item = self._handlers[observation.get("device_uuid")] = {}
        return by_item

    def _bind(self, by_item: dict[str, tuple], observation: Mapping[str, Any]) -> tuple:
        device = self._devices[_text(observation.get("device_uuid"))]
        if not device.name or device.name == device.uuid:
            device.name = _text(observation.get("device_name")) or device.uuid
        handlers = []
        for rule in self._data_rules:
            if rule.id in self._disabled or not rule.matches_device(device.uuid, device.name) or not rule.matches_item(observation):
                continue
            handler_class = _ConditionHandler if rule.kind == "condition" else _SwitchHandler
            handlers.append(handler_class(self, rule, device, observation))
        bound = tuple(handlers) if handlers else _NOTHING
        by_item[observation.get("data_item_id")] = bound
        return bound

    def _point(self, rule: Rule, device: _Device, identity: str, item_id: str, item_name: str) -> _Point:
        key = (rule.id, device.uuid, identity)
        point = self._points.get(key)
        if point is None:
            point = self._points[key] = _Point(rule, device, identity, item_id, item_name)
        carried = self._carried.pop(key, None)
        if carried is not None:
            carried.point = point
            point.alarm = carried
            if carried not in point.open:
                point.open.append(carried)
        return point

    def _forget_rule(self, rule_id: str) -> None:
        for key in [k for k in self._points if k[0] == rule_id]:
            point = self._points.pop(key)
            if point.pending:
                point.pending[1].live = False
            if point.off_pending:
                point.off_pending.live = False
            self._shelved_points.discard(point)
        self._handlers = {uuid: {} for uuid in self._handlers}

    # ------------------------------------------------------------------ timers

    def _schedule(self, device: _Device, deadline: float, action: Callable[[float], None]) -> _Timer:
        timer = _Timer(deadline, action)
        clock = device.clock
        heapq.heappush(clock.heap, (deadline, next(self._timer_order), timer))
        clock.update_due()
        self._timed[device.uuid] = clock
        return timer

    def _cancel(self, device: _Device, timer: _Timer) -> None:
        """A deadline that no longer matters: its action (and what it holds) is let go at once,
        and the heap is rebuilt without cancelled entries once they are half of it, so an
        alarm that cleared is not kept for the day its stale check would have waited."""
        if not timer.live:
            return
        timer.live = False
        timer.action = None
        clock = device.clock
        clock.cancelled += 1
        if clock.cancelled > 32 and 2 * clock.cancelled > len(clock.heap):
            # In place: `_fire` may be popping from this very list (an off-delay that clears).
            clock.heap[:] = [entry for entry in clock.heap if entry[2].live]
            heapq.heapify(clock.heap)
            clock.cancelled = 0
            clock.update_due()
            if not clock.heap:
                self._timed.pop(device.uuid, None)

    def _fire(self, device_uuid: str, clock: _Clock, moment: float) -> None:
        heap = clock.heap
        while heap and heap[0][0] <= moment:
            deadline, _, timer = heapq.heappop(heap)
            if timer.live:
                timer.live = False
                timer.action(deadline)
            elif timer.action is None and clock.cancelled:
                clock.cancelled -= 1
        clock.update_due()
        if not heap:
            self._timed.pop(device_uuid, None)

    # ------------------------------------------------------------------ transitions

    def _begin(self, now: float) -> None:
        self._wall_now = now
        self._events = []
        self._candidates = []
        self._flood_started = False

    def _finish(self) -> list[AlarmEvent]:
        events = self._events
        if self._candidates:
            if self._flood_started:
                # Pop-ups of this call that belong to the flood fold into its summary; those
                # from before the flood window (a long history read) stay single notices.
                start = self._flood_window_start
                folded, single = [], []
                for index in self._candidates:
                    moment = parse_timestamp(events[index].at)
                    if moment is not None and moment < start:
                        single.append(index)
                    else:
                        events[index] = replace(events[index], notify=False)
                        folded.append(events[index].alarm.alarm_id)
                for index in single:
                    alarm = events[index].alarm
                    self._notices.append(Notice("alarm", self._title(alarm), alarm.message or alarm.data_item_name,
                                                alarm.priority, (alarm.alarm_id,), events[index].at))
                count = len(self._flood_times)
                minutes = self.settings.flood_seconds / 60
                self._notices.append(Notice("flood", f"Alarm flood: {count} new alarms in {minutes:g} min",
                                            "Pop-ups are held back until the flood is over; the alarm list shows every alarm.",
                                            "high", tuple(folded), self.flood_since or "", count))
            else:
                for index in self._candidates:
                    alarm = events[index].alarm
                    self._notices.append(Notice("alarm", self._title(alarm), alarm.message or alarm.data_item_name,
                                                alarm.priority, (alarm.alarm_id,), events[index].at))
        elif self._flood_started:
            count = len(self._flood_times)
            self._notices.append(Notice("flood", f"Alarm flood: {count} new alarms in {self.settings.flood_seconds / 60:g} min",
                                        "Pop-ups are held back until the flood is over; the alarm list shows every alarm.",
                                        "high", (), self.flood_since or "", count))
        self._events = []
        self._candidates = []
        return events

    @staticmethod
    def _title(alarm: Alarm) -> str:
        code = f" {alarm.native_code}" if alarm.native_code else ""
        return f"{alarm.device_name}: {alarm.level}{code}"

    def _emit(self, kind: str, live: _Live, at: str, notify_candidate: bool = False, detail: str = "",
              by: str | None = None, station: str | None = None, note: str | None = None) -> None:
        notify = False
        if notify_candidate and self._may_notify(live):
            notify = True
            self._remember_notified(live.id)
            if self.flood_active and not self._flood_started:
                notify = False  # held back: the flood summary stands for it
        event = AlarmEvent(kind, live.snapshot(), at, notify, detail, by, station, note)
        if notify:
            self._candidates.append(len(self._events))
        self._events.append(event)

    def _may_notify(self, live: _Live) -> bool:
        return (live.priority in self.settings.notify_priorities and live.ack is None and not live.shelved
                and not live.out_of_service and not live.chattering and live.id not in self._notified)

    def _remember_notified(self, alarm_id_: str) -> None:
        self._notified[alarm_id_] = None
        while len(self._notified) > _NOTIFIED_LIMIT:
            self._notified.popitem(last=False)

    def _message(self, rule: Rule, point: _Point, observation: Mapping[str, Any], default: str, **fields: Any) -> str:
        if not rule.message:
            return default
        values = _Template(device=point.device.name, item=point.item_name, value=_text(observation.get("value")).strip(),
                           units=_text(observation.get("units")), title=rule.title, rule=rule.id,
                           above="" if rule.above is None else f"{rule.above:g}",
                           below="" if rule.below is None else f"{rule.below:g}", **fields)
        try:
            return rule.message.format_map(values)
        except (ValueError, IndexError, AttributeError):
            return default

    def _activate(self, point: _Point, observation: Mapping[str, Any], at_epoch: float | None, level: str,
                  priority: str, message: str, value: Any, native_code: str = "", activation: str | None = None,
                  wall: bool = False) -> None:
        text_at = observation.get("timestamp") if at_epoch is None else format_epoch(at_epoch)
        epoch = parse_timestamp(text_at) if at_epoch is None else at_epoch
        if epoch is None:
            self.errors.append(f"{point.device.name} {point.item_id}: unreadable timestamp {text_at!r}; observation ignored")
            return
        current = point.alarm
        if current is not None and epoch < current.activated_epoch:
            return  # older than the alarm already standing here (history read again)
        activation = activation or _activation_of(observation)
        new_id = alarm_id(point.device.uuid, point.rule.id, point.identity, activation)
        if current is not None:
            if current.id == new_id:
                return
            # A carried-over alarm whose end was never seen: it ended when this one began.
            self._clear(current, text_at, epoch, detail="superseded")
        existing = self._alarms.get(new_id)
        if existing is not None:
            # The same activation derived again (history read after a reconnect): update in place.
            existing.point = point
            point.alarm = existing
            if existing not in point.open and not existing.is_normal():
                point.open.append(existing)
            if not existing.active:
                existing.active, existing.cleared_at = True, None
                self._emit(m.RAISED, existing, text_at)
            return
        live = _Live(new_id, point, level, priority, message, value, text_at, epoch, activation, native_code, wall)
        settings = self.settings
        activations = point.activations
        activations.append(epoch)
        while activations and activations[0] < epoch - settings.chattering_seconds:
            activations.popleft()
        live.chattering = len(activations) >= settings.chattering_activations
        if point.shelve is not None and self._shelve_effective(point.shelve, self._clock_now()):
            live.shelved = True
        if point.rule.id in self._disabled:
            live.out_of_service = True
        point.alarm = live
        point.open.append(live)
        self._register(live)
        self._count_for_flood(epoch)
        record = self._ledger.get(new_id)
        handled = bool(record) and (bool(record.get("acknowledged")) or (
            bool(record.get("shelve")) and self._shelve_effective(record["shelve"], self._clock_now())))
        self._emit(m.RAISED, live, text_at, notify_candidate=not handled)
        if record is not None:
            self._apply_record(live, record, self._clock_now())
        if not wall:
            self._schedule_age_checks(live)

    def _clock_now(self) -> float:
        return self._wall_now if self._wall_now is not None else self._clock()

    _wall_now: float | None = None

    def _schedule_age_checks(self, live: _Live) -> None:
        device = live.point.device
        rule = live.point.rule
        checks = []
        if rule.escalate is not None and rule.escalate.after > 0:
            checks.append(self._schedule(device, live.activated_epoch + rule.escalate.after,
                                         lambda at, live=live: self._escalate(live, at)))
        checks.append(self._schedule(device, live.activated_epoch + self.settings.stale_seconds,
                                     lambda at, live=live: self._mark_stale(live, at)))
        live.age_checks = tuple(checks)

    def _escalate(self, live: _Live, at: float) -> None:
        escalation = live.point.rule.escalate
        if not live.active or live.escalated or escalation is None or live.out_of_service:
            return
        live.escalated = True
        if m.PRIORITY_RANK[escalation.priority] < m.PRIORITY_RANK[live.priority]:
            live.priority = escalation.priority
        minutes = escalation.after / 60
        detail = f"active longer than {minutes:g} min"
        # News even for an acknowledged alarm: it has now lasted too long.
        notify = (live.priority in self.settings.notify_priorities and not live.shelved and not live.chattering
                  and not live.out_of_service)
        event = AlarmEvent(m.ESCALATED, live.snapshot(), format_epoch(at), notify and not self.flood_active, detail)
        if event.notify:
            self._candidates.append(len(self._events))
        self._events.append(event)

    def _mark_stale(self, live: _Live, at: float) -> None:
        if live.active and not live.stale:
            live.stale = True
            self._emit(m.MARKED_STALE, live, format_epoch(at), detail=f"active longer than {self.settings.stale_seconds / 3600:g} h")

    def _relevel(self, live: _Live, level: str, priority: str, observation: Mapping[str, Any], text: str) -> None:
        higher = m.PRIORITY_RANK.get(priority, 9) < m.PRIORITY_RANK.get(live.priority, 9)
        live.level, live.priority = level, priority
        if text:
            live.message = text
        self._emit(m.ESCALATED if higher else m.RELEVELED, live, _text(observation.get("timestamp")),
                   notify_candidate=higher)

    def _clear(self, live: _Live, at_text: Any, at_epoch: float | None, detail: str = "") -> None:
        epoch = parse_timestamp(at_text) if at_epoch is None else at_epoch
        if epoch is not None and epoch < live.activated_epoch:
            return  # an observation from before this alarm began cannot end it
        point = live.point
        if point.alarm is live:
            point.alarm = None
            if point.off_pending is not None:
                point.off_pending.live = False
                point.off_pending = None
        if not live.active:
            return
        live.active = False
        # Both age checks act only on an active alarm.
        for timer in live.age_checks:
            self._cancel(point.device, timer)
        live.age_checks = ()
        live.cleared_at = _text(at_text)
        if live.is_normal() and live in point.open:
            point.open.remove(live)
        self._emit(m.CLEAREDEVENT, live, _text(at_text), detail=detail)

    # -- switch rules (event, threshold, unavailable)

    def _switch(self, point: _Point, observation: Mapping[str, Any], on: bool, immediate: bool = False) -> None:
        rule = point.rule
        if on:
            if point.off_pending is not None:
                point.off_pending.live = False
                point.off_pending = None
            if point.alarm is not None or point.pending is not None:
                return
            if rule.on_delay <= 0:
                self._activate_switch(point, observation, None)
                return
            start = parse_timestamp(observation.get("timestamp"))
            if start is None:
                self.errors.append(f"{point.device.name} {point.item_id}: unreadable timestamp {observation.get('timestamp')!r}")
                return
            timer = self._schedule(point.device, start + rule.on_delay,
                                   lambda at, point=point, observation=observation: self._on_delay_ended(point, observation, at))
            point.pending = (observation, timer)
            return
        if point.pending is not None:
            point.pending[1].live = False
            point.pending = None
        live = point.alarm
        if live is None:
            return
        if rule.off_delay <= 0 or immediate:
            self._clear(live, observation.get("timestamp"), None)
            return
        if point.off_pending is None:
            start = parse_timestamp(observation.get("timestamp"))
            if start is None:
                return
            point.off_pending = self._schedule(point.device, start + rule.off_delay,
                                               lambda at, live=live: self._off_delay_ended(live, at))

    def _hold(self, point: _Point) -> None:
        if point.pending is not None:
            point.pending[1].live = False
            point.pending = None

    def _on_delay_ended(self, point: _Point, observation: Mapping[str, Any], at: float) -> None:
        point.pending = None
        self._activate_switch(point, observation, at)

    def _off_delay_ended(self, live: _Live, at: float) -> None:
        live.point.off_pending = None
        self._clear(live, format_epoch(at), at)

    def _activate_switch(self, point: _Point, observation: Mapping[str, Any], at: float | None) -> None:
        rule = point.rule
        value = observation.get("value")
        if rule.kind == "event":
            shown = _text(value).strip()
            level, default = "EVENT", f"{point.item_name} {shown}"
        elif rule.kind == "threshold":
            units = _text(observation.get("units"))
            limit = f"above {rule.above:g}" if rule.above is not None and value > rule.above else f"below {rule.below:g}"
            shown = f"{value:g}"
            level, default = "THRESHOLD", f"{point.item_name} {shown}{' ' + units if units else ''} {limit}"
            if rule.on_delay > 0:
                default += f" for {rule.on_delay:g} s"
        else:
            shown = wire.UNAVAILABLE
            level, default = "UNAVAILABLE", f"{point.item_name} UNAVAILABLE"
        message = self._message(rule, point, observation, default, level=level)
        self._activate(point, observation, at, level, rule.priority, message, shown)

    # -- wall clock: offline, shelve expiry, flood end

    def _wall_checks(self, now: float) -> None:
        self._wall_now = now
        if self._offline_rules:
            for rule in self._offline_rules:
                if rule.id not in self._disabled:
                    for device in list(self._devices.values()):
                        if rule.matches_device(device.uuid, device.name):
                            self._check_offline(rule, device, now)
        for point in list(self._shelved_points):
            if point.shelve is not None and not self._shelve_effective(point.shelve, now):
                self._shelved_points.discard(point)
                self._set_point_shelved(point, False, format_epoch(now), "shelve expired")

    def _check_offline(self, rule: Rule, device: _Device, now: float) -> None:
        key = (rule.id, device.uuid, "")
        point = self._points.get(key)
        if point is None and key in self._carried:
            point = self._point(rule, device, "", "", "")
        if point is not None and point.alarm is not None:
            live = point.alarm
            if rule.escalate is not None and not live.escalated and now >= live.activated_epoch + rule.escalate.after:
                self._escalate(live, live.activated_epoch + rule.escalate.after)
            return
        status = self._agents.get(device.agent) if device.agent else None
        reason = activation = None
        at = now
        if status is not None and status.get("state") == "unreachable":
            since = parse_timestamp(status.get("since"))
            if since is not None and now - since >= (rule.after or 0):
                error = status.get("last_error")
                reason = "agent unreachable" + (f": {error}" if error else "")
                activation = f"agent:{device.agent}:{status.get('since')}"
                at = since + (rule.after or 0)
        if reason is None and rule.no_data_after is not None and now - device.last_seen >= rule.no_data_after:
            last = device.last_observation
            reason = f"no data for {rule.no_data_after / 60:g} min"
            activation = f"silent:{_activation_of(last)}" if last is not None else "silent:never"
            at = now
        if reason is None:
            return
        ended = self._alarms.get(alarm_id(device.uuid, rule.id, "", activation))
        if ended is not None and not ended.active:
            # This outage is over already: data newer than it came before the agent's status
            # said `connected`. Raising it again would make the alarm flap.
            return
        if point is None:
            point = self._point(rule, device, "", "", "")
        message = self._message(rule, point, {}, f"{device.name} offline: {reason}", level="OFFLINE")
        self._activate(point, {"timestamp": format_epoch(at)}, at, "OFFLINE", rule.priority, message, reason,
                       activation=activation, wall=True)

    # -- shared acknowledgements and shelving

    @staticmethod
    def _shelve_effective(shelve: Mapping[str, Any], now: float) -> bool:
        if shelve.get("state") != wire.SHELVED:
            return False
        until = parse_timestamp(shelve.get("until"))
        return until is not None and until > now

    def _merge_record(self, record: Mapping[str, Any], now: float) -> None:
        alarm_id_ = str(record["alarm_id"])
        before = self._ledger.get(alarm_id_)
        merged = merge_ack_values(before, record) or dict(record)
        self._ledger[alarm_id_] = merged
        live = self._alarms.get(alarm_id_)
        if live is not None:
            self._apply_record(live, merged, now)

    def _apply_record(self, live: _Live, record: Mapping[str, Any], now: float) -> None:
        ack = record.get("acknowledged")
        if ack and live.ack is None:
            live.ack = dict(ack)
            if live.is_normal() and live in live.point.open:
                live.point.open.remove(live)
            self._emit(m.ACKNOWLEDGED, live, _text(ack.get("at")), by=ack.get("by"), station=ack.get("station"),
                       note=ack.get("note"))
        shelve = record.get("shelve")
        point = live.point
        if shelve and shelve != point.shelve and (point.shelve is None or _shelve_order(shelve) >= _shelve_order(point.shelve)):
            point.shelve = dict(shelve)
            effective = self._shelve_effective(shelve, now)
            if effective:
                self._shelved_points.add(point)
            else:
                self._shelved_points.discard(point)
            detail = shelve.get("reason") or ("unshelved" if shelve.get("state") == wire.UNSHELVED else "shelve expired")
            self._set_point_shelved(point, effective, _text(shelve.get("at")), detail, shelve.get("by"), shelve.get("station"))

    def _set_point_shelved(self, point: _Point, shelved: bool, at: str, detail: str, by: str | None = None,
                           station: str | None = None) -> None:
        for live in list(point.open):
            if live.shelved == shelved or live.is_normal():
                continue
            live.shelved = shelved
            if shelved:
                self._emit(m.SHELVED, live, at, detail=detail, by=by, station=station)
            else:
                # Back in view: an alarm that came while shelved and is still unacknowledged pops up now.
                self._emit(m.UNSHELVED, live, at, notify_candidate=live.active, detail=detail, by=by, station=station)

    # -- bookkeeping

    def _register(self, live: _Live, trim: bool = True) -> None:
        self._alarms[live.id] = live
        self._device_alarms.setdefault(live.point.device.uuid, {})[live.id] = live
        if trim and len(self._alarms) > max(_REGISTRY_LIMIT, self._trim_after):
            self._trim()
            held = len(self._alarms)
            self._trim_after = held + held // 10 if held > _REGISTRY_LIMIT else 0

    def _trim(self) -> None:
        """Forget the oldest NORMAL alarms (from the oldest tenth). Where none of those is
        normal, the next attempt waits for another tenth of new alarms: scanning on every
        registration would make each new alarm cost the registry's size."""
        for key in [k for k, a in itertools.islice(self._alarms.items(), len(self._alarms) // 10) if a.is_normal()]:
            live = self._alarms.pop(key)
            self._device_alarms.get(live.point.device.uuid, {}).pop(key, None)

    def _count_for_flood(self, epoch: float) -> None:
        settings = self.settings
        window = self._flood_times
        window.append(epoch)
        if epoch > self._flood_reference:
            self._flood_reference = epoch
        while window and window[0] < self._flood_reference - settings.flood_seconds:
            window.popleft()
        if len(window) > settings.flood_alarms:
            if not self.flood_active:
                self.flood_active = True
                self._flood_window_start = window[0]
                self.flood_since = format_epoch(window[0])
                self._flood_started = True
        elif self.flood_active:
            self.flood_active = False
            self.flood_since = None
