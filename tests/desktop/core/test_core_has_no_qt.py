"""desktop.core is the Qt-free half of the app: importing all of it must not load Qt."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import desktop.core

FORBIDDEN = ("PySide6", "shiboken6", "pyqtgraph")


def test_core_modules_import_without_qt():
    modules = sorted(f"desktop.core.{info.name}" for info in pkgutil.iter_modules(desktop.core.__path__))
    assert "desktop.core.feed" in modules and "desktop.core.alarms" in modules
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"desktop.core pulled in Qt: {result.stdout}"
