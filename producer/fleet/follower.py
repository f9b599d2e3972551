"""Following one agent on the event loop: probe, current, then the sample stream, into its lane.

An `AgentFollower` is a task on the process's event loop. It reads the agent with the
asynchronous client and hands every part to its lane (`producer.fleet.lanes`) as a batch that
names the agent's checkpoint after it; the lane commits it, together with other agents'
batches, in one transaction. Reading does not wait for each commit: a few batches may be in
flight, so parsing the next part overlaps with committing the previous ones.

Two positions are kept apart. `checkpoint` is the last one the lane committed for the agent;
the read position (`_submitted`) is where the last batch handed to the lane ends. A new
connection (after the agent closed the stream, a timeout, an agent error) continues from the
read position, because what was handed over will commit or be undone as a whole. When the
lane undoes anything it calls `begin` with a new epoch and the committed checkpoint: the
follower drops what it was doing and starts again from there, and batches of the old epoch
are refused. So nothing is committed twice and nothing is skipped.

Everything a single agent relies on holds here too: the streams' instanceId decides (a
disagreeing probe is only logged), a new instanceId records an AGENT_RESTART gap, a `from` that
left the agent's buffer records the exact OUT_OF_RANGE gap, a part that does not parse is read
again in halving pages until the one bad observation is a REJECTED gap, duplicates are
published once, agent status is published on change only, and the backoff is kept until data
flows again. A stream that has fallen behind (many small parts already waiting in the socket)
is left for `sample?from=&count=` pages until the agent's newest observation is reached,
which costs one request and one parse per page instead of one per tiny part.
"""
from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timezone
from typing import Any

from producer import wire
from producer.fleet.lanes import Batch, DeviceModelsRefused, Lane, Resync
from producer.mtconnect.aioclient import AsyncAgentClient
from producer.service import Backoff
from producer.mtconnect.client import AgentUnreachable, _caught_up
from producer.mtconnect.documents import AgentError, DocumentError, StreamsDocument, parse_streams
from producer.topics import MAX_DEVICE_RECORD_BYTES, Checkpoint

log = logging.getLogger("producer.service")

# A stream with this many complete parts waiting behind the one just read has fallen behind
# (about three seconds of parts at the usual interval).
BACKLOG_PARTS = 32
# A follower that had to catch up asks for parts half as often, up to this interval; after
# `CALM_S` of streaming without falling behind it asks twice as often again, down to its base.
MAX_INTERVAL_MS = 2000
CALM_S = 60.0
# Device models up to this size are committed with other agents' batches; larger ones alone,
# so that a cluster refusing them costs nothing else.
SOLO_DEVICES_BYTES = 1_000_000


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _AgentRestarted(Exception):
    """The streams answered with a new instanceId: record the restart and re-probe at once."""

    def __init__(self, old: Checkpoint, new_instance_id: int):
        super().__init__(f"instanceId changed from {old.instance_id} to {new_instance_id}")
        self.old = old
        self.new_instance_id = new_instance_id


class _CatchUp(Exception):
    """The stream fell behind: read pages until the agent's newest observation."""


class FollowerSettings:
    """The settings one agent is followed with (the service's, overridden by its agent record)."""

    def __init__(self, config, overrides: dict[str, Any] | None = None):
        overrides = overrides or {}
        self.interval_ms = int(overrides.get("interval_ms", config.interval_ms))
        self.heartbeat_ms = int(overrides.get("heartbeat_ms", config.heartbeat_ms))
        self.count = int(overrides.get("count", config.count))
        self.http_timeout_s = float(overrides.get("http_timeout_s", config.http_timeout_s))
        idle = overrides.get("stream_idle_s", config.stream_idle_s)
        self.stream_idle_s = float(idle) if idle is not None else max(10.0, 3 * self.heartbeat_ms / 1000)
        self.verify_tls = overrides.get("verify_tls", config.verify_tls)
        self.max_observation_bytes = config.max_observation_bytes


class AgentFollower:
    """Follows one agent into its lane (see the module docstring); lives on the event loop."""

    def __init__(self, agent: str, settings: FollowerSettings, lane: Lane, client: AsyncAgentClient,
                 max_inflight_batches: int = 32, base_interval_ms=None, setup: asyncio.Semaphore | None = None):
        self.agent = agent.rstrip("/")
        self.settings = settings
        self.lane = lane
        self.client = client
        self.checkpoint: Checkpoint | None = None  # the last one committed
        self._submitted: Checkpoint | None = None  # where the last batch handed to the lane ends
        self._epoch = -1
        self._task: asyncio.Task | None = None
        self._stopped = False
        self._backoff = Backoff()
        self._inflight = 0
        self._inflight_observations = 0
        self._room = asyncio.Event()
        self._room.set()
        self._max_inflight = max_inflight_batches
        self._max_inflight_observations = max(3 * settings.count, 20000)
        self._state: str | None = None
        self._error_kind: str | None = None
        self._since = utc_now_iso()
        self._probe_instance: int | None = None
        self._published_devices: dict[str, bytes] = {}
        self._probe_disagreement_logged = False
        self._count = settings.count
        self.failure: BaseException | None = None
        self.published = 0
        self.catch_ups = 0
        # The interval a stream is asked for: the agent's setting, widened when the process follows
        # so many agents that parts this small would cost more than the observations in them
        # (`base_interval_ms`, a callable), and doubled for a while after falling behind.
        self._base_interval = base_interval_ms or (lambda: settings.interval_ms)
        self._interval_ms = settings.interval_ms
        self._setup = setup

    # -- driven by the lane (through the loop)

    def begin(self, epoch: int, checkpoint: Checkpoint | None) -> None:
        """Start (again) from `checkpoint`, the lane's committed one; earlier batches are void."""
        if self._stopped:
            return
        self._epoch = epoch
        self.checkpoint = checkpoint
        self._submitted = checkpoint
        self._inflight = 0
        self._inflight_observations = 0
        self._room.set()
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._run(epoch), name=f"follow {self.agent}")

    def committed(self, batch: Batch) -> None:
        if batch.epoch != self._epoch:
            return
        if batch.next_sequence is not None:
            self.checkpoint = Checkpoint(batch.instance_id, batch.next_sequence)
        self.published += len(batch.observations)
        self._release(batch)

    def _release(self, batch: Batch) -> None:
        self._inflight -= 1
        self._inflight_observations -= len(batch.observations)
        if self._inflight < self._max_inflight and self._inflight_observations < self._max_inflight_observations:
            self._room.set()

    def stop(self) -> asyncio.Task | None:
        """Stop following (cancels the running task, which the caller may await)."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- handing batches to the lane

    async def _submit(self, observations: list[dict[str, Any]], instance_id: int | None, next_sequence: int | None,
                      gaps: list[dict[str, Any]] = (), records: list[tuple[str, bytes, bytes]] = (),
                      solo: bool = False, wait: bool = False) -> None:
        while not self._room.is_set():
            await self._room.wait()
        loop = asyncio.get_running_loop()
        batch = Batch(self, self._epoch, observations, instance_id, next_sequence, list(gaps), list(records), solo,
                      loop.create_future() if wait else None)
        self._inflight += 1
        self._inflight_observations += len(observations)
        if self._inflight >= self._max_inflight or self._inflight_observations >= self._max_inflight_observations:
            self._room.clear()
        if next_sequence is not None:
            self._submitted = Checkpoint(instance_id, next_sequence)
        self.lane.submit(batch)
        if batch.waiter is not None:
            outcome = await batch.waiter
            if outcome is not None:
                if batch.epoch == self._epoch:
                    self._release(batch)
                raise outcome

    async def _publish_batch(self, observations: list[dict[str, Any]], instance_id: int, next_sequence: int,
                             gaps: list[dict[str, Any]] = ()) -> None:
        await self._submit(observations, instance_id, next_sequence, gaps)

    async def _publish_devices(self, document) -> None:
        """Publish the device models that changed since this follower last published them.

        A model too large for the devices topic is reported and left out; following goes on.
        """
        changed: list[tuple[dict[str, Any], bytes]] = []
        for device in document.devices:
            value = wire.encode(device)
            uuid = str(device["device_uuid"])
            if self._published_devices.get(uuid) == value:
                continue
            if len(value) > MAX_DEVICE_RECORD_BYTES:
                log.error("agent=%s event=device_model_too_large device=%s bytes=%d limit=%d "
                          "(the model is not published; its observations still are)",
                          self.agent, uuid, len(value), MAX_DEVICE_RECORD_BYTES)
                continue
            changed.append((device, value))
        if not changed:
            return
        records = [(wire.DEVICES, wire.device_key(device), value) for device, value in changed]
        solo = sum(len(value) for _, value in changed) > SOLO_DEVICES_BYTES
        try:
            await self._submit([], None, None, records=records, solo=solo, wait=True)
        except DeviceModelsRefused as exc:
            # The cluster refuses records this big on the devices topic: say so once, follow on.
            log.error("agent=%s event=device_models_refused error=%s (the models are not published; "
                      "their observations still are; raise max.message.bytes on the devices topic)", self.agent, exc)
        for device, value in changed:
            self._published_devices[str(device["device_uuid"])] = value
        log.info("agent=%s event=devices_published devices=%d data_items=%d",
                 self.agent, len(changed), sum(len(device.get("data_items") or ()) for device, _ in changed))

    async def _publish_status(self, state: str, error: BaseException | str | None, instance_id: int | None) -> None:
        """One `agent-status` record per change: of state, or of the kind of error that keeps an
        agent unreachable (refused connection, timeout, TLS, malformed document, agent error
        code) - never one per retry. The text of the first error of that kind is kept."""
        kind = _error_kind(error) if state == "unreachable" else None
        if state == self._state and kind == self._error_kind:
            return
        since = utc_now_iso() if state != self._state else self._since
        text = None if error is None else str(error)
        value = wire.agent_status_value(self.agent, state, since, text, instance_id)
        await self._submit([], instance_id, None,
                           records=[(wire.AGENT_STATUS, wire.agent_key(self.agent), wire.encode(value))], wait=True)
        self._state, self._error_kind, self._since = state, kind, since
        log.info("agent=%s event=agent_status state=%s error=%s", self.agent, state, text)

    # -- following

    async def _run(self, epoch: int) -> None:
        backoff = self._backoff
        try:
            while not self._stopped:
                try:
                    await self._session(backoff)
                except _AgentRestarted as exc:
                    log.warning("agent=%s event=agent_restarted %s; probing it again", self.agent, exc)
                    await self._agent_restarted(exc.old, exc.new_instance_id)
                except Resync:
                    return  # the lane begins this follower again from its committed checkpoint
                except (AgentUnreachable, DocumentError, AgentError) as exc:
                    delay = backoff.next_delay()
                    log.warning("agent=%s event=agent_problem error=%s retry_in=%.1fs", self.agent, exc, delay)
                    instance = self._submitted.instance_id if self._submitted else None
                    try:
                        await self._publish_status("unreachable", exc, instance)
                    except Resync:
                        return
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a follower must never die silently
            self.failure = exc
            log.exception("agent=%s event=follower_crashed", self.agent)
            raise

    async def _session(self, backoff: Backoff) -> None:
        """One connection's worth of following, from the read position.

        The sequence space is the Streams documents': their header's instanceId decides
        whether the agent restarted. The probe's header is advisory (some agents answer it with
        another instanceId than their streams); a disagreement is logged, never acted on.
        """
        client = self.client
        # Connecting is the expensive part of following (a device model to parse, a current
        # document): a process that starts a thousand followers does it a few dozen at a time.
        setup = self._setup or _NO_LIMIT
        async with setup:
            devices = await client.probe()
        self._probe_instance = devices.header.instance_id
        # Agents refuse a `count` above their buffer size (cppagent answers INVALID_REQUEST).
        buffer_size = devices.header.buffer_size
        self._count = min(self.settings.count, buffer_size) if buffer_size else self.settings.count
        await self._publish_devices(devices)
        if self._submitted is None:
            async with setup:
                current = await client.current()
            instance_id = current.header.instance_id
            cursor = current.header.next_sequence
            self._note_instance(instance_id)
            await self._publish_batch(self._unique(current.observations, 0), instance_id, cursor)
            await self._publish_status("connected", None, instance_id)
            backoff.reset()
            log.info("agent=%s event=started_from_current observations=%d next_sequence=%d",
                     self.agent, len(current.observations), cursor)
        else:
            log.info("agent=%s event=resume instance_id=%d next_sequence=%d",
                     self.agent, self._submitted.instance_id, self._submitted.next_sequence)
        await self._stream_from(self._submitted.next_sequence, backoff)

    def _note_instance(self, streams_instance: int | None) -> None:
        probe_instance = self._probe_instance
        if (streams_instance is not None and probe_instance is not None and probe_instance != streams_instance
                and not self._probe_disagreement_logged):
            self._probe_disagreement_logged = True
            log.warning("agent=%s event=probe_instance_disagrees probe_instance=%s streams_instance=%s "
                        "(the streams' instanceId decides; the probe's is ignored)",
                        self.agent, probe_instance, streams_instance)

    async def _agent_restarted(self, old: Checkpoint, new_instance_id: int) -> None:
        """A new instanceId: what the old instance had not served is lost; start the new one at 1.

        The gap's `last_missing` is null: how far the old instance got before it went away
        cannot be known any more. If the new instance's buffer no longer starts at 1, the
        stream answers OUT_OF_RANGE and that exact range is recorded as a second gap.
        """
        gap = wire.gap_value(self.agent, old.instance_id, old.next_sequence, None, "AGENT_RESTART")
        log.warning("agent=%s event=gap reason=AGENT_RESTART old_instance=%s new_instance=%s first_missing=%s",
                    self.agent, old.instance_id, new_instance_id, old.next_sequence)
        await self._publish_batch([], new_instance_id, 1, [gap])

    def _restart_from(self, instance_id: int, cursor: int) -> Checkpoint:
        return self._submitted or Checkpoint(instance_id, cursor)

    async def _stream_from(self, cursor: int, backoff: Backoff) -> None:
        assert self._submitted is not None
        instance_id = self._submitted.instance_id
        flowing = False
        settings = self.settings
        loop = asyncio.get_running_loop()
        while not self._stopped:
            base = max(settings.interval_ms, self._base_interval())
            self._interval_ms = max(self._interval_ms, base)
            opened = loop.time()
            reopening = False
            parts = self.client.stream(cursor, count=self._count, interval_ms=self._interval_ms,
                                       heartbeat_ms=settings.heartbeat_ms)
            try:
                async for part in parts:
                    cursor = await self._handle_part(part, cursor, instance_id)
                    if not flowing:
                        # Data flows again: only now is a later failure a fresh one.
                        flowing = True
                        await self._publish_status("connected", None, instance_id)
                        backoff.reset()
                    if self.client.pending_parts >= BACKLOG_PARTS and len(part.observations) < self._count:
                        raise _CatchUp()
                    if self._interval_ms > base and loop.time() - opened > CALM_S:
                        self._interval_ms = max(base, self._interval_ms // 2)
                        log.info("agent=%s event=stream_interval interval_ms=%d (keeping up again)",
                                 self.agent, self._interval_ms)
                        reopening = True
                        break  # reopened below with the shorter interval
                    if self._interval_ms < max(settings.interval_ms, self._base_interval()):
                        reopening = True
                        break  # the process follows more agents now: reopened with the wider interval
            except _CatchUp:
                await parts.aclose()
                self.catch_ups += 1
                self._interval_ms = min(MAX_INTERVAL_MS, max(base, 2 * self._interval_ms))
                log.info("agent=%s event=catch_up next_sequence=%d waiting_parts=%d: reading pages of up to %d "
                         "observations until the agent's newest, then parts every %d ms", self.agent, cursor,
                         self.client.pending_parts, self._count, self._interval_ms)
                cursor = await self._catch_up(cursor, instance_id)
                continue
            except AgentError as exc:
                if "OUT_OF_RANGE" not in exc.codes:
                    raise
                await parts.aclose()
                cursor = await self._recover_out_of_range(cursor, instance_id)
                continue
            except DocumentError as exc:
                await parts.aclose()
                cursor = await self._isolate(cursor, instance_id, exc)
                continue
            finally:
                await parts.aclose()
            if not reopening:
                # The agent closed the stream (idle timeout, restart): resume from the cursor.
                log.info("agent=%s event=stream_closed next_sequence=%d", self.agent, cursor)

    async def _catch_up(self, cursor: int, instance_id: int) -> int:
        """`sample?from=&count=` pages from the cursor until the agent's newest observation."""
        while not self._stopped:
            try:
                page = await self.client.sample(cursor, self._count)
            except AgentError as exc:
                if "OUT_OF_RANGE" not in exc.codes:
                    raise
                cursor = await self._recover_out_of_range(cursor, instance_id)
                continue
            except DocumentError as exc:
                cursor = await self._isolate(cursor, instance_id, exc)
                continue
            cursor = await self._handle_part(page, cursor, instance_id)
            if _caught_up(page, self._count) or not page.observations:
                return cursor
        return cursor

    def _unique(self, observations: list[dict[str, Any]], cursor: int) -> list[dict[str, Any]]:
        """The observations from `cursor` on, each sequence once (agents have sent duplicates)."""
        kept: list[dict[str, Any]] = []
        previous = cursor - 1
        duplicates = 0
        for observation in observations:
            sequence = observation["sequence"]
            if sequence <= previous:
                if sequence >= cursor:
                    duplicates += 1
                continue
            kept.append(observation)
            previous = sequence
        if duplicates:
            log.warning("agent=%s event=duplicate_sequences dropped=%d (each sequence is published once)",
                        self.agent, duplicates)
        return kept

    async def _handle_part(self, part: StreamsDocument, cursor: int, instance_id: int) -> int:
        header = part.header
        if header.instance_id is not None and header.instance_id != instance_id:
            raise _AgentRestarted(self._restart_from(instance_id, cursor), header.instance_id)
        self._note_instance(header.instance_id)
        if not part.observations:
            return cursor
        gaps = []
        first = part.observations[0]["sequence"]
        if first > cursor:
            gaps.append(wire.gap_value(self.agent, instance_id, cursor, first - 1, "OUT_OF_RANGE"))
            log.warning("agent=%s event=gap reason=OUT_OF_RANGE first_missing=%d last_missing=%d",
                        self.agent, cursor, first - 1)
        observations = self._unique(part.observations, cursor)
        if not observations and not gaps:
            return cursor
        next_sequence = max(observations[-1]["sequence"] + 1 if observations else cursor, cursor)
        await self._publish_batch(observations, instance_id, next_sequence, gaps)
        return next_sequence

    async def _isolate(self, cursor: int, instance_id: int, error: DocumentError) -> int:
        """A part that does not parse: publish what can be read, reject exactly what cannot.

        The agent is asked for pages from the cursor with the count halved until a page parses
        (published as usual); a single observation that still does not parse is recorded as a
        REJECTED gap with the parser's reason, and the search goes on after it. Once a full
        page parses again, following returns to the stream. One bad observation thus costs
        a few requests, never the observations around it.
        """
        log.warning("agent=%s event=bad_document next_sequence=%d error=%s; reading it in smaller pages",
                    self.agent, cursor, error)
        count = self._count
        while not self._stopped:
            payload = await self.client.sample_bytes(cursor, count)
            try:
                page = parse_streams(payload, self.agent, self.client.data_items,
                                     source=f"{self.agent}/sample?from={cursor}&count={count}")
            except DocumentError as exc:
                if count > 1:
                    count = max(1, count // 2)
                    continue
                next_hint = _header_number(payload, "nextSequence")
                last_missing = next_hint - 1 if next_hint is not None and next_hint > cursor else cursor
                reason = str(exc)[:1000]
                log.error("agent=%s event=observation_rejected first=%d last=%d reason=%s",
                          self.agent, cursor, last_missing, reason)
                gap = wire.rejected_value(self.agent, instance_id, cursor, last_missing, reason)
                await self._publish_batch([], instance_id, last_missing + 1, [gap])
                cursor = last_missing + 1
                continue
            if not page.observations:
                return cursor  # caught up with the agent
            cursor = await self._handle_part(page, cursor, instance_id)
            if count >= self._count:
                return cursor
            count = min(self._count, count * 2)
        return cursor

    async def _recover_out_of_range(self, cursor: int, instance_id: int) -> int:
        """`from` fell out of the agent's buffer: record the exact gap and go on with the oldest data.

        The oldest page is asked for without `from`, so the agent picks its own
        `firstSequence` when it answers; a `firstSequence` read first and requested after
        could already have fallen out of a busy agent's buffer, and so on without end. The
        gap runs from the cursor to just before that page's first observation, and is
        committed together with the page.
        """
        page = await self.client.sample(None, self._count)
        header = page.header
        log.info("agent=%s event=out_of_range cursor=%d oldest_first=%s oldest_next=%s",
                 self.agent, cursor, header.first_sequence, header.next_sequence)
        if header.instance_id is not None and header.instance_id != instance_id:
            raise _AgentRestarted(self._restart_from(instance_id, cursor), header.instance_id)
        if header.next_sequence is not None and header.next_sequence <= cursor:
            # Not a buffer overrun but a cursor ahead of the agent: start again from current.
            current = await self.client.current()
            log.warning("agent=%s event=out_of_range_restart cursor=%d first=%s next=%s",
                        self.agent, cursor, current.header.first_sequence, current.header.next_sequence)
            await self._publish_batch(self._unique(current.observations, 0), instance_id,
                                      current.header.next_sequence)
            return current.header.next_sequence
        if not page.observations:
            first = header.first_sequence if header.first_sequence is not None else header.next_sequence
            if first is None or first <= cursor:
                return cursor
            log.warning("agent=%s event=gap reason=OUT_OF_RANGE first_missing=%d last_missing=%d",
                        self.agent, cursor, first - 1)
            await self._publish_batch([], instance_id, first,
                                      [wire.gap_value(self.agent, instance_id, cursor, first - 1, "OUT_OF_RANGE")])
            return first
        return await self._handle_part(page, cursor, instance_id)


class _NoLimit:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info) -> None:
        return None


_NO_LIMIT = _NoLimit()


def _error_kind(error: BaseException | str | None) -> str | None:
    """What kind of trouble keeps an agent unreachable, for "status on change" (not the text)."""
    if error is None or isinstance(error, str):
        return error
    kind = type(error).__name__
    if isinstance(error, AgentError):
        return kind + ":" + ",".join(sorted(error.codes))
    cause = error.__cause__
    if cause is not None:
        kind += ":" + type(cause).__name__
    return kind


def _header_number(payload: bytes, attribute: str) -> int | None:
    """A header number read straight from the bytes of a document that does not parse."""
    match = re.search(rb"<(?:\w+:)?Header\b[^>]*\s" + attribute.encode() + rb'\s*=\s*["\'](\d+)["\']', payload[:65536])
    return int(match.group(1)) if match else None
