"""Where the desktop app finds its files: bundled resources and the per-user settings folder.

Resources live in `resources/` at the project root when run from a checkout, and inside the
PyInstaller bundle (`sys._MEIPASS`) when frozen; the settings folder follows the documented
order command line > environment (`MACHINE_MONITOR_CONFIG_DIR`) > the platform's per-user
config folder, so tests can point the app at a temporary directory.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

APP_NAME = "machine-monitor"
CONFIG_DIR_ENV = "MACHINE_MONITOR_CONFIG_DIR"

# Files the app cannot look right without; `--self-test` checks each of them.
REQUIRED_RESOURCES = (
    "icons/app.svg",
    "icons/app.png",
    "icons/app-alarm.png",
    "style/app.qss",
)


def is_frozen() -> bool:
    """True inside a PyInstaller build, where `sys.executable` is the app itself."""
    return bool(getattr(sys, "frozen", False))


def resources_dir() -> Path:
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


def resource_path(relative: str) -> Path:
    return resources_dir() / relative


def missing_resources() -> list[str]:
    """Required resource files that are absent (empty when the installation is complete)."""
    return [name for name in REQUIRED_RESOURCES if not resource_path(name).is_file()]


def config_dir(override: str | os.PathLike[str] | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    from_env = os.environ.get(CONFIG_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
