"""Observation timestamps as epoch seconds and back, the one time format of alarm records.

Agents write ISO-8601 with 3, 6 or 7 fractional digits, with or without the `Z`; a time
without a zone is UTC. Python keeps microseconds, which is finer than any alarm delay.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_timestamp(text: object) -> float | None:
    """Epoch seconds, or None when `text` is not an ISO-8601 time."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:  # more than 7 fractional digits, a lower-case z, a space before the zone ...
            moment = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", text.strip()).replace("z", "Z").replace(" Z", "Z"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def format_epoch(seconds: float) -> str:
    """`2016-11-16T20:29:56.063000Z`: UTC with microseconds, so records sort as text."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
