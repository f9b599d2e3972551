"""A settings file that cannot be used never silently changes what the user sees.

Each case is a real file (or folder, or FIFO) in a real config folder. The app says which file
and what is wrong; without anybody to ask (`--screenshot`, `--self-test`) it exits non-zero and
starts nothing - no broker, no replayed demo data - and leaves the file as it is; in the GUI
the user can enter settings again, which keeps the old file as `settings.json.bad`, or quit.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop.core.settings import Settings, SettingsError, load_settings
from desktop.ui import app
from desktop.ui.settings_dialog import SettingsDialog
from modal import when_modal
from repo_paths import REPO_ROOT

NESTED = "[" * 100_000 + "]" * 100_000


def write_directory(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("the user's things")


def write_fifo(path: Path) -> None:
    os.mkfifo(path)


# (case, how to make settings.json, words the message must contain)
CASES = [
    ("folder", write_directory, "is a folder, not a settings file"),
    ("fifo", write_fifo, "is not a regular file"),
    ("latin-1", lambda p: p.write_bytes('{"topic_prefix": "Fräs-"}'.encode("latin-1")), "is not UTF-8 text (byte 20 is 0xe4)"),
    ("truncated", lambda p: p.write_text('{"mode": "remote",'), "not valid JSON (line 1, column 19)"),
    ("not an object", lambda p: p.write_text("[1, 2]"), "expected a JSON object"),
    ("wrong type", lambda p: p.write_text('{"mode": 5}'), "Mode: expected text, got 5"),
    ("wrong value", lambda p: p.write_text('{"mode": "remote"}'), "Bootstrap servers: required in remote mode"),
    ("nested", lambda p: p.write_text(NESTED), "nested too deeply"),
    ("nested property", lambda p: p.write_text(json.dumps({"kafka_properties": {"a": json.loads("[" * 900 + "]" * 900)}})),
     "Extra Kafka properties: 'a' must be text or a number"),
]


def snapshot(path: Path):
    """What is at `path`, to tell whether anything touched it."""
    if path.is_fifo():
        return "fifo"
    if path.is_dir():
        return {child.name: child.read_bytes() for child in path.iterdir()}
    return path.read_bytes()


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
def broken(request, tmp_path):
    name, make, words = request.param
    config = tmp_path / "config"
    config.mkdir()
    path = config / "settings.json"
    make(path)
    return config, path, words


def options(config: Path, **changes) -> argparse.Namespace:
    values = {"config_dir": str(config), "bootstrap": None, "topic_prefix": None, "screenshot": None, "after": 1.0,
              "self_test": False}
    values.update(changes)
    return argparse.Namespace(**values)


def test_the_error_names_the_file_and_the_problem(broken):
    config, path, words = broken
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value)


def test_non_interactive_run_exits_non_zero_and_leaves_the_file(broken, styled_qapp, capsys):
    config, path, words = broken
    before = snapshot(path)
    assert app.run(options(config, screenshot=str(config.parent / "shot.png"))) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: " in err and words in err
    assert snapshot(path) == before and not (config / "settings.json.bad").exists()
    assert not (config.parent / "shot.png").exists()


def test_the_app_process_starts_nothing_from_a_broken_file(tmp_path):
    """The whole app as a user runs it: no fall-back to local mode with the replayed demo."""
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    (config / "settings.json").write_text('{"mode": "remote", "bootstrap_servers": "kafka.plant.local:9092",')
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "MACHINE_MONITOR_CONFIG_DIR": str(config),
           "MACHINE_MONITOR_DATA_DIR": str(data)}
    for arguments, code, words in ((["--screenshot", str(tmp_path / "shot.png"), "--after", "1"], 2, "error: "),
                                   (["--self-test"], 1, "FAIL settings: ")):
        completed = subprocess.run([sys.executable, "-m", "desktop", *arguments], cwd=REPO_ROOT, env=env,
                                   capture_output=True, text=True, timeout=120)
        output = completed.stdout + completed.stderr
        assert completed.returncode == code, output[-3000:]
        assert f"{words}{config / 'settings.json'}: not valid JSON (line 1, column 66)" in output, output[-3000:]
        # Nothing was started: no broker data, no screenshot of demo data.
        assert not (data / "broker").exists(), output[-3000:]
        assert not (tmp_path / "shot.png").exists()
    assert (config / "settings.json").read_text().endswith('"kafka.plant.local:9092",')


def click(text: str):
    def action(box: QMessageBox) -> None:
        shown.append(box.text())
        next(b for b in box.buttons() if b.text() == text).click()
    return action


shown: list[str] = []


def is_message_box(widget) -> bool:
    return isinstance(widget, QMessageBox) and widget.objectName() == "brokenSettingsBox"


def test_quit_in_the_dialog_ends_the_app_and_keeps_the_file(broken, styled_qapp, capsys):
    config, path, words = broken
    before = snapshot(path)
    shown.clear()
    when_modal(is_message_box, click("Quit"))
    assert app.run(options(config)) == 2
    assert len(shown) == 1 and str(path) in shown[0] and words in shown[0]
    assert snapshot(path) == before and not (config / "settings.json.bad").exists()
    assert not any(w.isVisible() for w in QApplication.topLevelWidgets()), "a window opened anyway"


def test_settings_entered_in_the_dialog_are_saved_and_the_old_file_kept(broken, styled_qapp, qtbot):
    config, path, words = broken
    before = snapshot(path)
    shown.clear()

    def fill_and_save(dialog: SettingsDialog) -> None:
        dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("remote"))
        dialog.bootstrap_edit.setText("kafka1.plant.local:9093")
        dialog.prefix_edit.setText("plant1.")
        dialog._on_save_clicked()

    when_modal(is_message_box, click("Open Settings…"))
    when_modal(lambda w: isinstance(w, SettingsDialog), fill_and_save)
    error = pytest.raises(SettingsError, load_settings, config).value
    entered = app.ask_about_broken_settings(error, config)
    expected = Settings(mode="remote", bootstrap_servers="kafka1.plant.local:9093", topic_prefix="plant1.")
    assert entered == expected
    assert load_settings(config) == expected  # what the next start reads
    bad = config / "settings.json.bad"
    assert snapshot(bad) == before, "the unusable file was not kept as it was"
    assert str(path) in shown[0] and words in shown[0]
