"""The machine detail: history loaded from Kafka by time is exactly what a direct read of
that window finds, and the view goes on live without a seam (real broker, session fixture).

The recorded Mazak03 day is written with Kafka timestamps spread over the last two hours
(Mazak01 records interleaved, so the machine has to be picked out); the direct read is a
plain consumer over the whole topic, filtered by key and timestamp, decoded with `json`."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

import recorded_nist as testing
from desktop.core.batch import parse_timestamp
from desktop.core.feed import FeedConfig
from desktop.core.history import load_history
from desktop.core.machines import MachineStatus
from desktop.core.settings import Settings
from kafka_records import Message, create_topics, device_messages, produce
from producer import wire
from producer.topics import read_to_end

pytestmark = pytest.mark.integration

MAZAK03 = "mtc_adapter004"
SPAN = 2 * 3600.0


@pytest.fixture(scope="module")
def devices():
    return testing.load_devices()


def written_day(kafka_broker, prefix: str, devices, end: float) -> list[tuple[int, dict]]:
    """Mazak03's day and the first part of Mazak01's, interleaved, timestamps over [end - SPAN, end]."""
    mazak03 = [o for _, o in testing.shdr_observations(testing.nist_shdr("Mazak03-20161116-20161117.txt"),
                                                       testing.device_named(devices, "Mazak03"))]
    mazak01 = [o for _, o in testing.shdr_observations(testing.nist_shdr("Mazak01-20171030-20171031.txt"),
                                                       testing.device_named(devices, "Mazak01"), 1, 3000)]
    mixed = []
    for index, observation in enumerate(mazak03):
        mixed.append(observation)
        if index < len(mazak01):
            mixed.append(mazak01[index])
    step = SPAN / len(mixed)
    stamped = [(int((end - SPAN + index * step) * 1000), o) for index, o in enumerate(mixed)]
    config = {"bootstrap.servers": kafka_broker.bootstrap}
    create_topics(config, prefix)
    topic = wire.topic_name(wire.OBSERVATIONS, prefix)
    produce(config, device_messages(devices, prefix))
    produce(config, [Message(topic, wire.observation_key(o), wire.encode(o), stamp) for stamp, o in stamped])
    return stamped


def direct_read(kafka_broker, prefix: str, device_uuid: str, start_ms: int) -> dict[str, list[tuple[float, float]]]:
    """Every numeric sample of the machine published at or after `start_ms`, by data item."""
    points: dict[str, list[tuple[float, float]]] = {}
    for message in read_to_end({"bootstrap.servers": kafka_broker.bootstrap}, wire.topic_name(wire.OBSERVATIONS, prefix)):
        if message.key() != device_uuid.encode() or message.timestamp()[1] < start_ms:
            continue
        value = json.loads(message.value())
        if value["category"] != "SAMPLE" or isinstance(value["value"], str) or value["value"] is None:
            continue
        points.setdefault(value["data_item_id"], []).append((parse_timestamp(value["timestamp"]), float(value["value"])))
    for series in points.values():
        series.sort()
    return points


def test_history_by_time_is_exactly_a_direct_read_of_that_window(kafka_broker, topic_prefix, devices):
    end = time.time()
    stamped = written_day(kafka_broker, topic_prefix, devices, end)
    start = end - SPAN / 2
    config = FeedConfig(bootstrap_servers=kafka_broker.bootstrap, topic_prefix=topic_prefix)
    fractions: list[float] = []
    result = load_history(config, MAZAK03, start, progress=fractions.append)
    expected = direct_read(kafka_broker, topic_prefix, MAZAK03, int(start * 1000))
    assert expected and set(result.samples) == set(expected)
    for item, points in expected.items():
        series = result.samples[item]
        assert np.array_equal(series.times, [t for t, _ in points]), item
        assert np.array_equal(series.values, [v for _, v in points]), item
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    # Only this machine's records were decoded: events and conditions of Mazak03 only.
    assert result.log and {o["device_uuid"] for o in result.log} == {MAZAK03}
    wanted = sum(1 for stamp, o in stamped if o["device_uuid"] == MAZAK03 and stamp >= int(start * 1000))
    assert result.observations == wanted
    # The state bands are Kafka time, within the window, and include the recorded running.
    assert result.timeline and all(start - 1 <= at <= end + 1 for at, _ in result.timeline)
    assert MachineStatus.RUNNING in {status for _, status in result.timeline}


def test_the_detail_view_loads_history_then_continues_live_without_a_seam(make_window, qtbot, kafka_broker, topic_prefix,
                                                                          devices):
    end = time.time()
    stamped = written_day(kafka_broker, topic_prefix, devices, end)
    window = make_window(Settings(mode="remote", bootstrap_servers=kafka_broker.bootstrap, topic_prefix=topic_prefix),
                         history_seconds=300.0)
    window.show()
    with qtbot.waitSignal(window.first_observations_received, timeout=60_000):
        window.start()
    qtbot.waitUntil(lambda: MAZAK03 in window.state.machines and bool(window.state.sample_items(MAZAK03)), timeout=30_000)
    detail = window.open_detail(MAZAK03)
    with qtbot.waitSignal(detail.history_finished, timeout=60_000) as finished:
        pass
    assert finished.args == [True], detail.history_error
    assert detail.look_back == 3600.0
    srpm = "Mazak03-S_2"
    assert srpm in detail.pens, "spindle speed is a default pen"
    start_ms = int(detail._requested_start * 1000)
    expected = direct_read(kafka_broker, topic_prefix, MAZAK03, start_ms)[srpm]
    qtbot.waitUntil(lambda: len(detail.series(srpm)[0]) == len(expected), timeout=10_000)
    times, values = detail.series(srpm)
    assert np.array_equal(times, [t for t, _ in expected]) and np.array_equal(values, [v for _, v in expected])

    # Live: new spindle speeds after the loaded window join the same curve, once each.
    last = next(o for _, o in reversed(stamped) if o["data_item_id"] == srpm)
    newer = [dict(last, sequence=last["sequence"] + 1_000_000 + i,
                  timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(parse_timestamp(last["timestamp"]) + 10 + i)) + "Z",
                  value=1234.0 + i) for i in range(5)]
    topic = wire.topic_name(wire.OBSERVATIONS, topic_prefix)
    produce({"bootstrap.servers": kafka_broker.bootstrap}, [Message(topic, wire.observation_key(o), wire.encode(o)) for o in newer])
    qtbot.waitUntil(lambda: len(detail.series(srpm)[0]) == len(expected) + 5, timeout=30_000)
    times, values = detail.series(srpm)
    assert list(values[-5:]) == [1234.0 + i for i in range(5)]
    assert np.all(np.diff(times) >= 0), "history and live data overlap or go back in time"
    expected_after = direct_read(kafka_broker, topic_prefix, MAZAK03, start_ms)[srpm]
    assert np.array_equal(times, [t for t, _ in expected_after]) and np.array_equal(values, [v for _, v in expected_after])

    # The plot holds the last value: its curve reaches past the last sample (drawn by the
    # window's timer within MAX_PLOT_DELAY of arriving).
    curve = detail.plot.curves[srpm]

    def reaches_the_last_sample() -> bool:
        x, y = curve.getData()
        return x is not None and len(x) > 0 and x[-1] >= times[-1] and y[-1] == values[-1]

    qtbot.waitUntil(reaches_the_last_sample, timeout=5_000)
    assert detail.strip.bands, "the state timeline shows bands"
    assert "running" in detail.utilisation_label.text()

    # Utilisation is over the hour shown: a shift that began three hours ago says so, one
    # that began half an hour ago is whole.
    from datetime import datetime, timedelta

    detail.shifts = ((datetime.now() - timedelta(hours=3)).strftime("%H:%M"),)
    detail._refresh_strip(time.time())
    assert "% running in the last 1 h 00 min" in detail.utilisation_label.text()
    assert "Choose 8 h or 24 h" in detail.utilisation_label.toolTip()
    detail.shifts = ((datetime.now() - timedelta(minutes=30)).strftime("%H:%M"),)
    detail._refresh_strip(time.time())
    current = detail.utilisation_label.text().split("·")[-1]
    assert "% running" in current and "in the last" not in current


def test_a_single_sample_is_drawn_and_held_to_now(make_window, qtbot, devices):
    window = make_window()
    window.show()
    device = testing.device_named(devices, "Mazak03")
    first = [o for _, o in testing.shdr_observations(testing.nist_shdr("Mazak03-20161116-20161117.txt"), device, 1, 200)]
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 30)) + "Z"
    srpm = next(o for o in first if o["name"] == "Srpm")
    window.ingest(testing.batch_of(devices, [dict(o, timestamp=stamp) for o in first if o["name"] != "Srpm"]
                                   + [dict(srpm, timestamp=stamp, value=464.0)]))
    qtbot.waitUntil(lambda: MAZAK03 in window.state.machines)
    detail = window.open_detail(MAZAK03)
    qtbot.waitUntil(lambda: detail.plot.points.get("Mazak03-S_2") == 1, timeout=10_000)
    window.refresh()
    x, y = detail.plot.curves["Mazak03-S_2"].getData()
    # One sample: a step from its time to now, not an empty plot.
    assert len(y) == 1 and y[0] == 464.0
    assert x[0] == pytest.approx(now - 30, abs=1) and x[-1] >= now - 1
    marks = detail.plot.curves["Mazak03-S_2"]._marks.getData()
    assert len(marks[0]) == 1
