"""The fleet engine: every agent of a producer process on one event loop, committed by a few lanes.

`FleetEngine` runs one asyncio event loop on its own thread. Each followed agent is an
`AgentFollower` task on it, with an `AsyncAgentClient` over one shared HTTP session; large
documents are parsed on one `parse` thread. Lanes (`producer.fleet.lanes`) are threads with a
transactional producer each. So a process following a thousand agents has a fixed, small set
of threads: the loop, the parse thread, one per lane and librdkafka's own.

The engine is driven from other threads (the service's main thread in static mode, the group
thread in a group): `open_lane`, `close_lane`, `add_agent` and `remove_agent` are thread-safe
and hand their work to the loop.
"""
from __future__ import annotations

import asyncio
import logging
import resource
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from producer.fleet.follower import AgentFollower, FollowerSettings
from producer.fleet.lanes import Batch, Lane
from producer.mtconnect.aioclient import AsyncAgentClient, make_session
from producer.topics import CheckpointStore

log = logging.getLogger("producer.service")


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards `wanted` (each agent holds a socket); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("event=open_file_limit limit=%d wanted=%d error=%s", soft, wanted, exc)
    return soft


class FleetEngine:
    def __init__(self, config, checkpoints: CheckpointStore):
        self.config = config
        self.checkpoints = checkpoints
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="agents", daemon=True)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="parse")
        self.followers: dict[str, AgentFollower] = {}
        self._lane_of: dict[str, str] = {}
        self._settings_of: dict[str, Any] = {}
        self.lanes: dict[str, Lane] = {}
        self._lanes_lock = threading.Lock()
        self._session = None
        self.published = 0
        self.started_at: dict[str, float] = {}

    # -- lifecycle

    def start(self) -> None:
        raise_open_file_limit(65536)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open_session(), self.loop).result(30)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _open_session(self) -> None:
        self._session = make_session()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def crashed_lanes(self) -> list[str]:
        with self._lanes_lock:
            return [lane_id for lane_id, lane in self.lanes.items()
                    if not lane.thread.is_alive() and not lane._closing.is_set()]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every follower, then every lane (each after its transaction under way), then the loop."""
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop_followers(list(self.followers)), self.loop).result(timeout)
        except Exception as exc:  # noqa: BLE001 - stopping goes on whatever one follower did
            log.warning("event=stop_followers_failed error=%r", exc)
        with self._lanes_lock:
            lanes = list(self.lanes.values())
            self.lanes.clear()
        for lane in lanes:
            lane._closing.set()
        for lane in lanes:
            lane.close(timeout)
        try:
            asyncio.run_coroutine_threadsafe(self._close_session(), self.loop).result(10)
        except Exception as exc:  # noqa: BLE001
            log.warning("event=http_close_failed error=%r", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- lanes

    def open_lane(self, lane_id: str, transactional_id: str, fenced_pause_s: float = 1.0) -> Lane:
        with self._lanes_lock:
            lane = self.lanes.get(lane_id)
            if lane is not None:
                return lane
            lane = Lane(lane_id, transactional_id, self.config, self.checkpoints, self.loop, self._on_committed,
                        fenced_pause_s)
            self.lanes[lane_id] = lane
        lane.start()
        return lane

    def close_lane(self, lane_id: str, timeout: float = 15.0) -> None:
        """Stop the lane's followers, then the lane (after the transaction under way)."""
        with self._lanes_lock:
            lane = self.lanes.pop(lane_id, None)
        if lane is None:
            return
        agents = [agent for agent, lane_of in list(self._lane_of.items()) if lane_of == lane_id]
        try:
            asyncio.run_coroutine_threadsafe(self._stop_followers(agents), self.loop).result(timeout)
        except Exception as exc:  # noqa: BLE001
            log.warning("lane=%s event=stop_followers_failed error=%r", lane_id, exc)
        if not lane.close(timeout):
            log.warning("lane=%s event=lane_close_slow: still committing after %.0f s; left to finish", lane_id, timeout)
        log.info("lane=%s event=lane_closed agents=%d", lane_id, len(agents))

    def _on_committed(self, batches: list[Batch]) -> None:
        published = 0
        for batch in batches:
            batch.follower.committed(batch)
            published += len(batch.observations)
            if batch.waiter is not None and not batch.waiter.done():
                batch.waiter.set_result(None)
        self.published += published

    # -- agents

    def add_agent(self, agent: str, lane_id: str, settings: dict[str, Any] | None = None, wait: bool = True) -> None:
        future = asyncio.run_coroutine_threadsafe(self._add(agent, lane_id, settings or {}), self.loop)
        if wait:
            future.result(30)

    def remove_agent(self, agent: str, wait: bool = True) -> None:
        future = asyncio.run_coroutine_threadsafe(self._stop_followers([agent]), self.loop)
        if wait:
            future.result(30)

    def apply_agent_changes(self, changes: list[tuple[str, str, str, dict[str, Any] | None]],
                            timeout: float = 60.0) -> None:
        """Apply (agent, lane, "add" | "remove", settings) changes in order, as the agent list says."""
        asyncio.run_coroutine_threadsafe(self._apply(changes), self.loop).result(timeout)

    async def _apply(self, changes: list[tuple[str, str, str, dict[str, Any] | None]]) -> None:
        for agent, lane_id, operation, settings in changes:
            if operation == "add":
                await self._add(agent, lane_id, settings or {})
            elif self._lane_of.get(agent) == lane_id:
                log.info("agent=%s event=agent_removed lane=%s", agent, lane_id)
                await self._stop_followers([agent])

    async def _add(self, agent: str, lane_id: str, settings: dict[str, Any]) -> None:
        agent = agent.rstrip("/")
        existing = self.followers.get(agent)
        if existing is not None:
            if self._lane_of.get(agent) == lane_id and self._settings_of.get(agent) == settings:
                return
            log.info("agent=%s event=agent_settings_changed settings=%s", agent, settings)
            await self._stop_followers([agent])
        with self._lanes_lock:
            lane = self.lanes.get(lane_id)
        if lane is None:
            log.warning("agent=%s event=agent_not_followed lane=%s (the lane is closed)", agent, lane_id)
            return
        follower_settings = FollowerSettings(self.config, settings)
        client = AsyncAgentClient(agent, self._session, verify=follower_settings.verify_tls,
                                  timeout=(5.0, follower_settings.http_timeout_s),
                                  stream_idle_s=follower_settings.stream_idle_s, parse_executor=self._executor)
        follower = AgentFollower(agent, follower_settings, lane, client)
        self.followers[agent] = follower
        self._lane_of[agent] = lane_id
        self._settings_of[agent] = settings
        self.started_at[agent] = self.loop.time()
        lane.attach(follower)
        log.info("agent=%s event=agent_added lane=%s", agent, lane_id)

    async def _stop_followers(self, agents: list[str]) -> None:
        tasks = []
        for agent in agents:
            follower = self.followers.pop(agent, None)
            self._lane_of.pop(agent, None)
            self._settings_of.pop(agent, None)
            if follower is None:
                continue
            task = follower.stop()
            follower.lane.detach(follower)
            if task is not None:
                tasks.append(task)
            log.info("agent=%s event=agent_stopped", agent)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def lane_of(self, agent: str) -> str | None:
        return self._lane_of.get(agent)
