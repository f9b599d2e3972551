"""A local three-node cluster loses a broker mid-stream, and nothing is lost or doubled.

Everything is real: the cluster is started as a user starts it (`python -m producer broker
start --nodes 3`: three KRaft nodes, each its own ports and data dir), a simulator process
serves six recorded-machine MTConnect agents over HTTP streaming (`python -m producer
simulate`), `python -m producer run` follows them, and the desktop's `Feed` reads the topics
as the app does (no Qt). The broker that coordinates most of the producer's transactions is
killed with SIGKILL while observations stream. Then the producer must log the leader change
and go on committing, the feed must go on delivering, and a producer killed and started again
while the broker is still down must read its checkpoints and resume. Afterwards a
read_committed read of the topics must hold every observation each agent served (compared
with the agents' own documents) exactly once, and the product's topics must have three
replicas with `min.insync.replicas=2`; `broker start` brings the lost node back on its ports
(while that read runs) and `broker stop` stops all three.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource
from lxml import etree

from desktop.core.feed import Feed, FeedConfig
from producer import wire
from producer.__main__ import main as producer_main
from producer.broker import BrokerError, LocalBroker, LocalCluster
from producer.topics import ensure_topics, read_to_end
from kafka_readers import CheckpointTail
from producer_process import ProducerProcess
from simulator_process import Simulator as SimulatorProcess
from repo_paths import REPO_ROOT

pytestmark = pytest.mark.integration

AGENTS = 6
RATE = 20  # observations per second per agent
CLI = [sys.executable, "-m", "producer", "broker"]
PRODUCT_TOPICS = [*wire.ALL_TOPICS, wire.AGENTS]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def _processes_using(path: Path) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in text and int(cmdline.parent.name) != os.getpid():
            found.append(int(cmdline.parent.name))
    return found


@pytest.fixture
def cluster_dir(tmp_path):
    """A data dir for a cluster; whatever runs from it is stopped at the end."""
    data_dir = tmp_path / "cluster"
    yield data_dir
    _cli("stop", "--data-dir", str(data_dir), timeout=180)
    for pid in _processes_using(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Simulator(SimulatorProcess):
    """AGENTS recorded-machine agents over HTTP, one process."""

    def __init__(self, tmp_path: Path):
        super().__init__(tmp_path, AGENTS, RATE, [20000])


def _header(root):
    return next(e for e in root.iter() if isinstance(e.tag, str) and e.tag.endswith("Header"))


def instance_id(url: str) -> int:
    return int(_header(etree.fromstring(requests.get(f"{url}/current", timeout=10).content)).get("instanceId"))


def served(url: str, end: int) -> dict[int, tuple[str, str]]:
    """sequence -> (dataItemId, timestamp) of what the agent serves from 1 to `end` - 1, from its own documents."""
    result: dict[int, tuple[str, str]] = {}
    cursor = 1
    while cursor < end:
        root = etree.fromstring(requests.get(f"{url}/sample", params={"from": cursor, "count": min(4000, end - cursor)},
                                             timeout=30).content)
        for element in root.iter():
            sequence = element.get("sequence") if isinstance(element.tag, str) else None
            if sequence is not None and int(sequence) < end:
                result[int(sequence)] = (element.get("dataItemId"), element.get("timestamp"))
        cursor = int(_header(root).get("nextSequence"))
    return result


class Checkpoints(CheckpointTail):
    """Tails the committed checkpoints: every agent's latest next_sequence."""

    def __init__(self, bootstrap: str, prefix: str):
        super().__init__(bootstrap, prefix, through_broker_loss=True)

    def wait_all_beyond(self, floor: dict[str, int], by: int, timeout: float, what: str, producer) -> float:
        """Seconds until every agent's checkpoint is `by` past `floor`; the producer must stay up."""
        started = time.monotonic()
        while not all(self.poll().get(url, 0) >= start + by for url, start in floor.items()):
            assert producer.alive, f"the producer exited while waiting for {what}\n{producer.tail()}"
            if time.monotonic() - started > timeout:
                behind = {u: (self.latest.get(u), s + by) for u, s in floor.items() if self.latest.get(u, 0) < s + by}
                raise AssertionError(f"not within {timeout:.0f} s: {what}; behind: {behind}\n{producer.tail(40)}")
        return time.monotonic() - started



class FeedThread:
    """The desktop's feed, run as its worker runs it: `Feed.run` on a thread of its own."""

    def __init__(self, bootstrap: str, prefix: str):
        self.feed = Feed(FeedConfig(bootstrap_servers=bootstrap, topic_prefix=prefix))
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.observations: list[tuple[str, int]] = []
        self.statuses: list[tuple[float, str, str]] = []
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="feed", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.feed.run(self.stop_event, self._on_batch, self._on_status)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc

    def _on_batch(self, batch) -> None:
        with self.lock:
            self.observations += [(o["agent"], o["sequence"]) for o in batch.observations]
        # What the window does once it has applied a batch: the next one (or the merged backlog) may come.
        self.feed.gate.release()

    def _on_status(self, state: str, detail: str) -> None:
        self.statuses.append((time.monotonic(), state, detail))

    def seen(self) -> list[tuple[str, int]]:
        with self.lock:
            return list(self.observations)

    def newest(self) -> dict[str, int]:
        with self.lock:
            newest: dict[str, int] = {}
            for agent, sequence in self.observations:
                newest[agent] = max(newest.get(agent, 0), sequence)
            return newest

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.failure is None, f"the feed stopped: {self.failure!r}"
            assert time.monotonic() < deadline, f"the feed did not deliver {what} within {timeout:.0f} s"
            time.sleep(0.2)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


def java_string_hash(text: str) -> int:
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def transaction_coordinator(metadata, transactional_id: str) -> int:
    """The broker coordinating `transactional_id`: the leader of its __transaction_state partition
    (Kafka's rule: abs(String.hashCode) mod the number of partitions)."""
    partitions = metadata.topics["__transaction_state"].partitions
    number = abs(java_string_hash(transactional_id)) % len(partitions)
    return partitions[number].leader


def describe_replication(admin: AdminClient, topics: list[str]) -> dict[str, tuple[set[int], str]]:
    """topic -> (the replica counts of its partitions, its effective min.insync.replicas)."""
    metadata = admin.list_topics(timeout=30)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in topics]
    configs = {resource.name: future.result(30)
               for resource, future in admin.describe_configs(resources, request_timeout=30).items()}
    return {topic: ({len(p.replicas) for p in metadata.topics[topic].partitions.values()},
                    configs[topic]["min.insync.replicas"].value) for topic in topics}


@pytest.mark.timeout(900)
def test_a_three_node_cluster_loses_a_broker_mid_stream_and_nothing_is_lost_or_doubled(cluster_dir, tmp_path,
                                                                                       topic_prefix):
    started = time.monotonic()
    # Generous readiness bounds: three JVMs starting at once on a loaded two-core machine.
    result = _cli("start", "--nodes", "3", "--data-dir", str(cluster_dir), "--timeout", "420", timeout=480)
    assert result.returncode == 0, result.stdout + result.stderr
    bootstrap = next(line.split("=", 1)[1] for line in result.stdout.splitlines() if line.startswith("bootstrap="))
    addresses = bootstrap.split(",")
    assert len(set(addresses)) == 3 and all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in addresses), bootstrap
    cluster_start_s = time.monotonic() - started
    cluster = LocalCluster(data_dir=cluster_dir, progress=lambda line: None)
    node_of = {state["bootstrap"]: node for node, state in cluster.status().items()}
    assert set(node_of) == set(addresses)
    client = {"bootstrap.servers": bootstrap}
    admin = AdminClient(client)

    simulator = Simulator(tmp_path)
    urls = simulator.urls
    producer = ProducerProcess(tmp_path / "producer.log")
    checkpoints = feed = back = None
    try:
        ensure_topics(client, topic_prefix)  # what the producer runs at its start
        instances = {url: instance_id(url) for url in urls}
        seed = Producer({**client, "acks": "all"})
        for url, instance in instances.items():  # every observation from sequence 1 on must arrive
            seed.produce(wire.topic_name(wire.CHECKPOINTS, topic_prefix), key=url.encode(),
                         value=json.dumps({"agent": url, "instance_id": instance, "next_sequence": 1}).encode())
        assert seed.flush(30) == 0
        del seed
        feed = FeedThread(bootstrap, topic_prefix)
        checkpoints = Checkpoints(bootstrap, topic_prefix)
        agent_args = [url for url in urls]
        producer.start(agent_args, bootstrap, topic_prefix)
        checkpoints.wait_all_beyond({url: 1 for url in urls}, 3 * RATE, 120, "every agent followed", producer)

        # The victim: the broker coordinating most of the producer's transactions (so the kill
        # hits commits, not only partitions), which leads partitions the producer writes as well.
        lanes = {m.group(1): m.group(2) for line in producer.lines(r"event=lane_ready ")
                 if (m := re.search(r"lane=(\S+) event=lane_ready transactional_id=(\S+)", line))}
        assert lanes, producer.tail()
        metadata = admin.list_topics(timeout=30)
        coordinators = collections.Counter(transaction_coordinator(metadata, tid) for tid in lanes.values())
        victim = coordinators.most_common(1)[0][0]
        led = {topic: sorted(n for n, p in metadata.topics[topic].partitions.items() if p.leader == victim)
               for topic in (wire.topic_name(wire.OBSERVATIONS, topic_prefix),
                             wire.topic_name(wire.CHECKPOINTS, topic_prefix), "__transaction_state")}
        assert all(led.values()), f"broker {victim} leads no partition of some topic the producer writes: {led}"
        pid = cluster.status()[victim]["pid"]
        producer.note(f"SIGKILL to broker {victim} (pid {pid}), leader of {led}")
        at_kill = dict(checkpoints.poll())
        feed_at_kill = feed.newest()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        # The producer goes on: every agent's checkpoint moves on by five seconds of observations.
        continued_s = checkpoints.wait_all_beyond(at_kill, 5 * RATE, 120, "commits after the broker was lost",
                                                  producer)
        changes = producer.wait_for_log(rf"event=leader_changed topic={re.escape(topic_prefix)}\S+ partition=\d+ "
                                        rf"leader=\d+ previous={victim}\b", 30)
        # The feed goes on delivering: observations committed after the loss.
        feed.wait(lambda: all(feed.newest().get(url, 0) >= at_kill[url] + 5 * RATE for url in urls), 60,
                  "observations committed after the broker was lost")
        feed_continued_s = time.monotonic() - killed

        # A producer that crashes while the broker is down: its successor settles what it left open
        # and reads its checkpoints from the two remaining brokers.
        status = _cli("status", "--data-dir", str(cluster_dir), timeout=60)
        producer.kill()
        reads_before = len(producer.lines(r"event=checkpoints_read "))
        restarted = time.monotonic()
        producer.start(agent_args, bootstrap, topic_prefix)
        producer.wait_for_log(r"event=checkpoints_read ", 120, count=reads_before + 1)
        at_restart = dict(checkpoints.poll())
        checkpoints.wait_all_beyond(at_restart, 5 * RATE, 120, "commits after the restart", producer)
        restart_s = time.monotonic() - restarted
        # `broker start` brings the lost node back on its ports; meanwhile everything is read back.
        back_started = time.monotonic()
        back = subprocess.Popen(CLI + ["start", "--data-dir", str(cluster_dir), "--timeout", "420"], cwd=REPO_ROOT,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        code, _ = producer.terminate()
        time.sleep(1)  # the watcher sees the last commits
        final_watch = dict(checkpoints.poll())

        final = {}
        for message in read_to_end(client, wire.topic_name(wire.CHECKPOINTS, topic_prefix), 60):
            value = wire.decode(message.value())
            final[value["agent"]] = value["next_sequence"]
        delivered: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        values: dict[tuple[str, int], tuple[str, str]] = {}
        for message in read_to_end(client, wire.topic_name(wire.OBSERVATIONS, topic_prefix), 120):
            observation = wire.decode(message.value())
            assert observation["instance_id"] == instances[observation["agent"]]
            delivered[observation["agent"]][observation["sequence"]] += 1
            values[(observation["agent"], observation["sequence"])] = (observation["data_item_id"],
                                                                      observation["timestamp"])
        gaps = [wire.decode(m.value()) for m in read_to_end(client, wire.topic_name(wire.GAPS, topic_prefix), 60)]
        truth = {url: served(url, final[url]) for url in urls}  # the agents' own documents

        # The feed catches up with everything committed, and never delivers a record twice.
        committed = {(agent, sequence) for agent, counter in delivered.items() for sequence in counter}
        feed.wait(lambda: committed <= set(feed.seen()), 60, "every committed observation")
        time.sleep(2)
        feed.stop()
        described = describe_replication(admin, [wire.topic_name(base, topic_prefix) for base in PRODUCT_TOPICS]
                                         + ["__transaction_state"])
    except BaseException:
        if back is not None:  # the node being brought back is not waited for
            back.kill()
            back.communicate()
        raise
    finally:
        if checkpoints is not None:
            checkpoints.close()
        if feed is not None:
            feed.stop()
        producer.cleanup()
        simulator.stop()
        print(producer.tail(60))

    back_out, back_err = back.communicate(timeout=480)
    back_s = time.monotonic() - back_started

    problems = []
    for url in urls:
        doubled = sorted(s for s, n in delivered[url].items() if n > 1)
        if doubled:
            problems.append(f"{url}: {len(doubled)} observations committed more than once, e.g. {doubled[:5]}")
        if set(delivered[url]) != set(range(1, final[url])):
            missing = sorted(set(range(1, final[url])) - set(delivered[url]))
            problems.append(f"{url}: {len(missing)} observations below the checkpoint {final[url]} missing, "
                            f"e.g. {missing[:5]}")
        wrong = [s for s, item in truth[url].items() if values.get((url, s)) != item]
        if wrong or len(truth[url]) != final[url] - 1:
            problems.append(f"{url}: {len(wrong)} of {len(truth[url])} observations differ from what the agent "
                            f"served, e.g. {[(s, truth[url][s], values.get((url, s))) for s in wrong[:3]]}")
    # Two of three brokers run throughout: the app must not call Kafka unreachable meanwhile.
    feed_after_kill = [(state, detail) for at, state, detail in feed.statuses if at >= killed]
    feed_unreachable = [detail for state, detail in feed_after_kill if state == "unreachable"]
    feed_counts = collections.Counter(feed.observations)
    feed_doubled = [key for key, n in feed_counts.items() if n > 1]
    total = sum(len(c) for c in delivered.values())
    print(f"cluster of 3 started by the CLI in {cluster_start_s:.1f} s; broker {victim} killed, leader of {led}; "
          f"every agent 5 s further {continued_s:.1f} s after the kill; feed delivered newer observations "
          f"{feed_continued_s:.1f} s after it; producer restarted with the broker down: following again after "
          f"{restart_s:.1f} s; {total} observations of {AGENTS} agents, {len(changes)} leader change(s) logged; "
          f"feed delivered {len(feed.observations)}, its statuses after the kill: "
          f"{collections.Counter(state for state, _ in feed_after_kill)}; "
          f"status while down: {status.stdout.splitlines()[0]!r}")
    assert not problems, "\n".join(problems[:20])
    assert gaps == [], f"gaps recorded although the agents' buffers held everything: {gaps[:5]}"
    assert final == final_watch, "the checkpoints read back differ from the ones committed"
    assert code == 0, f"the producer exited with {code} on SIGTERM"
    assert not feed_doubled, f"the feed delivered {len(feed_doubled)} observations twice, e.g. {feed_doubled[:5]}"
    assert all(feed_at_kill.get(url, 0) > 1 for url in urls), "the feed delivered before the broker loss"
    assert not feed_unreachable, (f"the feed reported Kafka unreachable {len(feed_unreachable)} times while two "
                                  f"brokers ran, e.g. {feed_unreachable[:2]}")
    assert status.returncode == 3 and status.stdout.startswith("degraded nodes=2/3"), status.stdout
    assert re.search(rf"^node {victim} stopped", status.stdout, re.MULTILINE), status.stdout
    wrong_replication = {topic: found for topic, found in described.items() if found != ({3}, "2")}
    assert not wrong_replication, f"topics without 3 replicas and min.insync.replicas=2: {wrong_replication}"

    # The lost node is back on its ports, and `stop` stops every node.
    assert back.returncode == 0, back_out + back_err
    assert f"bootstrap={bootstrap}" in back_out.splitlines()
    assert "already running" in back_out and f"node {victim}: starting" in back_out, back_out
    phase = time.monotonic()
    stopped = _cli("stop", "--data-dir", str(cluster_dir), timeout=180)
    stop_s = time.monotonic() - phase
    lines = stopped.stdout.splitlines()
    assert stopped.returncode == 0 and lines[-1] == "stopped nodes 1,2,3", stopped.stdout
    assert sorted(line.split(":")[0] for line in lines[:-1] if "stopping Kafka broker" in line) == \
        ["node 1", "node 2", "node 3"], stopped.stdout
    assert all(state is None for state in cluster.status().values())
    assert not _processes_using(cluster_dir)
    print(f"lost node brought back by `broker start` in {back_s:.1f} s; cluster stopped in {stop_s:.1f} s; "
          f"test took {time.monotonic() - started:.0f} s")


# --------------------------------------------------------------------------- refused before Java runs


def _cli_here(capsys, *args: str) -> tuple[int, str, str]:
    """`python -m producer broker ...` in this process: the refusals come before any Java runs."""
    capsys.readouterr()
    code = producer_main(["broker", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_cluster_needs_three_nodes_and_a_data_dir_of_its_own(tmp_path, capsys):
    code, _, err = _cli_here(capsys, "start", "--nodes", "2", "--data-dir", str(tmp_path / "two"))
    assert code == 1 and "3 to 9 nodes, not 2" in err, err
    assert not (tmp_path / "two" / "cluster.json").exists()
    code, _, err = _cli_here(capsys, "start", "--nodes", "0", "--data-dir", str(tmp_path / "none"))
    assert code == 1 and "not 0" in err and not (tmp_path / "none").exists(), err

    single = tmp_path / "single"
    single.mkdir()
    (single / "broker.json").write_text(json.dumps({"pid": None, "port": 9092}))
    code, _, err = _cli_here(capsys, "start", "--nodes", "3", "--data-dir", str(single))
    assert code == 1 and f"{single} holds a single-node broker" in err, err
    assert not (single / "cluster.json").exists()


def test_a_cluster_dir_is_not_started_as_a_single_broker_nor_resized(tmp_path, capsys):
    data_dir = tmp_path / "cluster"
    data_dir.mkdir()
    (data_dir / "cluster.json").write_text(json.dumps({"nodes": 3, "cluster_id": "c", "controller_ports": {}}))
    with pytest.raises(BrokerError, match="holds a local Kafka cluster, not a single broker"):
        LocalBroker(data_dir=data_dir, progress=lambda line: None).start()
    code, _, err = _cli_here(capsys, "start", "--nodes", "5", "--data-dir", str(data_dir))
    assert code == 1 and "holds a 3-node cluster, not 5 nodes" in err, err
    code, _, err = _cli_here(capsys, "start", "--nodes", "1", "--data-dir", str(data_dir))
    assert code == 1 and "holds a local cluster" in err, err
    code, out, _ = _cli_here(capsys, "status", "--data-dir", str(data_dir))
    assert code == 3 and out.startswith("stopped nodes=0/3"), out
    assert not list(data_dir.glob("node-*")), "a refused start left node dirs behind"
