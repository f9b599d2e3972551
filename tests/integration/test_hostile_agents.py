"""The producer against agents that misbehave: it stays up, bounded in memory, says clearly what
is wrong (in its log and in `mtconnect.agent-status`), loses nothing it could read and
records exactly what it could not.

Each test runs the real `python -m producer run` against a real HTTP server
(`tests/hostile_agent.py`) that serves the real replay agent's documents, changed in one way,
and reads what landed in the real broker up to the end offsets.
"""
from __future__ import annotations

import socket
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from hostile_agent import HostileAgent
from producer import wire
from producer.replay import ReplayAgent
from producer.topics import read_to_end
from producer_process import ProducerProcess

# The replay agent serves a fixed set of observations quickly and then stays quiet.
REPLAYED = 400


@pytest.fixture
def replay():
    agent = ReplayAgent(speed="max", limit=REPLAYED, start_time="20:29:45").start()
    deadline = time.monotonic() + 30
    while agent.playing and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def producer_process(tmp_path, request):
    process = ProducerProcess(tmp_path / "producer.log")
    try:
        yield process
    finally:
        process.cleanup()
        print(process.tail(80))  # pytest shows it when the test failed


def _report(case: str, process: ProducerProcess, message: str, landed: str) -> None:
    """One line per case for the record of hostile inputs (shown with `pytest -s`)."""
    print(f"\nHOSTILE | {case} | stayed up | peak RSS {process.peak_rss_mb:.0f} MB | {message.strip()[:220]} | {landed}")


def _config(tmp_path, **values) -> "object":
    path = tmp_path / "producer.toml"
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in values.items()))
    return path


def _topic(kafka_broker, prefix: str, base: str) -> list:
    return [m for m in read_to_end({"bootstrap.servers": kafka_broker.bootstrap}, wire.topic_name(base, prefix), 60)]


def _values(kafka_broker, prefix: str, base: str) -> list:
    return [wire.decode(m.value()) for m in _topic(kafka_broker, prefix, base)]


def _statuses(kafka_broker, prefix: str, agent_url: str) -> list[dict]:
    return [value for value in _values(kafka_broker, prefix, wire.AGENT_STATUS) if value and value["agent"] == agent_url]


def _seed_checkpoint(kafka_broker, prefix: str, agent_url: str, instance_id: int, next_sequence: int) -> None:
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "acks": "all"})
    producer.produce(wire.topic_name(wire.CHECKPOINTS, prefix), key=wire.agent_key(agent_url),
                     value=wire.encode(wire.checkpoint_value(agent_url, instance_id, next_sequence)))
    assert producer.flush(30) == 0


def _wait_for_checkpoint(kafka_broker, prefix: str, agent_url: str, next_sequence: int, process: ProducerProcess,
                         timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    latest = None
    while time.monotonic() < deadline:
        process.sample_rss()
        for value in _values(kafka_broker, prefix, wire.CHECKPOINTS):
            if value and value["agent"] == agent_url:
                latest = value
        if latest and latest["next_sequence"] >= next_sequence:
            return latest
        assert process.alive, f"the producer exited\n{process.tail()}"
        time.sleep(0.5)
    raise AssertionError(f"the checkpoint did not reach {next_sequence} within {timeout:.0f} s (last {latest})\n"
                         f"{process.tail()}")


def _follow_everything(kafka_broker, prefix: str, replay: ReplayAgent, agent: HostileAgent,
                       process: ProducerProcess) -> dict:
    """Run the producer from sequence 1 until it has everything the replay agent holds, then stop it."""
    _seed_checkpoint(kafka_broker, prefix, agent.url, replay.instance_id, 1)
    process.start([agent.url], kafka_broker.bootstrap, prefix)
    checkpoint = _wait_for_checkpoint(kafka_broker, prefix, agent.url, replay.next_sequence, process)
    code, _ = process.terminate()
    assert code == 0
    return checkpoint


def _sequences(kafka_broker, prefix: str, agent_url: str) -> list[int]:
    return [o["sequence"] for o in _values(kafka_broker, prefix, wire.OBSERVATIONS) if o["agent"] == agent_url]


# ----------------------------------------------------------------------------- bounded memory


@pytest.mark.parametrize("mode, chunked", [("probe_huge", False), ("probe_huge", True), ("probe_gzip_bomb", False)])
def test_a_huge_probe_is_refused_while_it_is_read(kafka_broker, topic_prefix, replay, producer_process, mode, chunked):
    # 500 MB of plain XML (declared, or only seen while read), or ~5 MB of gzip that inflates to 1 GiB.
    size = 500 * 1024 * 1024 if mode == "probe_huge" else 1024 * 1024 * 1024
    with HostileAgent(replay.url, mode, size=size, chunked=chunked) as agent:
        if mode == "probe_gzip_bomb":
            agent.gzip_bomb()  # made before the producer asks, so its first answer is the bomb itself
        producer_process.start([agent.url], kafka_broker.bootstrap, topic_prefix)
        lines = producer_process.wait_for_log(r"event=agent_problem .*byte limit", 120)
        statuses = []
        deadline = time.monotonic() + 30
        while not statuses and time.monotonic() < deadline:
            statuses = _statuses(kafka_broker, topic_prefix, agent.url)
        peak = producer_process.peak_rss_mb
        assert producer_process.alive, "the producer must keep running and retrying"
        code, _ = producer_process.terminate()
    _report(f"{mode} ({size >> 20} MB{', chunked' if chunked else ''})", producer_process, lines[0].split("event=agent_problem ", 1)[1],
            "nothing; agent-status: unreachable")
    assert code == 0
    assert agent.url in lines[0] and "67108864 byte limit" in lines[0]
    assert peak < 400, f"peak RSS {peak:.0f} MB: the body was not bounded while reading"
    assert [s["state"] for s in statuses] == ["unreachable"]
    assert "byte limit" in statuses[0]["last_error"]
    assert _values(kafka_broker, topic_prefix, wire.DEVICES) == [], "nothing was published from the refused probe"


# ----------------------------------------------------------------------------- deadlines


def test_an_agent_trickling_its_probe_hits_the_request_deadline(kafka_broker, topic_prefix, replay, producer_process,
                                                                tmp_path):
    with HostileAgent(replay.url, "probe_trickle", every_s=2.0) as agent:
        config = _config(tmp_path, http_timeout_s=5.0)
        producer_process.start([agent.url], kafka_broker.bootstrap, topic_prefix, config=config)
        lines = producer_process.wait_for_log(r"event=agent_problem .*no complete answer within 5 s", 60)
        assert agent.url in lines[0]
        statuses = _statuses(kafka_broker, topic_prefix, agent.url)
        code, took = producer_process.terminate(timeout=30)
    assert code == 0 and took < 20, f"SIGTERM took {took:.1f} s"
    assert statuses and statuses[-1]["state"] == "unreachable"
    assert "no complete answer within 5 s" in statuses[-1]["last_error"]
    _report("probe trickling 1 byte / 2 s", producer_process, lines[0].split("error=", 1)[1],
            f"nothing; agent-status: unreachable; SIGTERM took {took:.1f} s")


@pytest.mark.parametrize("mode", ["stream_trickle", "stream_no_boundary"])
def test_a_stalled_stream_is_reconnected_and_says_why(kafka_broker, topic_prefix, replay, producer_process, tmp_path,
                                                     mode):
    with HostileAgent(replay.url, mode, every_s=2.0) as agent:
        config = _config(tmp_path, stream_idle_s=4.0, count=400)
        _seed_checkpoint(kafka_broker, topic_prefix, agent.url, replay.instance_id, 1)
        producer_process.start([agent.url], kafka_broker.bootstrap, topic_prefix, config=config)
        lines = producer_process.wait_for_log(r"event=agent_problem .*no part or heartbeat for 4 s", 60, count=2)
        # Each connection delivers its first part before it stalls: the data still comes through.
        _wait_for_checkpoint(kafka_broker, topic_prefix, agent.url, replay.next_sequence, producer_process)
        statuses = _statuses(kafka_broker, topic_prefix, agent.url)
        code, took = producer_process.terminate(timeout=30)
    assert code == 0 and took < 20
    assert agent.url in lines[0]
    assert agent.requests["sample"] >= 3, "the follower reconnected after each stall"
    assert any(s["state"] == "unreachable" and "no part or heartbeat" in s["last_error"] for s in statuses)
    sequences = _sequences(kafka_broker, topic_prefix, agent.url)
    assert sorted(sequences) == list(range(1, replay.next_sequence)), "every observation exactly once"
    _report(mode, producer_process, lines[0].split("error=", 1)[1],
            f"all {len(sequences)} observations once (over {agent.requests['sample']} connections)")


# ----------------------------------------------------------------------------- one bad observation


@pytest.mark.parametrize("mode, reason", [
    ("value_huge", "more than the 1000000 bytes a Kafka record may hold"),
    ("text_huge", "Text node too long"),  # libxml2's words
    ("value_invalid_utf8", "Invalid bytes in character encoding"),
])
def test_one_bad_observation_becomes_one_exact_gap_and_the_rest_flows(kafka_broker, topic_prefix, replay,
                                                                       producer_process, mode, reason):
    bad = 150
    with HostileAgent(replay.url, mode, sequence=bad) as agent:
        _follow_everything(kafka_broker, topic_prefix, replay, agent, producer_process)
    sequences = _sequences(kafka_broker, topic_prefix, agent.url)
    expected = [s for s in range(1, replay.next_sequence) if s != bad]
    assert sorted(sequences) == expected, "everything but the bad observation, each once"
    gaps = [g for g in _values(kafka_broker, topic_prefix, wire.GAPS) if g["agent"] == agent.url]
    assert len(gaps) == 1, gaps
    gap = gaps[0]
    assert (gap["reason"], gap["first_missing"], gap["last_missing"], gap["instance_id"]) == (
        "REJECTED", bad, bad, replay.instance_id)
    assert reason in gap["detail"], gap["detail"]
    rejected = producer_process.lines(r"event=observation_rejected")
    assert rejected and f"{bad}" in rejected[0]
    _report(f"{mode} at sequence {bad}", producer_process, rejected[0].split("event=", 1)[1],
            f"{len(sequences)} observations once + 1 REJECTED gap [{bad},{bad}]")


def test_duplicate_sequences_in_a_part_are_published_once(kafka_broker, topic_prefix, replay, producer_process):
    with HostileAgent(replay.url, "duplicates") as agent:
        _follow_everything(kafka_broker, topic_prefix, replay, agent, producer_process)
    sequences = _sequences(kafka_broker, topic_prefix, agent.url)
    assert sorted(sequences) == list(range(1, replay.next_sequence))
    (line, *_) = producer_process.lines(r"event=duplicate_sequences dropped=\d+")
    _report("every element twice in every part", producer_process, line.split("event=", 1)[1],
            f"{len(sequences)} observations, each once")


# ----------------------------------------------------------------------------- the device model


@pytest.mark.parametrize("devices_topic", ["created by the producer", "created before with Kafka's defaults"])
def test_a_device_model_over_a_megabyte_is_published(kafka_broker, topic_prefix, replay, producer_process,
                                                     devices_topic):
    if devices_topic != "created by the producer":
        topic = wire.topic_name(wire.DEVICES, topic_prefix)
        admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
        admin.create_topics([NewTopic(topic, 3, 1, config={"cleanup.policy": "compact"})])[topic].result(30)
    with HostileAgent(replay.url, "probe_model_huge", items=12000) as agent:
        _follow_everything(kafka_broker, topic_prefix, replay, agent, producer_process)
    records = _topic(kafka_broker, topic_prefix, wire.DEVICES)
    biggest = max(records, key=lambda m: len(m.value()))
    device = wire.decode(biggest.value())
    assert len(biggest.value()) > 1024 * 1024
    assert sum(1 for item in device["data_items"] if item["id"].startswith("extra_")) == 12000
    assert len(records) == 8, "each of the eight device models once"
    if devices_topic != "created by the producer":
        assert producer_process.lines(r"event=topic_limit_raised .*max.message.bytes=16777216")
    _report(f"device model with 12,000 extra items, topic {devices_topic}", producer_process,
            "(no error)", f"8 device records, the largest {len(biggest.value()):,} bytes; observations flow")


# ----------------------------------------------------------------------------- instance and retries


def test_a_probe_disagreeing_with_the_streams_on_instance_id_is_only_logged(kafka_broker, topic_prefix, replay,
                                                                           producer_process):
    with HostileAgent(replay.url, "probe_instance", instance=1) as agent:
        checkpoint = _follow_everything(kafka_broker, topic_prefix, replay, agent, producer_process)
    assert checkpoint["instance_id"] == replay.instance_id
    assert [g for g in _values(kafka_broker, topic_prefix, wire.GAPS) if g["agent"] == agent.url] == []
    assert sorted(_sequences(kafka_broker, topic_prefix, agent.url)) == list(range(1, replay.next_sequence))
    (line,) = producer_process.lines(r"event=probe_instance_disagrees")
    assert f"probe_instance=1 streams_instance={replay.instance_id}" in line
    _report("probe says instanceId 1, streams another", producer_process, line.split("event=", 1)[1],
            "all observations once, no gap")


def test_a_failing_stream_backs_off_and_publishes_the_model_once(kafka_broker, topic_prefix, replay, producer_process):
    with HostileAgent(replay.url, "stream_fails") as agent:
        _seed_checkpoint(kafka_broker, topic_prefix, agent.url, replay.instance_id, 1)
        producer_process.start([agent.url], kafka_broker.bootstrap, topic_prefix)
        producer_process.wait_for_log(r"event=agent_problem", 60)
        started = time.monotonic()
        before = agent.requests["probe"]
        time.sleep(20)  # the behaviour under test is what happens over time
        probes = agent.requests["probe"] - before
        elapsed = time.monotonic() - started
        code, _ = producer_process.terminate()
    assert code == 0
    _report("stream answers HTTP 500 after a good probe", producer_process,
            producer_process.lines(r"event=agent_problem")[0].split("error=", 1)[1],
            f"{probes} probes in {elapsed:.0f} s; 8 device records once; 1 agent-status record")
    # Backoff doubling from 0.5 s gives about five attempts in 20 s; without it, ~40.
    assert probes <= 10, f"{probes} probes in {elapsed:.0f} s: the backoff reset after every probe"
    assert len(_topic(kafka_broker, topic_prefix, wire.DEVICES)) == 8, "the unchanged model is published once"
    statuses = _statuses(kafka_broker, topic_prefix, agent.url)
    assert [s["state"] for s in statuses] == ["unreachable"], statuses
    assert "HTTP 500" in statuses[0]["last_error"]


def test_agent_status_is_published_once_per_change(kafka_broker, topic_prefix, producer_process):
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    producer_process.start([url], kafka_broker.bootstrap, topic_prefix)
    producer_process.wait_for_log(r"event=agent_problem", 60, count=4)  # four failed attempts
    with ReplayAgent(port=port, speed="max", limit=50) as agent:
        assert agent.url == url
        producer_process.wait_for_log(r"event=agent_status state=connected", 60)
        code, _ = producer_process.terminate()
    assert code == 0
    statuses = _statuses(kafka_broker, topic_prefix, url)
    assert [s["state"] for s in statuses] == ["unreachable", "connected"], statuses
    assert "ConnectionError: Connection refused" in statuses[0]["last_error"] and statuses[1]["last_error"] is None
    attempts = len(producer_process.lines(r"event=agent_problem"))
    _report("agent down, then up", producer_process, statuses[0]["last_error"],
            f"{attempts} failed attempts -> agent-status records: unreachable, connected")


# ----------------------------------------------------------------------------- redirects


def test_redirects_are_followed_only_within_the_agents_origin(kafka_broker, topic_prefix, replay, producer_process):
    with HostileAgent(replay.url, "redirect_other_origin", port=replay.port) as agent:
        producer_process.start([agent.url], kafka_broker.bootstrap, topic_prefix)
        (line, *_) = producer_process.wait_for_log(r"event=agent_problem .*another origin", 60)
        code, _ = producer_process.terminate()
    assert code == 0
    assert f"redirects to http://127.0.0.1:{replay.port}/probe" in line
    assert _values(kafka_broker, topic_prefix, wire.DEVICES) == []
    _report("probe redirects to another port", producer_process, line.split("error=", 1)[1], "nothing")


def test_a_redirect_within_the_agents_origin_is_followed(kafka_broker, topic_prefix, replay, producer_process):
    with HostileAgent(replay.url, "redirect_same_origin") as agent:
        _follow_everything(kafka_broker, topic_prefix, replay, agent, producer_process)
    assert agent.requests["same/probe"] >= 1
    assert len(_topic(kafka_broker, topic_prefix, wire.DEVICES)) == 8
