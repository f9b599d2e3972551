"""The desktop against the real chain: replay agent over HTTP -> producer service -> a real
Kafka broker (session fixture) -> the window's feed thread. No mocks anywhere."""
from __future__ import annotations

import pytest

from desktop.core.machines import MachineStatus
from desktop.core.settings import Settings

pytestmark = pytest.mark.integration

NIST_DEVICES = {"GFAgie01", "Mazak01", "Mazak03", "Hurco01", "Hurco02", "Hurco03", "Hurco04", "Hurco06"}


def remote_settings(kafka_broker, topic_prefix: str) -> Settings:
    return Settings(mode="remote", bootstrap_servers=kafka_broker.bootstrap, topic_prefix=topic_prefix)


def test_live_window_shows_devices_plot_and_the_recorded_fault(make_window, qtbot, request, kafka_broker, topic_prefix):
    window = make_window(remote_settings(kafka_broker, topic_prefix))
    window.show()
    notifications: list[tuple[str, str]] = []
    window.notifier.notification_shown.connect(lambda title, message: notifications.append((title, message)))
    window.start()
    # The window subscribes first; the chain creates the topics and replays from just before
    # Mazak03's Fault 791, so everything it writes is live data for the window.
    chain = request.getfixturevalue("nist_chain")
    assert chain.prefix == topic_prefix

    qtbot.waitUntil(lambda: len(window.overview.tiles) == 8, timeout=90_000)
    assert {tile.name_label.text() for tile in window.overview.tiles.values()} == NIST_DEVICES
    assert window.broker_label.text() == f"Kafka: connected to {kafka_broker.bootstrap}"

    qtbot.waitUntil(lambda: any("MUST INPUT CUTTING SPEED" in m for _, m in notifications), timeout=120_000)
    title, message = next((t, m) for t, m in notifications if "MUST INPUT CUTTING SPEED" in m)
    # Alone it reads "Mazak03: FAULT 791"; with others in the same batch it is one summary line.
    assert ("Mazak03" in title and "FAULT 791" in title) or "Mazak03: 791 MUST INPUT CUTTING SPEED" in message
    assert not window.notifier.uses_tray and window.banner.isVisible()
    rows = window.model.journal.alarms()
    fault = next(a for a in rows if a.native_code == "791")
    assert fault.device_name == "Mazak03" and fault.alarm_id.startswith("mtc_adapter004/")

    qtbot.waitUntil(lambda: window.plot.point_count > 0, timeout=120_000)
    device_uuid, item_id = window.plot.series_key
    assert window.model.data_item(device_uuid, item_id)["type"] == "ROTARY_VELOCITY"

    hurcos = [t for t in window.overview.tiles.values() if t.name_label.text().startswith("Hurco")]
    assert {t.status for t in hurcos} <= {MachineStatus.UNAVAILABLE, MachineStatus.OFFLINE}
    assert window.model.error_count == 0, list(window.model.errors)


def test_window_started_later_reads_recent_history(make_window, qtbot, nist_chain, kafka_broker):
    # Let the chain write for a while before anyone is watching.
    from confluent_kafka import Consumer

    from producer import wire

    probe = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": f"probe-{nist_chain.prefix}",
                      "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    probe.subscribe([nist_chain.prefix + wire.OBSERVATIONS])
    seen = 0
    try:
        def enough() -> bool:
            nonlocal seen
            seen += sum(1 for m in probe.consume(num_messages=500, timeout=0.5) if m.error() is None)
            return seen >= 200
        qtbot.waitUntil(enough, timeout=120_000)
    finally:
        probe.close()

    window = make_window(remote_settings(kafka_broker, nist_chain.prefix))
    window.show()
    with qtbot.waitSignal(window.first_observations_received, timeout=90_000):
        window.start()
    # History arrives at once: all machines, and observations from before the window existed.
    qtbot.waitUntil(lambda: len(window.overview.tiles) == 8, timeout=60_000)
    qtbot.waitUntil(lambda: window.model.observation_count >= seen, timeout=60_000)
