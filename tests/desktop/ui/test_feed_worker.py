"""The feed thread's failure path and reconnecting with new settings (no broker needed:
the client rejects the configuration, or nothing listens at the address: a free port)."""
from __future__ import annotations

import socket

import pytest

from desktop.core.feed import FeedConfig
from desktop.core.settings import Settings
from desktop.ui.workers import FeedWorker


@pytest.mark.parametrize("separate_process", [True, False], ids=["feed process", "feed thread"])
def test_a_failing_feed_reports_instead_of_dying_silently(qtbot, styled_qapp, closed_port, separate_process):
    worker = FeedWorker(FeedConfig(closed_port, kafka_properties={"no.such.property": "1"}),
                        separate_process=separate_process)
    with qtbot.waitSignal(worker.feed_failed, timeout=10_000) as failed:
        worker.start()
    assert "invalid Kafka settings" in failed.args[0] and "no.such.property" in failed.args[0]
    qtbot.waitUntil(lambda: not worker.running)
    assert worker.stop()


def test_window_shows_the_failure_and_retries(make_window, qtbot, closed_port):
    window = make_window(Settings(mode="remote", bootstrap_servers=closed_port, kafka_properties={"no.such.property": "1"}))
    window.show()
    window.start()
    first = window.worker
    qtbot.waitUntil(lambda: window.broker_label.text().startswith("Kafka feed stopped: invalid Kafka settings"),
                    timeout=10_000)
    assert window.progress_label.text().startswith("Retrying in 2 s — Kafka feed stopped: invalid Kafka settings")
    assert 'No such configuration property: "no.such.property"' in window.progress_label.toolTip()
    qtbot.waitUntil(lambda: window.worker is not first, timeout=10_000)  # a new feed after the delay


def test_apply_settings_reconnects_with_the_new_cluster(make_window, qtbot, closed_port):
    window = make_window(Settings(mode="remote", bootstrap_servers=closed_port))
    window.show()
    window.start()
    assert window.worker.config.bootstrap_servers == closed_port
    with socket.socket() as probe:  # a second address where nothing listens
        probe.bind(("127.0.0.1", 0))
        other = f"127.0.0.1:{probe.getsockname()[1]}"
    window.apply_settings(Settings(mode="remote", bootstrap_servers=other, topic_prefix="plant2."))
    qtbot.waitUntil(lambda: window.worker is not None and window.worker.config.bootstrap_servers == other)
    assert window.worker.config.topic_prefix == "plant2."
    assert window.worker.running


def test_tray_notifications_do_not_use_the_banner(qtbot, styled_qapp):
    import recorded_nist as testing
    from desktop.core.alarms import AlarmEngine
    from desktop.ui.notifier import AlarmBanner, AlarmNotifier

    banner = AlarmBanner()
    qtbot.addWidget(banner)
    notifier = AlarmNotifier(banner, use_tray=True)
    mazak03 = testing.device_named(testing.load_devices(), "Mazak03")
    day = testing.shdr_observations(testing.nist_shdr("Mazak03-20161116-20161117.txt"), mazak03)
    engine = AlarmEngine()
    engine.process(o for _, o in day)
    notices = engine.drain_notices()
    with qtbot.waitSignal(notifier.notification_shown) as shown:
        notifier.show_notices(notices[:1])
    assert shown.args[0] == notices[0].title and "791" in shown.args[0]
    assert not banner.isVisible()
    from desktop.core.machines import MachineStatus

    before = notifier.tray.icon().pixmap(32, 32).toImage()
    notifier.set_status(MachineStatus.ALARM, {MachineStatus.ALARM: 1, MachineStatus.RUNNING: 2}, unacknowledged=1)
    assert "1 alarm" in notifier.tray.toolTip() and "2 running" in notifier.tray.toolTip()
    assert "1 alarm(s) to acknowledge" in notifier.tray.toolTip()
    alarm_icon = notifier.tray.icon().pixmap(32, 32).toImage()
    assert alarm_icon != before, "the tray icon must change colour for the worst state"
    notifier.set_status(MachineStatus.RUNNING, {MachineStatus.RUNNING: 3})
    assert notifier.tray.icon().pixmap(32, 32).toImage() not in (before, alarm_icon)
    notifier.hide()


@pytest.mark.integration
def test_a_killed_feed_process_is_shown_restarted_and_live_data_resumes(make_window, qtbot, kafka_broker, topic_prefix):
    import os
    import signal

    import recorded_nist as testing
    from kafka_records import create_topics, device_messages, mazak03_observations, observation_messages, produce

    devices = testing.load_devices()
    client = {"bootstrap.servers": kafka_broker.bootstrap}
    create_topics(client, topic_prefix)
    window = make_window(Settings(mode="remote", bootstrap_servers=kafka_broker.bootstrap, topic_prefix=topic_prefix))
    window.show()
    failures: list[str] = []
    window.start()
    first = window.worker
    first.feed_failed.connect(failures.append)
    early = mazak03_observations(devices, 1, 300)
    produce(client, device_messages(devices, topic_prefix) + observation_messages(early, topic_prefix))
    qtbot.waitUntil(lambda: window.state.observation_records >= len(early), timeout=60_000)
    os.kill(first.feed.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: bool(failures), timeout=10_000)
    assert failures == [f"the Kafka feed process ended unexpectedly (exit code {-signal.SIGKILL})"]
    qtbot.waitUntil(lambda: window.worker is not first and window.worker.running, timeout=15_000)
    # Records written after the restart reach the window: the new feed reads on from the live window.
    before = window.state.observation_records
    later = mazak03_observations(devices, 301, 600, first_sequence=len(early) + 1)
    assert later
    produce(client, observation_messages(later, topic_prefix))
    qtbot.waitUntil(lambda: window.state.observation_records >= before + len(later), timeout=60_000)
    newest = max(o["timestamp"] for o in later)
    assert newest > max(o["timestamp"] for o in early)
    qtbot.waitUntil(lambda: window.state.machines["mtc_adapter004"].last_timestamp == newest, timeout=10_000)
    qtbot.waitUntil(lambda: window.broker_label.text() == f"Kafka: connected to {kafka_broker.bootstrap}",
                    timeout=15_000)
