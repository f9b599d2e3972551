"""The leader-change log of a producer process, fed librdkafka statistics as a lane's producer
reports them, checked without Kafka."""
from __future__ import annotations

import json
import logging

import pytest

from producer.fleet.leaders import LeaderLog


def _stats(leaders: dict[tuple[str, int], int]) -> str:
    """A statistics document shaped as librdkafka's (only the fields the log reads, plus the
    internal partition -1 that librdkafka lists for every topic)."""
    topics: dict[str, dict] = {}
    for (topic, partition), leader in leaders.items():
        entry = topics.setdefault(topic, {"topic": topic, "partitions": {"-1": {"partition": -1, "leader": -1}}})
        entry["partitions"][str(partition)] = {"partition": partition, "leader": leader}
    return json.dumps({"name": "rdkafka#producer-1", "type": "producer", "topics": topics})


@pytest.fixture
def changes(caplog):
    caplog.set_level(logging.INFO, logger="producer.lanes")

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if "event=leader_changed" in r.getMessage()]
    return logged


def test_a_lost_leader_is_logged_once_for_the_process_whichever_lanes_see_it(changes):
    leaders = LeaderLog()
    before = {("line.mtconnect.observations", 0): 3, ("line.mtconnect.observations", 1): 1,
              ("line.mtconnect.checkpoints", 0): 3}
    leaders.on_stats("lane-a", _stats(before))
    leaders.on_stats("lane-b", _stats(before))
    assert changes() == [], "a first sight of the leaders is no change"

    # Broker 3 is lost: lane a sees the election in progress, then the new leaders; lane b
    # refreshes its metadata later and sees the same change.
    electing = dict(before) | {("line.mtconnect.observations", 0): -1, ("line.mtconnect.checkpoints", 0): -1}
    after = dict(before) | {("line.mtconnect.observations", 0): 2, ("line.mtconnect.checkpoints", 0): 1}
    leaders.on_stats("lane-a", _stats(electing))
    assert changes() == [], "a partition without a leader for a moment is not a change of its own"
    leaders.on_stats("lane-a", _stats(after))
    leaders.on_stats("lane-b", _stats(before))  # not refreshed yet
    leaders.on_stats("lane-b", _stats(after))
    leaders.on_stats("lane-a", _stats(after))

    assert sorted(changes()) == [
        "lane=lane-a event=leader_changed topic=line.mtconnect.checkpoints partition=0 leader=1 previous=3",
        "lane=lane-a event=leader_changed topic=line.mtconnect.observations partition=0 leader=2 previous=3",
    ]
    assert leaders.changes == 2


def test_a_leader_that_comes_back_is_a_change_again(changes):
    leaders = LeaderLog()
    leaders.on_stats("lane-a", _stats({("t", 0): 3}))
    leaders.on_stats("lane-a", _stats({("t", 0): 1}))
    leaders.on_stats("lane-a", _stats({("t", 0): 3}))  # a preferred-leader election after node 3 is back
    assert changes() == ["lane=lane-a event=leader_changed topic=t partition=0 leader=1 previous=3",
                         "lane=lane-a event=leader_changed topic=t partition=0 leader=3 previous=1"]


def test_unreadable_statistics_are_passed_over_without_an_error(changes):
    leaders = LeaderLog()
    for broken in ("not json", json.dumps({"topics": {"t": {"partitions": {"0": {"leader": "x"}}}}}),
                   json.dumps({"topics": ["t"]})):
        leaders.on_stats("lane-a", broken)
    leaders.on_stats("lane-a", _stats({("t", 0): 2}))
    leaders.on_stats("lane-a", _stats({("t", 0): 1}))
    assert changes() == ["lane=lane-a event=leader_changed topic=t partition=0 leader=1 previous=2"]
