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
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from producer.fleet.follower import AgentFollower, FollowerSettings
from producer.fleet.lanes import Batch, Lane
from producer.fleet.leaders import LeaderLog
from producer.mtconnect.aioclient import AsyncAgentClient, make_session
from producer.topics import CheckpointStore

log = logging.getLogger("producer.service")

# Followers connecting (probe, current) at the same time.
SETUP_CONCURRENCY = 32
SWITCH_INTERVAL_S = 0.0005
# A connect is given this long plus however late the loop has been running lately: a busy loop
# that notices a finished connect seconds late must not call a healthy agent unreachable.
CONNECT_TIMEOUT_S = 5.0
# The loop's lag decides how wide the streams' intervals are. A loop that lost `BUSY_SHARE` of
# the last `LAG_WINDOW_S` to lateness has more parts to read than time (one pause, e.g. a
# garbage collection, is not enough): every interval is doubled (up to `MAX_WIDEN`x, at most
# every `WIDEN_EVERY_S`, so the reopened streams can show their effect); `CALM_WINDOW_S` with
# the worst lag below `CALM_LAG_S` halves it again.
LAG_WINDOW_S = 5.0
BUSY_SHARE = 0.2
CALM_LAG_S = 0.1
CALM_WINDOW_S = 60.0
WIDEN_EVERY_S = 15.0
MAX_WIDEN = 4


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
        self.leaders = LeaderLog()  # partition leader changes, logged once for all lanes
        self._lanes_lock = threading.Lock()
        self._session = None
        self._setup: asyncio.Semaphore | None = None
        self._lag_task: asyncio.Task | None = None
        self.max_lag_s = 0.0
        self._lags: list[tuple[float, float]] = []  # (loop time, lag) of the last CALM_WINDOW_S
        self.widen = 1  # how many times wider than `max_parts_per_s` alone asks for
        self._widened_at = -1e9
        self._lag_due: float | None = None  # when the lag watcher is due to wake
        self.published = 0
        self.started_at: dict[str, float] = {}

    # -- lifecycle

    def start(self) -> None:
        raise_open_file_limit(65536)
        # The loop gives up the interpreter lock many times per part (socket reads, lxml's
        # parse) and must win it back from the lanes each time; with the default 5 ms switch
        # interval it waits behind a lane's transaction fill again and again and falls seconds
        # behind. A shorter interval costs the lanes little and keeps the loop on time.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open_session(), self.loop).result(30)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _open_session(self) -> None:
        self._session = make_session()
        self._setup = asyncio.Semaphore(SETUP_CONCURRENCY)
        self._lag_task = self.loop.create_task(self._watch_lag())

    async def _watch_lag(self) -> None:
        """How late the loop runs what is due: the worst lag since the last progress line, and
        the recent lags that widen or narrow the streams' intervals (`adjust_widen`)."""
        while True:
            started = self.loop.time()
            self._lag_due = started + 0.25
            await asyncio.sleep(0.25)
            now = self.loop.time()
            self.note_lag(now, max(0.0, now - started - 0.25))

    def note_lag(self, now: float, lag: float) -> None:
        """Record one lag measurement (loop time `now`) and widen or narrow the intervals."""
        self.max_lag_s = max(self.max_lag_s, lag)
        self._lags.append((now, lag))
        while self._lags and self._lags[0][0] < now - CALM_WINDOW_S:
            del self._lags[0]
        self.adjust_widen(now)

    def recent_lag_s(self, window_s: float = LAG_WINDOW_S, now: float | None = None) -> float:
        """The worst lag of the loop over the last `window_s` seconds."""
        since = (self.loop.time() if now is None else now) - window_s
        return max((lag for at, lag in self._lags if at >= since), default=0.0)

    def adjust_widen(self, now: float) -> None:
        if now - self._widened_at < WIDEN_EVERY_S or not self._lags or self._lags[0][0] > now - LAG_WINDOW_S:
            return
        late_s = sum(lag for at, lag in self._lags if at >= now - LAG_WINDOW_S)
        if self.widen < MAX_WIDEN and late_s >= BUSY_SHARE * LAG_WINDOW_S:
            self.widen *= 2
            why = "the loop runs late: fewer, fuller parts"
        elif (self.widen > 1 and self._lags and self._lags[0][0] <= now - CALM_WINDOW_S + 1.0
              and self.recent_lag_s(CALM_WINDOW_S, now) < CALM_LAG_S):
            self.widen //= 2
            why = "the loop keeps up again"
        else:
            return
        self._widened_at = now
        log.info("event=stream_intervals widen=%d interval_ms=%d lag_ms=%.0f (%s)", self.widen,
                 self.base_interval_ms(), 1000 * self.recent_lag_s(now=now), why)

    def connect_timeout_s(self) -> float:
        return CONNECT_TIMEOUT_S + self.recent_lag_s()

    def lateness_s(self) -> float:
        """How late the loop runs now: the recent lags, or, in the middle of a stall, how
        overdue the lag watcher itself is (its wake-up waits behind the same backlog)."""
        due = self._lag_due
        overdue = self.loop.time() - due if due is not None else 0.0
        return max(overdue, self.recent_lag_s())

    def take_max_lag(self) -> float:
        lag, self.max_lag_s = self.max_lag_s, 0.0
        return lag

    def base_interval_ms(self) -> int:
        """The shortest stream interval worth asking for with this many agents: at most
        `max_parts_per_s` parts per second for the whole process (each part costs a read and a
        parse whatever it holds), so more agents get fewer, fuller parts. While the loop runs
        late, `widen` times that (or times the configured interval, if that is longer)."""
        fleet_ms = -(-1000 * len(self.followers) // self.config.max_parts_per_s)
        if self.widen == 1:
            return fleet_ms
        return self.widen * max(fleet_ms, self.config.interval_ms)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def lane_totals(self) -> tuple[int, float]:
        """(transactions committed, seconds spent committing them) by every lane open now."""
        with self._lanes_lock:
            lanes = list(self.lanes.values())
        return sum(lane.commits for lane in lanes), sum(lane.commit_seconds for lane in lanes)

    def crashed_lanes(self) -> list[str]:
        """Lanes whose thread ended without being closed. A lane opened but not started yet (a
        group's new assignment, its agents still being attached) has not crashed."""
        with self._lanes_lock:
            return [lane_id for lane_id, lane in self.lanes.items()
                    if lane.thread.ident is not None and not lane.thread.is_alive() and not lane._closing.is_set()]

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
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- lanes

    def open_lane(self, lane_id: str, transactional_id: str, fenced_pause_s: float = 1.0,
                  start: bool = True) -> Lane:
        """The lane `lane_id`, created if new; `start=False` leaves it to the caller to start it
        (after attaching its agents, so that one checkpoint read serves them all)."""
        with self._lanes_lock:
            lane = self.lanes.get(lane_id)
            if lane is not None:
                return lane
            lane = Lane(lane_id, transactional_id, self.config, self.checkpoints, self.loop, self._on_committed,
                        fenced_pause_s, leaders=self.leaders)
            self.lanes[lane_id] = lane
        if start:
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
                                  timeout=(self.connect_timeout_s, follower_settings.http_timeout_s),
                                  stream_idle_s=follower_settings.stream_idle_s, parse_executor=self._executor,
                                  loop_lateness_s=self.lateness_s)
        follower = AgentFollower(agent, follower_settings, lane, client, base_interval_ms=self.base_interval_ms,
                                 setup=self._setup)
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
