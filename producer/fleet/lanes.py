"""Transactional lanes: one Kafka producer commits the parts of many agents together.

A `Lane` owns one transactional producer and a queue of batches (a streamed part, a polled
page, a gap, a status change) submitted by the followers of its agents. Its thread takes
whatever is queued, at most every `commit_interval_ms` (or at once when the lane was idle),
and commits it as one transaction that carries those observations, gaps and status records
and, for every agent in it, the agent's checkpoint after its last batch in it. Commits per
second thus follow the number of lanes, not of agents; a catching-up agent simply contributes
bigger batches.

Exactly once, as for a single agent: the lane's producer is created with a transactional id
that belongs to the lane (in a group: to the agents-topic partition, so whichever process owns
the partition next fences this one), `init_transactions` completes or aborts whatever a
predecessor with that id left open, and only then are the lane's checkpoints read back
(`CheckpointStore`, read_committed, after every open transaction is decided). While the same
producer lives, the lane's checkpoint of an agent is the last one it committed. A commit whose
outcome is unknown is retried until it is known, never guessed. Any other failure aborts the
transaction and every follower of the lane starts again from the lane's committed
checkpoints: batches queued behind the failed one are dropped, because they continue what did
not commit. Device models, which a cluster may refuse as too large, are committed on their own
so that a refusal costs nothing but them.

Followers live on the event loop; the lane talks to them only through
`loop.call_soon_threadsafe` (`begin`, `committed`) and never holds its lock during Kafka calls.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from confluent_kafka import KafkaError, KafkaException, Producer

from producer import wire
from producer.service import Backoff
from producer.topics import MAX_DEVICE_RECORD_BYTES, Checkpoint, CheckpointStore, kafka_log

if TYPE_CHECKING:  # pragma: no cover
    from producer.config import ServiceConfig

log = logging.getLogger("producer.lanes")

# Errors librdkafka raises from produce() for one record that can never be sent as it is.
RECORD_ERRORS = frozenset((KafkaError.MSG_SIZE_TOO_LARGE, KafkaError._MSG_TIMED_OUT, KafkaError._INVALID_ARG))
_FENCED = frozenset((KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                     KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))


class Resync(Exception):
    """A transaction was aborted or its outcome is unknown: continue from the committed checkpoint."""


class DeviceModelsRefused(Exception):
    """The cluster refused a device model record (too large for the devices topic)."""


@dataclass(eq=False)
class Batch:
    """What one follower hands its lane: committed together, or not at all."""

    follower: Any
    epoch: int
    observations: list[dict[str, Any]] = field(default_factory=list)
    instance_id: int | None = None
    # The agent's checkpoint after this batch; None for a batch that moves no cursor.
    next_sequence: int | None = None
    gaps: list[dict[str, Any]] = field(default_factory=list)
    # Other records: (topic base name, key, encoded value), e.g. agent status.
    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    # Committed in a transaction of its own (device models).
    solo: bool = False
    # An asyncio future on the follower's loop, resolved with None or the failure (not raised).
    waiter: asyncio.Future | None = None

    @property
    def agent(self) -> str:
        return self.follower.agent


class _Closing(Exception):
    pass


class Lane:
    """One transactional producer and the agents it commits for; runs on its own thread."""

    def __init__(self, lane_id: str, transactional_id: str, config: "ServiceConfig", checkpoints: CheckpointStore,
                 loop: asyncio.AbstractEventLoop, on_committed: Callable[[list[Batch]], None],
                 fenced_pause_s: float = 1.0):
        self.lane_id = lane_id
        self.transactional_id = transactional_id
        self.config = config
        self.prefix = config.topic_prefix
        self._checkpoints = checkpoints
        self._loop = loop
        self._on_committed = on_committed
        self._fenced_pause_s = fenced_pause_s
        self._interval_s = config.commit_interval_ms / 1000.0
        self._max_records = config.max_transaction_records
        self._condition = threading.Condition()
        self._queue: deque[Batch] = deque()
        self._queued_observations = 0
        self._members: dict[str, Any] = {}
        self._pending: list[Any] = []
        self._committed: dict[str, Checkpoint | None] = {}
        self._epoch = 0
        self._closing = threading.Event()
        self._producer: Producer | None = None
        self._fenced = False
        self._delivery_errors: list[str] = []
        self._last_commit = 0.0
        # Set once the cluster refused a device model in a shared transaction: from then on
        # device models are committed alone.
        self._devices_alone = False
        self._topics = {base: wire.topic_name(base, self.prefix)
                        for base in (wire.OBSERVATIONS, wire.GAPS, wire.CHECKPOINTS, wire.DEVICES, wire.AGENT_STATUS)}
        self.commits = 0
        self.commit_seconds = 0.0  # spent in commit_transaction, for the progress log
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name=f"lane {lane_id}", daemon=True)

    # -- called from other threads (the event loop, the group)

    def start(self) -> "Lane":
        self.thread.start()
        return self

    def attach(self, follower: Any) -> None:
        """Follow `follower`'s agent in this lane; it is begun once its checkpoint is known."""
        with self._condition:
            self._members[follower.agent] = follower
            self._pending.append(follower)
            self._condition.notify_all()

    def detach(self, follower: Any) -> None:
        """Stop committing for `follower`: its queued batches are dropped (they may still be in the
        transaction being committed right now, which is fine: it carries their checkpoint)."""
        dropped: list[Batch] = []
        with self._condition:
            if self._members.get(follower.agent) is follower:
                del self._members[follower.agent]
            self._pending = [f for f in self._pending if f is not follower]
            kept: deque[Batch] = deque()
            for batch in self._queue:
                (dropped if batch.follower is follower else kept).append(batch)
            self._queue = kept
            self._queued_observations -= sum(len(b.observations) for b in dropped)
        self._fail(dropped, Resync("the agent is no longer followed here"))

    def submit(self, batch: Batch) -> None:
        with self._condition:
            current = batch.epoch == self._epoch and self._members.get(batch.agent) is batch.follower
            if current and not self._closing.is_set():
                # The lane sleeps on an empty queue or until its commit interval is up: only an
                # empty queue becoming non-empty, or a full transaction's worth, needs waking it.
                wake = not self._queue
                self._queue.append(batch)
                self._queued_observations += len(batch.observations)
                if wake or self._queued_observations >= self._max_records:
                    self._condition.notify_all()
                return
        self._fail([batch], Resync("the lane started again; the batch is read again"))

    def close(self, timeout: float = 15.0) -> bool:
        """Stop after the transaction under way (if any); True when the thread ended in time."""
        self._closing.set()
        with self._condition:
            self._condition.notify_all()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)
        return not self.thread.is_alive()

    @property
    def agents(self) -> list[str]:
        with self._condition:
            return list(self._members)

    # -- the lane's thread

    def _run(self) -> None:
        backoff = Backoff(0.5, 15.0)
        try:
            while not self._closing.is_set():
                if self._producer is None:
                    if not self._open(backoff):
                        continue
                batches = self._take()
                if batches is None:
                    break
                if not batches:
                    self._start_pending()
                    continue
                if self._commit(batches):
                    backoff.reset()
                elif not self._closing.is_set():
                    self.failures += 1
                    delay = backoff.next_delay()
                    log.warning("lane=%s event=resync retry_in=%.1fs", self.lane_id, delay)
                    if self._closing.wait(delay):
                        break
                    if self._producer is not None:
                        self._begin_all()
        except BaseException:  # a lane must never die silently
            log.exception("lane=%s event=lane_crashed", self.lane_id)
            raise
        finally:
            producer, self._producer = self._producer, None
            if producer is not None:
                try:
                    producer.flush(5)
                except KafkaException as exc:
                    log.warning("lane=%s event=producer_close_failed error=%s", self.lane_id, exc)
                del producer  # its threads end with it
            with self._condition:
                dropped = list(self._queue)
                self._queue.clear()
                self._queued_observations = 0
            self._fail(dropped, Resync("the lane stopped"))

    def _properties(self) -> dict[str, Any]:
        properties = self.config.kafka_properties()
        properties.update({
            "enable.idempotence": True,
            "acks": "all",
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": 60000,
            "linger.ms": properties.get("linger.ms", 20),
            "compression.type": properties.get("compression.type", "lz4"),
            # Device models of big machines are megabytes; observations are held to their own,
            # smaller limit before they are produced (see `_fill`).
            "message.max.bytes": properties.get("message.max.bytes", MAX_DEVICE_RECORD_BYTES + 65536),
            # Only failed deliveries come back to Python; a committed transaction means
            # every message in it was delivered.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_client_error,
            "logger": kafka_log,
        })
        return properties

    def _open(self, backoff: Backoff) -> bool:
        """Create the producer, fence and settle any predecessor, then read the lane's checkpoints."""
        if self._fenced:
            # Another process took this lane's transactional id: in a group that means the
            # partition moved, and the group tells us so within a session; taking it back at once
            # would fence the new owner in turn.
            log.warning("lane=%s event=fenced transactional_id=%s: another producer took over this lane; "
                        "waiting %.0f s before taking it back", self.lane_id, self.transactional_id,
                        self._fenced_pause_s)
            self._fenced = False
            if self._closing.wait(self._fenced_pause_s):
                return False
        started = time.monotonic()
        try:
            producer = Producer(self._properties())
            # Fences any zombie with the same transactional id and completes or aborts its open transaction.
            producer.init_transactions(60)
            self._producer = producer
            checkpoints = self._checkpoints.snapshot()
        except KafkaException as exc:
            self._producer = None
            delay = backoff.next_delay()
            log.error("lane=%s event=kafka_unavailable error=%s retry_in=%.1fs", self.lane_id, exc, delay)
            self._closing.wait(delay)
            return False
        with self._condition:
            members = list(self._members)
            self._pending = []
        self._committed = {agent: checkpoints.get(agent) for agent in members}
        log.info("lane=%s event=lane_ready transactional_id=%s agents=%d seconds=%.2f",
                 self.lane_id, self.transactional_id, len(members), time.monotonic() - started)
        self._begin_all()
        return True

    def _begin_all(self) -> None:
        with self._condition:
            self._epoch += 1
            epoch = self._epoch
            dropped = list(self._queue)
            self._queue.clear()
            self._queued_observations = 0
            members = list(self._members.values())
            self._pending = []
        self._fail(dropped, Resync("the lane started again"))
        for follower in members:
            self._loop.call_soon_threadsafe(follower.begin, epoch, self._committed.get(follower.agent))

    def _start_pending(self) -> None:
        with self._condition:
            pending, self._pending = self._pending, []
            epoch = self._epoch
        unknown = [f.agent for f in pending if f.agent not in self._committed]
        if unknown:
            try:
                checkpoints = self._checkpoints.snapshot()
            except KafkaException as exc:
                log.error("lane=%s event=checkpoints_unavailable error=%s", self.lane_id, exc)
                with self._condition:
                    self._pending = pending + self._pending
                self._closing.wait(1.0)
                return
            for agent in unknown:
                self._committed[agent] = checkpoints.get(agent)
        for follower in pending:
            with self._condition:
                current = self._members.get(follower.agent) is follower
            if current:
                self._loop.call_soon_threadsafe(follower.begin, epoch, self._committed.get(follower.agent))

    def _take(self) -> list[Batch] | None:
        """The batches of the next transaction ([] when followers wait to be begun; None: closing)."""
        with self._condition:
            while not self._queue:
                if self._closing.is_set():
                    return None
                if self._pending:
                    return []
                self._condition.wait(1.0)
            # Commit at most every interval: what arrives meanwhile joins this transaction.
            deadline = self._last_commit + self._interval_s
            while (not self._closing.is_set() and not self._pending
                   and self._queued_observations < self._max_records):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            if self._closing.is_set():
                return None
            batches: list[Batch] = []
            stale: list[Batch] = []
            observations = 0
            while self._queue:
                batch = self._queue[0]
                if batch.epoch != self._epoch or self._members.get(batch.agent) is not batch.follower:
                    stale.append(self._queue.popleft())
                    self._queued_observations -= len(batch.observations)
                    continue
                if batch.solo or (self._devices_alone and _carries_devices(batch)):
                    if not batches:
                        batches.append(self._queue.popleft())
                    break
                if batches and observations + len(batch.observations) > self._max_records:
                    break
                batches.append(self._queue.popleft())
                observations += len(batch.observations)
                self._queued_observations -= len(batch.observations)
        self._fail(stale, Resync("the lane started again"))
        return batches

    # -- one transaction

    def _on_client_error(self, error: KafkaError) -> None:
        log.warning("lane=%s event=kafka_error code=%s fatal=%s error=%s",
                    self.lane_id, error.name(), error.fatal(), error.str())

    def _on_delivery(self, error: KafkaError | None, message) -> None:
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}[{message.partition()}]: {error.str()}")
            log.error("lane=%s event=delivery_failed topic=%s error=%s (the transaction will not commit)",
                      self.lane_id, message.topic(), error.str())

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        producer = self._producer
        while True:
            try:
                producer.produce(topic, value, key)
                return
            except BufferError:
                # The local queue is full (the broker is slow or away): let it drain, then retry.
                if self._closing.is_set():
                    raise _Closing() from None
                producer.poll(0.05)

    def _rejected_gap(self, agent: str, instance_id: int, observation: dict[str, Any], reason: str) -> dict[str, Any]:
        sequence = observation.get("sequence")
        log.error("agent=%s event=observation_rejected sequence=%s device=%s data_item=%s reason=%s",
                  agent, sequence, observation.get("device_uuid"), observation.get("data_item_id"), reason)
        return wire.rejected_value(agent, instance_id, sequence, sequence, reason,
                                   observation.get("device_uuid"), observation.get("data_item_id"))

    def _fill(self, batches: list[Batch]) -> None:
        producer = self._producer
        produce = producer.produce
        observations_topic = self._topics[wire.OBSERVATIONS]
        gaps_topic = self._topics[wire.GAPS]
        encode = wire.encode
        fast_encode = wire.fast_encoder()
        limit = self.config.max_observation_bytes
        checkpoints: dict[str, tuple[int, int]] = {}
        keys: dict[Any, bytes] = {}
        for batch in batches:
            agent = batch.agent
            rejected: list[dict[str, Any]] = []
            # The hot loop: one encode and one produce per observation, nothing else.
            for observation in batch.observations:
                try:
                    value = fast_encode(observation)
                except TypeError:
                    try:
                        value = encode(observation)
                    except (TypeError, ValueError) as exc:
                        rejected.append(self._rejected_gap(agent, batch.instance_id, observation,
                                                           f"not encodable as JSON: {exc}"))
                        continue
                if len(value) > limit:
                    rejected.append(self._rejected_gap(
                        agent, batch.instance_id, observation,
                        f"{len(value)} bytes as JSON, more than the {limit} bytes a Kafka record may hold"))
                    continue
                device = observation["device_uuid"]
                key = keys.get(device)
                if key is None:
                    key = keys[device] = wire.observation_key(observation)
                try:
                    produce(observations_topic, value, key)
                except BufferError:
                    self._produce(observations_topic, key, value)
                except KafkaException as exc:
                    error = exc.args[0] if exc.args else None
                    if not isinstance(error, KafkaError) or error.code() not in RECORD_ERRORS:
                        raise
                    rejected.append(self._rejected_gap(agent, batch.instance_id, observation,
                                                       f"Kafka refused it: {error.str()}"))
            producer.poll(0)
            agent_key = wire.agent_key(agent)
            for gap in (*batch.gaps, *rejected):
                self._produce(gaps_topic, agent_key, encode(gap))
            for base, key, value in batch.records:
                self._produce(self._topics[base], key, value)
            if batch.next_sequence is not None:
                checkpoints[agent] = (batch.instance_id, batch.next_sequence)
        checkpoints_topic = self._topics[wire.CHECKPOINTS]
        for agent, (instance_id, next_sequence) in checkpoints.items():
            self._produce(checkpoints_topic, wire.agent_key(agent),
                          encode(wire.checkpoint_value(agent, instance_id, next_sequence)))

    def _commit(self, batches: list[Batch]) -> bool:
        """Commit `batches` as one transaction; False when it failed (the followers start again)."""
        producer = self._producer
        self._delivery_errors.clear()
        self._last_commit = time.monotonic()
        try:
            producer.begin_transaction()
            self._fill(batches)
        except _Closing:
            self._abort(None)
            self._fail(batches, Resync("stopping"))
            return True
        except KafkaException as exc:
            log.error("lane=%s event=transaction_failed error=%s (continuing from the committed checkpoints)",
                      self.lane_id, exc)
            self._abort(exc)
            self._resync(batches, Resync(f"producing failed: {exc}"))
            return False
        backoff = Backoff(0.2, 5.0)
        committing = time.monotonic()
        while True:
            try:
                producer.commit_transaction(30)
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable() and not error.txn_requires_abort() and not error.fatal():
                    delay = backoff.next_delay()
                    log.warning("lane=%s event=commit_retry error=%s retry_in=%.1fs", self.lane_id, error.str(), delay)
                    if self._closing.wait(delay):
                        # Stopping with the commit unresolved: leave it to the next owner, whose
                        # init_transactions completes or aborts it before the checkpoints are read.
                        self._drop_producer()
                        self._fail(batches, Resync("stopping"))
                        return True
                    continue
                log.error("lane=%s event=transaction_failed error=%s delivery_errors=%s "
                          "(continuing from the committed checkpoints)",
                          self.lane_id, error.str(), "; ".join(self._delivery_errors[:3]) or "none")
                refused = [e for e in self._delivery_errors if "too large" in e.lower()]
                if refused and any(_carries_devices(b) for b in batches) and not self._devices_alone:
                    log.warning("lane=%s event=devices_alone: the cluster refused a record as too large; device "
                                "models are committed on their own from now on", self.lane_id)
                    self._devices_alone = True
                if len(batches) == 1 and _carries_devices(batches[0]) and refused:
                    self._abort(exc)
                    if self._producer is not None:
                        # Only the device models were in it: nothing else needs to start again.
                        self._fail(batches, DeviceModelsRefused(refused[0]))
                        return True
                self._abort(exc)
                self._resync(batches, Resync(error.str()))
                return False
        self.commits += 1
        self.commit_seconds += time.monotonic() - committing
        for batch in batches:
            if batch.next_sequence is not None:
                self._committed[batch.agent] = Checkpoint(batch.instance_id, batch.next_sequence)
        self._loop.call_soon_threadsafe(self._on_committed, batches)
        return True

    def _abort(self, cause: KafkaException | None) -> None:
        error = cause.args[0] if cause is not None and cause.args else None
        if self._producer is None:
            return
        if isinstance(error, KafkaError) and (error.fatal() or error.code() in _FENCED):
            self._fenced = error.code() in _FENCED or "fenced" in error.str().lower()
            self._drop_producer()
            return
        try:
            self._producer.abort_transaction(10)
        except KafkaException as exc:
            log.warning("lane=%s event=abort_failed error=%s (the producer is recreated, which aborts it)",
                        self.lane_id, exc)
            self._drop_producer()

    def _drop_producer(self) -> None:
        self._producer = None  # destroyed without flushing; the next init_transactions aborts what was open

    def _resync(self, failed: list[Batch], reason: Resync) -> None:
        """After a failed transaction: drop what was queued behind it; every follower starts again
        from the lane's committed checkpoints (at once if the producer survived, else once a new
        producer has read them back)."""
        with self._condition:
            self._epoch += 1
            dropped = list(self._queue)
            self._queue.clear()
            self._queued_observations = 0
        self._fail([*failed, *dropped], reason)

    def _fail(self, batches: list[Batch], outcome: BaseException) -> None:
        waiters = [batch.waiter for batch in batches if batch.waiter is not None]
        if waiters:
            self._loop.call_soon_threadsafe(_resolve, waiters, outcome)


def _carries_devices(batch: Batch) -> bool:
    return any(base == wire.DEVICES for base, _, _ in batch.records)


def _resolve(waiters: list[asyncio.Future], outcome: BaseException | None) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(outcome)
