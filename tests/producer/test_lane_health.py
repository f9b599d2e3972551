"""The service's health check of its transactional lanes: a producer of a group that gets new
partitions opens their lanes, attaches the agents and only then starts the lanes' threads. The
check runs every half second meanwhile; under load it once found such a lane "crashed" and
the producer exited with event=service_failed (seen in the three-producer failover test)."""
from __future__ import annotations

import threading

from producer.config import ServiceConfig
from producer.fleet.engine import FleetEngine


def test_a_lane_opened_but_not_started_yet_is_not_taken_for_a_crashed_one():
    engine = FleetEngine(ServiceConfig(bootstrap="127.0.0.1:9"), checkpoints=None)
    try:
        lane = engine.open_lane("p1", "machine-monitor-producer-test-p1", start=False)
        assert engine.crashed_lanes() == []
        # A lane whose thread ended without being closed has crashed.
        ended = threading.Thread(target=lambda: None)
        ended.start()
        ended.join()
        lane.thread = ended
        assert engine.crashed_lanes() == ["p1"]
        lane._closing.set()  # closed on purpose: not a crash
        assert engine.crashed_lanes() == []
    finally:
        engine.loop.close()
        engine._executor.shutdown()
