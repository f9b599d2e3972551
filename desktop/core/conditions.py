"""Which MTConnect conditions are active right now, following the standard's rules.

A CONDITION data item can carry several active conditions at once, told apart by their
native code. WARNING or FAULT activates (or re-levels) the condition with that code; NORMAL
with a native code clears only that code, NORMAL without one clears every condition of the
data item, and UNAVAILABLE clears them too (nothing is known any more). The tracker reports
each transition so the alarm engine and the machine-state derivation share one reading of
the rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

ACTIVE_LEVELS = ("WARNING", "FAULT")

ConditionKey = tuple[str, str, str]  # (device uuid, data item id, native code or "")


@dataclass(frozen=True)
class ActiveCondition:
    key: ConditionKey
    level: str
    # The observation that activated the condition (its sequence names the activation).
    activation: Mapping[str, Any]
    # The latest observation for it (level or message may have changed since).
    latest: Mapping[str, Any]


@dataclass(frozen=True)
class ConditionChange:
    key: ConditionKey
    before: ActiveCondition | None  # None: was not active
    after: ActiveCondition | None  # None: now cleared
    observation: Mapping[str, Any]


def native_code_of(observation: Mapping[str, Any]) -> str:
    code = observation.get("native_code")
    return "" if code is None else str(code)


def level_of(observation: Mapping[str, Any]) -> str:
    return str(observation.get("level") or "").upper()


class ConditionTracker:
    def __init__(self) -> None:
        # (device uuid, data item id) -> native code -> active condition
        self._by_item: dict[tuple[str, str], dict[str, ActiveCondition]] = {}

    def update(self, observation: Mapping[str, Any]) -> list[ConditionChange]:
        """Apply one observation; returns the transitions it caused (often none)."""
        if observation.get("category") != "CONDITION":
            return []
        item = (str(observation.get("device_uuid")), str(observation.get("data_item_id")))
        level = level_of(observation)
        code = native_code_of(observation)
        active = self._by_item.get(item, {})

        if level in ACTIVE_LEVELS:
            key = (item[0], item[1], code)
            before = active.get(code)
            activation = before.activation if before is not None else observation
            after = ActiveCondition(key, level, activation, observation)
            self._by_item.setdefault(item, {})[code] = after
            if before is not None and before.level == level:
                return []  # the same condition repeated: not a transition
            return [ConditionChange(key, before, after, observation)]

        # NORMAL (or UNAVAILABLE, or anything unknown): clear.
        if level == "NORMAL" and code:
            codes = [code] if code in active else []
        else:
            codes = list(active)
        changes = []
        for cleared in codes:
            before = active.pop(cleared)
            changes.append(ConditionChange(before.key, before, None, observation))
        if not active:
            self._by_item.pop(item, None)
        return changes

    def active(self, device_uuid: str | None = None) -> list[ActiveCondition]:
        return [
            condition
            for item, codes in self._by_item.items()
            if device_uuid is None or item[0] == device_uuid
            for condition in codes.values()
        ]
