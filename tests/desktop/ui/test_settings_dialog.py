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


def test_settings_saved_in_the_dialog_are_there_after_a_restart(make_window, qtbot, tmp_path):
    import argparse
    import socket

    from desktop.ui.app import load_effective_settings
    from desktop.ui.main_window import MainWindow
    from modal import when_modal

    config = tmp_path / "config"
    ca = tmp_path / "plant-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with socket.socket() as probe:  # a port nothing listens on: the window reconnects there
        probe.bind(("127.0.0.1", 0))
        bootstrap = f"127.0.0.1:{probe.getsockname()[1]}"
    window = make_window(Settings(), config_dir=config)

    def fill_and_save(dialog: SettingsDialog) -> None:
        dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("remote"))
        dialog.bootstrap_edit.setText(bootstrap)
        dialog.prefix_edit.setText("plant7.")
        dialog.security_combo.setCurrentText("SASL_SSL")
        dialog.mechanism_combo.setCurrentText("SCRAM-SHA-512")
        dialog.username_edit.setText("desk-7")
        dialog.password_edit.setText("pa55 word")
        dialog.ca_edit.setText(str(ca))
        dialog.properties_edit.setPlainText("client.id=desk-7\nfetch.wait.max.ms=250")
        dialog._on_save_clicked()

    when_modal(lambda widget: isinstance(widget, SettingsDialog), fill_and_save)
    window.open_settings()
    typed = {"mode": "remote", "bootstrap_servers": bootstrap, "topic_prefix": "plant7.",
             "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "desk-7",
             "sasl_password": "pa55 word", "ssl_ca_location": str(ca),
             "kafka_properties": {"client.id": "desk-7", "fetch.wait.max.ms": "250"}}
    qtbot.waitUntil(lambda: window.worker is not None and window.worker.config.bootstrap_servers == bootstrap,
                    timeout=20_000)

    # A restart: the settings come from the folder alone, as the next `python -m desktop` reads them.
    options = argparse.Namespace(config_dir=str(config), bootstrap=None, topic_prefix=None)
    restarted, _ = load_effective_settings(options)
    assert {name: getattr(restarted, name) for name in typed if name != "kafka_properties"} == \
        {name: value for name, value in typed.items() if name != "kafka_properties"}
    assert dict(restarted.kafka_properties) == typed["kafka_properties"]
    again = MainWindow(restarted, config_dir=config)
    qtbot.addWidget(again)
    form = SettingsDialog(again.settings)
    qtbot.addWidget(form)
    assert form.bootstrap_edit.text() == bootstrap and form.username_edit.text() == "desk-7"
    assert form.security_combo.currentText() == "SASL_SSL" and form.password_edit.text() == "pa55 word"
    assert form.settings_from_form() == restarted
