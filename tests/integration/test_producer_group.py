"""Several producer processes share a plant's agents through Kafka, with failover, exactly once.

Everything is real: a simulator process serving sixty MTConnect agents over HTTP streaming
(`python -m producer simulate`: the recorded NIST machines, each on its own port, 20
observations per second each), three `python -m producer run --group` processes, and the
session's Kafka broker. One producer is killed with SIGKILL mid-stream and another is frozen
(SIGSTOP) for longer than the group's session timeout, so the group moves their agents to the
others while a zombie still holds open transactions. Afterwards a read_committed read of the
topics must hold every observation each agent served exactly once, except gaps recorded
exactly where an agent's buffer overran (every fourth agent keeps only three seconds of
observations, which a failover outlasts; the others keep far more and must have no gap).
A second test adds and removes an agent with the real `python -m producer agents` command
while a group runs.
"""
from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from confluent_kafka import Producer
from lxml import etree

from producer import wire
from producer.topics import ensure_topics, read_to_end
from kafka_readers import CheckpointTail
from producer_process import ProducerProcess
from simulator_process import Simulator as SimulatorProcess
from repo_paths import REPO_ROOT

pytestmark = pytest.mark.integration

AGENTS = 60
SMALL_BUFFER = 60  # three seconds at 20 observations/s: a failover outlasts it
BUFFERS = [8192, 8192, 8192, SMALL_BUFFER]
SESSION_TIMEOUT_S = 10  # the producers' default group session timeout
GROUP = "plant"


class Simulator(SimulatorProcess):
    """Agents with the given buffer sizes (in turn), their state in a file the test reads."""

    def __init__(self, tmp_path: Path, agents: int, buffers: list[int]):
        self.state_file = tmp_path / "agents-state.json"
        super().__init__(tmp_path, agents, 20, buffers, "--state-file", str(self.state_file))


def instance_id(url: str) -> int:
    """The agent's instanceId, from its own /current header."""
    root = etree.fromstring(requests.get(f"{url}/current", timeout=10).content)
    header = next(e for e in root.iter() if isinstance(e.tag, str) and e.tag.endswith("Header"))
    return int(header.get("instanceId"))


def served(url: str, first: int, end: int) -> dict[int, tuple[str, str]]:
    """sequence -> (dataItemId, timestamp) of what the agent serves from `first` to `end` - 1."""
    result: dict[int, tuple[str, str]] = {}
    cursor = first
    while cursor < end:
        response = requests.get(f"{url}/sample", params={"from": cursor, "count": min(4000, end - cursor)}, timeout=30)
        root = etree.fromstring(response.content)
        for element in root.iter():
            sequence = element.get("sequence") if isinstance(element.tag, str) else None
            if sequence is not None and int(sequence) < end:
                result[int(sequence)] = (element.get("dataItemId"), element.get("timestamp"))
        header = next(e for e in root.iter() if isinstance(e.tag, str) and e.tag.endswith("Header"))
        cursor = int(header.get("nextSequence"))
    return result


def write_agents(bootstrap: str, prefix: str, urls: list[str]) -> dict[str, int]:
    """The agents' records in the agents topic, as docs/messages.md lays them out; url -> partition."""
    partitions: dict[str, int] = {}
    errors: list = []

    def on_delivery(error, message) -> None:
        if error is not None:
            errors.append(error)
        else:
            partitions[message.key().decode()] = message.partition()

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "partitioner": "murmur2_random"})
    for url in urls:
        value = {"schema": 1, "agent": url, "settings": {}, "updated_at": "2026-12-01T00:00:00Z", "updated_by": "test"}
        producer.produce(wire.topic_name(wire.AGENTS, prefix), json.dumps(value).encode(), url.encode(),
                         on_delivery=on_delivery)
    assert producer.flush(30) == 0 and not errors, errors
    return partitions


def seed_checkpoints(bootstrap: str, prefix: str, instances: dict[str, int]) -> None:
    """Committed checkpoints at sequence 1, so every observation an agent serves must arrive."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for url, instance in instances.items():
        producer.produce(wire.topic_name(wire.CHECKPOINTS, prefix), key=url.encode(),
                         value=json.dumps({"agent": url, "instance_id": instance, "next_sequence": 1}).encode())
    assert producer.flush(30) == 0


class Checkpoints(CheckpointTail):
    """Tails the committed checkpoints topic: the latest next_sequence of every agent."""

    def wait(self, condition, timeout: float, what: str, processes=()) -> float:
        """Seconds until `condition(latest)` held."""
        started = time.monotonic()
        while not condition(self.poll()):
            for process in processes:
                assert process.alive, f"a producer exited while waiting for {what}\n{process.tail()}"
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not within {timeout:.0f} s: {what}\n"
                                     + "\n".join(p.tail(30) for p in processes))
        return time.monotonic() - started



def owned_partitions(process: ProducerProcess) -> set[int]:
    """The agents-topic partitions a producer holds now, from its own log."""
    owned: set[int] = set()
    for line in process.lines(r"event=partitions_(assigned|revoked|lost) "):
        numbers = {int(n) for n in re.search(r"partitions=\[([\d, ]*)\]", line).group(1).split(",") if n.strip()}
        owned = owned | numbers if "assigned" in line else owned - numbers
    return owned


@pytest.fixture
def fleet(tmp_path):
    simulator = Simulator(tmp_path, AGENTS, BUFFERS)
    producers = [ProducerProcess(tmp_path / f"producer-{i}.log") for i in range(3)]
    try:
        yield simulator, producers
    finally:
        for producer in producers:
            producer.cleanup()
        simulator.stop()
        for producer in producers:
            print(producer.tail(40))  # pytest shows it when the test failed


def test_three_producers_share_sixty_agents_and_lose_and_double_nothing_when_one_dies(kafka_broker, topic_prefix,
                                                                                     fleet):
    simulator, producers = fleet
    bootstrap = kafka_broker.bootstrap
    urls = simulator.urls
    ensure_topics({"bootstrap.servers": bootstrap}, topic_prefix)
    instances = {url: instance_id(url) for url in urls}
    seed_checkpoints(bootstrap, topic_prefix, instances)
    partition_of = write_agents(bootstrap, topic_prefix, urls)
    checkpoints = Checkpoints(bootstrap, topic_prefix)
    try:
        for producer in producers:
            producer.start([], bootstrap, topic_prefix, "--group", GROUP)
        for producer in producers:
            producer.wait_for_log(r"event=partitions_assigned ", 60)
        start_s = checkpoints.wait(lambda latest: all(latest.get(url, 1) > 1 for url in urls), 90,
                                   "every agent followed", producers)
        time.sleep(3)  # mid-stream

        # SIGKILL the producer holding the most agents.
        victim = max(producers, key=lambda p: sum(partition_of[u] in owned_partitions(p) for u in urls))
        victim_agents = [u for u in urls if partition_of[u] in owned_partitions(victim)]
        assert victim_agents, "the victim follows agents"
        victim.process.kill()
        victim.process.wait(30)
        killed = time.monotonic()
        time.sleep(1)  # the watcher catches up with what the victim committed before it died
        at_kill = dict(checkpoints.poll())
        checkpoints.wait(lambda latest: all(latest[u] > at_kill[u] + 20 for u in victim_agents), 60,
                         "the killed producer's agents followed again", [p for p in producers if p is not victim])
        failover_s = time.monotonic() - killed
        survivors = [p for p in producers if p is not victim]

        # A zombie: frozen longer than the session timeout, its agents move; then it wakes up.
        zombie = max(survivors, key=lambda p: len(owned_partitions(p)))
        zombie_agents = [u for u in urls if partition_of[u] in owned_partitions(zombie)]
        zombie.process.send_signal(signal.SIGSTOP)
        time.sleep(SESSION_TIMEOUT_S + 6)
        zombie.process.send_signal(signal.SIGCONT)
        woke = dict(checkpoints.poll())
        checkpoints.wait(lambda latest: all(latest[u] > woke[u] + 20 for u in urls), 60,
                         "every agent followed after the zombie woke up", survivors)
        time.sleep(3)
        codes = [p.terminate()[0] for p in survivors]
    finally:
        checkpoints.close()

    final = {}
    for message in read_to_end({"bootstrap.servers": bootstrap}, wire.topic_name(wire.CHECKPOINTS, topic_prefix), 60):
        value = wire.decode(message.value())
        final[value["agent"]] = value
    delivered: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    values: dict[tuple[str, int], tuple[str, str]] = {}
    for message in read_to_end({"bootstrap.servers": bootstrap}, wire.topic_name(wire.OBSERVATIONS, topic_prefix), 120):
        observation = wire.decode(message.value())
        assert observation["instance_id"] == instances[observation["agent"]]
        delivered[observation["agent"]][observation["sequence"]] += 1
        values[(observation["agent"], observation["sequence"])] = (observation["data_item_id"], observation["timestamp"])
    gaps: dict[str, list[dict]] = collections.defaultdict(list)
    for message in read_to_end({"bootstrap.servers": bootstrap}, wire.topic_name(wire.GAPS, topic_prefix), 60):
        gap = wire.decode(message.value())
        gaps[gap["agent"]].append(gap)

    problems = []
    gap_total = 0
    for url in urls:
        end = final[url]["next_sequence"]
        doubled = {s: n for s, n in delivered[url].items() if n > 1}
        in_gaps = [s for g in gaps[url] for s in range(g["first_missing"], g["last_missing"] + 1)]
        gap_total += len(in_gaps)
        if doubled:
            problems.append(f"{url}: {len(doubled)} sequences delivered more than once, e.g. {sorted(doubled)[:5]}")
        if len(in_gaps) != len(set(in_gaps)) or set(in_gaps) & set(delivered[url]):
            problems.append(f"{url}: gaps overlap each other or delivered observations: {gaps[url]}")
        if set(delivered[url]) | set(in_gaps) != set(range(1, end)):
            missing = set(range(1, end)) - set(delivered[url]) - set(in_gaps)
            extra = (set(delivered[url]) | set(in_gaps)) - set(range(1, end))
            problems.append(f"{url}: {len(missing)} sequences neither delivered nor in a gap (e.g. "
                            f"{sorted(missing)[:5]}), {len(extra)} beyond the checkpoint {end}")
        if any(g["reason"] != "OUT_OF_RANGE" or g["instance_id"] != instances[url] for g in gaps[url]):
            problems.append(f"{url}: unexpected gaps {gaps[url]}")
        if simulator.buffers[url] != SMALL_BUFFER and gaps[url]:
            problems.append(f"{url}: gaps although its buffer of {simulator.buffers[url]} held everything: {gaps[url]}")
    # What arrived is what the agents served (their own documents, read before they stop).
    for url in [u for u in urls if simulator.buffers[u] != SMALL_BUFFER][:15]:
        truth = served(url, 1, final[url]["next_sequence"])
        wrong = [s for s, item in truth.items() if values.get((url, s)) != item]
        if wrong:
            problems.append(f"{url}: {len(wrong)} observations differ from what the agent served, e.g. "
                            f"{[(s, truth[s], values.get((url, s))) for s in wrong[:3]]}")
    observations = sum(sum(c.values()) for c in delivered.values())
    print(f"{AGENTS} agents followed within {start_s:.1f} s by 3 producers; SIGKILL of a producer with "
          f"{len(victim_agents)} agents: followed again within {failover_s:.1f} s; a zombie with "
          f"{len(zombie_agents)} agents frozen {SESSION_TIMEOUT_S + 6} s; {observations} observations, "
          f"{sum(len(g) for g in gaps.values())} gaps over {gap_total} sequences of small-buffer agents")
    assert not problems, "\n".join(problems[:20])
    assert failover_s <= 30, f"the killed producer's agents were followed again only after {failover_s:.1f} s"
    assert codes == [0, 0], f"exit codes on SIGTERM: {codes}"
    assert zombie.lines(r"event=(partitions_lost|fenced)"), "the zombie noticed it had lost its agents"


def _agents_cli(bootstrap: str, prefix: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "producer", "agents", *args, "--bootstrap", bootstrap,
                           "--topic-prefix", prefix], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_an_agent_added_with_the_cli_is_followed_within_10s_and_a_removed_one_stops(kafka_broker, topic_prefix,
                                                                                     tmp_path):
    bootstrap = kafka_broker.bootstrap
    simulator = Simulator(tmp_path, 2, [8192])
    first, added = simulator.urls
    producer = ProducerProcess(tmp_path / "producer.log")
    checkpoints = None
    try:
        assert _agents_cli(bootstrap, topic_prefix, "add", first).returncode == 0
        producer.start([], bootstrap, topic_prefix, "--group", GROUP)
        checkpoints = Checkpoints(bootstrap, topic_prefix)
        checkpoints.wait(lambda latest: first in latest, 60, "the first agent followed", [producer])

        result = _agents_cli(bootstrap, topic_prefix, "add", added + "/", "--set", "interval_ms=200")
        assert result.returncode == 0, result.stderr
        assert f"added {added} to {topic_prefix}mtconnect.agents" in result.stdout
        followed_s = checkpoints.wait(lambda latest: added in latest, 30, "the added agent followed", [producer])
        listed = _agents_cli(bootstrap, topic_prefix, "list")
        assert added in listed.stdout and '"interval_ms": 200' in listed.stdout and "2 agent(s)" in listed.stdout

        result = _agents_cli(bootstrap, topic_prefix, "remove", added)
        assert result.returncode == 0 and f"removed {added}" in result.stdout, result.stderr
        producer.wait_for_log(re.escape(f"agent={added} event=agent_removed"), 10)
        time.sleep(1)  # the last transaction of the removed agent, if one was under way, is decided
        stopped_at = dict(checkpoints.poll())[added]
        before = checkpoints.poll()[first]
        time.sleep(4)  # what is under test is that nothing more arrives over time
        after = dict(checkpoints.poll())
        listed = _agents_cli(bootstrap, topic_prefix, "list")
        again = _agents_cli(bootstrap, topic_prefix, "remove", added)
        code, _ = producer.terminate()
    finally:
        if checkpoints is not None:
            checkpoints.close()
        producer.cleanup()
        simulator.stop()
        print(producer.tail(40))

    sequences = [wire.decode(m.value())["sequence"] for m in read_to_end(
        {"bootstrap.servers": bootstrap}, wire.topic_name(wire.OBSERVATIONS, topic_prefix), 60)
        if wire.decode(m.value())["agent"] == added]
    print(f"added agent followed {followed_s:.1f} s after `agents add` returned")
    assert followed_s <= 10, f"the added agent was followed only {followed_s:.1f} s after it was added"
    assert after[added] == stopped_at, "the removed agent's checkpoint still moves"
    assert max(sequences) < stopped_at, "observations of the removed agent arrived after it was removed"
    assert after[first] > before, "the other agent is still followed"
    assert added not in listed.stdout and "1 agent(s)" in listed.stdout
    assert again.returncode == 1 and "is not in" in again.stdout
    assert code == 0
