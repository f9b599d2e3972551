"""Start at login: a freedesktop autostart entry on Linux, the Run key on Windows.

`set_autostart(True, command)` writes `~/.config/autostart/machine-monitor.desktop` (Linux,
or `$XDG_CONFIG_HOME/autostart`), or the `HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run`
value `MachineMonitor` (Windows); `False` removes it. `autostart_command()` is how this app is
started: the frozen executable, or `python -m desktop` from a checkout. Other platforms get a
clear `AutostartError`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from desktop.core.paths import is_frozen

ENTRY_NAME = "machine-monitor.desktop"
RUN_VALUE = "MachineMonitor"


class AutostartError(RuntimeError):
    pass


def autostart_command() -> list[str]:
    if is_frozen():
        return [sys.executable]
    return [sys.executable, "-m", "desktop"]


def autostart_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autostart"


# Characters that make an Exec argument need quotes (Desktop Entry Specification, "The Exec key").
_EXEC_RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")


def exec_argument(part: str) -> str:
    """One argument of a desktop entry's Exec key, as the Desktop Entry Specification wants it:
    in double quotes when it holds a reserved character, with `"`, `` ` ``, `$` and `\\`
    escaped inside them, then the value's own escaping of `\\`; a literal `%` is `%%` (a
    single one starts a field code). Shell-style single quotes are not part of the format."""
    if part and not _EXEC_RESERVED.intersection(part):
        text = part
    else:
        text = '"' + "".join("\\" + char if char in '"`$\\' else char for char in part) + '"'
    return text.replace("\\", "\\\\").replace("%", "%%")


def run_value(command: list[str]) -> str:
    """The Run key's command line: quoted so Windows splits it back into the same arguments
    (a program under "C:\\Program Files" included)."""
    return subprocess.list2cmdline(command)


def desktop_entry(command: list[str]) -> str:
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Name=Machine Monitor",
        "Comment=Real-time monitoring and alarms for MTConnect machines",
        f"Exec={' '.join(exec_argument(part) for part in command)}",
        "Icon=machine-monitor",
        "Terminal=false",
        "X-GNOME-Autostart-enabled=true",
        "",
    ])


def set_autostart(enabled: bool, command: list[str] | None = None) -> Path | str:
    command = command or autostart_command()
    if sys.platform == "win32":
        import winreg

        key = winreg.OpenKey(winreg.HKEY_CURRENT_USER, r"Software\Microsoft\Windows\CurrentVersion\Run", 0,
                             winreg.KEY_SET_VALUE)
        with key:
            if enabled:
                winreg.SetValueEx(key, RUN_VALUE, 0, winreg.REG_SZ, run_value(command))
            else:
                try:
                    winreg.DeleteValue(key, RUN_VALUE)
                except FileNotFoundError:
                    pass
        return RUN_VALUE
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        path = autostart_dir() / ENTRY_NAME
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(desktop_entry(command), encoding="utf-8")
        else:
            path.unlink(missing_ok=True)
        return path
    raise AutostartError(f"start at login is not supported on {sys.platform}")


def autostart_enabled() -> bool:
    if sys.platform == "win32":
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, r"Software\Microsoft\Windows\CurrentVersion\Run") as key:
                winreg.QueryValueEx(key, RUN_VALUE)
            return True
        except OSError:
            return False
    return (autostart_dir() / ENTRY_NAME).is_file()
