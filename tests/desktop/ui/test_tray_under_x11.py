"""The FAULT pop-up, and a start minimised to the tray, through a real system tray: Xvfb plus
the `trayer` tray host, the app on Qt's xcb platform in its own process (this test process
runs offscreen)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def x_display_with_tray():
    for program in ("Xvfb", "trayer"):
        assert shutil.which(program), f"{program} is not installed: run `make system-deps` (Debian: xvfb, trayer)"
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    processes = [xvfb]
    try:
        with os.fdopen(read_fd) as announced:
            number = announced.readline().strip()  # Xvfb writes the display number once it accepts clients
        assert number, "Xvfb did not start"
        display = f":{number}"
        processes.append(subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "120", "--height", "24"],
            env={**os.environ, "DISPLAY": display}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield display
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_fault_pops_up_as_a_tray_message_not_the_banner(x_display_with_tray):
    env = {**os.environ, "DISPLAY": x_display_with_tray, "QT_QPA_PLATFORM": "xcb",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run([sys.executable, str(HERE / "tray_session.py")], env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["tray_available"] and result["uses_tray"], result
    assert not result["banner_visible"], "with a tray the in-window banner must stay hidden"
    texts = [" ".join(balloon) for balloon in result["balloons"]]
    assert any("Mazak03" in text and "791" in text and "MUST INPUT CUTTING SPEED" in text for text in texts), result
    # The tray icon took the alarm colour (the dot in its corner), and clicking the pop-up
    # opened the machine it was about; so does "Open last alert" in the tray menu.
    from desktop.core.machines import MachineStatus
    from desktop.ui.theme import STATUS_COLORS

    assert result["icon_after"] != result["icon_before"], result
    red = STATUS_COLORS[MachineStatus.ALARM].lstrip("#")
    after = result["icon_after"].lstrip("#")
    assert sum(abs(int(after[i:i + 2], 16) - int(red[i:i + 2], 16)) for i in (0, 2, 4)) < 60, result
    assert result["opened_by_click"] == "mtc_adapter004", result
    assert result["opened_by_menu"] == "mtc_adapter004", result
    assert result["menu_text"].startswith("Open last alert: Mazak03"), "the menu entry names the alert it opens"


def test_start_minimised_shows_only_the_tray_icon_until_it_is_clicked(x_display_with_tray, tmp_path):
    # "Start minimised" ticked in the settings dialog; remote mode at an address nobody answers.
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "settings.json").write_text(json.dumps(
        {"mode": "remote", "bootstrap_servers": "127.0.0.1:9", "start_minimised": True}))
    env = {**os.environ, "DISPLAY": x_display_with_tray, "QT_QPA_PLATFORM": "xcb",
           "MACHINE_MONITOR_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent.parent), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run([sys.executable, str(HERE / "minimised_session.py"), str(config_dir)], env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["tray_visible"], result
    assert result["visible_windows"] == [], f"a window is on screen although the app started minimised: {result}"
    assert result["shown_after_click"], result
