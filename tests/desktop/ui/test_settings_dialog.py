"""The settings dialog: validation names the field and keeps the dialog open; Save returns Settings."""
from __future__ import annotations

from PySide6.QtWidgets import QDialog

from contrast import contrast_ratio
from desktop.core.settings import Settings
from desktop.ui.settings_dialog import SettingsDialog


def remote_dialog(qtbot) -> SettingsDialog:
    """The dialog on the default settings, shown, switched to remote mode."""
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("remote"))
    return dialog


def test_remote_without_bootstrap_names_the_field_and_stays_open(qtbot, styled_qapp):
    dialog = remote_dialog(qtbot)
    assert dialog.bootstrap_edit.isEnabled() and not dialog.speed_spin.isEnabled()
    dialog.bootstrap_edit.setText("kafka.plant.local")
    dialog._on_save_clicked()
    assert dialog.isVisible() and dialog.result() != QDialog.DialogCode.Accepted
    assert dialog.error_label.isVisible()
    assert "Bootstrap servers" in dialog.error_label.text() and "host:port" in dialog.error_label.text()


def test_sasl_fields_and_save(qtbot, styled_qapp):
    dialog = remote_dialog(qtbot)
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


# -- secrets, modes, agents, Test buttons, readability ---------------------------------------

def _remote_sasl(dialog: SettingsDialog, bootstrap: str = "kafka1.plant.local:9093") -> None:
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("remote"))
    dialog.bootstrap_edit.setText(bootstrap)
    dialog.security_combo.setCurrentText("SASL_SSL")
    dialog.mechanism_combo.setCurrentText("SCRAM-SHA-256")
    dialog.username_edit.setText("desk-9")
    dialog.password_edit.setText("n0t in a file")


def test_the_password_goes_to_the_keyring_and_comes_back_from_it(qtbot, styled_qapp, tmp_path, memory_keyring):
    import json

    from desktop.core.settings import load_settings

    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    assert dialog.keyring_available and "keyring" in dialog.keyring_label.text()
    _remote_sasl(dialog)
    with qtbot.waitSignal(dialog.accepted):
        dialog._on_save_clicked()
    path = dialog.save(tmp_path)
    stored = json.loads(path.read_text())
    assert "sasl_password" not in stored and "n0t in a file" not in path.read_text()
    assert list(memory_keyring.entries.values()) == ["n0t in a file"]
    assert load_settings(tmp_path).sasl_password == "n0t in a file"


def test_without_a_keyring_the_dialog_says_so_and_stores_the_secret_only_when_ticked(qtbot, styled_qapp, tmp_path):
    import json

    from desktop.core.secrets import SecretStore
    from desktop.core.settings import load_settings
    from keyring_support import NoKeyring

    store = SecretStore(NoKeyring())
    dialog = SettingsDialog(Settings(), secrets=store)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.keyring_available
    assert "no keyring" in dialog.keyring_label.text().lower()
    _remote_sasl(dialog)
    dialog._on_save_clicked()
    assert dialog.result() != QDialog.DialogCode.Accepted
    assert "SASL password" in dialog.error_label.text() and "no keyring" in dialog.error_label.text()
    assert dialog.password_edit.property("invalid") is True
    dialog.password_in_file_check.setChecked(True)
    with qtbot.waitSignal(dialog.accepted):
        dialog._on_save_clicked()
    path = dialog.save(tmp_path)
    assert json.loads(path.read_text())["sasl_password"] == "n0t in a file"
    assert load_settings(tmp_path, store).sasl_password == "n0t in a file"


def test_switching_to_local_and_back_keeps_what_was_entered(qtbot, styled_qapp):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    _remote_sasl(dialog)
    remote = dialog.settings_from_form()
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("local"))
    assert not dialog.username_edit.isEnabled()
    local = dialog.settings_from_form()
    assert (local.sasl_username, local.sasl_password, local.bootstrap_servers) == ("desk-9", "n0t in a file",
                                                                                  "kafka1.plant.local:9093")
    # Local mode connects to the app's own broker in plain text, whatever is kept for remote.
    assert "sasl.password" not in local.kafka_config("127.0.0.1:9092")
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("remote"))
    assert dialog.settings_from_form() == remote
    # Saved in local mode and opened again: still there.
    again = SettingsDialog(local)
    qtbot.addWidget(again)
    assert again.username_edit.text() == "desk-9" and again.password_edit.text() == "n0t in a file"


def test_field_problems_are_all_named_and_marked(qtbot, styled_qapp):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.shifts_edit.setText("06:00, 25:00")
    dialog.replay_start_edit.setText("noon")
    dialog.agent_list.clear()
    dialog._on_save_clicked()
    text = dialog.error_label.text()
    assert "Shift start times: '25:00' is not a time of day" in text
    assert "Replay start: 'noon' is not a time of day" in text
    assert "Agents: local mode needs at least one agent" in text
    for widget in (dialog.shifts_edit, dialog.replay_start_edit, dialog.agent_list):
        assert widget.property("invalid") is True


def test_agent_presets_and_test_show_the_devices(qtbot, styled_qapp):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    assert dialog.agents() == ("replay",)  # the recorded NIST replay is the default
    dialog.preset_combo.setCurrentIndex(dialog.preset_combo.findData("https://smstestbed.nist.gov/vds"))
    dialog._on_add_preset_clicked()
    assert dialog.agents() == ("replay", "https://smstestbed.nist.gov/vds")
    dialog.agent_list.setCurrentRow(0)
    with qtbot.waitSignal(dialog.check_finished, timeout=10_000) as finished:
        dialog._on_test_agent_clicked()
    kind, result = finished.args
    assert kind == "agent" and result.ok
    import recorded_nist as testing

    for device in testing.load_devices():
        assert device["device_name"] in dialog.agent_result.text()
    assert dialog.settings_from_form().agents == ("replay", "https://smstestbed.nist.gov/vds")


def test_test_connection_reports_brokers_topics_and_a_dead_address_within_ten_seconds(qtbot, styled_qapp, kafka_broker,
                                                                                       topic_prefix, closed_port):
    import time

    from kafka_records import create_topics

    create_topics({"bootstrap.servers": kafka_broker.bootstrap}, topic_prefix)
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("remote"))
    dialog.bootstrap_edit.setText(kafka_broker.bootstrap)
    dialog.prefix_edit.setText(topic_prefix)
    with qtbot.waitSignal(dialog.check_finished, timeout=10_000) as finished:
        dialog._on_test_kafka_clicked()
    result = finished.args[1]
    assert result.ok, result.text()
    text = dialog.kafka_result.text()
    assert f"{kafka_broker.bootstrap.split(':')[0]}:" in text and "Brokers:" in text
    assert f"{topic_prefix}mtconnect.observations" in text and "Topics present" in text
    assert "Authentication: no authentication" in text

    dialog.bootstrap_edit.setText(closed_port)
    began = time.monotonic()
    with qtbot.waitSignal(dialog.check_finished, timeout=12_000) as finished:
        dialog._on_test_kafka_clicked()
    assert time.monotonic() - began < 10.0
    assert not finished.args[1].ok and "No Kafka broker answered" in dialog.kafka_result.text()


def producer_agents(bootstrap: str, prefix: str, *args: str) -> str:
    """`python -m producer agents ...`, as an engineer would run it: its standard output."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "producer", "agents", *args, "--bootstrap", bootstrap,
                           "--topic-prefix", prefix], capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def test_the_plant_agent_list_is_loaded_added_to_and_removed_from_in_remote_mode(qtbot, styled_qapp, kafka_broker,
                                                                                 topic_prefix, closed_port):
    from PySide6.QtCore import Qt

    first, second = "http://agent1.plant.local:5000", "http://agent2.plant.local:5000"
    assert "added" in producer_agents(kafka_broker.bootstrap, topic_prefix, "add", first, "--set", "interval_ms=250")
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    # Local mode: the plant's list is not this PC's business.
    assert not dialog.plant_load_button.isEnabled() and "Remote mode only" in dialog.plant_note.text()
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("remote"))
    dialog.bootstrap_edit.setText(kafka_broker.bootstrap)
    dialog.prefix_edit.setText(topic_prefix)
    assert f"{topic_prefix}mtconnect.agents" in dialog.plant_note.text()
    with qtbot.waitSignal(dialog.check_finished, timeout=30_000) as finished:
        qtbot.mouseClick(dialog.plant_load_button, Qt.MouseButton.LeftButton)
    assert finished.args[1].ok, finished.args[1].text()
    assert dialog.plant_agents() == (first,)
    assert "1 agent(s)" in dialog.plant_result.text()

    # Added from the dialog: the producers' own tool lists it.
    dialog.agent_edit.setText(second + "/")
    with qtbot.waitSignal(dialog.check_finished, timeout=60_000) as finished:
        qtbot.mouseClick(dialog.plant_add_button, Qt.MouseButton.LeftButton)
    assert finished.args[1].ok, finished.args[1].text()
    assert dialog.plant_agents() == (first, second)
    listed = producer_agents(kafka_broker.bootstrap, topic_prefix, "list")
    assert first in listed and second in listed and "2 agent(s)" in listed

    # Adding one that is there already (the list not loaded again) keeps its settings.
    dialog.plant_list.clear()
    dialog.agent_edit.setText(first)
    with qtbot.waitSignal(dialog.check_finished, timeout=60_000) as finished:
        qtbot.mouseClick(dialog.plant_add_button, Qt.MouseButton.LeftButton)
    assert finished.args[1].ok and "already" in dialog.plant_result.text()
    assert dialog.plant_agents() == (first, second)
    assert '"interval_ms": 250' in next(line for line in producer_agents(kafka_broker.bootstrap, topic_prefix, "list")
                                        .splitlines() if line.startswith(first))

    # Removed from the dialog: gone for the producers too.
    dialog.plant_list.setCurrentRow(0)
    with qtbot.waitSignal(dialog.check_finished, timeout=60_000) as finished:
        qtbot.mouseClick(dialog.plant_remove_button, Qt.MouseButton.LeftButton)
    assert finished.args[1].ok, finished.args[1].text()
    assert dialog.plant_agents() == (second,)
    listed = producer_agents(kafka_broker.bootstrap, topic_prefix, "list")
    assert first not in listed and second in listed and "1 agent(s)" in listed

    # A cluster that does not answer: said within the check's time, the list left as it was.
    dialog.bootstrap_edit.setText(closed_port)
    with qtbot.waitSignal(dialog.check_finished, timeout=15_000) as finished:
        qtbot.mouseClick(dialog.plant_load_button, Qt.MouseButton.LeftButton)
    assert not finished.args[1].ok and "No Kafka broker answered" in dialog.plant_result.text()
    assert dialog.plant_agents() == (second,)
    assert dialog.plant_load_button.isEnabled()


def test_field_labels_are_readable_on_the_dark_theme(qtbot, styled_qapp):
    from PySide6.QtWidgets import QFormLayout, QLabel

    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.resize(700, 640)
    dialog.show()
    image = dialog.grab().toImage()
    background = image.pixelColor(3, image.height() // 2)
    labels = []
    for layout in dialog.findChildren(QFormLayout):
        for row in range(layout.rowCount()):
            item = layout.itemAt(row, QFormLayout.ItemRole.LabelRole)
            if item is not None and isinstance(item.widget(), QLabel) and item.widget().text():
                labels.append(item.widget())
    assert len(labels) >= 10
    for label in labels:
        label.ensurePolished()
        ratio = contrast_ratio(label.palette().color(label.foregroundRole()), background)
        assert ratio >= 4.5, f"{label.text()!r}: contrast {ratio:.1f}:1"


def _rule(document: dict, rule_id: str) -> dict:
    return next(rule for rule in document["rules"] if rule["id"] == rule_id)


def test_the_common_alarm_rules_are_edited_into_the_users_rules_file_and_the_rest_is_kept(qtbot, styled_qapp, tmp_path):
    import yaml

    from desktop.core.alarms import default_rules_path, load_rules

    default_text = default_rules_path().read_text(encoding="utf-8")
    default = yaml.safe_load(default_text)
    dialog = SettingsDialog(Settings(), config_dir=tmp_path)
    qtbot.addWidget(dialog)
    # The form starts from the default rules (there is no user file yet).
    assert f"{dialog.offline_rule_spin.value()} s" == _rule(default, "machine-offline")["after"]
    assert dialog.spindle_above_spin.value() == _rule(default, "spindle-overload")["above"]
    assert dialog.fault_priority_combo.currentData() == _rule(default, "condition")["levels"]["FAULT"]
    dialog.offline_rule_spin.setValue(300)
    dialog.spindle_above_spin.setValue(85)
    dialog.spindle_for_spin.setValue(10)
    dialog.warning_priority_combo.setCurrentIndex(dialog.warning_priority_combo.findData("low"))
    dialog._on_save_clicked()
    assert dialog.result() == SettingsDialog.DialogCode.Accepted
    dialog.save(tmp_path)

    written_text = (tmp_path / "alarm-rules.yaml").read_text(encoding="utf-8")
    written = yaml.safe_load(written_text)
    assert _rule(written, "machine-offline")["after"] == "300 s"
    assert _rule(written, "spindle-overload")["above"] == 85 and _rule(written, "spindle-overload")["for"] == "10 s"
    assert _rule(written, "condition")["levels"] == {"FAULT": _rule(default, "condition")["levels"]["FAULT"], "WARNING": "low"}
    # Every other rule and setting, and the file's comments, as they were.
    assert [r for r in written["rules"] if r["id"] not in ("machine-offline", "spindle-overload", "condition")] == \
        [r for r in default["rules"] if r["id"] not in ("machine-offline", "spindle-overload", "condition")]
    assert written["settings"] == default["settings"]
    comments = [line for line in default_text.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(line in written_text.splitlines() for line in comments)
    load_rules(tmp_path / "alarm-rules.yaml")  # the app loads what was written

    # Opened again, the dialog shows what the file now says.
    again = SettingsDialog(Settings(), config_dir=tmp_path)
    qtbot.addWidget(again)
    assert (again.offline_rule_spin.value(), again.spindle_above_spin.value(), again.spindle_for_spin.value()) == (300, 85, 10)


def test_a_broken_rules_file_is_named_and_left_as_it_is(qtbot, styled_qapp, tmp_path):
    broken = "version: 1\nrules:\n  - id: condition\n    kind: condition\n    levels: {FAULT: urgent}\n"
    (tmp_path / "alarm-rules.yaml").write_text(broken, encoding="utf-8")
    dialog = SettingsDialog(Settings(), config_dir=tmp_path)
    qtbot.addWidget(dialog)
    note = dialog.rules_note.text()
    assert "cannot be edited here" in note and "alarm-rules.yaml:5:" in note and "levels.FAULT" in note, note
    assert not dialog.offline_rule_spin.isEnabled() and not dialog.spindle_check.isEnabled()
    dialog.offline_spin.setValue(90)  # another setting still saves
    dialog._on_save_clicked()
    assert dialog.result() == SettingsDialog.DialogCode.Accepted
    dialog.save(tmp_path)
    assert (tmp_path / "alarm-rules.yaml").read_text(encoding="utf-8") == broken


def test_a_message_goes_once_its_field_is_fixed_and_a_test_result_once_what_it_tested_changed(
        qtbot, styled_qapp, kafka_broker):
    dialog = remote_dialog(qtbot)
    dialog.bootstrap_edit.setText("kafka-nowhere")
    dialog.shifts_edit.setText("06:00, 25:00")
    dialog._on_save_clicked()
    assert "Bootstrap servers" in dialog.error_label.text() and "Shift start times" in dialog.error_label.text()

    dialog.bootstrap_edit.setText(kafka_broker.bootstrap)  # fixed: its message and mark go at once
    assert "Bootstrap servers" not in dialog.error_label.text() and "Shift start times" in dialog.error_label.text()
    assert dialog.bootstrap_edit.property("invalid") is False and dialog.shifts_edit.property("invalid") is True
    assert dialog.bootstrap_edit.hasFocus() or not dialog.shifts_edit.hasFocus(), "typing must not move the focus"
    dialog.shifts_edit.setText("06:00, 14:00, 22:00")
    assert not dialog.error_label.isVisible() and dialog.shifts_edit.property("invalid") is False

    with qtbot.waitSignal(dialog.check_finished, timeout=10_000) as finished:
        dialog._on_test_kafka_clicked()
    assert finished.args[1].ok and dialog.kafka_result.text().startswith("✔")
    dialog.bootstrap_edit.setText("kafka.plant.local:9092")  # no longer what was tested
    assert dialog.kafka_result.text() == ""


def test_an_agent_that_is_not_a_url_is_refused_when_added(qtbot, styled_qapp):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.agent_edit.setText("not a url")
    dialog._on_add_agent_clicked()
    assert dialog.agents() == ("replay",)
    assert "'not a url' is not an http:// or https:// URL" in dialog.agent_result.text()
    assert dialog.agent_edit.text() == "not a url", "what was typed stays, to be corrected"
    dialog.agent_edit.setText("http://cell-4.plant.local:5000/")
    assert dialog.agent_result.text() == "", "the message goes once the entry is edited"
    dialog._on_add_agent_clicked()
    assert dialog.agents() == ("replay", "http://cell-4.plant.local:5000") and dialog.agent_edit.text() == ""
