"""Machine state: the latest Availability, Execution, ControllerMode, program, part count,
spindle, overrides and conditions per device, and the one state word the overview shows.

The state is derived in a fixed order of precedence, most urgent first:

1. offline (grey) - the agent serving the device is unreachable, no data came for it at all,
   or none for `offline_after` seconds (default 60; whatever it said before is no longer true);
2. alarm (red) - an active FAULT condition, or the emergency stop TRIGGERED;
3. unavailable (grey) - every item the device reported is UNAVAILABLE, or Availability is
   UNAVAILABLE and Execution is not reported (a machine powered off or not connected to its
   adapter: the NIST Hurco machines look like this, and they must not pass for idle);
4. running (green) - any Execution is ACTIVE;
5. interrupted (amber) - Execution FEED_HOLD, INTERRUPTED, OPTIONAL_STOP, PROGRAM_STOPPED or WAIT;
6. setup (blue) - not active, and ControllerMode MANUAL, MDI or EDIT;
7. idle (yellow) - Execution READY, STOPPED or PROGRAM_COMPLETED (or anything else reported);
   an available machine whose Execution is not reported is "unavailable" instead, since idle
   would be a guess.

A WARNING condition does not change the state; the tile shows it as a badge. Freshness is
measured with the Kafka timestamp of the newest record of the device (the producer's clock
when it published), never with the agent's clock, which may be off. The tracker also keeps
the state's start (time in state) and a bounded timeline of state bands for the detail view.

Devices come from the compacted devices topic; a device seen only in observations is still
tracked, named from the observations.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Mapping

from desktop.core.conditions import ConditionTracker

UNAVAILABLE = "UNAVAILABLE"
DEFAULT_OFFLINE_AFTER = 60.0

INTERRUPTED_EXECUTIONS = frozenset({"FEED_HOLD", "INTERRUPTED", "OPTIONAL_STOP", "PROGRAM_STOPPED", "WAIT"})
SETUP_MODES = frozenset({"MANUAL", "MANUAL_DATA_INPUT", "MDI", "EDIT"})
# The event types the overview shows or the state uses, by MTConnect type.
TRACKED_TYPES = ("AVAILABILITY", "EXECUTION", "CONTROLLER_MODE", "EMERGENCY_STOP", "PROGRAM", "PART_COUNT")
OVERRIDE_TYPES = ("PATH_FEEDRATE_OVERRIDE", "ROTARY_VELOCITY_OVERRIDE", "RAPID_OVERRIDE")
SPINDLE_TYPE = "ROTARY_VELOCITY"
LOAD_TYPE = "LOAD"
# State bands kept per machine (a band per change; a day of a busy machine is a few thousand).
TIMELINE_LIMIT = 20_000


class MachineStatus(str, Enum):
    OFFLINE = "offline"
    ALARM = "alarm"
    UNAVAILABLE = "unavailable"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    SETUP = "setup"
    IDLE = "idle"


# Worst first: the tray icon and the fleet summary use this order.
SEVERITY = (MachineStatus.ALARM, MachineStatus.OFFLINE, MachineStatus.INTERRUPTED, MachineStatus.UNAVAILABLE,
            MachineStatus.SETUP, MachineStatus.IDLE, MachineStatus.RUNNING)
SEVERITY_RANK = {status: rank for rank, status in enumerate(SEVERITY)}


def worst(statuses: Iterable[MachineStatus]) -> MachineStatus | None:
    ranked = sorted(statuses, key=SEVERITY_RANK.__getitem__)
    return ranked[0] if ranked else None


@dataclass(frozen=True)
class MachineView:
    """Everything a machine tile shows, as of the last observation applied.

    `last_seen` is left out of equality: it moves with every record, and a tile redraws its
    age on a clock of its own, not for every record.
    """

    device_uuid: str
    name: str
    model: str
    manufacturer: str
    availability: str | None
    execution: str | None
    controller_mode: str | None
    emergency_stop: str | None
    status: MachineStatus
    reason: str
    fault_count: int
    warning_count: int
    last_timestamp: str | None = field(default=None, compare=False)
    agent: str | None = None
    program: str | None = None
    part_count: str | None = None
    spindle_speed: float | None = None
    spindle_units: str | None = None
    spindle_load: float | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    # Epoch seconds: when the newest record of the device was published, and when the state began.
    last_seen: float | None = field(default=None, compare=False)
    state_since: float | None = None
    # From the alarm engine: the machine's worst ISA-18.2 alarm state ("" when normal) and
    # how many of its alarms wait for acknowledgement.
    alarm_state: str = ""
    unacknowledged: int = 0
    # The highest priority among its alarms active or waiting for acknowledgement ("" none).
    alarm_priority: str = ""
    has_spindle: bool = False


def _combine_execution(values: Iterable[str]) -> str | None:
    """One Execution for a device with several paths: the most telling of them."""
    values = [v for v in values if v]
    for wanted in (lambda v: v == "ACTIVE", lambda v: v in INTERRUPTED_EXECUTIONS, lambda v: v != UNAVAILABLE):
        for value in values:
            if wanted(value):
                return value
    return values[0] if values else None


def _combine(values: Iterable[str]) -> str | None:
    values = [v for v in values if v]
    for value in values:
        if value != UNAVAILABLE:
            return value
    return values[0] if values else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def rough_duration(seconds: float) -> str:
    """`45 s`, `2 min`, `3 h 05 min`, `4 d 2 h`: a span as a person reads it at a glance.
    Whole units elapsed (114 s is `1 min`), so every duration the app shows of the same
    moment - a tile's data age, its offline reason, the detail's panel - says the same."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    hours, rest = divmod(int(seconds), 3600)
    if hours < 48:
        return f"{hours} h {rest // 60:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def offline_text(seconds: float) -> str:
    """`no data for 2 min`, as the tile says it."""
    return f"no data for {rough_duration(seconds)}"


class MachineTracker:
    """The state of one device, updated observation by observation."""

    def __init__(self, device_uuid: str, name: str = "") -> None:
        self.device_uuid = device_uuid
        self.device: Mapping[str, Any] = {}
        self.name = name or device_uuid
        self.agent: str | None = None
        self.observation_count = 0
        self.last_timestamp: str | None = None
        self.last_seen: float | None = None
        self._events: dict[str, dict[str, str]] = {kind: {} for kind in TRACKED_TYPES}
        self._overrides: dict[str, tuple[str, str]] = {}
        # Spindle speed and load per data item: item id -> (value, component id, units).
        self._spindles: dict[str, tuple[float | None, str, str]] = {}
        self._loads: dict[str, tuple[float | None, str]] = {}
        # Data item order in the device model, so "the spindle" is the same on every run.
        self._order: dict[str, int] = {}
        # Data items whose latest value is something other than UNAVAILABLE.
        self._reporting: set[str] = set()
        self.conditions = ConditionTracker()
        self.status: MachineStatus | None = None
        self.state_since: float | None = None
        # (start epoch, status) bands, oldest first.
        self.timeline: deque[tuple[float, MachineStatus]] = deque(maxlen=TIMELINE_LIMIT)

    def set_device(self, device: Mapping[str, Any]) -> None:
        self.device = device
        self.name = str(device.get("device_name") or self.name)
        self.agent = device.get("agent") or self.agent
        self._order = {str(item.get("id")): index for index, item in enumerate(device.get("data_items") or ())
                       if isinstance(item, Mapping)}

    def observe(self, observation: Mapping[str, Any], seen: float | None = None) -> None:
        self.observation_count += 1
        self.last_timestamp = observation.get("timestamp") or self.last_timestamp
        if seen is not None and (self.last_seen is None or seen > self.last_seen):
            self.last_seen = seen
        if not self.device and observation.get("device_name"):
            self.name = str(observation["device_name"])
        self.agent = observation.get("agent") or self.agent
        item = str(observation.get("data_item_id"))
        category = observation.get("category")
        if category == "CONDITION":
            self.conditions.update(observation)
            unavailable = str(observation.get("level") or "").upper() == UNAVAILABLE
        else:
            value = observation.get("value")
            unavailable = value == UNAVAILABLE or value is None
            kind = observation.get("type")
            if kind in self._events:
                self._events[kind][item] = UNAVAILABLE if value is None else str(value)
            elif kind == SPINDLE_TYPE and category == "SAMPLE":
                self._spindles[item] = (None if unavailable else _number(value), str(observation.get("component_id") or ""),
                                        str(observation.get("units") or ""))
            elif kind == LOAD_TYPE and category == "SAMPLE":
                self._loads[item] = (None if unavailable else _number(value), str(observation.get("component_id") or ""))
            elif kind in OVERRIDE_TYPES:
                label = str(observation.get("name") or kind.replace("_", " ").lower())
                self._overrides[item] = (label, UNAVAILABLE if value is None else str(value))
        if unavailable:
            self._reporting.discard(item)
        else:
            self._reporting.add(item)

    def _spindle(self) -> tuple[float | None, str | None, float | None]:
        """(speed, units, load) of the spindle turning fastest; the first spindle of the
        device model when none turns. Load is the LOAD sample of the same component."""
        if not self._spindles:
            return None, None, None
        order = self._order
        ranked = sorted(self._spindles.items(), key=lambda entry: (-(abs(entry[1][0]) if entry[1][0] is not None else -1.0),
                                                                  order.get(entry[0], 1 << 30), entry[0]))
        _, (speed, component, units) = ranked[0]
        load = None
        for value, load_component in self._loads.values():
            if component and load_component == component and value is not None:
                load = value
                break
        return speed, units or None, load

    def view(self, agent_status: Mapping[str, Any] | None = None, now: float | None = None,
             offline_after: float = DEFAULT_OFFLINE_AFTER, alarm_state: str = "", unacknowledged: int = 0) -> MachineView:
        now = time.time() if now is None else now
        availability = _combine(self._events["AVAILABILITY"].values())
        execution = _combine_execution(self._events["EXECUTION"].values())
        mode = _combine(self._events["CONTROLLER_MODE"].values())
        estop = _combine(self._events["EMERGENCY_STOP"].values())
        active = self.conditions.active()
        faults = [c for c in active if c.level == "FAULT"]
        warnings = [c for c in active if c.level == "WARNING"]
        idle_for = now - self.last_seen if self.last_seen is not None else None

        if agent_status is not None and agent_status.get("state") == "unreachable":
            error = agent_status.get("last_error")
            status = MachineStatus.OFFLINE
            reason = "agent unreachable" + (f": {error}" if error else "")
        elif not self.observation_count:
            status, reason = MachineStatus.OFFLINE, "no data received"
        elif offline_after > 0 and idle_for is not None and idle_for > offline_after:
            status, reason = MachineStatus.OFFLINE, offline_text(idle_for)
        elif faults:
            first = faults[0]
            code = first.key[2]
            text = first.latest.get("value") or ""
            status = MachineStatus.ALARM
            reason = " ".join(part for part in ("FAULT", code, "-" if text else "", str(text)) if part)
            if len(faults) > 1:
                reason += f" (+{len(faults) - 1} more)"
        elif estop == "TRIGGERED":
            status, reason = MachineStatus.ALARM, "emergency stop triggered"
        elif not self._reporting or (availability == UNAVAILABLE and execution in (None, UNAVAILABLE)):
            status, reason = MachineStatus.UNAVAILABLE, "machine data unavailable"
        else:
            # Some adapters never send Availability (NIST's Mazak01 in 2017): a machine that
            # reports its execution is reporting, and the operator needs to see what it does.
            reason = "availability not reported" if availability in (None, UNAVAILABLE) else ""
            if execution == "ACTIVE":
                status = MachineStatus.RUNNING
            elif execution in INTERRUPTED_EXECUTIONS:
                status = MachineStatus.INTERRUPTED
            elif mode in SETUP_MODES:
                status = MachineStatus.SETUP
            elif execution in (None, UNAVAILABLE):
                status, reason = MachineStatus.UNAVAILABLE, "available, execution not reported"
            else:
                status = MachineStatus.IDLE

        speed, units, load = self._spindle()
        program = _combine(self._events["PROGRAM"].values())
        parts = _combine(self._events["PART_COUNT"].values())
        overrides = tuple(sorted(self._overrides.values()))
        return MachineView(
            device_uuid=self.device_uuid,
            name=self.name,
            model=str(self.device.get("model") or ""),
            manufacturer=str(self.device.get("manufacturer") or ""),
            availability=availability,
            execution=execution,
            controller_mode=mode,
            emergency_stop=estop,
            status=status,
            reason=reason,
            fault_count=len(faults),
            warning_count=len(warnings),
            last_timestamp=self.last_timestamp,
            agent=self.agent,
            program=None if program == UNAVAILABLE else program,
            part_count=None if parts == UNAVAILABLE else parts,
            spindle_speed=speed,
            spindle_units=units,
            spindle_load=load,
            overrides=overrides,
            last_seen=self.last_seen,
            state_since=self.state_since if self.status == status else None,
            alarm_state=alarm_state,
            unacknowledged=unacknowledged,
            has_spindle=bool(self._spindles),
        )

    def note_status(self, status: MachineStatus, at: float) -> bool:
        """Record the derived state; True when it changed (a new timeline band from `at`)."""
        if status == self.status:
            return False
        self.status = status
        self.state_since = at
        self.timeline.append((at, status))
        return True


class Fleet:
    """All machines: device models, agent reachability and per-device trackers."""

    def __init__(self, offline_after: float = DEFAULT_OFFLINE_AFTER) -> None:
        self._machines: dict[str, MachineTracker] = {}
        self._agent_statuses: dict[str, Mapping[str, Any]] = {}
        self.offline_after = offline_after
        self.version = 0

    def __len__(self) -> int:
        return len(self._machines)

    def __contains__(self, device_uuid: str) -> bool:
        return device_uuid in self._machines

    def uuids(self) -> list[str]:
        return list(self._machines)

    def tracker(self, device_uuid: str) -> MachineTracker | None:
        return self._machines.get(device_uuid)

    def _tracker_for(self, device_uuid: str, name: str = "") -> MachineTracker:
        tracker = self._machines.get(device_uuid)
        if tracker is None:
            tracker = self._machines[device_uuid] = MachineTracker(device_uuid, name)
        return tracker

    def set_device(self, device_uuid: str, device: Mapping[str, Any] | None) -> None:
        if device is None:
            # A tombstone: the device left the agent's model.
            self._machines.pop(device_uuid, None)
        else:
            self._tracker_for(device_uuid).set_device(device)
        self.version += 1

    def set_agent_status(self, agent: str, status: Mapping[str, Any] | None) -> None:
        if status is None:
            self._agent_statuses.pop(agent, None)
        else:
            self._agent_statuses[agent] = status
        self.version += 1

    def agent_statuses(self) -> dict[str, Mapping[str, Any]]:
        return dict(self._agent_statuses)

    def devices_of_agent(self, agent: str) -> list[str]:
        return [uuid for uuid, tracker in self._machines.items() if tracker.agent == agent]

    def observe(self, observations: Iterable[Mapping[str, Any]], seen: Mapping[str, float] | None = None,
                received: float | None = None) -> set[str]:
        """Apply observations; `seen` maps a device to when its newest record was published
        (records without a Kafka timestamp count as published when `received`).
        Returns the devices touched."""
        touched: set[str] = set()
        seen = seen or {}
        # The state needs only the latest value of each data item, but every Condition (one
        # item can carry several codes, each activated and cleared on its own). So a batch is
        # applied as the latest observation per item plus every Condition, in arrival order -
        # the same state as applying all of them, for a fraction of the work on a plant's
        # stream; the others are only counted.
        kept: list[Mapping[str, Any]] = []
        done: set[tuple[Any, Any]] = set()
        superseded: dict[Any, int] = {}
        for observation in reversed(observations if isinstance(observations, (list, tuple)) else list(observations)):
            if observation.get("category") != "CONDITION":
                key = (observation.get("device_uuid"), observation.get("data_item_id"))
                if key in done:
                    superseded[key[0]] = superseded.get(key[0], 0) + 1
                    continue
                done.add(key)
            kept.append(observation)
        for observation in reversed(kept):
            uuid = observation.get("device_uuid")
            if not uuid:
                continue
            uuid = str(uuid)
            self._tracker_for(uuid, str(observation.get("device_name") or "")).observe(observation, seen.get(uuid, received))
            touched.add(uuid)
        for uuid, count in superseded.items():
            tracker = self._machines.get(str(uuid)) if uuid else None
            if tracker is not None:
                tracker.observation_count += count
        if touched:
            self.version += 1
        return touched

    def device(self, device_uuid: str) -> Mapping[str, Any]:
        tracker = self._machines.get(device_uuid)
        return tracker.device if tracker else {}

    def view(self, device_uuid: str, now: float | None = None, alarm_state: str = "", unacknowledged: int = 0) -> MachineView | None:
        tracker = self._machines.get(device_uuid)
        if tracker is None:
            return None
        return tracker.view(self._agent_statuses.get(tracker.agent) if tracker.agent else None, now,
                            self.offline_after, alarm_state, unacknowledged)

    def views(self, now: float | None = None) -> list[MachineView]:
        """Every machine, sorted by name (the order the overview shows them in by default)."""
        views = [self.view(uuid, now) for uuid in self._machines]
        return sorted((v for v in views if v is not None), key=lambda v: (v.name.lower(), v.device_uuid))
