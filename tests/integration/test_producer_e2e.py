"""The producer service against the real replay agent over HTTP and the real broker.

What a user relies on: every observation the agent serves arrives in Kafka once, in
sequence, with its values intact; the device models are published; the service stops
cleanly on SIGTERM.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import requests
from confluent_kafka import Consumer, KafkaError, Producer

from producer import wire
from producer.config import ServiceConfig
from producer.mtconnect.documents import parse_streams
from producer.replay import ReplayAgent
from producer.service import ProducerService


def read_topic(bootstrap: str, topic: str, idle_s: float = 3.0, limit_s: float = 60.0) -> list:
    """Every committed message of a topic, read until nothing new arrives for `idle_s`."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False, "isolation.level": "read_committed",
    })
    consumer.subscribe([topic])
    messages = []
    try:
        deadline = time.monotonic() + limit_s
        last_new = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_new < idle_s:
            batch = consumer.consume(num_messages=5000, timeout=0.3)
            for message in batch:
                error = message.error()
                if error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # not created yet: the service creates its topics when it starts
                assert error is None, error
                messages.append(message)
            if batch:
                last_new = time.monotonic()
    finally:
        consumer.close()
    return messages


@contextlib.contextmanager
def running_service(bootstrap: str, prefix: str, agents: list[str]):
    """The producer service on a thread for the `with` block; stopped and joined at its end."""
    service = ProducerService(ServiceConfig(agents=agents, bootstrap=bootstrap, topic_prefix=prefix))
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        yield service, runner
    finally:
        service.stop()
        runner.join(30)


def wait_for_messages(bootstrap: str, topic: str, timeout: float) -> list:
    """The committed messages of `topic` as soon as there are any (empty after `timeout`)."""
    messages = []
    deadline = time.monotonic() + timeout
    while not messages and time.monotonic() < deadline:
        messages = read_topic(bootstrap, topic, idle_s=1.0, limit_s=5)
    return messages


def _agent_sample(agent: ReplayAgent, start: int, end: int) -> list[dict]:
    observations = []
    cursor = start
    while cursor < end:
        response = requests.get(f"{agent.url}/sample", params={"from": cursor, "count": min(5000, end - cursor)}, timeout=10)
        document = parse_streams(response.content, agent.url)
        observations += document.observations
        cursor = document.header.next_sequence
    return observations


def _seed_checkpoint(bootstrap: str, prefix: str, agent: ReplayAgent, next_sequence: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(prefix + wire.CHECKPOINTS, key=wire.agent_key(agent.url),
                     value=wire.encode(wire.checkpoint_value(agent.url, agent.instance_id, next_sequence)))
    assert producer.flush(30) == 0


def test_every_served_observation_arrives_once_in_order(kafka_broker, topic_prefix):
    # Resuming from a checkpoint at sequence 1, the service must deliver everything the agent
    # holds, including the Mazak03 fault recorded at 20:29:56, whenever the service got going.
    with ReplayAgent(speed=100, start_time="20:29:30") as agent:
        _seed_checkpoint(kafka_broker.bootstrap, topic_prefix, agent, 1)
        with running_service(kafka_broker.bootstrap, topic_prefix, [agent.url]) as (service, runner):
            deadline = time.monotonic() + 60
            while service.published < 3000 and time.monotonic() < deadline:
                time.sleep(0.2)
        assert not runner.is_alive()
        assert service.published >= 3000

        checkpoints = read_topic(kafka_broker.bootstrap, topic_prefix + wire.CHECKPOINTS)
        final = wire.decode(checkpoints[-1].value())
        assert final["instance_id"] == agent.instance_id
        observations = [wire.decode(m.value()) for m in read_topic(kafka_broker.bootstrap, topic_prefix + wire.OBSERVATIONS)]
        served = _agent_sample(agent, 1, final["next_sequence"])

    sequences = [o["sequence"] for o in observations]
    assert len(sequences) == len(set(sequences)), "an observation was published twice"
    assert sorted(sequences) == list(range(1, final["next_sequence"])), "an observation is missing"
    # What arrived is what the agent served, value for value.
    by_sequence = {o["sequence"]: o for o in served}
    for observation in observations:
        original = by_sequence[observation["sequence"]]
        assert (observation["data_item_id"], observation["value"], observation["timestamp"]) == (
            original["data_item_id"], original["value"], original["timestamp"])
    # Per-device order holds inside each partition (keyed by device uuid).
    per_device: dict[str, list[int]] = {}
    for observation in observations:
        per_device.setdefault(observation["device_uuid"], []).append(observation["sequence"])
    assert all(seq == sorted(seq) for seq in per_device.values())
    # The Mazak03 fault recorded at 20:29:56 was replayed and arrived as a FAULT condition.
    faults = [o for o in observations if o["category"] == "CONDITION" and o["level"] == "FAULT"]
    assert any(o["device_name"] == "Mazak03" and o["native_code"] == "791" and o["value"] == "MUST INPUT CUTTING SPEED"
               for o in faults)


def test_device_models_and_agent_status_are_published(kafka_broker, topic_prefix):
    with ReplayAgent(speed=10) as agent:
        agent_url = agent.url
        with running_service(kafka_broker.bootstrap, topic_prefix, [agent.url]) as (service, _runner):
            deadline = time.monotonic() + 60
            while service.published == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
    devices = {m.key().decode(): wire.decode(m.value()) for m in read_topic(kafka_broker.bootstrap, topic_prefix + wire.DEVICES, idle_s=1.5)}
    assert sorted(d["device_name"] for d in devices.values()) == [
        "GFAgie01", "Hurco01", "Hurco02", "Hurco03", "Hurco04", "Hurco06", "Mazak01", "Mazak03"]
    assert devices["mtc_adapter004"]["device_name"] == "Mazak03"
    assert sum(len(d["data_items"]) for d in devices.values()) == 226
    status = [wire.decode(m.value()) for m in read_topic(kafka_broker.bootstrap, topic_prefix + wire.AGENT_STATUS, idle_s=1.5)]
    assert status and status[-1]["state"] == "connected" and status[-1]["agent"] == agent_url
    # Starting without a checkpoint, the service publishes /current first: the state of every
    # data item (UNAVAILABLE for the Hurco machines, which have no recording), then follows.
    observations = [wire.decode(m.value()) for m in read_topic(kafka_broker.bootstrap, topic_prefix + wire.OBSERVATIONS, idle_s=1.5)]
    assert {o["data_item_id"] for o in observations} >= {i["id"] for d in devices.values() for i in d["data_items"]}
    hurco = [o for o in observations if o["device_name"].startswith("Hurco")]
    assert hurco and all(o["value"] == "UNAVAILABLE" or o.get("level") == "UNAVAILABLE" for o in hurco)


def test_unreachable_agent_is_reported_and_retried(kafka_broker, topic_prefix):
    from producer.broker import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with running_service(kafka_broker.bootstrap, topic_prefix, [url]) as (_service, runner):
        status = wait_for_messages(kafka_broker.bootstrap, topic_prefix + wire.AGENT_STATUS, 30)
        assert status, "no agent-status message for an unreachable agent"
        value = wire.decode(status[-1].value())
        assert value["state"] == "unreachable" and url in value["last_error"]
        assert runner.is_alive(), "the service gave up instead of retrying"


def test_cli_service_stops_cleanly_on_sigterm(kafka_broker, topic_prefix):
    with ReplayAgent(speed=20) as agent:
        process = subprocess.Popen(
            [sys.executable, "-m", "producer", "run", "--agent", agent.url, "--bootstrap", kafka_broker.bootstrap,
             "--topic-prefix", topic_prefix],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            observations = []
            while not observations and time.monotonic() < deadline:
                observations = read_topic(kafka_broker.bootstrap, topic_prefix + wire.OBSERVATIONS, idle_s=0.5, limit_s=3)
            assert observations, "the producer CLI published nothing"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                _, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    assert process.returncode == 0, stderr[-2000:]
    assert "event=stopping signal=SIGTERM" in stderr


def test_cli_rejects_missing_agent_with_clear_message():
    completed = subprocess.run([sys.executable, "-m", "producer", "run", "--bootstrap", "127.0.0.1:9"],
                               capture_output=True, text=True, timeout=60, env={**os.environ, "MACHINE_MONITOR_AGENTS": ""})
    assert completed.returncode == 2
    assert "no agent configured" in completed.stderr


def test_one_service_follows_several_agents_each_with_its_own_cursor(kafka_broker, topic_prefix):
    # Two agents replaying different stretches of the NIST days; one of them resumes from a
    # checkpoint in the middle of its buffer, the other from its start. Each must arrive
    # complete from its own cursor, neither mixing into nor holding up the other.
    with ReplayAgent(speed="max", limit=3000, buffer_size=10_000) as first, \
            ReplayAgent(speed="max", limit=2000, buffer_size=10_000, start_time="20:29:45") as second:
        for agent in (first, second):
            while agent.playing:
                time.sleep(0.05)
        _seed_checkpoint(kafka_broker.bootstrap, topic_prefix, first, 1)
        _seed_checkpoint(kafka_broker.bootstrap, topic_prefix, second, 1001)
        first_url, second_url = first.url, second.url
        targets = {first_url: first.next_sequence, second_url: second.next_sequence}
        with running_service(kafka_broker.bootstrap, topic_prefix, [first_url, second_url]) as (service, runner):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(
                    f.checkpoint is not None and f.checkpoint.next_sequence >= targets[f.agent]
                    for f in service.followers if f.agent in targets) or len(service.followers) < 2:
                time.sleep(0.2)
        assert not runner.is_alive()
        instances = {first_url: first.instance_id, second_url: second.instance_id}

    observations = [wire.decode(m.value()) for m in read_topic(kafka_broker.bootstrap, topic_prefix + wire.OBSERVATIONS)]
    by_agent: dict[str, list[int]] = {}
    for observation in observations:
        assert observation["instance_id"] == instances[observation["agent"]]
        by_agent.setdefault(observation["agent"], []).append(observation["sequence"])
    assert sorted(by_agent[first_url]) == list(range(1, targets[first_url]))
    assert sorted(by_agent[second_url]) == list(range(1001, targets[second_url]))
    checkpoints = {m.key().decode(): wire.decode(m.value())["next_sequence"]
                   for m in read_topic(kafka_broker.bootstrap, topic_prefix + wire.CHECKPOINTS)}
    assert checkpoints == targets


def test_malformed_document_is_reported_with_its_position_and_the_service_recovers(kafka_broker, topic_prefix,
                                                                                  recorded_data):
    # An agent (here a minimal HTTP server) first answers `probe` with the NIST device file cut
    # off mid-element, then with the whole file. The service must name the agent and the
    # position of the damage, keep running, and publish the device model once it is whole.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    whole = (recorded_data / "nist-smstestbed" / "agent" / "Devices.xml").read_bytes()
    served = {"probe": whole[: len(whole) // 2]}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = served["probe"] if self.path.startswith("/probe") else b"<nothing/>"
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with running_service(kafka_broker.bootstrap, topic_prefix, [url]) as (_service, runner):
            status = wait_for_messages(kafka_broker.bootstrap, topic_prefix + wire.AGENT_STATUS, 30)
            assert status, "no agent-status message for an agent serving a broken document"
            error = wire.decode(status[-1].value())["last_error"]
            assert url in error and "line" in error and "column" in error, error
            assert runner.is_alive(), "the service stopped on a malformed document"

            served["probe"] = whole
            devices = wait_for_messages(kafka_broker.bootstrap, topic_prefix + wire.DEVICES, 60)
            assert {wire.decode(m.value())["device_name"] for m in devices} >= {"GFAgie01", "Mazak01", "Mazak03"}
    finally:
        server.shutdown()
        server.server_close()
