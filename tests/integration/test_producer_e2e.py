"""The producer service against the real replay agent over HTTP and the real broker.

What a user relies on: every observation the agent serves arrives in Kafka once, in
sequence, with its values exactly as the agent wrote them (checked against the agent's own
XML parsed by the standard library, not by the producer's parser); the device models are
published; the service stops cleanly on SIGTERM. Every read-back stops at the end offsets
taken when it starts (`kafka_readers`), never "when nothing arrived for a while".
"""
from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import requests
from confluent_kafka import Producer

from kafka_readers import KAFKA_LOG, latest_by_key, read_until, read_values
from producer import wire
from producer.config import ServiceConfig
from producer.replay import ReplayAgent
from producer.service import ProducerService


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


@contextlib.contextmanager
def refused_address():
    """An address nothing answers on for the `with` block: a port this test holds bound without
    listening, so a connection is refused and no other process can take the port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


def _seed_checkpoint(bootstrap: str, prefix: str, agent: ReplayAgent, next_sequence: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "logger": KAFKA_LOG})
    producer.produce(prefix + wire.CHECKPOINTS, key=wire.agent_key(agent.url),
                     value=wire.encode(wire.checkpoint_value(agent.url, agent.instance_id, next_sequence)))
    assert producer.flush(30) == 0


def _wait_for(condition, timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


# --------------------------------------------------------------------------- the agent's own words

# Attributes of an observation element that the message carries in fields of its own
# (docs/messages.md); any other attribute belongs in the message's `attributes`.
REPRESENTED_ATTRIBUTES = {"dataItemId", "timestamp", "sequence", "name", "subType", "type", "nativeCode",
                          "nativeSeverity", "qualifier", "conditionId", "sampleCount", "sampleRate",
                          "resetTriggered"}
CONTAINERS = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def served_data_items(agent_url: str) -> dict[str, dict[str, str]]:
    """DataItem id -> its attributes, from the agent's probe document parsed by the standard library."""
    root = ET.fromstring(requests.get(f"{agent_url}/probe", timeout=30).content)
    return {item.get("id"): dict(item.attrib) for item in root.iter() if _local(item.tag) == "DataItem"}


def served_sample_value(text: str) -> object:
    """docs/messages.md: a SAMPLE's value is a number, a list of numbers, "UNAVAILABLE" or the text."""
    if text == "UNAVAILABLE":
        return text
    try:
        numbers = [float(part) for part in text.split()]
    except ValueError:
        return text
    if len(numbers) == 1:
        return numbers[0]
    return numbers or text


def served_observations(agent_url: str, end: int) -> tuple[int, dict[int, dict]]:
    """The agent's instanceId and sequence -> the message the observation must become, from the
    exact bytes of `/sample?from=..&count=..` parsed with xml.etree.ElementTree (not the product's
    parser), for sequences 1 ..< end."""
    items = served_data_items(agent_url)
    expected: dict[int, dict] = {}
    instance_ids: set[int] = set()
    cursor = 1
    while cursor < end:
        payload = requests.get(f"{agent_url}/sample", params={"from": cursor, "count": min(1000, end - cursor)},
                               timeout=30).content
        root = ET.fromstring(payload)
        assert _local(root.tag) == "MTConnectStreams", payload[:500]
        header = _children(root, "Header")[0]
        instance_ids.add(int(header.get("instanceId")))
        for streams in _children(root, "Streams"):
            for device in _children(streams, "DeviceStream"):
                for component in _children(device, "ComponentStream"):
                    for container in component:
                        category = CONTAINERS.get(_local(container.tag))
                        if category is None:
                            continue
                        for element in container:
                            attributes = element.attrib
                            if "sequence" not in attributes:
                                continue
                            item = items.get(attributes["dataItemId"], {})
                            text = element.text
                            message = {
                                "agent": agent_url,
                                "sequence": int(attributes["sequence"]),
                                "timestamp": attributes["timestamp"],
                                "device_uuid": device.get("uuid"),
                                "device_name": device.get("name"),
                                "component": component.get("component"),
                                "component_id": component.get("componentId"),
                                "data_item_id": attributes["dataItemId"],
                                "name": attributes.get("name", item.get("name")),
                                "category": category,
                                "type": attributes["type"] if category == "CONDITION" else item.get("type"),
                                "sub_type": attributes.get("subType", item.get("subType")),
                                "units": item.get("units"),
                            }
                            if category == "CONDITION":
                                message.update({
                                    "value": text or None,
                                    "level": _local(element.tag).upper(),
                                    "native_code": attributes.get("nativeCode"),
                                    "native_severity": attributes.get("nativeSeverity"),
                                    "qualifier": attributes.get("qualifier"),
                                    "condition_id": attributes.get("conditionId"),
                                })
                            elif category == "SAMPLE":
                                message["value"] = served_sample_value(text or "")
                                message["text"] = text or ""
                            else:
                                message["value"] = text or ""
                            message["attributes"] = {key: value for key, value in attributes.items()
                                                     if key not in REPRESENTED_ATTRIBUTES}
                            expected[message["sequence"]] = message
        cursor = int(header.get("nextSequence"))
    assert len(instance_ids) == 1, f"the agent restarted while it was read: instanceIds {instance_ids}"
    return instance_ids.pop(), expected


def field_differences(delivered: dict, expected: dict) -> list[str]:
    """Field by field: what the message says against what the agent served."""
    differences = []
    for field, wanted in expected.items():
        if field == "attributes":
            got = delivered.get("attributes") or {}
        elif field not in delivered:
            differences.append(f"{field}: missing (agent served {wanted!r})")
            continue
        else:
            got = delivered[field]
        if got != wanted or type(got) is not type(wanted):
            differences.append(f"{field}: {got!r} instead of {wanted!r}")
    return differences


def test_every_served_observation_arrives_once_in_order_with_the_agent_s_own_values(kafka_broker, topic_prefix):
    # The agent releases a fixed stretch of the NIST days (from 20:29:30, across Mazak03's
    # Fault 791 recorded at 20:29:56) while the service follows it from a checkpoint at
    # sequence 1; then the service must hold every observation the agent served, once, and
    # each must say what the agent's XML said, field by field.
    bootstrap = kafka_broker.bootstrap
    with ReplayAgent(speed=100, start_time="20:29:30", limit=2500) as agent:
        agent_url = agent.url
        _seed_checkpoint(bootstrap, topic_prefix, agent, 1)
        with running_service(bootstrap, topic_prefix, [agent.url]) as (_service, runner):
            _wait_for(lambda: not agent.playing, 120, "the replay agent to release its stretch of the recording")
            end = agent.next_sequence
            checkpoints = read_until(
                bootstrap, topic_prefix + wire.CHECKPOINTS,
                lambda messages: any(wire.decode(m.value())["next_sequence"] == end for m in messages), 120,
                f"the service's checkpoint to reach the agent's nextSequence {end}")
        assert not runner.is_alive()
        instance_id, served = served_observations(agent.url, end)
    final = wire.decode(checkpoints[-1].value())
    assert final == wire.checkpoint_value(agent_url, instance_id, end)
    observations = read_values(bootstrap, topic_prefix + wire.OBSERVATIONS)

    sequences = [o["sequence"] for o in observations]
    assert len(sequences) == len(set(sequences)), "an observation was published twice"
    assert sorted(sequences) == sorted(served) == list(range(1, end)), "an observation is missing"
    assert {o["instance_id"] for o in observations} == {instance_id}
    # What arrived is what the agent served, field by field. KNOWN PRODUCT GAP at the time of
    # writing: the parser strips values (Mazak01's Warning " MODE CHANGE INHIBIT" arrives without
    # its leading space) and SAMPLE messages carry no `text`; this check stays strict until the
    # producer keeps the agent's text verbatim.
    differences = collections.Counter()
    examples: dict[str, str] = {}
    for observation in observations:
        for difference in field_differences(observation, served[observation["sequence"]]):
            field = difference.split(":", 1)[0]
            differences[field] += 1
            examples.setdefault(field, f"sequence {observation['sequence']} {difference}")
    assert not differences, (
        f"{sum(differences.values())} field differences in {len(observations)} observations against the "
        f"agent's XML: " + "; ".join(f"{field} x{count} (e.g. {examples[field]})"
                                     for field, count in differences.most_common()))
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
            _wait_for(lambda: service.published > 0, 120, "the service's first published batch")
            # "connected" is written in its own transaction right after the first batch: read while
            # the service runs, not only after it stopped (a stop may come between the two).
            _wait_for(lambda: any(s["state"] == "connected" for s in read_values(
                kafka_broker.bootstrap, topic_prefix + wire.AGENT_STATUS)), 60, "the agent's connected status", step=0.5)
    devices = latest_by_key(kafka_broker.bootstrap, topic_prefix + wire.DEVICES)
    assert sorted(d["device_name"] for d in devices.values()) == [
        "GFAgie01", "Hurco01", "Hurco02", "Hurco03", "Hurco04", "Hurco06", "Mazak01", "Mazak03"]
    assert devices["mtc_adapter004"]["device_name"] == "Mazak03"
    assert sum(len(d["data_items"]) for d in devices.values()) == 226
    status = read_values(kafka_broker.bootstrap, topic_prefix + wire.AGENT_STATUS)
    assert status and status[-1]["state"] == "connected" and status[-1]["agent"] == agent_url
    # Starting without a checkpoint, the service publishes /current first: the state of every
    # data item (UNAVAILABLE for the Hurco machines, which have no recording), then follows.
    observations = read_values(kafka_broker.bootstrap, topic_prefix + wire.OBSERVATIONS)
    assert {o["data_item_id"] for o in observations} >= {i["id"] for d in devices.values() for i in d["data_items"]}
    hurco = [o for o in observations if o["device_name"].startswith("Hurco")]
    assert hurco and all(o["value"] == "UNAVAILABLE" or o.get("level") == "UNAVAILABLE" for o in hurco)


def test_unreachable_agent_is_reported_and_retried(kafka_broker, topic_prefix):
    with refused_address() as url, \
            running_service(kafka_broker.bootstrap, topic_prefix, [url]) as (_service, runner):
        status = read_until(kafka_broker.bootstrap, topic_prefix + wire.AGENT_STATUS, bool, 60,
                            "an agent-status message for an unreachable agent")
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
            read_until(kafka_broker.bootstrap, topic_prefix + wire.OBSERVATIONS, bool, 120,
                       "the producer CLI's first observations")
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
            _wait_for(lambda: not agent.playing, 60, "the replay agents to release their records")
        _seed_checkpoint(kafka_broker.bootstrap, topic_prefix, first, 1)
        _seed_checkpoint(kafka_broker.bootstrap, topic_prefix, second, 1001)
        first_url, second_url = first.url, second.url
        targets = {first_url: first.next_sequence, second_url: second.next_sequence}
        with running_service(kafka_broker.bootstrap, topic_prefix, [first_url, second_url]) as (_service, runner):
            read_until(kafka_broker.bootstrap, topic_prefix + wire.CHECKPOINTS,
                       lambda messages: {m.key().decode(): wire.decode(m.value())["next_sequence"]
                                         for m in messages} == targets, 120,
                       f"both agents' checkpoints to reach {targets}")
        assert not runner.is_alive()
        instances = {first_url: first.instance_id, second_url: second.instance_id}

    observations = read_values(kafka_broker.bootstrap, topic_prefix + wire.OBSERVATIONS)
    by_agent: dict[str, list[int]] = {}
    for observation in observations:
        assert observation["instance_id"] == instances[observation["agent"]]
        by_agent.setdefault(observation["agent"], []).append(observation["sequence"])
    assert sorted(by_agent[first_url]) == list(range(1, targets[first_url]))
    assert sorted(by_agent[second_url]) == list(range(1001, targets[second_url]))
    checkpoints = {agent: value["next_sequence"]
                   for agent, value in latest_by_key(kafka_broker.bootstrap, topic_prefix + wire.CHECKPOINTS).items()}
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
            status = read_until(kafka_broker.bootstrap, topic_prefix + wire.AGENT_STATUS, bool, 60,
                                "an agent-status message for an agent serving a broken document")
            error = wire.decode(status[-1].value())["last_error"]
            assert url in error and "line" in error and "column" in error, error
            assert runner.is_alive(), "the service stopped on a malformed document"

            served["probe"] = whole
            read_until(kafka_broker.bootstrap, topic_prefix + wire.DEVICES,
                       lambda messages: {wire.decode(m.value())["device_name"] for m in messages}
                       >= {"GFAgie01", "Mazak01", "Mazak03"}, 120, "the device model once the probe is whole")
    finally:
        server.shutdown()
        server.server_close()
