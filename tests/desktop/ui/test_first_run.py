"""The first-run wizard, driven as a user would, to the app showing live data.

The two outcomes run through `app.run` itself, in a fresh config folder: the wizard comes up
because there is no settings file, it is clicked through inside its own modal loop, and the
test then waits for the main window to receive observations - from the embedded broker with
the recorded replay (real broker, replay agent and producer started by the app), or from a
separate "plant" broker reached on its second listener, fed by a real replay agent and
producer service, after a mistyped address and a closed port were each reported clearly.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QWizard

from desktop.core.settings import Settings, load_settings, settings_path
from desktop.ui import app
from desktop.ui.first_run import FirstRunWizard, ask_on_first_start
from desktop.ui.main_window import MainWindow
from modal import when_modal
from repo_paths import REPLAY_DATA

FIRST_DATA_TIMEOUT_MS = 300_000  # a first start of the embedded broker on a loaded machine
TEST_TIMEOUT_MS = 20_000  # a Test button answers within 10 s; generous for a busy machine


def replay_device_names() -> list[str]:
    """The devices the recorded replay serves, read from its own Devices.xml."""
    root = ET.parse(REPLAY_DATA / "Devices.xml").getroot()
    return sorted(element.get("name") for element in root.iter() if element.tag.endswith("}Device") or element.tag == "Device")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def options(config: Path) -> argparse.Namespace:
    return argparse.Namespace(config_dir=str(config), bootstrap=None, topic_prefix=None,
                              screenshot=None, after=10.0, self_test=False)


def is_wizard(widget) -> bool:
    return isinstance(widget, FirstRunWizard)


class Run:
    """`app.run` with a script for the wizard; the window is closed once observations arrive
    (or when anything failed), so `app.run` always returns."""

    def __init__(self, qtbot, config: Path, drive) -> None:
        self.qtbot = qtbot
        self.config = config
        self.drive = drive
        self.failures: list[BaseException] = []
        self.observations_seen = False

    def _drive(self, wizard: FirstRunWizard) -> None:
        try:
            self.drive(wizard)
        except BaseException as exc:  # noqa: BLE001 - reported after app.run returned
            self.failures.append(exc)
            wizard.reject()

    def _watch_for_window(self) -> None:
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not windows:
            QTimer.singleShot(100, self._watch_for_window)
            return
        window = windows[0]
        if self.failures:
            window.close()
            return

        def on_first_observations() -> None:
            self.observations_seen = True
            window.close()

        window.first_observations_received.connect(on_first_observations)
        QTimer.singleShot(FIRST_DATA_TIMEOUT_MS, window.close)

    def __call__(self) -> int:
        handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        when_modal(is_wizard, self._drive)
        QTimer.singleShot(0, self._watch_for_window)
        try:
            return app.run(options(self.config))
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            if self.failures:
                raise self.failures[0]


def wait_for_test(qtbot, row, *words: str) -> str:
    """Wait for a Test button's answer; it must contain every one of `words`."""
    qtbot.waitUntil(lambda: row.ok is not None, timeout=TEST_TIMEOUT_MS)
    text = row.result.text()
    for word in words:
        assert word in text, text
    return text


def test_replay_on_the_embedded_broker_starts_the_app_showing_live_data(qtbot, styled_qapp, tmp_path, monkeypatch):
    from producer.broker import LocalBroker

    monkeypatch.setenv("MACHINE_MONITOR_DATA_DIR", str(tmp_path / "data"))
    config = tmp_path / "config"
    seen_defaults = {}

    def drive(wizard: FirstRunWizard) -> None:
        # Defaults a first-time user meets without touching anything.
        seen_defaults["replay"] = wizard.source_page.replay_radio.isChecked()
        wizard.button(QWizard.WizardButton.NextButton).click()
        seen_defaults["local"] = wizard.kafka_page.local_radio.isChecked()
        wizard.button(QWizard.WizardButton.FinishButton).click()

    try:
        run = Run(qtbot, config, drive)
        assert run() == 0
        assert run.observations_seen, "the window received no observations from the embedded broker"
    finally:
        LocalBroker(data_dir=tmp_path / "data" / "broker", progress=lambda line: None).stop()
    assert seen_defaults == {"replay": True, "local": True}
    assert settings_path(config).is_file() and load_settings(config) == Settings()  # local mode, saved
    # The app really ran the embedded broker, in this user's data folder.
    assert json.loads((tmp_path / "data" / "broker" / "broker.json").read_text())["pid"] is None


@pytest.fixture
def plant_cluster(tmp_path, topic_prefix):
    """A broker with a second client listener ("PLANT"), and the recorded replay flowing into
    it through the real producer service under `topic_prefix`."""
    from producer.broker import Listener, LocalBroker
    from producer.config import ServiceConfig
    from producer.replay import ReplayAgent
    from producer.service import ProducerService

    broker = LocalBroker(data_dir=tmp_path / "plant-kafka", progress=lambda line: None,
                         listeners=[Listener(name="PLANT", protocol="PLAINTEXT")])
    broker.start(timeout=180)
    agent = ReplayAgent(speed=10, start_time="19:00:00").start()
    service = None
    runner = None
    try:
        address = broker.listener_bootstrap("PLANT")
        assert address != broker.bootstrap
        service = ProducerService(ServiceConfig(agents=[agent.url], bootstrap=address, topic_prefix=topic_prefix))
        runner = threading.Thread(target=service.run, name="plant-producer", daemon=True)
        runner.start()
        yield address
    finally:
        if service is not None:
            service.stop()
            runner.join(60)
        agent.stop()
        broker.stop()


def test_remote_cluster_on_a_second_listener_after_a_wrong_address(qtbot, styled_qapp, tmp_path, plant_cluster,
                                                                     topic_prefix, monkeypatch):
    monkeypatch.setenv("MACHINE_MONITOR_DATA_DIR", str(tmp_path / "data"))
    config = tmp_path / "config"
    refused = f"127.0.0.1:{closed_port()}"
    said = {}

    def drive(wizard: FirstRunWizard) -> None:
        wizard.button(QWizard.WizardButton.NextButton).click()
        page = wizard.kafka_page
        qtbot.keyClicks(page.bootstrap_edit, "kafka.plant")  # typing picks "Your Kafka cluster"
        assert page.remote_radio.isChecked()
        page.test_row.button.click()
        said["no port"] = wait_for_test(qtbot, page.test_row, "'kafka.plant' is not host:port")
        # Finishing with it is refused, with the same message, and the wizard stays.
        wizard.button(QWizard.WizardButton.FinishButton).click()
        assert wizard.isVisible() and "'kafka.plant' is not host:port" in page.test_row.result.text()

        page.bootstrap_edit.clear()
        qtbot.keyClicks(page.bootstrap_edit, refused)
        page.test_row.button.click()
        said["refused"] = wait_for_test(qtbot, page.test_row, f"Could not connect to Kafka at {refused}",
                                        "Connection refused")
        assert page.test_row.ok is False

        page.bootstrap_edit.clear()
        qtbot.keyClicks(page.bootstrap_edit, plant_cluster)
        qtbot.keyClicks(page.prefix_edit, topic_prefix)
        page.test_row.button.click()
        qtbot.waitUntil(lambda: page.test_row.ok is not None, timeout=TEST_TIMEOUT_MS)
        # The producer creates the topics on its first run; Test again until they are there.
        qtbot.waitUntil(lambda: _retest_until(page.test_row, "Machine data are there"), timeout=120_000)
        said["connected"] = page.test_row.result.text()
        wizard.button(QWizard.WizardButton.FinishButton).click()

    run = Run(qtbot, config, drive)
    assert run() == 0
    assert run.observations_seen, f"the window received no observations from {plant_cluster}"
    assert said["refused"].startswith("✘") and said["no port"].startswith("✘")
    assert said["connected"].startswith(f"✔ Connected to {plant_cluster}: 1 broker")
    assert f"({topic_prefix}mtconnect.observations)" in said["connected"]
    saved = load_settings(config)
    assert (saved.mode, saved.bootstrap_servers, saved.topic_prefix) == ("remote", plant_cluster, topic_prefix)
    # Remote mode starts nothing on this PC.
    assert not (tmp_path / "data" / "broker").exists()


def _retest_until(row, words: str) -> bool:
    if row.ok is None:
        return False
    if words in row.result.text():
        return True
    row.button.click()
    return False


def test_skip_gives_the_embedded_defaults_and_the_wizard_does_not_come_back(qtbot, styled_qapp, tmp_path):
    config = tmp_path / "config"
    shown = []

    def skip(wizard: FirstRunWizard) -> None:
        shown.append(wizard)
        wizard.button(FirstRunWizard.SKIP_BUTTON).click()

    when_modal(is_wizard, skip)
    assert ask_on_first_start(Settings(), config, options(config)) == Settings()
    assert len(shown) == 1 and settings_path(config).is_file() and load_settings(config) == Settings()

    # Second start: the settings file is there, no wizard (one would be rejected and counted).
    def unexpected(wizard: FirstRunWizard) -> None:
        shown.append(wizard)
        wizard.reject()

    saved = Settings(mode="remote", bootstrap_servers="kafka.plant.local:9092")
    when_modal(is_wizard, unexpected)
    assert ask_on_first_start(saved, config, options(config)) == saved
    qtbot.wait(200)
    assert len(shown) == 1


def test_agent_test_lists_the_devices_and_names_what_is_wrong(qtbot, styled_qapp):
    from producer.replay import ReplayAgent

    wizard = FirstRunWizard()
    qtbot.addWidget(wizard)
    wizard.show()
    page = wizard.source_page
    agent = ReplayAgent(speed=1).start()
    try:
        qtbot.keyClicks(page.url_edit, agent.url)
        assert page.agent_radio.isChecked()
        page.test_row.button.click()
        names = replay_device_names()
        wait_for_test(qtbot, page.test_row, f"agent with {len(names)} devices: ", *names)
    finally:
        agent.stop()

    page.url_edit.clear()
    qtbot.keyClicks(page.url_edit, f"http://127.0.0.1:{closed_port()}")
    page.test_row.button.click()
    wait_for_test(qtbot, page.test_row, "Connection refused")
    assert page.test_row.ok is False

    page.url_edit.clear()
    qtbot.keyClicks(page.url_edit, "agent.plant.local:5000")
    wizard.button(QWizard.WizardButton.NextButton).click()
    assert wizard.currentPage() is page  # not accepted without http:// or https://
    assert "starting with http:// or https://" in page.test_row.result.text()
