"""The settings dialog: validation names the field and keeps the dialog open; Save returns Settings."""
from __future__ import annotations

from PySide6.QtWidgets import QDialog

from desktop.core.settings import Settings
from desktop.ui.settings_dialog import SettingsDialog


def test_remote_without_bootstrap_names_the_field_and_stays_open(qtbot, styled_qapp):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("remote"))
    assert dialog.bootstrap_edit.isEnabled() and not dialog.speed_spin.isEnabled()
    dialog.bootstrap_edit.setText("kafka.plant.local")
    dialog._on_save_clicked()
    assert dialog.isVisible() and dialog.result() != QDialog.DialogCode.Accepted
    assert dialog.error_label.isVisible()
    assert "Bootstrap servers" in dialog.error_label.text() and "host:port" in dialog.error_label.text()


def test_sasl_fields_and_save(qtbot, styled_qapp):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("remote"))
    dialog.bootstrap_edit.setText("kafka1.plant.local:9093")
    dialog.prefix_edit.setText("plant1.")
    dialog.security_combo.setCurrentText("SASL_PLAINTEXT")
    assert dialog.username_edit.isEnabled() and not dialog.ca_edit.isEnabled()
    dialog._on_save_clicked()
    assert "SASL username" in dialog.error_label.text()
    dialog.username_edit.setText("desk")
    dialog.password_edit.setText("s3cret")
    dialog.properties_edit.setPlainText("client.id=desk-3")
    with qtbot.waitSignal(dialog.accepted):
        dialog._on_save_clicked()
    assert dialog.result_settings == Settings(
        mode="remote", bootstrap_servers="kafka1.plant.local:9093", topic_prefix="plant1.",
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="desk",
        sasl_password="s3cret", kafka_properties={"client.id": "desk-3"},
    )


def test_form_starts_from_the_given_settings(qtbot, styled_qapp):
    settings = Settings(mode="remote", bootstrap_servers="k:9092", topic_prefix="p.", replay_speed=3.0)
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert dialog.settings_from_form() == settings
