"""The settings dialog: local or remote Kafka, topic prefix, security, replay speed.

The form edits a `Settings` value; Save validates it with the core rules and, when something
is wrong, shows the message (which names the field) and puts the cursor in that field
instead of closing. Fields that do not apply to the chosen mode or security protocol are
disabled, not hidden, so the form does not jump around. The caller saves the result.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.core.settings import (
    MAX_REPLAY_SPEED,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    Settings,
    SettingsError,
    format_properties,
    parse_properties,
)


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Machine Monitor settings")
        self.setMinimumWidth(520)
        self.result_settings: Settings | None = None

        self.mode_combo = QComboBox()
        self.mode_combo.addItem("Local — start broker, replay agent and producer on this PC", "local")
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
        self.ca_edit = QLineEdit(settings.ssl_ca_location)
        self.ca_edit.setPlaceholderText("system default")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        ca_row = QHBoxLayout()
        ca_row.addWidget(self.ca_edit, 1)
        ca_row.addWidget(browse)
        self.speed_spin = QDoubleSpinBox()
        self.speed_spin.setRange(0.1, MAX_REPLAY_SPEED)
        self.speed_spin.setDecimals(1)
        self.speed_spin.setSuffix(" ×")
        self.speed_spin.setValue(settings.replay_speed)
        self.properties_edit = QPlainTextEdit(format_properties(settings.kafka_properties))
        self.properties_edit.setPlaceholderText("one librdkafka property per line, e.g.\nclient.id=shop-floor-pc-3")
        self.properties_edit.setFixedHeight(70)

        self._set_combo(self.mode_combo, settings.mode, by_data=True)
        self._set_combo(self.security_combo, settings.security_protocol)
        self._set_combo(self.mechanism_combo, settings.sasl_mechanism or SASL_MECHANISMS[0])

        form = QFormLayout()
        form.addRow("Mode", self.mode_combo)
        form.addRow("Bootstrap servers", self.bootstrap_edit)
        form.addRow("Topic prefix", self.prefix_edit)
        form.addRow("Security protocol", self.security_combo)
        form.addRow("SASL mechanism", self.mechanism_combo)
        form.addRow("SASL username", self.username_edit)
        form.addRow("SASL password", self.password_edit)
        form.addRow("CA file", ca_row)
        form.addRow("Replay speed", self.speed_spin)
        form.addRow("Extra Kafka properties", self.properties_edit)

        self.error_label = QLabel(objectName="settingsError")
        self.error_label.setWordWrap(True)
        self.error_label.setVisible(False)
        note = QLabel("The SASL password is stored in the settings file in clear text.", objectName="settingsNote")
        note.setWordWrap(True)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._on_save_clicked)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

        self._field_widgets = {
            "mode": self.mode_combo,
            "bootstrap_servers": self.bootstrap_edit,
            "topic_prefix": self.prefix_edit,
            "security_protocol": self.security_combo,
            "sasl_mechanism": self.mechanism_combo,
            "sasl_username": self.username_edit,
            "sasl_password": self.password_edit,
            "ssl_ca_location": self.ca_edit,
            "replay_speed": self.speed_spin,
            "kafka_properties": self.properties_edit,
        }
        self.mode_combo.currentIndexChanged.connect(self._update_enabled)
        self.security_combo.currentIndexChanged.connect(self._update_enabled)
        self._update_enabled()

    @staticmethod
    def _set_combo(combo: QComboBox, value: str, by_data: bool = False) -> None:
        index = combo.findData(value) if by_data else combo.findText(value)
        if index >= 0:
            combo.setCurrentIndex(index)

    def _update_enabled(self) -> None:
        remote = self.mode_combo.currentData() == "remote"
        sasl = self.security_combo.currentText().startswith("SASL")
        tls = self.security_combo.currentText() in ("SSL", "SASL_SSL")
        self.bootstrap_edit.setEnabled(remote)
        self.security_combo.setEnabled(remote)
        for widget in (self.mechanism_combo, self.username_edit, self.password_edit):
            widget.setEnabled(remote and sasl)
        self.ca_edit.setEnabled(remote and tls)
        self.speed_spin.setEnabled(not remote)

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CA certificate", self.ca_edit.text(), "PEM files (*.pem *.crt);;All files (*)")
        if path:
            self.ca_edit.setText(path)

    def settings_from_form(self) -> Settings:
        """The form as Settings; raises SettingsError naming the first bad field."""
        remote = self.mode_combo.currentData() == "remote"
        security = self.security_combo.currentText() if remote else "PLAINTEXT"
        sasl = security.startswith("SASL")
        settings = Settings(
            mode=self.mode_combo.currentData(),
            bootstrap_servers=self.bootstrap_edit.text().strip(),
            topic_prefix=self.prefix_edit.text().strip(),
            security_protocol=security,
            sasl_mechanism=self.mechanism_combo.currentText() if sasl else "",
            sasl_username=self.username_edit.text().strip() if sasl else "",
            sasl_password=self.password_edit.text() if sasl else "",
            ssl_ca_location=self.ca_edit.text().strip() if security in ("SSL", "SASL_SSL") else "",
            replay_speed=float(self.speed_spin.value()),
            kafka_properties=parse_properties(self.properties_edit.toPlainText()),
        )
        settings.validate()
        return settings

    def _on_save_clicked(self) -> None:
        try:
            self.result_settings = self.settings_from_form()
        except SettingsError as exc:
            field, message = exc.problems[0]
            self.show_error(message, field)
            return
        self.accept()

    def show_error(self, message: str, field: str = "") -> None:
        self.error_label.setText(message)
        self.error_label.setVisible(True)
        widget = self._field_widgets.get(field)
        if widget is not None:
            widget.setFocus(Qt.FocusReason.OtherFocusReason)
