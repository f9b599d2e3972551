"""The settings dialog: Kafka (local or remote, security, Test connection), agents (list,
presets, Test), display and alerts. Changes apply without a restart (the window decides what
needs a new connection).

The form edits a `Settings` value. Values of fields that do not apply to the chosen mode are
kept (disabled, not cleared), so switching Local and back loses nothing. Save validates with
the core rules: every problem is listed, each offending field is marked and the first one gets
the cursor; nothing closes until all is well. The SASL password goes to the OS keyring
(`desktop.core.secrets`); the dialog says whether this PC has a keyring, and only when the
user ticks "store the password in the settings file" does it go into `settings.json`. The
Test buttons run on threads of their own and report within 10 s what they found (brokers,
topics present, authentication result; an agent's devices). In remote mode the Agents tab
also shows and edits the plant's agent list in Kafka (the agents topic that producer processes
started with `--group` follow): Load, Add and Remove run on a thread and write at once.
"""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from producer import wire

from desktop.core.alarms.common import USER_RULES_FILE, CommonRules, common_rules, save_common_rules, with_common_rules
from desktop.core.alarms.rules import PRIORITIES, RulesError, default_rules_path
from desktop.core.checks import CheckResult, plant_agents, test_agent, test_kafka
from desktop.core.secrets import SecretStore
from desktop.core.settings import (
    AGENT_PRESETS,
    MAX_REPLAY_SPEED,
    NOTIFY_LEVELS,
    REPLAY_AGENT,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    Settings,
    SettingsError,
    agent_url_problem,
    format_properties,
    parse_properties,
    save_settings,
)

NOTIFY_LABELS = {"faults": "Faults", "faults_and_warnings": "Faults and warnings", "none": "No pop-ups"}


class _Check(QObject):
    """A Test button's work on a thread; the result comes back as a queued signal."""

    finished = Signal(object)  # CheckResult

    def run(self, work) -> None:
        threading.Thread(target=lambda: self.finished.emit(work()), name="settings-check", daemon=True).start()


# Fields a "Test connection" result depends on.
_CONNECTION_FIELDS = frozenset({"mode", "bootstrap_servers", "topic_prefix", "security_protocol", "sasl_mechanism",
                                "sasl_username", "sasl_password", "ssl_ca_location", "kafka_properties"})


def _on_edit(widget: QWidget, slot) -> None:
    """Connect `slot` to whatever signal says the user changed `widget`'s value."""
    if isinstance(widget, (QLineEdit, QPlainTextEdit)):
        widget.textChanged.connect(slot)
    elif isinstance(widget, QComboBox):
        widget.currentIndexChanged.connect(slot)
    elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        widget.valueChanged.connect(slot)
    elif isinstance(widget, QListWidget):
        widget.model().rowsInserted.connect(slot)
        widget.model().rowsRemoved.connect(slot)


def agent_label(url: str) -> str:
    for label, preset in AGENT_PRESETS:
        if url == preset:
            return f"{label} — {url}" if url != REPLAY_AGENT else label
    return url


class SettingsDialog(QDialog):
    check_finished = Signal(str, object)  # "kafka" or "agent", CheckResult

    def __init__(self, settings: Settings, parent: QWidget | None = None, config_dir: Path | None = None,
                 secrets: SecretStore | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("settingsDialog")
        self.setWindowTitle("Machine Monitor settings")
        self.setMinimumWidth(640)
        self.result_settings: Settings | None = None
        self.original = settings
        self.config_dir = config_dir
        self.secrets = secrets or SecretStore()
        self.last_check: dict[str, CheckResult] = {}

        # -- Kafka tab --
        self.mode_combo = QComboBox(objectName="modeCombo")
        self.mode_combo.addItem("Local — broker, replay agent and producer on this PC", "local")
        self.mode_combo.addItem("Remote — connect to an existing Kafka cluster", "remote")
        self.bootstrap_edit = QLineEdit(settings.bootstrap_servers)
        self.bootstrap_edit.setPlaceholderText("kafka1.plant.local:9092,kafka2.plant.local:9092")
        self.prefix_edit = QLineEdit(settings.topic_prefix)
        self.prefix_edit.setPlaceholderText("(none)")
        self.security_combo = QComboBox()
        self.security_combo.addItems(list(SECURITY_PROTOCOLS))
        self.mechanism_combo = QComboBox()
        self.mechanism_combo.addItems(list(SASL_MECHANISMS))
        self.username_edit = QLineEdit(settings.sasl_username)
        self.password_edit = QLineEdit(settings.sasl_password)
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.password_in_file_check = QCheckBox("Store the password in the settings file (not recommended)")
        self.password_in_file_check.setChecked(settings.store_password_in_file)
        usable, backend = self.secrets.available()
        self.keyring_available = usable
        self.keyring_label = QLabel(objectName="settingsNote")
        self.keyring_label.setWordWrap(True)
        self.keyring_label.setText(
            f"The password is kept in the system keyring ({backend})." if usable else
            f"This PC has no keyring ({backend}). Without one the password is not saved, unless you tick the box "
            "above; it is then readable by anyone who can read your settings file.")
        self.ca_edit = QLineEdit(settings.ssl_ca_location)
        self.ca_edit.setPlaceholderText("system default")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        ca_row = QHBoxLayout()
        ca_row.addWidget(self.ca_edit, 1)
        ca_row.addWidget(browse)
        self.properties_edit = QPlainTextEdit(format_properties(settings.kafka_properties))
        self.properties_edit.setPlaceholderText("one librdkafka property per line, e.g.\nclient.id=shop-floor-pc-3")
        self.properties_edit.setFixedHeight(60)
        self.test_kafka_button = QPushButton("Test connection", objectName="testKafka")
        self.test_kafka_button.clicked.connect(self._on_test_kafka_clicked)
        self.kafka_result = QLabel(objectName="checkResult")
        self.kafka_result.setWordWrap(True)
        self.kafka_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self._set_combo(self.mode_combo, settings.mode, by_data=True)
        self._set_combo(self.security_combo, settings.security_protocol)
        self._set_combo(self.mechanism_combo, settings.sasl_mechanism or SASL_MECHANISMS[0])

        kafka_form = QFormLayout()
        kafka_form.addRow("Mode", self.mode_combo)
        kafka_form.addRow("Bootstrap servers", self.bootstrap_edit)
        kafka_form.addRow("Topic prefix", self.prefix_edit)
        kafka_form.addRow("Security protocol", self.security_combo)
        kafka_form.addRow("SASL mechanism", self.mechanism_combo)
        kafka_form.addRow("SASL username", self.username_edit)
        kafka_form.addRow("SASL password", self.password_edit)
        kafka_form.addRow("", self.password_in_file_check)
        kafka_form.addRow("", self.keyring_label)
        kafka_form.addRow("CA file", ca_row)
        kafka_form.addRow("Extra Kafka properties", self.properties_edit)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_kafka_button, 0, Qt.AlignmentFlag.AlignTop)
        test_row.addWidget(self.kafka_result, 1)
        kafka_page = QWidget()
        kafka_layout = QVBoxLayout(kafka_page)
        kafka_layout.addLayout(kafka_form)
        kafka_layout.addLayout(test_row)
        kafka_layout.addStretch(1)

        # -- Agents tab --
        self.agent_list = QListWidget(objectName="agentList")
        for url in settings.agents:
            self._add_agent_item(url)
        self.agent_edit = QLineEdit(objectName="agentUrl")
        self.agent_edit.setPlaceholderText("http://agent.plant.local:5000")
        add_button = QPushButton("Add")
        add_button.clicked.connect(self._on_add_agent_clicked)
        remove_button = QPushButton("Remove")
        remove_button.clicked.connect(self._on_remove_agent_clicked)
        self.test_agent_button = QPushButton("Test", objectName="testAgent")
        self.test_agent_button.clicked.connect(self._on_test_agent_clicked)
        self.preset_combo = QComboBox(objectName="agentPreset")
        for label, url in AGENT_PRESETS:
            self.preset_combo.addItem(f"Preset: {label}", url)
        preset_button = QPushButton("Add preset")
        preset_button.clicked.connect(self._on_add_preset_clicked)
        self.agent_result = QLabel(objectName="checkResult")
        self.agent_result.setWordWrap(True)
        self.agent_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.speed_spin = QDoubleSpinBox()
        self.speed_spin.setRange(0.1, MAX_REPLAY_SPEED)
        self.speed_spin.setDecimals(1)
        self.speed_spin.setSuffix(" ×")
        self.speed_spin.setValue(settings.replay_speed)
        self.replay_start_edit = QLineEdit(settings.replay_start)
        self.replay_start_edit.setPlaceholderText("continue where the last run stopped (or HH:MM:SS)")
        add_row = QHBoxLayout()
        add_row.addWidget(self.agent_edit, 1)
        add_row.addWidget(add_button)
        preset_row = QHBoxLayout()
        preset_row.addWidget(self.preset_combo, 1)
        preset_row.addWidget(preset_button)
        list_buttons = QHBoxLayout()
        list_buttons.addWidget(self.test_agent_button)
        list_buttons.addWidget(remove_button)
        list_buttons.addStretch(1)
        agents_page = QWidget()
        agents_layout = QVBoxLayout(agents_page)
        agents_layout.addWidget(QLabel("The local producer follows every agent in this list (local mode).",
                                       objectName="settingsNote"))
        agents_layout.addWidget(self.agent_list, 1)
        agents_layout.addLayout(list_buttons)
        agents_layout.addLayout(add_row)
        agents_layout.addLayout(preset_row)
        agents_layout.addWidget(self.agent_result)
        replay_form = QFormLayout()
        replay_form.addRow("Replay speed", self.speed_spin)
        replay_form.addRow("Replay start", self.replay_start_edit)
        agents_layout.addLayout(replay_form)
        # The plant's agent list in Kafka, which producer groups follow (remote mode).
        self.plant_box = QGroupBox("Plant agent list (producer groups)", objectName="plantAgents")
        self.plant_note = QLabel(objectName="settingsNote")
        self.plant_note.setWordWrap(True)
        self.plant_list = QListWidget(objectName="plantAgentList")
        self.plant_load_button = QPushButton("Load", objectName="plantLoad")
        self.plant_load_button.clicked.connect(self._on_plant_load_clicked)
        self.plant_add_button = QPushButton("Add the URL above", objectName="plantAdd")
        self.plant_add_button.clicked.connect(self._on_plant_add_clicked)
        self.plant_remove_button = QPushButton("Remove selected", objectName="plantRemove")
        self.plant_remove_button.clicked.connect(self._on_plant_remove_clicked)
        self.plant_result = QLabel(objectName="checkResult")
        self.plant_result.setWordWrap(True)
        self.plant_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        plant_buttons = QHBoxLayout()
        for button in (self.plant_load_button, self.plant_add_button, self.plant_remove_button):
            plant_buttons.addWidget(button)
        plant_buttons.addStretch(1)
        plant_layout = QVBoxLayout(self.plant_box)
        plant_layout.addWidget(self.plant_note)
        plant_layout.addWidget(self.plant_list, 1)
        plant_layout.addLayout(plant_buttons)
        plant_layout.addWidget(self.plant_result)
        agents_layout.addWidget(self.plant_box, 1)
        self.prefix_edit.textChanged.connect(self._update_plant_note)

        # -- Display and alerts tab --
        self.offline_spin = QSpinBox(objectName="offlineAfter")
        self.offline_spin.setRange(0, 86400)
        self.offline_spin.setSuffix(" s")
        self.offline_spin.setSpecialValueText("never")
        self.offline_spin.setValue(int(settings.offline_after))
        self.shifts_edit = QLineEdit(", ".join(settings.shifts))
        self.shifts_edit.setPlaceholderText("06:00, 14:00, 22:00")
        self.notify_combo = QComboBox()
        for level in NOTIFY_LEVELS:
            self.notify_combo.addItem(NOTIFY_LABELS[level], level)
        self._set_combo(self.notify_combo, settings.notify, by_data=True)
        self.close_to_tray_check = QCheckBox("Closing the window keeps monitoring in the tray")
        self.close_to_tray_check.setChecked(settings.close_to_tray)
        self.start_minimised_check = QCheckBox("Start minimised (in the tray)")
        self.start_minimised_check.setChecked(settings.start_minimised)
        self.start_at_login_check = QCheckBox("Start when I log in")
        self.start_at_login_check.setChecked(settings.start_at_login)
        display_form = QFormLayout()
        display_form.addRow("Offline after no data for", self.offline_spin)
        display_form.addRow("Shift start times", self.shifts_edit)
        display_form.addRow("Pop-ups for", self.notify_combo)
        display_form.addRow("", self.close_to_tray_check)
        display_form.addRow("", self.start_minimised_check)
        display_form.addRow("", self.start_at_login_check)
        display_page = QWidget()
        display_layout = QVBoxLayout(display_page)
        display_layout.addLayout(display_form)
        display_layout.addStretch(1)

        alarms_page = self._build_alarm_rules_page()

        self.tabs = QTabWidget(objectName="settingsTabs")
        self.tabs.addTab(kafka_page, "Kafka")
        self.tabs.addTab(agents_page, "Agents")
        self.tabs.addTab(display_page, "Display && alerts")
        self.tabs.addTab(alarms_page, "Alarm rules")

        self.error_label = QLabel(objectName="settingsError")
        self.error_label.setWordWrap(True)
        self.error_label.setVisible(False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._on_save_clicked)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons

        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

        self._field_widgets = {
            "mode": (self.mode_combo, 0),
            "bootstrap_servers": (self.bootstrap_edit, 0),
            "topic_prefix": (self.prefix_edit, 0),
            "security_protocol": (self.security_combo, 0),
            "sasl_mechanism": (self.mechanism_combo, 0),
            "sasl_username": (self.username_edit, 0),
            "sasl_password": (self.password_edit, 0),
            "ssl_ca_location": (self.ca_edit, 0),
            "kafka_properties": (self.properties_edit, 0),
            "agents": (self.agent_list, 1),
            "replay_speed": (self.speed_spin, 1),
            "replay_start": (self.replay_start_edit, 1),
            "offline_after": (self.offline_spin, 2),
            "shifts": (self.shifts_edit, 2),
            "notify": (self.notify_combo, 2),
        }
        self._checks: dict[str, _Check] = {}
        self._plant_busy = False  # a Load, Add or Remove under way
        self.mode_combo.currentIndexChanged.connect(self._update_enabled)
        self.security_combo.currentIndexChanged.connect(self._update_enabled)
        self._update_enabled()
        # Once problems are shown, every edit checks the form again, so a message goes as soon
        # as its field is fixed; a test's result goes once what it tested was changed.
        for name, (widget, _) in self._field_widgets.items():
            _on_edit(widget, lambda *args, n=name: self._on_field_edited(n))
        self.password_in_file_check.toggled.connect(lambda *args: self._on_field_edited("sasl_password"))
        self.agent_edit.textChanged.connect(lambda *args: self._clear_result(self.agent_result))

    # -- the common alarm rules ------------------------------------------------------------

    def _build_alarm_rules_page(self) -> QWidget:
        """The common rules of the user's rules file (else the default rules), edited in place."""
        self.result_rules: CommonRules | None = None
        self.rules_path = self.config_dir / USER_RULES_FILE if self.config_dir is not None else None
        source = self.rules_path if self.rules_path is not None and self.rules_path.exists() else default_rules_path()
        self.rules_source = source
        self.rules_problem = ""
        try:
            self.rules_text = source.read_text(encoding="utf-8")
            self.rules_original: CommonRules | None = common_rules(self.rules_text, str(source))
        except (OSError, UnicodeDecodeError, RulesError) as exc:
            self.rules_original, self.rules_text = None, ""
            self.rules_problem = str(exc)
        common = self.rules_original or common_rules(default_rules_path().read_text(encoding="utf-8"))
        self.conditions_check = QCheckBox("MTConnect Conditions raise alarms", objectName="conditionsEnabled")
        self.conditions_check.setChecked(common.conditions_enabled)
        self.fault_priority_combo = QComboBox(objectName="faultPriority")
        self.warning_priority_combo = QComboBox(objectName="warningPriority")
        for combo in (self.fault_priority_combo, self.warning_priority_combo):
            for priority in PRIORITIES:
                combo.addItem(priority.capitalize(), priority)
        self._set_combo(self.fault_priority_combo, common.fault_priority, by_data=True)
        if common.warning_priority is None:
            self.warning_priority_combo.addItem("No alarm (set in the rules file)", None)
            self.warning_priority_combo.setCurrentIndex(self.warning_priority_combo.count() - 1)
            self.warning_priority_combo.setEnabled(False)
        else:
            self._set_combo(self.warning_priority_combo, common.warning_priority, by_data=True)
        self.offline_rule_check = QCheckBox("Alarm when a machine's agent is unreachable", objectName="offlineAlarm")
        self.offline_rule_check.setChecked(common.offline_enabled)
        self.offline_rule_spin = QSpinBox(objectName="offlineAlarmAfter")
        self.offline_rule_spin.setRange(1, 86400)
        self.offline_rule_spin.setSuffix(" s")
        self.offline_rule_spin.setValue(max(1, round(common.offline_after)))
        self.spindle_check = QCheckBox("Alarm on high spindle load", objectName="spindleAlarm")
        self.spindle_check.setChecked(common.spindle_load_enabled)

        def decimal_box(name: str, top: float, suffix: str, value: float) -> QDoubleSpinBox:
            box = QDoubleSpinBox(objectName=name)
            box.setRange(0, top)
            box.setDecimals(1)
            box.setSuffix(suffix)
            box.setValue(value)
            return box

        self.spindle_above_spin = decimal_box("spindleAbove", 1000, " %", common.spindle_load_above)
        self.spindle_for_spin = decimal_box("spindleFor", 3600, " s", common.spindle_load_for)
        form = QFormLayout()
        for label, widget in (("", self.conditions_check), ("FAULT priority", self.fault_priority_combo),
                              ("WARNING priority", self.warning_priority_combo), ("", self.offline_rule_check),
                              ("Offline after", self.offline_rule_spin), ("", self.spindle_check),
                              ("Spindle load above", self.spindle_above_spin), ("for at least", self.spindle_for_spin)):
            form.addRow(label, widget)
        where = str(self.rules_path) if self.rules_path is not None else "the rules file"
        self.rules_note = QLabel(objectName="settingsNote")
        self.rules_note.setWordWrap(True)
        self.rules_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        if self.rules_problem:
            self.rules_note.setText(f"The alarm rules file cannot be edited here until it is fixed (it is left as it "
                                    f"is):\n{self.rules_problem}")
            self.rules_note.setProperty("ok", False)
        else:
            self.rules_note.setText(f"Saved into {where}, only these values; the rest of the file (every other rule, "
                                    "comments) stays as it is. Changed rules apply when you save: the recent history "
                                    "is read again with them; open alarms stay, those of a rule switched off are "
                                    "out of service. The full rule format: docs/alarms.md.")
        editable = self.rules_original is not None and self.rules_path is not None
        for widget in (self.conditions_check, self.fault_priority_combo, self.offline_rule_check, self.offline_rule_spin,
                       self.spindle_check, self.spindle_above_spin, self.spindle_for_spin):
            widget.setEnabled(editable)
        if not editable:
            self.warning_priority_combo.setEnabled(False)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addLayout(form)
        layout.addWidget(self.rules_note)
        layout.addStretch(1)
        return page

    def rules_from_form(self) -> CommonRules | None:
        """The common rules as the form has them; None when they cannot be edited here."""
        if self.rules_original is None or self.rules_path is None:
            return None
        return CommonRules(
            conditions_enabled=self.conditions_check.isChecked(),
            fault_priority=self.fault_priority_combo.currentData(),
            warning_priority=self.warning_priority_combo.currentData(),
            offline_enabled=self.offline_rule_check.isChecked(),
            offline_after=float(self.offline_rule_spin.value()),
            spindle_load_enabled=self.spindle_check.isChecked(),
            spindle_load_above=float(self.spindle_above_spin.value()),
            spindle_load_for=float(self.spindle_for_spin.value()))

    @staticmethod
    def _set_combo(combo: QComboBox, value: str, by_data: bool = False) -> None:
        index = combo.findData(value) if by_data else combo.findText(value)
        if index >= 0:
            combo.setCurrentIndex(index)

    def _add_agent_item(self, url: str) -> None:
        self.agent_list.addItem(agent_label(url))
        self.agent_list.item(self.agent_list.count() - 1).setData(Qt.ItemDataRole.UserRole, url)

    def agents(self) -> tuple[str, ...]:
        return tuple(self.agent_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.agent_list.count()))

    def _update_enabled(self) -> None:
        remote = self.mode_combo.currentData() == "remote"
        sasl = self.security_combo.currentText().startswith("SASL")
        tls = self.security_combo.currentText() in ("SSL", "SASL_SSL")
        self.bootstrap_edit.setEnabled(remote)
        self.security_combo.setEnabled(remote)
        for widget in (self.mechanism_combo, self.username_edit, self.password_edit, self.password_in_file_check):
            widget.setEnabled(remote and sasl)
        self.ca_edit.setEnabled(remote and tls)
        self.speed_spin.setEnabled(not remote)
        self.replay_start_edit.setEnabled(not remote)
        self._set_plant_enabled(remote)
        self._update_plant_note()
        self.test_kafka_button.setEnabled(remote)
        self.test_kafka_button.setToolTip("" if remote else "Local mode: the app starts and checks its own broker")

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CA certificate", self.ca_edit.text(), "PEM files (*.pem *.crt);;All files (*)")
        if path:
            self.ca_edit.setText(path)

    # -- agents ----------------------------------------------------------------------------

    def _on_add_agent_clicked(self) -> None:
        url = self.agent_edit.text().strip().rstrip("/")
        if not url:
            self._show_result(self.agent_result, "Type the agent's URL in the box, then Add.")
            return
        problem = agent_url_problem(url)
        if problem is not None:
            self._show_result(self.agent_result, f"✘ {url[:80]!r} {problem}", ok=False)
            return
        if url in self.agents():
            self._show_result(self.agent_result, f"{agent_label(url)} is in the list already.")
            return
        self._add_agent_item(url)
        self.agent_edit.clear()

    def _on_add_preset_clicked(self) -> None:
        url = self.preset_combo.currentData()
        if url not in self.agents():
            self._add_agent_item(url)

    def _on_remove_agent_clicked(self) -> None:
        row = self.agent_list.currentRow()
        if row >= 0:
            self.agent_list.takeItem(row)

    def _on_test_agent_clicked(self) -> None:
        item = self.agent_list.currentItem()
        url = item.data(Qt.ItemDataRole.UserRole) if item is not None else self.agent_edit.text().strip()
        if not url:
            self.agent_result.setText("Choose an agent in the list (or type a URL) to test it.")
            return
        self.agent_result.setText(f"Testing {agent_label(url)}…")
        self.test_agent_button.setEnabled(False)
        self._run_check("agent", lambda: test_agent(url))

    # -- the plant's agent list ------------------------------------------------------------

    def _set_plant_enabled(self, enabled: bool) -> None:
        for button in (self.plant_load_button, self.plant_add_button, self.plant_remove_button):
            button.setEnabled(enabled and not self._plant_busy)
        self.plant_list.setEnabled(enabled)

    def _update_plant_note(self) -> None:
        if self.mode_combo.currentData() != "remote":
            self.plant_note.setText("Remote mode only: the agents that producer processes started with --group "
                                    "follow, kept on the plant's cluster.")
            return
        topic = wire.topic_name(wire.AGENTS, self.prefix_edit.text().strip())
        self.plant_note.setText(f"Producer processes started with --group follow the agents in {topic} on the "
                                "cluster above. Add and Remove write to it at once (no Save needed); the producers "
                                "follow the change within seconds.")

    def _connection_settings(self) -> Settings | None:
        """The form's connection settings, or None (the problems shown) when they are not usable."""
        try:
            settings = self.settings_from_form(validate=False)
            problems = [p for p in settings.problems() if p[0] in ("bootstrap_servers", "security_protocol", "sasl_mechanism",
                                                                   "sasl_username", "sasl_password", "ssl_ca_location")]
            if problems:
                raise SettingsError(problems)
        except SettingsError as exc:
            self.show_problems(exc.problems)
            return None
        return settings

    def _run_plant(self, text: str, add: str | None = None, remove: str | None = None) -> None:
        settings = self._connection_settings()
        if settings is None:
            return
        self.plant_result.setText(text)
        self._plant_busy = True
        self._set_plant_enabled(True)
        self._run_check("plant", lambda: plant_agents(settings, add=add, remove=remove))

    def _on_plant_load_clicked(self) -> None:
        self._run_plant(f"Reading the plant's agent list from {self.bootstrap_edit.text().strip()}…")

    def _on_plant_add_clicked(self) -> None:
        url = self.agent_edit.text().strip().rstrip("/")
        if not url:
            self.plant_result.setText("Type the agent's URL in the box above, then Add.")
            return
        if url in self.plant_agents():
            self.plant_result.setText(f"{url} is in the plant's list already.")
            return
        self._run_plant(f"Adding {url}…", add=url)

    def _on_plant_remove_clicked(self) -> None:
        item = self.plant_list.currentItem()
        if item is None:
            self.plant_result.setText("Choose an agent in the plant's list to remove it.")
            return
        self._run_plant(f"Removing {item.text()}…", remove=item.text())

    def plant_agents(self) -> tuple[str, ...]:
        return tuple(self.plant_list.item(i).text() for i in range(self.plant_list.count()))

    # -- Kafka test ------------------------------------------------------------------------

    def _on_test_kafka_clicked(self) -> None:
        settings = self._connection_settings()
        if settings is None:
            return
        self.kafka_result.setText(f"Connecting to {settings.bootstrap_servers}…")
        self.test_kafka_button.setEnabled(False)
        self._run_check("kafka", lambda: test_kafka(settings))

    def _run_check(self, kind: str, work) -> None:
        check = self._checks[kind] = _Check(self)
        check.finished.connect(lambda result, k=kind: self._on_check_finished(k, result))
        check.run(work)

    def _on_field_edited(self, field: str) -> None:
        if field in _CONNECTION_FIELDS:
            self._clear_result(self.kafka_result)
        if field == "agents":
            self._clear_result(self.agent_result)
        if not self.error_label.isVisible():
            return
        try:
            self.settings_from_form()
        except SettingsError as exc:
            self.show_problems(exc.problems, focus=False)
        else:
            self.show_problems([], focus=False)

    @staticmethod
    def _show_result(label: QLabel, text: str, ok: bool | None = None) -> None:
        label.setText(text)
        label.setProperty("ok", ok)
        label.style().unpolish(label)
        label.style().polish(label)

    def _clear_result(self, label: QLabel) -> None:
        if label.text() and not label.text().endswith("…"):  # a test under way reports when done
            self._show_result(label, "")

    def _on_check_finished(self, kind: str, result: CheckResult) -> None:
        self.last_check[kind] = result
        label = {"kafka": self.kafka_result, "plant": self.plant_result}.get(kind, self.agent_result)
        self._show_result(label, f"{'✔' if result.ok else '✘'} {result.text()}", ok=result.ok)
        if kind == "kafka":
            self._update_enabled()
        elif kind == "plant":
            self._plant_busy = False
            if result.ok:
                self.plant_list.clear()
                self.plant_list.addItems(result.found.get("agents", []))
            self._set_plant_enabled(self.mode_combo.currentData() == "remote")
        else:
            self.test_agent_button.setEnabled(True)
        self.check_finished.emit(kind, result)

    # -- result ----------------------------------------------------------------------------

    def settings_from_form(self, validate: bool = True) -> Settings:
        """The form as Settings (every field kept, whatever the mode); raises SettingsError."""
        shifts = tuple(part.strip() for part in self.shifts_edit.text().split(",") if part.strip())
        settings = Settings(
            mode=self.mode_combo.currentData(),
            bootstrap_servers=self.bootstrap_edit.text().strip(),
            topic_prefix=self.prefix_edit.text().strip(),
            security_protocol=self.security_combo.currentText(),
            sasl_mechanism=self.mechanism_combo.currentText() if self.security_combo.currentText().startswith("SASL") else "",
            sasl_username=self.username_edit.text().strip(),
            sasl_password=self.password_edit.text(),
            ssl_ca_location=self.ca_edit.text().strip(),
            replay_speed=float(self.speed_spin.value()),
            kafka_properties=parse_properties(self.properties_edit.toPlainText()),
            agents=self.agents(),
            replay_start=self.replay_start_edit.text().strip(),
            offline_after=float(self.offline_spin.value()),
            shifts=shifts,
            notify=self.notify_combo.currentData(),
            close_to_tray=self.close_to_tray_check.isChecked(),
            start_minimised=self.start_minimised_check.isChecked(),
            start_at_login=self.start_at_login_check.isChecked(),
            store_password_in_file=self.password_in_file_check.isChecked(),
        )
        if validate:
            problems = settings.problems()
            if (settings.sasl_password and not settings.is_local and settings.security_protocol.startswith("SASL")
                    and not settings.store_password_in_file and not self.keyring_available):
                problems.append(("sasl_password", "SASL password: this PC has no keyring to keep it in; tick \"store the "
                                 "password in the settings file\" to save it there, or leave it empty"))
            if problems:
                raise SettingsError(problems)
        return settings

    def _on_save_clicked(self) -> None:
        try:
            self.result_settings = self.settings_from_form()
        except SettingsError as exc:
            self.show_problems(exc.problems)
            return
        rules = self.rules_from_form()
        self.result_rules = None
        if rules is not None and rules != self.rules_original:
            try:
                with_common_rules(self.rules_text, rules, str(self.rules_path))  # checked before anything is written
            except RulesError as exc:
                self.show_error(str(exc))
                self.tabs.setCurrentIndex(3)
                return
            self.result_rules = rules
        self.accept()

    def save(self, directory: Path) -> Path:
        """Save what was accepted (password to the keyring unless the user chose the file)."""
        assert self.result_settings is not None
        path = save_settings(self.result_settings, directory, self.secrets)
        if self.result_rules is not None:
            save_common_rules(directory / USER_RULES_FILE, self.result_rules, template=default_rules_path())
        return path

    def show_problems(self, problems: list[tuple[str, str]], focus: bool = True) -> None:
        """Mark the fields named in `problems` and list the messages (none: clear them);
        `focus` moves to the first of them (not while the user is typing)."""
        for widget, _ in self._field_widgets.values():
            widget.setProperty("invalid", False)
        for field, _ in problems:
            widget, _ = self._field_widgets.get(field, (None, 0))
            if widget is not None:
                widget.setProperty("invalid", True)
        for widget, _ in self._field_widgets.values():
            widget.style().unpolish(widget)
            widget.style().polish(widget)
        if not problems:
            self.error_label.clear()
            self.error_label.setVisible(False)
            return
        self.show_error("\n".join(message for _, message in problems), problems[0][0] if focus else "")

    def show_error(self, message: str, field: str = "") -> None:
        self.error_label.setText(message)
        self.error_label.setVisible(True)
        widget, tab = self._field_widgets.get(field, (None, 0))
        if widget is not None:
            self.tabs.setCurrentIndex(tab)
            widget.setFocus(Qt.FocusReason.OtherFocusReason)
