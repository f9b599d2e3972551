"""Where the desktop app finds its files: bundled resources and the per-user folders.

Resources live in `resources/` at the project root when run from a checkout, and inside the
PyInstaller bundle (`sys._MEIPASS`) when frozen; the settings folder follows the documented
order command line > environment (`MACHINE_MONITOR_CONFIG_DIR`) > the platform's per-user
config folder, so tests can point the app at a temporary directory. Data (the broker's, the
alarm journal) and logs (crash logs) go to the platform's per-user data and log folders
(Linux: ~/.local/share/machine-monitor and ~/.local/state/machine-monitor/log; Windows:
%LOCALAPPDATA%\\machine-monitor and its Logs; macOS: ~/Library/Application Support and
~/Library/Logs), overridden by `MACHINE_MONITOR_DATA_DIR` and `MACHINE_MONITOR_LOG_DIR`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

APP_NAME = "machine-monitor"
CONFIG_DIR_ENV = "MACHINE_MONITOR_CONFIG_DIR"
DATA_DIR_ENV = "MACHINE_MONITOR_DATA_DIR"  # the same variable the producer's broker uses
LOG_DIR_ENV = "MACHINE_MONITOR_LOG_DIR"

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


def data_dir() -> Path:
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def logs_dir() -> Path:
    from_env = os.environ.get(LOG_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))
