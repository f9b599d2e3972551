"""Hostile and broken records in the real topics, next to the recorded NIST data: the window
shows every real machine and nothing else, counts what it skipped, and logs each skipped
record with its topic, partition and offset - without a flood of log lines for a flood of
bad records. Real broker (session fixture), topics created as the producer creates them."""
from __future__ import annotations

import json
import logging

import pytest

import recorded_nist as testing
from desktop.core.settings import Settings
from kafka_records import (Message, create_topics, device_messages, hurco_unavailable, mazak03_observations,
                           observation_messages, produce)
from producer import wire

pytestmark = pytest.mark.integration

FEED_LOGGER = "desktop.core.feed"


def hostile_messages(prefix: str, real_observation: dict, real_device: dict) -> list[Message]:
    """Records that once broke the desktop, and their relatives. None of them is valid."""
    observations = wire.topic_name(wire.OBSERVATIONS, prefix)
    devices = wire.topic_name(wire.DEVICES, prefix)
    statuses = wire.topic_name(wire.AGENT_STATUS, prefix)
    deep = 200_000

    def observation(**changes) -> bytes:
        return wire.encode({**real_observation, **changes})

    return [
        # Once made every refresh raise "TypeError: unhashable type: 'dict'".
        Message(devices, b"x", b'{"device_uuid":"x","agent":{"x":1}}'),
        # Once raised RecursionError and dropped whole batches (7 of 8 machines vanished).
        Message(observations, b"deep", b"[" * deep + b"]" * deep),
        Message(devices, b"deep", b"[" * deep + b"]" * deep),
        # Nested just below the parser's limit, inside a field that is read.
        Message(observations, b"phantom-2", observation(device_uuid="phantom-2", value=[[[[[[[[1.0]]]]]]]])),
        Message(observations, b"phantom-3", b"\xff\xfe not utf-8"),
        Message(observations, b"phantom-4", b"{not json"),
        Message(observations, b"phantom-5", b"42"),
        Message(observations, b"phantom-6", None),
        Message(observations, b"phantom-7", observation(device_uuid="phantom-7", sequence="12")),
        Message(observations, b"phantom-8", observation(device_uuid="phantom-8", instance_id=True)),
        Message(observations, b"phantom-9", observation(device_uuid="phantom-9", category="ALARM")),
        Message(observations, b"phantom-10", observation(device_uuid="phantom-10", timestamp="yesterday")),
        Message(observations, b"", observation(device_uuid="")),
        Message(observations, b"phantom-11",
                json.dumps({**real_observation, "device_uuid": "phantom-11", "value": float("inf")}).encode()),
        Message(observations, b"phantom-12", b'{"device_uuid":"phantom-12","value":NaN}'),
        Message(devices, b"phantom-13", wire.encode({**real_device, "device_uuid": "phantom-13", "data_items": "all"})),
        Message(devices, b"phantom-14", b'{"device_uuid":"phantom-14","device_name":"\\ud800","agent":"a","data_items":[]}'),
        Message(statuses, b"http://agent", wire.encode({"agent": "http://agent", "state": "exploded", "since": "now"})),
    ]


def test_bad_records_are_skipped_counted_and_logged_while_every_real_machine_shows(
        make_window, qtbot, kafka_broker, topic_prefix, caplog):
    caplog.set_level(logging.WARNING, logger=FEED_LOGGER)
    client = {"bootstrap.servers": kafka_broker.bootstrap}
    create_topics(client, topic_prefix)
    devices = testing.load_devices()
    mazak03 = mazak03_observations(devices, last_line=3000)
    first_sample = next(o for o in mazak03 if o["category"] == "SAMPLE" and isinstance(o["value"], float))
    hostile = hostile_messages(topic_prefix, first_sample, devices[0])
    real_devices = device_messages(devices, topic_prefix)
    real_observations = observation_messages(hurco_unavailable(devices) + mazak03, topic_prefix)
    # Garbage first, between and after the real records.
    half = len(real_observations) // 2
    messages = hostile[:6] + real_devices[:4] + real_observations[:half] + hostile[6:12] + real_devices[4:] \
        + real_observations[half:] + hostile[12:]
    landed = produce(client, messages)
    bad_places = [where for where, message in zip(landed, messages) if any(message is h for h in hostile)]
    assert len(bad_places) == len(hostile)

    window = make_window(Settings(mode="remote", bootstrap_servers=kafka_broker.bootstrap, topic_prefix=topic_prefix))
    window.show()
    window.start()
    qtbot.waitUntil(lambda: window.state.observation_records == len(real_observations), timeout=60_000)
    qtbot.waitUntil(lambda: window.state.skipped_count == len(hostile), timeout=30_000)

    # Every real machine, and nothing else: no phantom tile from any bad record.
    qtbot.waitUntil(lambda: len(window.overview.tiles) == len(devices), timeout=10_000)
    assert set(window.overview.tiles) == {d["device_uuid"] for d in devices}
    assert {v.name for v in window.overview.tiles.values()} == {d["device_name"] for d in devices}
    # The machine whose records surround the garbage is up to date with its last one.
    qtbot.waitUntil(lambda: window.state.machines["mtc_adapter004"].last_timestamp == mazak03[-1]["timestamp"])
    # The status bar catches up on its next redraw (the count may have been drawn part-way).
    qtbot.waitUntil(lambda: window.skipped_label.isVisible(), timeout=5_000)
    qtbot.waitUntil(lambda: window.skipped_label.text() == f"{len(hostile)} invalid records skipped", timeout=5_000)

    # One log line per skipped record, naming where it is.
    lines = [r.getMessage() for r in caplog.records if r.name == FEED_LOGGER]
    for place in bad_places:
        naming = [line for line in lines if place.where + ":" in line]
        assert len(naming) == 1, (place.where, lines)

    # A flood: counted exactly, but the log stays short.
    flood = [Message(wire.topic_name(wire.OBSERVATIONS, topic_prefix), b"flood", b'{"flood": %d}' % n)
             for n in range(3000)]
    produce(client, flood)
    qtbot.waitUntil(lambda: window.state.skipped_count == len(hostile) + len(flood), timeout=60_000)
    qtbot.waitUntil(lambda: window.skipped_label.text() == f"{len(hostile) + len(flood):,} invalid records skipped",
                    timeout=5_000)
    assert len(window.overview.tiles) == len(devices)
    with qtbot.waitSignal(window.shutdown_finished, timeout=30_000):
        window.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == FEED_LOGGER]
    assert len(lines) <= 25, f"{len(lines)} log lines for {len(hostile) + len(flood)} bad records"
    assert lines[-1].startswith(f"skipped {len(hostile) + len(flood) - 20} more invalid record(s) "
                                f"({len(hostile) + len(flood)} in all); latest at {wire.topic_name(wire.OBSERVATIONS, topic_prefix)} partition")
