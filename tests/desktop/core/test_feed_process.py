"""The Kafka feed in a process of its own: what crosses from it is what was written, it stops
when asked, a killed feed process is reported (never a silent stop), and a feed process never
outlives the window that started it. Real broker (session fixture), recorded NIST data."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import recorded_nist as testing
from desktop.core.batch import Record, build_batch, pack_batch, unpack_batch
from desktop.core.feed import CONNECTED, STOPPED, FeedConfig
from desktop.core.feed_process import FeedProcess
from kafka_records import create_topics, device_messages, mazak03_observations, observation_messages, produce
from producer import wire

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def devices():
    return testing.load_devices()


def test_a_batch_crosses_to_the_window_process_unchanged(devices):
    observations = mazak03_observations(devices, 1, 400)
    records = testing.records(devices, observations)
    # One undecodable record among them: skipped, and described as such on the other side too.
    bad = Record(wire.topic_name(wire.OBSERVATIONS, ""), 3, 77, b"k", b"{not json", 1_700_000_000_000)
    batch = build_batch([*records, bad])
    assert batch.skipped_count == 1 and batch.samples
    copy = unpack_batch(pack_batch(batch))
    assert copy.devices == batch.devices and copy.observations == batch.observations
    assert copy.skipped == batch.skipped and copy.skipped[0].describe().endswith("offset 77: " + batch.skipped[0].problem)
    assert (copy.record_count, copy.observation_records, copy.skipped_count) == \
        (batch.record_count, batch.observation_records, 1)
    assert dict(copy.seen) == dict(batch.seen) and dict(copy.partitions) == dict(batch.partitions)
    assert copy.samples.keys() == batch.samples.keys()
    for key, series in batch.samples.items():
        assert np.array_equal(copy.samples[key].times, series.times)
        assert np.array_equal(copy.samples[key].values, series.values)
        assert not copy.samples[key].values.flags.writeable  # as frozen as the original


class Collector:
    """Runs a FeedProcess on a thread; applies each batch the way the core does (then releases)."""

    def __init__(self, feed: FeedProcess) -> None:
        self.feed = feed
        self.observations: list[dict] = []
        self.states: list[str] = []
        self.failure: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_batch(self, batch) -> None:
        self.observations.extend(batch.observations)
        self.feed.gate.release()

    def _run(self) -> None:
        try:
            self.feed.run(self.stop, self._on_batch, lambda state, detail: self.states.append(state))
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.failure = exc

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.observations) < count and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.05)
        assert len(self.observations) >= count, (len(self.observations), self.failure)


def written_chain(kafka_broker, topic_prefix, devices, count: int) -> list[dict]:
    client = {"bootstrap.servers": kafka_broker.bootstrap}
    create_topics(client, topic_prefix)
    observations = mazak03_observations(devices, 1, count)
    produce(client, device_messages(devices, topic_prefix) + observation_messages(observations, topic_prefix))
    return observations


def reading(kafka_broker, topic_prefix, devices, count: int) -> tuple[list[dict], FeedProcess, Collector]:
    """Recorded records written, and a feed process that has read them all."""
    written = written_chain(kafka_broker, topic_prefix, devices, count)
    feed = FeedProcess(FeedConfig(kafka_broker.bootstrap, topic_prefix=topic_prefix))
    collector = Collector(feed)
    collector.thread.start()
    collector.wait_for(len(written))
    return written, feed, collector


def test_the_feed_process_delivers_every_record_written_and_stops_when_asked(kafka_broker, topic_prefix, devices):
    written, feed, collector = reading(kafka_broker, topic_prefix, devices, 3000)
    key = lambda o: (o["device_uuid"], o["data_item_id"], o["sequence"])  # noqa: E731
    # Every observation once, and each machine's in the order written (partitions interleave).
    assert sorted(map(key, collector.observations)) == sorted(map(key, written))
    for uuid in {o["device_uuid"] for o in written}:
        assert [o["sequence"] for o in collector.observations if o["device_uuid"] == uuid] == \
            [o["sequence"] for o in written if o["device_uuid"] == uuid]
    assert CONNECTED in collector.states
    collector.stop.set()
    collector.thread.join(20)
    assert not collector.thread.is_alive() and collector.failure is None
    assert collector.states[-1] == STOPPED
    assert feed.process.returncode == 0


def test_a_killed_feed_process_is_reported_with_its_exit_code(kafka_broker, topic_prefix, devices):
    _, feed, collector = reading(kafka_broker, topic_prefix, devices, 500)
    os.kill(feed.pid, signal.SIGKILL)
    collector.thread.join(20)
    assert not collector.thread.is_alive()
    assert isinstance(collector.failure, RuntimeError)
    assert str(collector.failure) == f"the Kafka feed process ended unexpectedly (exit code {-signal.SIGKILL})"
    assert collector.states[-1] == STOPPED


def test_bad_settings_end_the_feed_process_with_the_feeds_own_words(closed_port):
    feed = FeedProcess(FeedConfig(closed_port, kafka_properties={"no.such.property": "1"}))
    with pytest.raises(RuntimeError, match='invalid Kafka settings: .*No such configuration property: "no.such.property"'):
        feed.run(threading.Event(), lambda batch: None)
    assert feed.process.returncode == 1


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_feed_process_never_outlives_the_window_process_that_started_it(kafka_broker, topic_prefix, devices, tmp_path):
    written_chain(kafka_broker, topic_prefix, devices, 200)
    pid_file = tmp_path / "feed.pid"
    # A stand-in for the window's process: starts the feed process, says its pid, and is
    # then killed outright (no clean-up of its own runs).
    script = textwrap.dedent(f"""
        import sys, threading, time
        sys.path.insert(0, {ROOT!r})
        from desktop.core.feed import FeedConfig
        from desktop.core.feed_process import FeedProcess
        feed = FeedProcess(FeedConfig({kafka_broker.bootstrap!r}, topic_prefix={topic_prefix!r}))
        threading.Thread(target=feed.run, args=(threading.Event(), lambda batch: feed.gate.release()),
                         daemon=True).start()
        while feed.pid is None:
            time.sleep(0.05)
        open({str(pid_file)!r}, "w").write(str(feed.pid))
        time.sleep(600)
    """)
    window = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and window.poll() is None, "the feed process did not start"
            time.sleep(0.05)
        feed_pid = int(pid_file.read_text())
        time.sleep(2.0)  # reading by now
        assert _alive(feed_pid)
        window.kill()
        window.wait(10)
        deadline = time.monotonic() + 15
        while _alive(feed_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(feed_pid), "the feed process outlived the window's process by 15 s"
    finally:
        if window.poll() is None:
            window.kill()
            window.wait(10)
        if pid_file.exists() and pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
