"""Start at login on a PC where the app lives under a path with spaces and odd characters.

On Linux the oracles are the freedesktop validator and GLib's own launcher (`gio launch`, what
GNOME's session uses for autostart entries): the entry must validate and start the program
with exactly the arguments it was given. Windows cannot be run here; its test stands a small
in-memory registry in for `winreg` and checks the Run value against the Windows rules for
quoting a command line.
"""
from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from desktop.core import autostart


def _launch(entry: Path, output: Path, timeout: float = 15.0) -> list[str]:
    started = subprocess.run(["gio", "launch", str(entry)], capture_output=True, text=True, timeout=30)
    assert started.returncode == 0, started.stdout + started.stderr
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if output.is_file() and output.read_text(encoding="utf-8").endswith("END\n"):
            return output.read_text(encoding="utf-8").splitlines()[:-1]
        time.sleep(0.05)
    raise AssertionError(f"the program of {entry} did not run within {timeout:g} s")


def test_an_app_under_a_path_with_spaces_starts_at_login_with_exactly_its_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    output = tmp_path / "argv.txt"
    program = tmp_path / "Machine Monitor (plant 2)" / "bin" / "machine monitor"
    program.parent.mkdir(parents=True)
    # Writes each argument it gets on a line of its own, then END.
    program.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" END > '{output}'\n", encoding="utf-8")
    program.chmod(0o755)
    command = [str(program), "--config-dir", str(tmp_path / "it's 100% $HOME"), 'say "hi" `now`', "back\\slash", "~x"]

    entry = autostart.set_autostart(True, command)
    assert entry == tmp_path / "config" / "autostart" / "machine-monitor.desktop" and autostart.autostart_enabled()
    checked = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert _launch(entry, output) == command

    autostart.set_autostart(False, command)
    assert not entry.exists() and not autostart.autostart_enabled()


class _Registry:
    """The part of `winreg` the app uses, over one in-memory key."""

    HKEY_CURRENT_USER = "HKCU"
    KEY_SET_VALUE = 2
    REG_SZ = 1

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], tuple[int, str]] = {}
        self.opened: list[str] = []

    class _Key:
        def __init__(self, path: str) -> None:
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def OpenKey(self, root, path, reserved=0, access=0):  # noqa: N802 - winreg's names
        self.opened.append(f"{root}\\{path}")
        return self._Key(f"{root}\\{path}")

    def SetValueEx(self, key, name, reserved, kind, value):  # noqa: N802
        self.values[(key.path, name)] = (kind, value)

    def QueryValueEx(self, key, name):  # noqa: N802
        try:
            kind, value = self.values[(key.path, name)]
        except KeyError:
            raise FileNotFoundError(2, "The system cannot find the file specified") from None
        return value, kind

    def DeleteValue(self, key, name):  # noqa: N802
        if self.values.pop((key.path, name), None) is None:
            raise FileNotFoundError(2, "The system cannot find the file specified")


@pytest.fixture
def windows(monkeypatch):
    registry = _Registry()
    module = types.ModuleType("winreg")
    for name in ("HKEY_CURRENT_USER", "KEY_SET_VALUE", "REG_SZ", "OpenKey", "SetValueEx", "QueryValueEx",
                 "DeleteValue"):
        setattr(module, name, getattr(registry, name))
    monkeypatch.setitem(sys.modules, "winreg", module)
    monkeypatch.setattr(sys, "platform", "win32")
    return registry


RUN_KEY = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run"


def test_on_windows_start_at_login_is_a_run_value_that_windows_splits_back_into_the_command(windows):
    command = [r"C:\Program Files\Machine Monitor\MachineMonitor.exe", "--config-dir", "D:\\plant settings\\"]
    assert not autostart.autostart_enabled()
    assert autostart.set_autostart(True, command) == "MachineMonitor"
    # Windows rules: an argument with a space is wrapped in double quotes; backslashes stay as
    # they are, except before a quote, where they are doubled (else the folder's last
    # backslash would escape the closing quote and the argument would run on).
    assert windows.values[(RUN_KEY, "MachineMonitor")] == (
        windows.REG_SZ, r'"C:\Program Files\Machine Monitor\MachineMonitor.exe" --config-dir "D:\plant settings\\"')
    assert autostart.autostart_enabled()

    autostart.set_autostart(False, command)
    assert (RUN_KEY, "MachineMonitor") not in windows.values and not autostart.autostart_enabled()
    autostart.set_autostart(False, command)  # unticking twice (nothing left to remove) is not an error
    assert set(windows.opened) == {RUN_KEY}, "only the current user's Run key is touched"
