"""On a real X server the app's window carries its icon and the class the desktop entry
names, which is what Linux task bars, docks and Alt+Tab show. The real app (`python -m
desktop`, Qt's xcb platform, its own process) on Xvfb; what it put on its window is read back
with xprop, as a window manager reads it."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PySide6.QtGui import QImage

from repo_paths import REPO_ROOT

APP_ICON = REPO_ROOT / "resources" / "icons" / "app.png"
START_LIMIT_S = 180.0  # generous: a loaded machine; the window normally appears in seconds


@pytest.fixture
def x_display():
    for program in ("Xvfb", "xwininfo", "xprop"):
        assert shutil.which(program), f"{program} is not installed: run `make system-deps` (Debian: xvfb, x11-utils)"
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as announced:
            number = announced.readline().strip()  # written once Xvfb accepts clients
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        xvfb.terminate()
        xvfb.wait(10)


def _property(display: str, window: str, name: str, cardinals: bool = False) -> str:
    # xprop cuts values short unless told a length; the icon is 256 x 256 x 4 bytes.
    format_args = ["-len", "4194304", "-f", name, "32c"] if cardinals else []
    return subprocess.run(["xprop", "-display", display, "-id", window, *format_args, name],
                          capture_output=True, text=True, timeout=30).stdout


def _app_window(display: str) -> str | None:
    """The app's managed top-level window: titled Machine Monitor and with a WM_CLASS (Qt's
    leader window has the title too, but no class)."""
    tree = subprocess.run(["xwininfo", "-root", "-tree", "-display", display],
                          capture_output=True, text=True, timeout=30).stdout
    for line in tree.splitlines():
        fields = line.split(None, 1)
        if len(fields) == 2 and fields[0].startswith("0x") and fields[1].startswith('"Machine Monitor'):
            if "WM_CLASS(STRING) =" in _property(display, fields[0], "WM_CLASS"):
                return fields[0]
    return None


def test_the_window_shows_the_app_icon_and_the_desktop_entrys_class(x_display, tmp_path, qapp):
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.json").write_text("{}")  # past the first-run wizard
    env = {**os.environ, "DISPLAY": x_display, "QT_QPA_PLATFORM": "xcb",
           "MACHINE_MONITOR_CONFIG_DIR": str(config), "MACHINE_MONITOR_DATA_DIR": str(tmp_path / "data"),
           "MACHINE_MONITOR_LOG_DIR": str(tmp_path / "logs")}
    log = (tmp_path / "app.log").open("wb")
    # A cluster nobody listens on: the window opens (and says so), no services are started.
    app = subprocess.Popen([sys.executable, "-m", "desktop", "--bootstrap", "127.0.0.1:9"], cwd=REPO_ROOT, env=env,
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_LIMIT_S
        window = None
        while window is None and time.monotonic() < deadline and app.poll() is None:
            window = _app_window(x_display)
            if window is None:
                time.sleep(0.2)
        assert window, (f"no Machine Monitor window on {x_display} (app exit code {app.poll()}):\n"
                        + (tmp_path / "app.log").read_text(errors="replace")[-3000:])
        # Qt sets the icon right after mapping the window; wait until it is there.
        while "_NET_WM_ICON(CARDINAL)" not in (icon_text := _property(x_display, window, "_NET_WM_ICON", cardinals=True)):
            assert time.monotonic() < deadline, f"the window has no _NET_WM_ICON: {icon_text!r}"
            time.sleep(0.2)
        wm_class = _property(x_display, window, "WM_CLASS")
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(60)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        log.close()

    # _NET_WM_ICON: width, height, then width*height ARGB pixels (possibly several sizes).
    values = [int(v) for v in icon_text.split("=", 1)[1].replace("\n", " ").split(",")]
    width, height = values[0], values[1]
    pixels = values[2:2 + width * height]
    expected = QImage(str(APP_ICON)).convertToFormat(QImage.Format.Format_ARGB32)
    assert (width, height) == (expected.width(), expected.height())
    assert len(pixels) == width * height
    # Qt passes the icon through premultiplied alpha, which rounds the colour of nearly
    # transparent edge pixels; every channel must still be within that rounding.
    def channels(argb: int) -> tuple[int, ...]:
        return tuple((argb >> shift) & 0xFF for shift in (24, 16, 8, 0))

    def off(index: int, argb: int) -> int:
        wanted = channels(expected.pixel(index % width, index // width))
        got = channels(argb)
        if wanted[0] != got[0]:
            return 255  # alpha is never rounded
        return max(abs(a - b) for a, b in zip(wanted[1:], got[1:])) * wanted[0] // 255

    worst = max(off(index, argb) for index, argb in enumerate(pixels))
    assert worst <= 1, f"icon pixels differ from {APP_ICON.name} by up to {worst} (of 255, alpha-weighted)"
    assert any(argb >> 24 for argb in pixels), "the icon is fully transparent"

    # The class is the application's name; the instance is the program's (a checkout starts
    # as __main__.py, the installed app as MachineMonitor, the desktop entry's StartupWMClass).
    assert wm_class.strip().endswith(', "Machine Monitor"'), wm_class
