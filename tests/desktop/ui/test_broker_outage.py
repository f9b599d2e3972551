"""The broker goes away under a running window and comes back on the same ports.

Two real brokers of these tests' own (not the session's: they are stopped on purpose):
- remote mode: the window shows the outage, and afterwards new records arrive while nothing
  read before the outage is delivered again (no history re-read, no duplicates);
- local mode: the window's own services (broker, replay agent, producer as child processes);
  the local broker is stopped for 15 s and started again, and live data resumes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import recorded_nist as testing
from desktop.core.settings import Settings
from desktop.ui.services import LocalServices
from kafka_records import create_topics, device_messages, mazak03_observations, observation_messages, produce
from producer.broker import LocalBroker
from repo_paths import REPO_ROOT

pytestmark = pytest.mark.integration

# Longer outages for a manual run: MACHINE_MONITOR_TEST_OUTAGE_SECONDS=60.
OUTAGE_SECONDS = float(os.environ.get("MACHINE_MONITOR_TEST_OUTAGE_SECONDS", "15"))


def record_ingested(window) -> list:
    """Every batch the feed hands to the window's core, in order."""
    batches: list = []
    window.batch_observers.append(batches.append)
    return batches


def sequences(batches, device_uuid: str = "mtc_adapter004") -> list[int]:
    return [o["sequence"] for batch in batches for o in batch.observations if o["device_uuid"] == device_uuid]


def restart_on_the_same_ports(data_dir: Path, state: dict) -> None:
    """Start the stopped broker again on the ports it had, from a process of its own as
    `broker start` would (the broker outlives it). The ports are named explicitly: they are
    still in TIME_WAIT from the connections the broker closed, and a start that only prefers
    its old ports would move to new ones, which no client would find."""
    script = ("import sys; from pathlib import Path; from producer.broker import LocalBroker; "
              "print(LocalBroker(data_dir=Path(sys.argv[1]), port=int(sys.argv[2]), controller_port=int(sys.argv[3]),"
              " progress=lambda line: None).start(timeout=180))")
    completed = subprocess.run([sys.executable, "-c", script, str(data_dir), str(state["port"]),
                                str(state["controller_port"])], cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == state["bootstrap"]


def keep_down(qtbot, seconds: float) -> None:
    """Let the window run (its event loop keeps turning) while the broker is away."""
    deadline = time.monotonic() + seconds
    qtbot.waitUntil(lambda: time.monotonic() >= deadline, timeout=int(seconds * 1000) + 5_000)


@pytest.fixture
def own_broker(tmp_path):
    broker = LocalBroker(data_dir=tmp_path / "kafka", progress=lambda line: None)
    broker.start(timeout=180)
    try:
        yield broker
    finally:
        broker.stop()


def test_remote_feed_resumes_after_an_outage_without_reading_anything_twice(make_window, qtbot, own_broker,
                                                                             topic_prefix):
    bootstrap = own_broker.bootstrap
    client = {"bootstrap.servers": bootstrap}
    create_topics(client, topic_prefix)
    devices = testing.load_devices()
    day = mazak03_observations(devices, last_line=4000)
    before, after = day[:1500], day[1500:]
    produce(client, device_messages(devices, topic_prefix) + observation_messages(before, topic_prefix))

    window = make_window(Settings(mode="remote", bootstrap_servers=bootstrap, topic_prefix=topic_prefix))
    batches = record_ingested(window)
    window.show()
    window.start()
    qtbot.waitUntil(lambda: len(sequences(batches)) == len(before), timeout=60_000)
    assert window.broker_label.text() == f"Kafka: connected to {bootstrap}"
    first_worker = window.worker

    state = own_broker.status()
    own_broker.stop()
    qtbot.waitUntil(lambda: window.broker_label.text().startswith("Kafka: unreachable"), timeout=30_000)
    keep_down(qtbot, OUTAGE_SECONDS)
    assert window.broker_label.text().startswith("Kafka: unreachable")
    restart_on_the_same_ports(own_broker.data_dir, state)

    produce(client, observation_messages(after, topic_prefix))
    qtbot.waitUntil(lambda: len(sequences(batches)) >= len(day), timeout=120_000)
    qtbot.waitUntil(lambda: window.broker_label.text() == f"Kafka: connected to {bootstrap}", timeout=30_000)
    # Give anything that would arrive twice (a re-read of history) the time to show up.
    latest = len(sequences(batches))
    keep_down(qtbot, 3.0)
    seen = sequences(batches)
    assert len(seen) == latest
    assert seen == [o["sequence"] for o in day], "records were lost, doubled or reordered across the outage"
    assert window.worker is first_worker, "the feed was restarted (and history read again)"
    qtbot.waitUntil(lambda: window.state.machines["mtc_adapter004"].last_timestamp == day[-1]["timestamp"])


def test_local_mode_restarts_its_broker_when_it_dies_and_live_data_resumes(make_window, qtbot, tmp_path):
    data_dir = tmp_path / "broker"
    services = LocalServices(replay_speed=2.0, topic_prefix="local.", broker_data_dir=str(data_dir),
                             restart_delays=(2.0, 5.0, 10.0))
    window = make_window(Settings(topic_prefix="local."), services=services)
    batches = record_ingested(window)
    window.show()
    with qtbot.waitSignal(window.first_observations_received, timeout=240_000):
        window.start()
    assert services.broker_owned
    broker = LocalBroker(data_dir=data_dir, progress=lambda line: None)
    bootstrap = broker.bootstrap
    qtbot.waitUntil(lambda: window.broker_label.text() == f"Kafka: connected to {bootstrap}", timeout=30_000)
    restarting: list[str] = []
    services.state_changed.connect(lambda name, state, detail: restarting.append(detail) if name == "broker" else None)

    broker.stop()  # the broker dies under the app
    qtbot.waitUntil(lambda: window.broker_label.text().startswith("Kafka: unreachable"), timeout=30_000)
    # The app notices and starts it again itself, and says so.
    qtbot.waitUntil(lambda: any("restarting in" in detail for detail in restarting), timeout=30_000)
    qtbot.waitUntil(lambda: "broker restarting" in window.services_label.text() or services.restart_counts["broker"] >= 1,
                    timeout=30_000)
    back = time.monotonic()
    newest_before = max(o["sequence"] for batch in batches for o in batch.observations)
    during = len(batches)
    qtbot.waitUntil(lambda: any(o["sequence"] > newest_before for batch in batches[during:] for o in batch.observations),
                    timeout=180_000)
    print(f"live data again {time.monotonic() - back:.1f} s after the broker was restarted by the app")
    qtbot.waitUntil(lambda: window.broker_label.text() == f"Kafka: connected to {services.bootstrap}", timeout=30_000)
    assert services.restart_counts["broker"] == 1
    assert services.states["producer"][0].value == "running"
    # The restart is over, and the status bar says nothing is starting any more.
    qtbot.waitUntil(lambda: window.progress_bar.isHidden(), timeout=10_000)
    assert "Starting" not in window.progress_label.text() and "restarting" not in window.progress_label.text()
    assert window.state.skipped_count == 0
    with qtbot.waitSignal(window.shutdown_finished, timeout=90_000):
        window.shutdown()
    assert broker.status() is None, "quitting the app did not stop the broker it had started"


def test_a_local_broker_that_hangs_is_shown_as_not_answering_not_as_running(make_window, qtbot, tmp_path):
    import signal

    data_dir = tmp_path / "broker"
    services = LocalServices(replay_speed=2.0, topic_prefix="hang.", broker_data_dir=str(data_dir))
    window = make_window(Settings(topic_prefix="hang."), services=services)
    window.show()
    with qtbot.waitSignal(window.first_observations_received, timeout=240_000):
        window.start()
    qtbot.waitUntil(lambda: window.services_label.text().startswith("Local: broker running"), timeout=30_000)
    pid = int(LocalBroker(data_dir=data_dir, progress=lambda line: None).status()["pid"])
    os.kill(pid, signal.SIGSTOP)  # the process is there, its sockets open, but nothing answers
    try:
        qtbot.waitUntil(lambda: "broker not answering" in window.services_label.text(), timeout=15_000)
        assert window.services_label.property("state") == "failed"
        assert "does not answer" in window.services_label.toolTip()
    finally:
        os.kill(pid, signal.SIGCONT)
    qtbot.waitUntil(lambda: window.services_label.text().startswith("Local: broker running"), timeout=30_000)
    with qtbot.waitSignal(window.shutdown_finished, timeout=90_000):
        window.shutdown()
