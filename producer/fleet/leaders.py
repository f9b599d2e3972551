"""Partition leaders as the lanes' producers see them, logged once per change for the process.

On a replicated cluster a partition whose leader is lost gets another one from its in-sync
replicas; the producers follow the change by themselves (a commit takes a few seconds
longer meanwhile). So that the log says what happened, every lane's producer reports its
librdkafka statistics every `STATS_INTERVAL_MS`, which name each partition's leader, and
`LeaderLog` writes `event=leader_changed topic=T partition=P leader=NEW previous=OLD` when a
lane sees a partition's leader change. Several lanes see the same change at different moments
(each when its producer refreshes its metadata): the first one logs it. A moment without a
leader (-1, while the cluster elects one) is not a change of its own.
"""
from __future__ import annotations

import json
import logging
import threading

log = logging.getLogger("producer.lanes")

STATS_INTERVAL_MS = 2000


class LeaderLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged: dict[tuple[str, int], int] = {}  # the leader last logged or first seen
        self._seen: dict[str, dict[tuple[str, int], int]] = {}  # per lane: the leader it saw last
        self.changes = 0  # logged changes, for tests

    def on_stats(self, lane_id: str, stats_json: str) -> None:
        """A lane producer's `stats_cb`: runs on the lane's thread while its producer is polled."""
        try:
            topics = json.loads(stats_json).get("topics", {})
            seen = [(topic, int(number), int(partition["leader"]))
                    for topic, entry in topics.items()
                    for number, partition in entry.get("partitions", {}).items()
                    if int(number) >= 0]  # -1 is librdkafka's "partition not yet known"
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.debug("lane=%s event=stats_unreadable error=%r", lane_id, exc)
            return
        changed = []
        with self._lock:
            lane = self._seen.setdefault(lane_id, {})
            for topic, number, leader in seen:
                if leader < 0:
                    continue  # being elected: the new leader is logged once there is one
                key = (topic, number)
                before = lane.get(key)
                lane[key] = leader
                # A lane that has not refreshed its metadata yet still names the old leader:
                # only what a lane saw change itself counts, and only once for the process.
                if before is not None and before != leader and self._logged.get(key) != leader:
                    changed.append((topic, number, leader, before))
                    self._logged[key] = leader
                else:
                    self._logged.setdefault(key, leader)
            self.changes += len(changed)
        for topic, number, leader, before in changed:
            log.warning("lane=%s event=leader_changed topic=%s partition=%d leader=%d previous=%d",
                        lane_id, topic, number, leader, before)
