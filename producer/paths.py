"""Where the product finds its bundled resources and keeps per-user files.

Resources live in `resources/` next to the packages in a source checkout and under
`sys._MEIPASS` in a PyInstaller build. Per-user state (broker data, downloaded jars,
settings) goes to the platform's conventional folders via platformdirs, and every
location can be overridden with an environment variable so tests use temp dirs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

APP_NAME = "machine-monitor"


def resources_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    return resources_dir().joinpath(*parts)


def user_data_dir() -> Path:
    override = os.environ.get("MACHINE_MONITOR_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def user_cache_dir() -> Path:
    override = os.environ.get("MACHINE_MONITOR_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
