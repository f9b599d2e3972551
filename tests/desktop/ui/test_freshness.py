"""Truth about the connection: a broker that stops answering (frozen with SIGSTOP, so its
sockets stay open and nothing fails) turns the status bar amber, then red, within 10 s, and
green again when it answers; a broker that is not there is logged once per change of state,
not once per retry. A broker of the test's own (it is frozen on purpose)."""
from __future__ import annotations

import logging
import os
import signal
import time

import pytest

import recorded_nist as testing
from desktop.core.settings import Settings
from kafka_records import create_topics, device_messages, mazak03_observations, observation_messages, produce
from producer.broker import LocalBroker

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(tmp_path):
    broker = LocalBroker(data_dir=tmp_path / "kafka", progress=lambda line: None)
    broker.start(timeout=180)
    try:
        yield broker
    finally:
        state = broker.status()
        if state:
            os.kill(int(state["pid"]), signal.SIGCONT)
        broker.stop()


def test_a_broker_that_stops_answering_turns_amber_then_red_within_ten_seconds(make_window, qtbot, own_broker, topic_prefix):
    client = {"bootstrap.servers": own_broker.bootstrap}
    create_topics(client, topic_prefix)
    devices = testing.load_devices()
    produce(client, device_messages(devices, topic_prefix) + observation_messages(mazak03_observations(devices, last_line=300),
                                                                                  topic_prefix))
    window = make_window(Settings(mode="remote", bootstrap_servers=own_broker.bootstrap, topic_prefix=topic_prefix))
    states: list[tuple[float, str]] = []
    window.show()
    with qtbot.waitSignal(window.first_observations_received, timeout=60_000):
        window.start()
    window.worker.status_changed.connect(lambda state, detail: states.append((time.monotonic(), state)))
    qtbot.waitUntil(lambda: window.broker_label.property("state") == "connected", timeout=30_000)
    pid = int(own_broker.status()["pid"])
    os.kill(pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        qtbot.waitUntil(lambda: window.broker_label.property("state") == "stalled", timeout=15_000)
        amber = time.monotonic() - frozen
        assert "not answering" in window.broker_label.text()
        qtbot.waitUntil(lambda: window.broker_label.property("state") == "unreachable", timeout=15_000)
        red = time.monotonic() - frozen
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"amber after {amber:.1f} s, red after {red:.1f} s")
    assert amber < red <= 10.0
    qtbot.waitUntil(lambda: window.broker_label.property("state") == "connected", timeout=30_000)
    # Once per change: connected -> stalled -> unreachable -> connected, no repeats.
    words = [state for _, state in states]
    assert all(a != b for a, b in zip(words, words[1:])), words


def test_an_absent_broker_is_logged_once_per_state_not_per_retry(make_window, qtbot, closed_port, caplog):
    caplog.set_level(logging.DEBUG, logger="desktop.kafka")
    window = make_window(Settings(mode="remote", bootstrap_servers=closed_port))
    statuses: list[str] = []
    window.show()
    window.start()
    window.worker.status_changed.connect(lambda state, detail: statuses.append(state))
    qtbot.waitUntil(lambda: window.broker_label.property("state") == "unreachable", timeout=20_000)
    # librdkafka retries every second or two (reconnect.backoff.max.ms=2000): 12 s is many retries.
    deadline = time.monotonic() + 12
    qtbot.waitUntil(lambda: time.monotonic() >= deadline, timeout=20_000)
    lines = [r.getMessage() for r in caplog.records if r.name == "desktop.kafka" and r.levelno >= logging.WARNING]
    assert 1 <= len(lines) <= 4, lines
    assert statuses.count("unreachable") <= 1, statuses
