"""The local services' command lines and output parsing (no processes here)."""
from __future__ import annotations

import sys

from desktop.core import services


def test_commands_run_the_producer_cli_through_the_apps_launcher(monkeypatch):
    monkeypatch.delattr(sys, "frozen", raising=False)
    program, arguments = services.module_command(services.replay_args(1.0))
    assert program == sys.executable
    assert arguments == ["-m", "desktop", "--run-module", "producer", "replay", "--port", "0", "--speed", "1", "--start", "19:00:00"]


def test_frozen_app_runs_its_own_passthrough(monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    program, arguments = services.module_command(services.broker_start_args())
    assert program == sys.executable
    assert arguments == ["--run-module", "producer", "broker", "start"]


def test_argument_builders():
    assert services.broker_status_args("/data") == ["broker", "status", "--data-dir", "/data"]
    assert services.broker_stop_args() == ["broker", "stop"]
    assert services.replay_args(2.5) == ["replay", "--port", "0", "--speed", "2.5", "--start", "19:00:00"]
    assert services.producer_args("http://127.0.0.1:5000", "127.0.0.1:9092", "plant1.") == [
        "run", "--agent", "http://127.0.0.1:5000", "--bootstrap", "127.0.0.1:9092", "--topic-prefix", "plant1.",
    ]
    assert "--topic-prefix" not in services.producer_args("http://a", "b:1")


def test_reading_key_values_from_output_lines():
    assert services.value_of("bootstrap=127.0.0.1:39092", "bootstrap") == "127.0.0.1:39092"
    assert services.value_of("running bootstrap=127.0.0.1:39092 pid=42", "bootstrap") == "127.0.0.1:39092"
    assert services.value_of("listening=http://127.0.0.1:40123", "listening") == "http://127.0.0.1:40123"
    assert services.value_of("stopped", "bootstrap") is None


def test_line_reader_joins_chunks_and_keeps_a_tail():
    reader = services.LineReader(keep=3)
    assert reader.feed(b"fetching ja") == []
    assert reader.feed(b"rs\r\nstarting\nbootstrap=1") == ["fetching jars", "starting"]
    assert reader.flush() == ["bootstrap=1"]
    assert reader.tail(2) == "starting | bootstrap=1"


def test_messages():
    assert services.progress_text("2026-11-28 00:12:01,123 INFO producer.broker: fetching jars") == "fetching jars"
    assert services.exit_message("producer", 1, "boom") == "producer exited with code 1: boom"
    assert services.exit_message("replay", None, "") == "replay agent crashed"
