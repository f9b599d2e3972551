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
    assert {view.name for view in window.overview.tiles.values()} == NIST_DEVICES
    assert window.broker_label.text() == f"Kafka: connected to {kafka_broker.bootstrap}"

    qtbot.waitUntil(lambda: any(a.native_code == "791" for a in window.alarm_pages.alarms.values()), timeout=120_000)
    # It popped up: alone ("Mazak03: FAULT 791"), as a line of a summary of the same update, or
    # within a flood summary (the whole plant's alarms arrive at once when the chain starts,
    # and noise control folds them into one pop-up).
    qtbot.waitUntil(lambda: bool(notifications), timeout=30_000)
    assert any(("Mazak03: FAULT 791" in t and "MUST INPUT CUTTING SPEED" in m)
               or "Mazak03: FAULT 791: MUST INPUT CUTTING SPEED" in m or t.startswith("Alarm flood:")
               for t, m in notifications), notifications
    assert not window.notifier.uses_tray and window.banner.isVisible()
    rows = window.model.journal.alarms()
    fault = next(a for a in rows if a.native_code == "791")
    assert fault.device_name == "Mazak03" and fault.alarm_id.startswith("mtc_adapter004/")

    # The detail of the first machine with a spindle plots its spindle speed.
    from desktop.ui.views import first_spindle_machine

    qtbot.waitUntil(lambda: first_spindle_machine(window) is not None, timeout=60_000)
    detail = window.open_detail(first_spindle_machine(window))
    qtbot.waitUntil(lambda: any(detail.plot.points.get(pen, 0) > 0 for pen in detail.pens), timeout=120_000)
    item = window.state.data_item(detail.device_uuid, detail.pens[0])
    assert item["type"] == "ROTARY_VELOCITY"

    hurcos = [v for v in window.overview.tiles.values() if v.name.startswith("Hurco")]
    assert {v.status for v in hurcos} <= {MachineStatus.UNAVAILABLE, MachineStatus.OFFLINE}
    assert window.state.error_count == 0, list(window.state.errors)


def test_window_started_later_reads_the_last_ten_minutes_and_marks_them_as_history(make_window, qtbot, kafka_broker,
                                                                                   topic_prefix):
    """Records written before the window existed: those of the last 10 minutes arrive (marked
    as history, so cleared alarms do not pop up), older ones do not; live ones follow."""
    import time

    import recorded_nist as testing
    from kafka_records import create_topics, device_messages, mazak03_observations, observation_messages, produce

    client = {"bootstrap.servers": kafka_broker.bootstrap}
    create_topics(client, topic_prefix)
    devices = testing.load_devices()
    day = mazak03_observations(devices, last_line=3000)
    old, recent, live = day[:800], day[800:2000], day[2000:]
    now_ms = int(time.time() * 1000)
    # Kafka timestamps decide the history window: 20 minutes ago is outside it, 5 minutes inside.
    produce(client, device_messages(devices, topic_prefix, now_ms - 20 * 60_000)
            + observation_messages(old, topic_prefix, now_ms - 20 * 60_000)
            + observation_messages(recent, topic_prefix, now_ms - 5 * 60_000))

    window = make_window(remote_settings(kafka_broker, topic_prefix))
    assert window.history_seconds == 600
    batches = []
    window.batch_observers.append(batches.append)
    window.show()
    with qtbot.waitSignal(window.first_observations_received, timeout=60_000):
        window.start()

    def sequences(history: bool | None = None) -> list[int]:
        return [o["sequence"] for b in batches for o in b.observations if history is None or b.catching_up == history]

    qtbot.waitUntil(lambda: len(sequences()) >= len(recent), timeout=60_000)
    # Devices are compacted state: all of them, however old.
    qtbot.waitUntil(lambda: len(window.overview.tiles) == len(devices), timeout=30_000)
    produce(client, observation_messages(live, topic_prefix))
    qtbot.waitUntil(lambda: len(sequences()) >= len(recent) + len(live), timeout=60_000)

    assert sequences() == [o["sequence"] for o in recent + live], "not exactly the last 10 minutes and the live data"
    assert sequences(history=True) == [o["sequence"] for o in recent], "history not marked as catching up"
    assert sequences(history=False) == [o["sequence"] for o in live]
