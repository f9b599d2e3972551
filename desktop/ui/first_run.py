"""The first-run wizard: where the machine data come from, and where Kafka is.

On the first start (no settings file yet, nothing chosen on the command line) `app.run`
calls `ask_on_first_start`, which shows `FirstRunWizard` and saves what it gives with
`save_settings`, so the app then starts showing live data and the wizard does not come back:

1. *Machines*: the recorded NIST replay (the default: eight real machines played back on
   this PC, no network needed), the live NIST SMS test bed, or the user's own MTConnect
   agent. **Test** asks the agent for its devices (`/probe`) and lists them.
2. *Kafka*: the embedded local broker (the default), or the plant's cluster by its
   bootstrap servers and topic prefix. **Test** asks the cluster for its metadata within
   10 s and says what it found (brokers, whether Machine Monitor's topics are there) or why
   it could not connect (an address that is not host:port, a refused connection, a name that
   does not resolve).

**Skip** saves the embedded defaults. Closing the wizard starts the defaults this time
without saving anything, so it is offered again next time. Live agents reach the app through
Kafka: the producer service runs next to them (`MachineMonitor producer run --agent URL
--bootstrap HOST:PORT`), and the app reads that cluster; the embedded broker is fed by the
recorded replay, and the Kafka page says so when a live source was chosen.

Both tests run on worker threads and report back through queued signals; the GUI thread
never waits for the network.
"""
from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QButtonGroup,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from desktop.core.settings import Settings, SettingsError, save_settings, settings_path

NIST_LIVE_URL = "https://smstestbed.nist.gov/vds"
REPLAY, NIST_LIVE, OWN_AGENT = "replay", "nist-live", "agent"
LOCAL, REMOTE = "local", "remote"
AGENT_TEST_TIMEOUT = 10.0
KAFKA_TEST_TIMEOUT = 8.0  # within the 10 s a user waits for a Test button


# --------------------------------------------------------------------------- the two tests


def check_agent(url: str, timeout: float = AGENT_TEST_TIMEOUT) -> tuple[bool, str]:
    """Ask an MTConnect agent for its devices: (reachable, what to tell the user)."""
    from producer.mtconnect.client import AgentClient, AgentUnreachable
    from producer.mtconnect.documents import AgentError, DocumentError

    url = url.strip()
    if not url.startswith(("http://", "https://")):
        return False, f"{url or 'The agent URL'}: the URL must start with http:// or https://"
    try:
        with AgentClient(url, timeout=(timeout, timeout)) as client:
            document = client.probe()
    except (AgentUnreachable, DocumentError, AgentError) as exc:
        return False, str(exc)
    names = [str(device["device_name"]) for device in document.devices]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return True, (f"MTConnect {document.mtconnect_version} agent with {len(names)} "
                  f"device{'s' if len(names) != 1 else ''}: {shown}")


def _quiet_kafka_logger() -> logging.Logger:
    logger = logging.getLogger("desktop.ui.first_run.librdkafka")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def _connection_problem(errors: list) -> str | None:
    """librdkafka's own words for why no broker could be reached (the first that says it)."""
    for error in errors:
        text = error.str()
        # "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms in state CONNECT)"
        text = text.split(": ", 1)[1] if "/bootstrap: " in text or "/1: " in text else text
        if text and "brokers are down" not in text:
            return text.split(" (after ")[0]
    return None


def check_kafka(settings: Settings, timeout: float = KAFKA_TEST_TIMEOUT) -> tuple[bool, str]:
    """Ask a Kafka cluster for its metadata: (reachable, what to tell the user)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    problems = [message for field, message in settings.problems() if field == "bootstrap_servers"]
    if problems:
        return False, "; ".join(problems)
    errors: list = []
    config = dict(settings.kafka_config())
    config.update({"error_cb": errors.append, "logger": _quiet_kafka_logger(), "log_level": 0})
    bootstrap = config["bootstrap.servers"]
    try:
        admin = AdminClient(config)
    except KafkaException as exc:
        return False, f"Kafka settings not accepted: {exc.args[0].str() if exc.args else exc}"
    deadline = time.monotonic() + timeout
    metadata = None
    while metadata is None:
        try:
            metadata = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException:
            admin.poll(0)
            down = any(error.code() == KafkaError._ALL_BROKERS_DOWN for error in errors)
            if down or time.monotonic() >= deadline:
                why = _connection_problem(errors) or f"no answer within {timeout:g} s"
                return False, f"Could not connect to Kafka at {bootstrap}: {why}"
    topics = sorted(name for name in metadata.topics if not name.startswith("__"))
    from producer import wire

    ours = [name for name in topics if name == settings.topic_prefix + wire.OBSERVATIONS]
    brokers = len(metadata.brokers)
    found = (f"Connected to {bootstrap}: {brokers} broker{'s' if brokers != 1 else ''}, "
             f"{len(topics)} topic{'s' if len(topics) != 1 else ''}. ")
    if ours:
        return True, found + f"Machine data are there ({ours[0]})."
    prefix = f" with the prefix {settings.topic_prefix!r}" if settings.topic_prefix else ""
    return True, found + f"No machine data{prefix} yet: the producer service creates the topics when it first runs."


# --------------------------------------------------------------------------- the wizard


class _Background(QObject):
    """Runs one check on a worker thread and reports its answer on the GUI thread."""

    finished = Signal(bool, str)

    def run(self, check: Callable[[], tuple[bool, str]]) -> None:
        def work() -> None:
            try:
                ok, text = check()
            except Exception as exc:  # noqa: BLE001 - whatever went wrong is the test's answer
                ok, text = False, f"the test failed: {exc}"
            try:
                self.finished.emit(ok, text)
            except RuntimeError:
                pass  # the wizard was closed meanwhile

        threading.Thread(target=work, name="first-run-test", daemon=True).start()


class _TestRow(QWidget):
    """A Test button and the line that says what the test found."""

    def __init__(self, object_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.button = QPushButton("Test")
        self.button.setObjectName(object_name + "Button")
        self.result = QLabel("")
        self.result.setObjectName(object_name + "Result")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.result, 1)
        self.background = _Background(self)
        self.background.finished.connect(self._on_finished)
        self.ok: bool | None = None

    def start(self, check: Callable[[], tuple[bool, str]]) -> None:
        self.button.setEnabled(False)
        self.ok = None
        self.result.setStyleSheet("")
        self.result.setText("Testing…")
        self.background.run(check)

    def clear(self) -> None:
        self.ok = None
        self.result.setText("")

    @Slot(bool, str)
    def _on_finished(self, ok: bool, text: str) -> None:
        self.button.setEnabled(True)
        self.ok = ok
        self.result.setStyleSheet(f"color: {'#51cf66' if ok else '#ff6b6b'};")
        self.result.setText(("✔ " if ok else "✘ ") + text)


def _detail(text: str) -> QLabel:
    """The line under a choice that says what it means."""
    label = QLabel(text)
    label.setObjectName("choiceDetail")
    label.setWordWrap(True)
    label.setContentsMargins(26, 0, 0, 6)
    return label


def _indented(widget: QWidget) -> QWidget:
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(26, 0, 0, 0)
    layout.addWidget(widget)
    return holder


# The app's stylesheet colours windows, not every label in them: the wizard says what its
# text looks like on the dark background.
WIZARD_STYLE = """
QWizard QLabel, QWizard QRadioButton { color: #d0d7de; }
QWizard QLabel#choiceDetail { color: #8b949e; }
QWizard QRadioButton { font-weight: 600; }
QWizard QRadioButton::indicator { width: 12px; height: 12px; border-radius: 8px;
                                  border: 2px solid #8b949e; background: #0f1318; }
QWizard QRadioButton::indicator:checked { background: #4dabf7; border-color: #d0d7de; }
"""


class SourcePage(QWizardPage):
    def __init__(self) -> None:
        super().__init__()
        self.setTitle("Which machines do you want to see?")
        self.setSubTitle("You can change this later in Settings.")
        self.replay_radio = QRadioButton("Recorded NIST replay")
        self.live_radio = QRadioButton("Live NIST SMS test bed")
        self.agent_radio = QRadioButton("Your MTConnect agent")
        for radio, name in ((self.replay_radio, "replay"), (self.live_radio, "nistLive"), (self.agent_radio, "ownAgent")):
            radio.setObjectName(name + "Radio")
        self.replay_radio.setChecked(True)
        self.group = QButtonGroup(self)
        for radio in (self.replay_radio, self.live_radio, self.agent_radio):
            self.group.addButton(radio)
        self.url_edit = QLineEdit()
        self.url_edit.setObjectName("agentUrlEdit")
        self.url_edit.setPlaceholderText("http://agent.plant.local:5000")
        self.test_row = _TestRow("agentTest")

        layout = QVBoxLayout(self)
        layout.addWidget(self.replay_radio)
        layout.addWidget(_detail("Eight real machines recorded at the NIST Smart Manufacturing Systems test bed, "
                                 "played back on this PC. Works without a network."))
        layout.addWidget(self.live_radio)
        layout.addWidget(_detail(f"The test bed's machines as they run now: {NIST_LIVE_URL} (needs internet)."))
        layout.addWidget(self.agent_radio)
        layout.addWidget(_indented(self.url_edit))
        layout.addSpacing(8)
        layout.addWidget(self.test_row)
        layout.addStretch(1)

        self.group.buttonToggled.connect(self._on_choice_changed)
        self.url_edit.textEdited.connect(self._on_url_edited)
        self.test_row.button.clicked.connect(self._on_test_clicked)
        self._on_choice_changed()

    @property
    def source(self) -> str:
        if self.live_radio.isChecked():
            return NIST_LIVE
        if self.agent_radio.isChecked():
            return OWN_AGENT
        return REPLAY

    @property
    def agent_url(self) -> str:
        return {NIST_LIVE: NIST_LIVE_URL, OWN_AGENT: self.url_edit.text().strip()}.get(self.source, "")

    def _on_choice_changed(self, *args: object) -> None:
        # The address fields stay editable: typing into one chooses it.
        self.test_row.setEnabled(self.source != REPLAY)
        self.test_row.clear()

    def _on_url_edited(self, text: str) -> None:
        if text:
            self.agent_radio.setChecked(True)
        self.test_row.clear()

    def _on_test_clicked(self) -> None:
        url = self.agent_url
        self.test_row.start(lambda: check_agent(url))

    def validatePage(self) -> bool:  # noqa: N802 - Qt's name
        if self.source == OWN_AGENT and not self.agent_url.startswith(("http://", "https://")):
            self.test_row.ok = False
            self.test_row.result.setStyleSheet("color: #ff6b6b;")
            self.test_row.result.setText("✘ Enter the agent's URL, starting with http:// or https://")
            self.url_edit.setFocus()
            return False
        return True


class KafkaPage(QWizardPage):
    def __init__(self, source_page: SourcePage) -> None:
        super().__init__()
        self.source_page = source_page
        self.setTitle("Where is Kafka?")
        self.setSubTitle("Security settings (TLS, SASL) for a plant cluster are in Settings.")
        self.local_radio = QRadioButton("Embedded local broker")
        self.local_radio.setObjectName("localBrokerRadio")
        self.remote_radio = QRadioButton("Your Kafka cluster")
        self.remote_radio.setObjectName("remoteBrokerRadio")
        self.local_radio.setChecked(True)
        self.group = QButtonGroup(self)
        self.group.addButton(self.local_radio)
        self.group.addButton(self.remote_radio)
        self.bootstrap_edit = QLineEdit()
        self.bootstrap_edit.setObjectName("bootstrapEdit")
        self.bootstrap_edit.setPlaceholderText("kafka1.plant.local:9092,kafka2.plant.local:9092")
        self.prefix_edit = QLineEdit()
        self.prefix_edit.setObjectName("topicPrefixEdit")
        self.prefix_edit.setPlaceholderText("(none)")
        self.test_row = _TestRow("kafkaTest")
        self.note = QLabel("")
        self.note.setObjectName("liveSourceNote")
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        form = QFormLayout()
        form.addRow("Bootstrap servers", self.bootstrap_edit)
        form.addRow("Topic prefix", self.prefix_edit)
        form.setContentsMargins(26, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.addWidget(self.local_radio)
        layout.addWidget(_detail("Runs on this PC with the app and stops with it. Nothing to set up."))
        layout.addWidget(self.remote_radio)
        layout.addWidget(_detail("The plant's cluster, where the producer service next to the agents writes."))
        layout.addLayout(form)
        layout.addSpacing(6)
        layout.addWidget(self.test_row)
        layout.addSpacing(6)
        layout.addWidget(self.note)
        layout.addStretch(1)

        self.group.buttonToggled.connect(self._on_choice_changed)
        self.bootstrap_edit.textEdited.connect(self._on_address_edited)
        self.prefix_edit.textEdited.connect(self._on_address_edited)
        self.test_row.button.clicked.connect(self._on_test_clicked)
        self._on_choice_changed()

    @property
    def remote(self) -> bool:
        return self.remote_radio.isChecked()

    def initializePage(self) -> None:  # noqa: N802 - Qt's name
        self._update_note()

    def settings(self) -> Settings:
        if not self.remote:
            return Settings()
        return Settings(mode="remote", bootstrap_servers=self.bootstrap_edit.text().strip(),
                        topic_prefix=self.prefix_edit.text().strip())

    def _update_note(self) -> None:
        url = self.source_page.agent_url
        if not url:
            self.note.setText("")
        elif self.remote:
            self.note.setText(f"The producer service follows {url} and writes to this cluster. On a machine that "
                              f"reaches both, run:\nMachineMonitor producer run --agent {url} --bootstrap "
                              f"{self.bootstrap_edit.text().strip() or 'HOST:PORT'}"
                              + (f" --topic-prefix {self.prefix_edit.text().strip()}" if self.prefix_edit.text().strip() else ""))
        else:
            self.note.setText(f"The embedded broker shows the recorded NIST replay. To see {url}, choose your "
                              "Kafka cluster above; the producer service next to the agent writes to it.")

    def _on_choice_changed(self, *args: object) -> None:
        self.test_row.setEnabled(self.remote)
        self.test_row.clear()
        self._update_note()

    def _on_address_edited(self, text: str) -> None:
        if text:
            self.remote_radio.setChecked(True)
        self.test_row.clear()
        self._update_note()

    def _on_test_clicked(self) -> None:
        settings = self.settings()
        self.test_row.start(lambda: check_kafka(settings))

    def validatePage(self) -> bool:  # noqa: N802 - Qt's name
        try:
            self.settings().validate()
        except SettingsError as exc:
            self.test_row.ok = False
            self.test_row.result.setStyleSheet("color: #ff6b6b;")
            self.test_row.result.setText(f"✘ {exc}")
            self.bootstrap_edit.setFocus()
            return False
        return True


class FirstRunWizard(QWizard):
    """The two pages; `result_settings` is what to save once the wizard was finished or skipped."""

    SKIP_BUTTON = QWizard.WizardButton.CustomButton1

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("firstRunWizard")
        self.setWindowTitle("Welcome to Machine Monitor")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setStyleSheet(WIZARD_STYLE)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setOption(QWizard.WizardOption.HaveCustomButton1, True)
        self.setButtonText(self.SKIP_BUTTON, "Skip")
        self.button(self.SKIP_BUTTON).setObjectName("skipButton")
        self.button(self.SKIP_BUTTON).setToolTip("Start with the recorded NIST replay on the embedded local broker")
        self.setMinimumSize(720, 460)
        self.source_page = SourcePage()
        self.kafka_page = KafkaPage(self.source_page)
        self.addPage(self.source_page)
        self.addPage(self.kafka_page)
        self.result_settings: Settings | None = None
        self.skipped = False
        self.customButtonClicked.connect(self._on_custom_button_clicked)

    def _on_custom_button_clicked(self, which: int) -> None:
        if which == self.SKIP_BUTTON.value or which == self.SKIP_BUTTON:
            self.skipped = True
            self.result_settings = Settings()
            super().accept()

    def accept(self) -> None:
        self.result_settings = self.kafka_page.settings()
        super().accept()


def should_ask(config_dir: Path, options: argparse.Namespace) -> bool:
    """The first start of a person at the screen: no settings file yet, nothing chosen on
    the command line, and not one of the unattended modes."""
    if getattr(options, "screenshot", None) or getattr(options, "self_test", False) or getattr(options, "bootstrap", None):
        return False
    return not os.path.lexists(settings_path(config_dir))


def ask_on_first_start(settings: Settings, config_dir: Path, options: argparse.Namespace) -> Settings:
    """The settings to start with: `settings` unchanged unless this is the first start, else
    what the wizard gave (saved, with the command line applied on top)."""
    if not should_ask(config_dir, options):
        return settings
    wizard = FirstRunWizard()
    if wizard.exec() != QWizard.DialogCode.Accepted or wizard.result_settings is None:
        return settings  # closed: the defaults this time, and the wizard again next time
    chosen = wizard.result_settings
    try:
        save_settings(chosen, config_dir)
    except OSError as exc:
        QMessageBox.warning(None, "Settings not saved",
                            f"Could not save the settings in {config_dir}: {exc}\nThey apply until the app is closed.")
    from desktop.ui.app import apply_command_line

    return apply_command_line(chosen, options)
