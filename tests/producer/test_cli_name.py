"""The producer's command line names the command the user actually has: `python -m producer`
from a checkout, `MachineMonitor producer` in the installed app (which has no Python)."""
from __future__ import annotations

import sys

import pytest

from producer.__main__ import main


def test_a_checkout_shows_python_m_producer(monkeypatch, capsys):
    monkeypatch.delattr(sys, "frozen", raising=False)
    with pytest.raises(SystemExit) as ended:
        main(["broker", "restart"])
    assert ended.value.code == 2
    assert "usage: python -m producer broker" in capsys.readouterr().err


def test_the_installed_app_shows_its_own_program(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "MachineMonitor"))
    with pytest.raises(SystemExit) as ended:
        main(["broker", "restart"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "usage: MachineMonitor producer broker" in err
    assert "invalid choice: 'restart'" in err
    assert "python -m" not in err
