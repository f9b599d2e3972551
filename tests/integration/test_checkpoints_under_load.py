"""A producer restarted while its neighbours keep committing into the same checkpoints partition
resumes at once from its own checkpoint: no gap, nothing doubled.

In a plant many followers (in one process or several) commit their checkpoints every ~100 ms,
and a compacted topic's partition is shared by many agents' keys. Reading such a partition
"until the end" never ends while others write to it; the producer must read up to the end
offsets taken when it starts instead.
"""
from __future__ import annotations

import random
import re
import time
from datetime import datetime

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from producer import wire
from producer.replay import ReplayAgent
from producer.topics import read_to_end, topic_configs
from producer_process import ProducerProcess

NEIGHBOURS = 4


def _log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _checkpoints(bootstrap: str, prefix: str) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for message in read_to_end({"bootstrap.servers": bootstrap}, wire.topic_name(wire.CHECKPOINTS, prefix), 60):
        value = wire.decode(message.value())
        latest[value["agent"]] = value
    return latest


def test_restart_resumes_at_once_while_neighbours_commit_into_the_same_partition(kafka_broker, topic_prefix,
                                                                                   tmp_path):
    bootstrap = kafka_broker.bootstrap
    # One checkpoints partition for everybody: every agent's key lands in it.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = wire.topic_name(wire.CHECKPOINTS, topic_prefix)
    admin.create_topics([NewTopic(topic, 1, 1, config=topic_configs(wire.CHECKPOINTS, 1))])[topic].result(30)

    # At 200x the recorded NIST evening, each agent has new observations for almost every part.
    neighbours = [ReplayAgent(speed=200, start_time="19:00:00").start() for _ in range(NEIGHBOURS)]
    victim = ReplayAgent(speed=200, start_time="19:00:00").start()
    victim_url = victim.url
    busy = ProducerProcess(tmp_path / "neighbours.log")
    follower = ProducerProcess(tmp_path / "victim.log")
    try:
        busy.start([agent.url for agent in neighbours], bootstrap, topic_prefix)
        busy.wait_for_log(r"event=agent_status state=connected", 60, count=NEIGHBOURS)
        # The victim follows its agent from sequence 1, so everything it serves must arrive.
        seed = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        seed.produce(topic, key=wire.agent_key(victim.url),
                     value=wire.encode(wire.checkpoint_value(victim.url, victim.instance_id, 1)))
        assert seed.flush(30) == 0
        follower.start([victim.url], bootstrap, topic_prefix)
        follower.wait_for_log(r"event=agent_status state=connected", 60)

        # Let the neighbours commit for a while, then kill the victim's producer mid-stream.
        rng = random.Random(7)
        time.sleep(2 + rng.random() * 2)
        follower.process.kill()
        follower.process.wait(30)
        before = _checkpoints(bootstrap, topic_prefix)
        commits_before = sum(1 for _ in read_to_end({"bootstrap.servers": bootstrap}, topic, 60))
        killed_at = before[victim.url]["next_sequence"]
        assert all(agent.url in before for agent in neighbours), "every neighbour commits"

        follower.start([victim.url], bootstrap, topic_prefix)
        restarted = time.monotonic()
        follower.wait_for_log(r"event=resume ", 60, count=1)
        # The first commit of the new incarnation: its checkpoint moves past where the old one stood.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _checkpoints(bootstrap, topic_prefix)[victim.url]["next_sequence"]
            if now > killed_at:
                break
            time.sleep(0.2)
        first_commit_s = time.monotonic() - restarted
        starting = follower.lines(r"event=starting ")[-1]
        resumed = follower.lines(r"event=resume ")[-1]
        resume_s = _log_time(resumed) - _log_time(starting)

        time.sleep(2)
        commits_after = sum(1 for _ in read_to_end({"bootstrap.servers": bootstrap}, topic, 60))
        code, _ = follower.terminate()
        assert code == 0
        final = _checkpoints(bootstrap, topic_prefix)[victim.url]
        busy_code, _ = busy.terminate()
        assert busy_code == 0
    finally:
        follower.cleanup()
        busy.cleanup()
        for agent in [*neighbours, victim]:
            agent.stop()

    neighbour_rate = (commits_after - commits_before) / max(1e-9, time.monotonic() - restarted)
    print(f"resume {resume_s:.2f} s after start-up (log), first commit {first_commit_s:.2f} s after the restart; "
          f"neighbours committed {commits_after - commits_before} records into the partition meanwhile "
          f"(~{neighbour_rate:.0f}/s)")
    assert commits_after - commits_before > 20, "the neighbours kept the partition busy"
    # 2 s on an idle machine; a reader that waits for the busy partition's EOF gives up only at
    # its 30 s deadline (25 s measured). 15 s leaves room for a loaded machine (6.8 s at load average 20).
    assert resume_s < 15.0, f"resumed {resume_s:.1f} s after starting: the checkpoint read waited for the busy partition"
    assert not follower.lines(r"did not finish within|did not reach its end")
    # What the victim's agent served is in Kafka exactly once, without a gap.
    observations = [wire.decode(m.value()) for m in read_to_end(
        {"bootstrap.servers": bootstrap}, wire.topic_name(wire.OBSERVATIONS, topic_prefix), 120)]
    mine = sorted(o["sequence"] for o in observations if o["agent"] == victim_url)
    assert mine == list(range(1, final["next_sequence"])), (
        f"{len(mine)} observations, {len(set(mine))} distinct, expected {final['next_sequence'] - 1}")
    gaps = [wire.decode(m.value()) for m in read_to_end({"bootstrap.servers": bootstrap},
                                                         wire.topic_name(wire.GAPS, topic_prefix), 60)]
    assert [g for g in gaps if g["agent"] == victim_url] == []
    # It resumed from its own committed checkpoint (a commit the kill interrupted may have completed since).
    assert int(re.search(r"next_sequence=(\d+)", resumed).group(1)) >= killed_at
