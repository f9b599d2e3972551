"""A stream read on a loop that stalls: the stall is the loop's, not the agent's.

A producer following many agents can fall seconds behind on its event loop. A part the
agent sent in time then sits unread in the socket while the stream's idle timer, due in the
same turn of the loop, fires first. Against the real replay agent over HTTP, on the fleet
engine's own loop: a 3 s stall of the loop with a 1 s idle timeout loses nothing and fails
nothing when the client knows the loop's lateness, and (the same stall, no lateness known)
reports the agent unreachable, which is what a following producer saw before.
"""
from __future__ import annotations

import asyncio
import time
from typing import Iterator

import pytest

from producer.config import ServiceConfig
from producer.fleet.engine import FleetEngine
from producer.mtconnect.aioclient import AsyncAgentClient
from producer.mtconnect.client import AgentUnreachable
from producer.replay import ReplayAgent

STALL_S = 3.0
IDLE_S = 1.0


@pytest.fixture(scope="module")
def live_agent() -> Iterator[ReplayAgent]:
    """A minute of the recording per second: new observations in every part."""
    agent = ReplayAgent(port=0, speed=60, start_time="20:29:50").start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def engine() -> Iterator[FleetEngine]:
    engine = FleetEngine(ServiceConfig(bootstrap="127.0.0.1:9"), checkpoints=None)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


async def _follow_through_a_stall(engine: FleetEngine, url: str, knows_lateness: bool) -> list[int]:
    """Stream from the agent's next sequence; stall the loop once the stream flows; the
    sequences of every observation read until 2 s after the stall."""
    client = AsyncAgentClient(url, engine._session, timeout=(5.0, 10.0), stream_idle_s=IDLE_S,
                              loop_lateness_s=engine.lateness_s if knows_lateness else None)
    await client.probe()
    current = await client.current()
    sequences: list[int] = []
    stalled_at = None
    loop = asyncio.get_running_loop()
    stream = client.stream(current.header.next_sequence, count=1000, interval_ms=100, heartbeat_ms=200)
    try:
        async for part in stream:
            sequences.extend(observation["sequence"] for observation in part.observations)
            if stalled_at is None and sequences:
                await asyncio.sleep(0.6)  # the lag watcher has seen a punctual loop
                stalled_at = loop.time()
                loop.call_soon(time.sleep, STALL_S)  # the loop busy elsewhere, e.g. parsing
            elif stalled_at is not None and loop.time() > stalled_at + STALL_S + 2.0:
                break
    finally:
        await stream.aclose()
    return sequences


def test_a_stalled_loop_keeps_following_the_stream_without_losing_an_observation(engine, live_agent):
    sequences = asyncio.run_coroutine_threadsafe(
        _follow_through_a_stall(engine, live_agent.url, knows_lateness=True), engine.loop).result(30)
    assert sequences, "the stream delivered observations"
    # Every observation once, in order, none skipped across the stall.
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    assert live_agent.next_sequence > sequences[-1]


def test_without_knowing_the_loops_lateness_the_same_stall_reads_as_an_idle_agent(engine, live_agent):
    with pytest.raises(AgentUnreachable, match="no part or heartbeat for 1 s"):
        asyncio.run_coroutine_threadsafe(
            _follow_through_a_stall(engine, live_agent.url, knows_lateness=False), engine.loop).result(30)
