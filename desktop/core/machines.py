"""Machine state: the latest Availability, Execution, ControllerMode and conditions per device,
and the one status word the overview shows for it.

The status is derived in a fixed order of precedence, most urgent first:

1. offline - the agent serving the device is unreachable, or no data came for it at all;
2. alarm - an active FAULT condition, or the emergency stop TRIGGERED;
3. unavailable - Availability is UNAVAILABLE, every item the device reported is UNAVAILABLE
   (a machine that is powered off or not connected to its adapter: the NIST Hurco machines
   look like this, and they must not pass for idle), or Execution is not reported, since
   "idle" would be a guess;
4. running - any Execution is ACTIVE;
5. stopped - Execution FEED_HOLD, STOPPED, INTERRUPTED, OPTIONAL_STOP or PROGRAM_STOPPED;
6. idle - any other Execution (READY, WAIT, PROGRAM_COMPLETED).

Devices come from the compacted devices topic; a device seen only in observations is still
tracked, named from the observations.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Mapping

from desktop.core.conditions import ConditionTracker

UNAVAILABLE = "UNAVAILABLE"

STOPPED_EXECUTIONS = frozenset({"FEED_HOLD", "STOPPED", "INTERRUPTED", "OPTIONAL_STOP", "PROGRAM_STOPPED"})
# The event types the overview shows or the status uses, by MTConnect type.
TRACKED_TYPES = ("AVAILABILITY", "EXECUTION", "CONTROLLER_MODE", "EMERGENCY_STOP")


class MachineStatus(str, Enum):
    RUNNING = "running"
    IDLE = "idle"
    STOPPED = "stopped"
    ALARM = "alarm"
    OFFLINE = "offline"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class MachineView:
    """Everything a machine tile shows, as of the last observation applied."""

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
    last_timestamp: str | None
    agent: str | None


def _combine_execution(values: Iterable[str]) -> str | None:
    """One Execution for a device with several paths: the most telling of them."""
    values = [v for v in values if v]
    for wanted in (lambda v: v == "ACTIVE", lambda v: v in STOPPED_EXECUTIONS, lambda v: v != UNAVAILABLE):
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


class MachineTracker:
    """The state of one device, updated observation by observation."""

    def __init__(self, device_uuid: str, name: str = "") -> None:
        self.device_uuid = device_uuid
        self.device: Mapping[str, Any] = {}
        self.name = name or device_uuid
        self.agent: str | None = None
        self.observation_count = 0
        self.last_timestamp: str | None = None
        self._events: dict[str, dict[str, str]] = {kind: {} for kind in TRACKED_TYPES}
        # Data items whose latest value is something other than UNAVAILABLE.
        self._reporting: set[str] = set()
        self._seen_items: set[str] = set()
        self.conditions = ConditionTracker()

    def set_device(self, device: Mapping[str, Any]) -> None:
        self.device = device
        self.name = str(device.get("device_name") or self.name)
        self.agent = device.get("agent") or self.agent

    def observe(self, observation: Mapping[str, Any]) -> None:
        self.observation_count += 1
        self.last_timestamp = observation.get("timestamp") or self.last_timestamp
        if not self.device and observation.get("device_name"):
            self.name = str(observation["device_name"])
        self.agent = observation.get("agent") or self.agent
        item = str(observation.get("data_item_id"))
        self._seen_items.add(item)
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
        if unavailable:
            self._reporting.discard(item)
        else:
            self._reporting.add(item)

    def view(self, agent_status: Mapping[str, Any] | None = None) -> MachineView:
        availability = _combine(self._events["AVAILABILITY"].values())
        execution = _combine_execution(self._events["EXECUTION"].values())
        mode = _combine(self._events["CONTROLLER_MODE"].values())
        estop = _combine(self._events["EMERGENCY_STOP"].values())
        active = self.conditions.active()
        faults = [c for c in active if c.level == "FAULT"]
        warnings = [c for c in active if c.level == "WARNING"]

        if agent_status is not None and agent_status.get("state") == "unreachable":
            error = agent_status.get("last_error")
            status = MachineStatus.OFFLINE
            reason = "agent unreachable" + (f": {error}" if error else "")
        elif not self.observation_count:
            status, reason = MachineStatus.OFFLINE, "no data received"
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
        elif execution in (None, UNAVAILABLE):
            status, reason = MachineStatus.UNAVAILABLE, "available, execution not reported"
        else:
            # Some adapters never send Availability (NIST's Mazak01 in 2017): a machine that
            # reports its execution is reporting, and the operator needs to see what it does.
            reason = "availability not reported" if availability in (None, UNAVAILABLE) else ""
            if execution == "ACTIVE":
                status = MachineStatus.RUNNING
            elif execution in STOPPED_EXECUTIONS:
                status = MachineStatus.STOPPED
            else:
                status = MachineStatus.IDLE

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
        )


class Fleet:
    """All machines: device models, agent reachability and per-device trackers."""

    def __init__(self) -> None:
        self._machines: dict[str, MachineTracker] = {}
        self._agent_statuses: dict[str, Mapping[str, Any]] = {}
        self.version = 0

    def __len__(self) -> int:
        return len(self._machines)

    def __contains__(self, device_uuid: str) -> bool:
        return device_uuid in self._machines

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

    def observe(self, observations: Iterable[Mapping[str, Any]]) -> None:
        changed = False
        for observation in observations:
            uuid = observation.get("device_uuid")
            if not uuid:
                continue
            self._tracker_for(str(uuid), str(observation.get("device_name") or "")).observe(observation)
            changed = True
        if changed:
            self.version += 1

    def device(self, device_uuid: str) -> Mapping[str, Any]:
        tracker = self._machines.get(device_uuid)
        return tracker.device if tracker else {}

    def view(self, device_uuid: str) -> MachineView | None:
        tracker = self._machines.get(device_uuid)
        if tracker is None:
            return None
        return tracker.view(self._agent_statuses.get(tracker.agent) if tracker.agent else None)

    def views(self) -> list[MachineView]:
        """Every machine, sorted by name (the order the overview shows them in)."""
        views = [self.view(uuid) for uuid in self._machines]
        return sorted((v for v in views if v is not None), key=lambda v: (v.name.lower(), v.device_uuid))
