"""One set of local services per PC: an advisory lock file per broker folder and topic prefix.

`ServiceLock.acquire` takes an exclusive, non-blocking OS lock (fcntl on Linux and macOS,
msvcrt on Windows) on a small file and writes the holder's pid into it; the lock is the
process's own and ends with it, so a killed app never leaves a stale lock. A second app on
the same account finds the lock held and reuses the running broker, replay agent and producer
instead of starting a second producer into the same topics; `holder()` tells which process
holds it. `replay_position` and the position file let the replay agent continue where the
last run stopped instead of always at the same recorded hour.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


class ServiceLock:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: Any = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> bool:
        """True when this process now holds the lock (or already did)."""
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while held
        try:
            if sys.platform == "win32":
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "since": time.time()}))
        handle.flush()
        self._file = handle
        return True

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is None:
            return
        try:
            if sys.platform != "win32":
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            handle.close()


def time_of_day(seconds: float) -> str:
    seconds = int(seconds) % 86400
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def seconds_of_day(text: str) -> float:
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.append(0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def replay_position(start: str, started_at: float, speed: float, now: float) -> str:
    """Where a replay started at `start` (recorded time of day) with `speed` is at `now`."""
    return time_of_day(seconds_of_day(start) + max(0.0, now - started_at) * speed)


def read_replay_position(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        position = data.get("position")
        return position if isinstance(position, str) and position.count(":") == 2 else None
    except (OSError, ValueError, AttributeError):
        return None


def write_replay_position(path: Path, position: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"position": position, "saved_at": time.time()}), encoding="utf-8")
    os.replace(temporary, path)
