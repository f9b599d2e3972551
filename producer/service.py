"""The producer service: follows MTConnect agents and moves every observation into Kafka.

One `AgentFollower` thread per agent owns an HTTP client, a sequence cursor and its own
transactional Kafka producer. Each streamed part (or polled page) is published in one
Kafka transaction together with the agent's checkpoint `{agent, instance_id,
next_sequence}`, so the checkpoint never runs ahead of or behind the observations it
covers; on start the follower resumes from the last committed checkpoint. The cursor
only advances after a commit succeeded: a delivery error aborts the transaction and the
same observations are sent again, never silently dropped. `ProducerService.run()/stop()`
runs the followers until SIGTERM.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import random
import re
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from producer import wire
from producer.config import ConfigError, ServiceConfig, build_config
from producer.mtconnect.client import AgentClient, AgentUnreachable
from producer.mtconnect.documents import AgentError, DocumentError, StreamsDocument, parse_streams
from producer.topics import (  # noqa: F401 - read_to_end and read_checkpoints are used through here too
    MAX_DEVICE_RECORD_BYTES,
    Checkpoint,
    CheckpointStore,
    ensure_topics,
    kafka_log,
    read_checkpoints,
    read_to_end,
)

log = logging.getLogger("producer.service")


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Backoff:
    """Exponential backoff with full jitter; never gives up, resets after a success."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0):
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class KafkaAuthError(RuntimeError):
    """Kafka refused our credentials or its certificate: retrying cannot help, the configuration must change."""


def _is_auth_error(error: KafkaError) -> bool:
    text = error.str().lower()
    return (error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)
            or "certificate verify failed" in text or "authentication failed" in text)


def _describe_auth_error(properties: dict[str, Any], error: KafkaError) -> str:
    bootstrap = properties.get("bootstrap.servers", "?")
    if "certificate" in error.str().lower():
        from producer import kafka_tls

        # librdkafka words an unknown CA and a wrong host name alike: find out which it is.
        problem = kafka_tls.diagnose(properties, error.str())
        if problem is not None:
            return kafka_tls.describe(problem, properties)
        return (f"Kafka TLS certificate of {bootstrap} could not be verified: {error.str()} "
                f"(give the cluster's CA with -X ssl.ca.location=FILE, and connect with a host name "
                f"the certificate lists)")
    user = properties.get("sasl.username", "<no sasl.username>")
    mechanism = properties.get("sasl.mechanism", properties.get("sasl.mechanisms", "GSSAPI"))
    return (f"Kafka authentication failed for user {user!r} ({mechanism}) at {bootstrap}: {error.str()} "
            f"(check sasl.username and sasl.password)")


def wait_for_kafka(properties: dict[str, Any], stop: threading.Event, attempt_timeout: float = 2.0) -> bool:
    """Block until the cluster answers a metadata request; False if `stop` was set first.

    An unreachable cluster is retried with backoff for as long as it takes (a broker may be
    restarting); refused credentials or an unverifiable certificate raise `KafkaAuthError`
    within a few seconds, because waiting cannot fix them.
    """
    from producer import kafka_tls

    auth_errors: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if _is_auth_error(error):
            auth_errors.append(error)
        else:
            log.warning("event=kafka_error code=%s error=%s", error.name(), error.str())

    admin = AdminClient({**properties, "error_cb": on_error,
                         "logger": kafka_tls.HandshakeFailuresAtDebug(kafka_log)})
    backoff = Backoff(0.5, 15.0)
    while not stop.is_set():
        try:
            admin.list_topics(timeout=attempt_timeout)
            return True
        except KafkaException as exc:
            admin.poll(0)
            if auth_errors:
                raise KafkaAuthError(_describe_auth_error(properties, auth_errors[0])) from exc
            delay = backoff.next_delay()
            log.warning("event=kafka_unavailable bootstrap=%s error=%s retry_in=%.1fs",
                        properties.get("bootstrap.servers"), exc.args[0].str() if exc.args else exc, delay)
            if stop.wait(delay):
                break
    return False


class _Stopping(Exception):
    """The service is shutting down."""


class _Resync(Exception):
    """A transaction was aborted or its outcome is unknown: continue from the committed checkpoint."""


class _AgentRestarted(Exception):
    """The streams answered with a new instanceId: record the restart and re-probe at once."""

    def __init__(self, old: Checkpoint, new_instance_id: int):
        super().__init__(f"instanceId changed from {old.instance_id} to {new_instance_id}")
        self.old = old
        self.new_instance_id = new_instance_id


class _Prefetch:
    """Reads the agent's stream one part ahead on its own thread.

    HTTP reads and XML parsing of the next part overlap with the Kafka commit of the
    current one (librdkafka releases the GIL while it waits for the broker). Exceptions of
    the reader come out of `__next__` in order; `close()` ends the reader promptly.
    """

    _END = object()

    def __init__(self, iterator: Iterator[StreamsDocument], abort: Callable[[], None], name: str, depth: int = 2):
        self._iterator = iterator
        self._abort = abort
        self._queue: queue.Queue = queue.Queue(depth)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._pump, name=f"read {name}", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self) -> None:
        try:
            for part in self._iterator:
                if not self._put(part):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the follower thread, which decides what it means
            self._put(exc)
        finally:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()  # releases the HTTP response even when the follower stopped reading early

    def __iter__(self) -> "_Prefetch":
        return self

    def __next__(self) -> StreamsDocument:
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._closed.set()
        self._abort()
        self._thread.join(10)


class AgentFollower:
    """Follows one agent: probe, current, then the sample stream, each batch in one transaction.

    The cursor always continues from the last committed checkpoint. Whenever a transactional
    producer is created (at start, and after one was dropped because a transaction's outcome
    was unknown), `init_transactions` first completes or aborts whatever a predecessor with the
    same transactional id left open, even a process killed with SIGKILL mid-commit, and only
    then is the checkpoint read back with `read_committed`. While the same producer lives, the
    checkpoint in memory is the last one it committed (it changes only after a commit
    succeeded). So a batch is never sent twice and never skipped, whatever happened before.
    """

    def __init__(self, agent: str, config: ServiceConfig, stop_event: threading.Event,
                 on_batch: Callable[[str, int], None] | None = None,
                 checkpoints: CheckpointStore | None = None):
        self.agent = agent.rstrip("/")
        self.checkpoints = checkpoints or CheckpointStore(config.kafka_properties(), config.topic_prefix)
        self.config = config
        self.prefix = config.topic_prefix
        self.checkpoint: Checkpoint | None = None
        self.stop_event = stop_event
        self.on_batch = on_batch
        self.client = AgentClient(self.agent, verify=config.verify_tls,
                                  timeout=(5.0, config.http_timeout_s), stream_idle_s=config.stream_idle_seconds())
        self._producer: Producer | None = None
        self._delivery_errors: list[str] = []
        self._state: str | None = None
        self._error_kind: str | None = None
        self._since = utc_now_iso()
        self._probe_instance: int | None = None
        self._published_devices: dict[str, bytes] = {}
        self._probe_disagreement_logged = False
        self._keys: dict[Any, bytes] = {}
        self._count = config.count  # observations per request, capped at the agent's buffer size
        self.thread = threading.Thread(target=self._run, name=f"follow {self.agent}", daemon=True)
        self.failure: BaseException | None = None

    # -- Kafka

    @property
    def transactional_id(self) -> str:
        digest = hashlib.sha256(f"{self.prefix}|{self.agent}".encode()).hexdigest()[:16]
        return f"{self.config.transactional_id_prefix}-{digest}"

    def _topic(self, base: str) -> str:
        return wire.topic_name(base, self.prefix)

    def _make_producer(self) -> Producer:
        properties = self.config.kafka_properties()
        properties.update({
            "enable.idempotence": True,
            "acks": "all",
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": 60000,
            "linger.ms": properties.get("linger.ms", 20),
            "compression.type": properties.get("compression.type", "lz4"),
            # Device models of big machines are megabytes; observations are held to their own,
            # smaller limit before they are produced (see `_publish_batch`).
            "message.max.bytes": properties.get("message.max.bytes", MAX_DEVICE_RECORD_BYTES + 65536),
            # Only failed deliveries come back to Python; a committed transaction means
            # every message in it was delivered.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_client_error,
            "logger": kafka_log,
        })
        producer = Producer(properties)
        # Fences any zombie with the same transactional id and completes or aborts its open transaction.
        producer.init_transactions(60)
        return producer

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = self._make_producer()
        return self._producer

    def _on_client_error(self, error: KafkaError) -> None:
        log.warning("agent=%s event=kafka_error code=%s fatal=%s error=%s",
                    self.agent, error.name(), error.fatal(), error.str())

    def _on_delivery(self, error: KafkaError | None, message) -> None:
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}[{message.partition()}]: {error.str()}")
            log.error("agent=%s event=delivery_failed topic=%s error=%s (the transaction will not commit)",
                      self.agent, message.topic(), error.str())

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        producer = self.producer
        while True:
            try:
                producer.produce(topic, value, key)
                return
            except BufferError:
                # The local queue is full (the broker is slow or away): let it drain, then retry.
                if self.stop_event.is_set():
                    raise _Stopping() from None
                producer.poll(0.05)

    def _transaction(self, fill: Callable[[], None]) -> None:
        """Run `fill` and commit it as one transaction.

        A commit that fails with a retriable error (broker away, timeout) is retried until it
        succeeds: the outcome of a commit must never be guessed. Anything else aborts the
        transaction (or, if that is impossible, drops the producer so the next
        `init_transactions` aborts it) and raises `_Resync`: the follower then continues from
        the checkpoint committed in Kafka, so nothing is lost or sent twice.
        """
        producer = self.producer
        self._delivery_errors.clear()
        try:
            producer.begin_transaction()
            fill()
        except KafkaException as exc:
            self._abort(exc)
            raise _Resync(f"producing failed: {exc}") from exc
        except BaseException:
            self._abort(None)
            raise
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                producer.commit_transaction(30)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable() and not error.txn_requires_abort() and not error.fatal():
                    delay = backoff.next_delay()
                    log.warning("agent=%s event=commit_retry error=%s retry_in=%.1fs",
                                self.agent, error.str(), delay)
                    if self.stop_event.wait(delay):
                        # Shutting down with the commit unresolved: leave it to the next start,
                        # whose init_transactions completes or aborts it before the checkpoint is read.
                        self._drop_producer()
                        raise _Stopping() from exc
                    continue
                log.error("agent=%s event=transaction_failed error=%s delivery_errors=%s "
                          "(continuing from the committed checkpoint)",
                          self.agent, error.str(), "; ".join(self._delivery_errors[:3]) or "none")
                self._abort(exc)
                raise _Resync(error.str()) from exc

    def _abort(self, cause: KafkaException | None) -> None:
        error = cause.args[0] if cause is not None and cause.args else None
        if self._producer is None:
            return
        if isinstance(error, KafkaError) and error.fatal():
            self._drop_producer()
            return
        try:
            self._producer.abort_transaction(10)
        except KafkaException as exc:
            log.warning("agent=%s event=abort_failed error=%s (the producer is recreated, which aborts it)",
                        self.agent, exc)
            self._drop_producer()

    def _drop_producer(self) -> None:
        self._producer = None  # destroyed without flushing; the coordinator aborts what was open

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.flush(5)
            except KafkaException as exc:
                log.warning("agent=%s event=producer_close_failed error=%s", self.agent, exc)

    # -- publishing

    def _publish_devices(self, document) -> None:
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

        def fill() -> None:
            for device, value in changed:
                self._produce(self._topic(wire.DEVICES), wire.device_key(device), value)
        try:
            self._transaction(fill)
        except _Resync:
            refused = [error for error in self._delivery_errors if "too large" in error.lower()]
            if not refused:
                raise
            # The cluster refuses records this big on the devices topic: say so once, follow on.
            log.error("agent=%s event=device_models_refused error=%s (the models are not published; "
                      "their observations still are; raise max.message.bytes on the devices topic)",
                      self.agent, refused[0])
        for device, value in changed:
            self._published_devices[str(device["device_uuid"])] = value
        log.info("agent=%s event=devices_published devices=%d data_items=%d",
                 self.agent, len(changed), sum(len(device.get("data_items") or ()) for device, _ in changed))

    def _publish_status(self, state: str, error: BaseException | str | None, instance_id: int | None) -> None:
        """One `agent-status` record per change: of state, or of the kind of error that keeps an
        agent unreachable (refused connection, timeout, TLS, malformed document, agent error
        code) - never one per retry. The text of the first error of that kind is kept."""
        kind = _error_kind(error) if state == "unreachable" else None
        if state == self._state and kind == self._error_kind:
            return
        if state != self._state:
            self._since = utc_now_iso()
        text = None if error is None else str(error)
        value = wire.agent_status_value(self.agent, state, self._since, text, instance_id)
        self._transaction(lambda: self._produce(self._topic(wire.AGENT_STATUS), wire.agent_key(self.agent),
                                                wire.encode(value)))
        self._state, self._error_kind = state, kind
        log.info("agent=%s event=agent_status state=%s error=%s", self.agent, state, text)

    def _key(self, device_uuid: Any) -> bytes:
        key = self._keys.get(device_uuid)
        if key is None:
            key = self._keys[device_uuid] = wire.observation_key({"device_uuid": device_uuid})
        return key

    def _rejected_gap(self, instance_id: int, observation: dict[str, Any], reason: str) -> dict[str, Any]:
        sequence = observation.get("sequence")
        log.error("agent=%s event=observation_rejected sequence=%s device=%s data_item=%s reason=%s",
                  self.agent, sequence, observation.get("device_uuid"), observation.get("data_item_id"), reason)
        return wire.rejected_value(self.agent, instance_id, sequence, sequence, reason,
                                   observation.get("device_uuid"), observation.get("data_item_id"))

    def _publish_batch(self, observations: list[dict[str, Any]], instance_id: int, next_sequence: int,
                       gaps: list[dict[str, Any]] = ()) -> None:
        observations_topic = self._topic(wire.OBSERVATIONS)
        checkpoint = wire.checkpoint_value(self.agent, instance_id, next_sequence)
        encode = wire.encode
        fast_encode = wire.fast_encoder()
        keys = self._keys
        limit = self.config.max_observation_bytes

        def fill() -> None:
            # The hot loop: one encode and one produce per observation, nothing else.
            producer = self.producer
            produce = producer.produce
            rejected = []
            for observation in observations:
                try:
                    value = fast_encode(observation)
                except TypeError:
                    try:
                        value = encode(observation)
                    except (TypeError, ValueError) as exc:
                        rejected.append(self._rejected_gap(instance_id, observation, f"not encodable as JSON: {exc}"))
                        continue
                if len(value) > limit:
                    rejected.append(self._rejected_gap(
                        instance_id, observation,
                        f"{len(value)} bytes as JSON, more than the {limit} bytes a Kafka record may hold"))
                    continue
                device = observation["device_uuid"]
                key = keys.get(device) or self._key(device)
                try:
                    produce(observations_topic, value, key)
                except BufferError:
                    self._produce(observations_topic, key, value)
                except KafkaException as exc:
                    error = exc.args[0] if exc.args else None
                    if not isinstance(error, KafkaError) or error.code() not in _RECORD_ERRORS:
                        raise
                    rejected.append(self._rejected_gap(instance_id, observation, f"Kafka refused it: {error.str()}"))
            producer.poll(0)
            for gap in [*gaps, *rejected]:
                self._produce(self._topic(wire.GAPS), wire.agent_key(self.agent), encode(gap))
            self._produce(self._topic(wire.CHECKPOINTS), wire.agent_key(self.agent), encode(checkpoint))

        self._transaction(fill)
        self.checkpoint = Checkpoint(instance_id, next_sequence)
        if self.on_batch:
            self.on_batch(self.agent, len(observations))

    # -- following

    def _run(self) -> None:
        backoff = Backoff()
        try:
            while not self.stop_event.is_set():
                try:
                    self._session(backoff)
                except _Stopping:
                    break
                except _AgentRestarted as exc:
                    log.warning("agent=%s event=agent_restarted %s; probing it again", self.agent, exc)
                    self._agent_restarted(exc.old, exc.new_instance_id)
                except _Resync as exc:
                    delay = backoff.next_delay()
                    log.warning("agent=%s event=resync reason=%s retry_in=%.1fs", self.agent, exc, delay)
                    if self.stop_event.wait(delay):
                        break
                except KafkaException as exc:
                    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                    if error is not None and error.fatal():
                        self._drop_producer()
                    delay = backoff.next_delay()
                    log.error("agent=%s event=kafka_unavailable error=%s retry_in=%.1fs",
                              self.agent, error.str() if error else exc, delay)
                    if self.stop_event.wait(delay):
                        break
                except (AgentUnreachable, DocumentError, AgentError) as exc:
                    if self.stop_event.is_set():
                        break
                    delay = backoff.next_delay()
                    log.warning("agent=%s event=agent_problem error=%s retry_in=%.1fs", self.agent, exc, delay)
                    try:
                        self._publish_status("unreachable", exc,
                                             self.checkpoint.instance_id if self.checkpoint else None)
                    except (_Stopping, _Resync, KafkaException) as status_exc:
                        log.warning("agent=%s event=status_not_published error=%s", self.agent, status_exc)
                        if self.stop_event.is_set():
                            break
                    if self.stop_event.wait(delay):
                        break
        except BaseException as exc:  # a thread must never die silently
            self.failure = exc
            log.exception("agent=%s event=follower_crashed", self.agent)
            raise
        finally:
            self.client.close()
            self._close_producer()

    def _session(self, backoff: Backoff) -> None:
        """One connection's worth of following, from the checkpoint committed in Kafka.

        The sequence space is the Streams documents': their header's instanceId decides
        whether the agent restarted. The probe's header is advisory (some agents answer it with
        another instanceId than their streams); a disagreement is logged, never acted on.
        """
        if self._producer is None:
            # A new producer's init_transactions settles whatever its predecessor left open; only
            # then is the committed checkpoint final. While the same producer lives, the
            # checkpoint in memory is exactly the last one it committed.
            self.producer  # noqa: B018
            try:
                self.checkpoint = self.checkpoints.get(self.agent)
            except BaseException:
                self._drop_producer()  # so the next session reads it again
                raise
        devices = self.client.probe()
        self._probe_instance = devices.header.instance_id
        # Agents refuse a `count` above their buffer size (cppagent answers INVALID_REQUEST).
        buffer_size = devices.header.buffer_size
        self._count = min(self.config.count, buffer_size) if buffer_size else self.config.count
        self._publish_devices(devices)
        if self.checkpoint is None:
            current = self.client.current()
            instance_id = current.header.instance_id
            cursor = current.header.next_sequence
            self._note_instance(instance_id)
            self._publish_batch(self._unique(current.observations, 0), instance_id, cursor)
            self._publish_status("connected", None, instance_id)
            backoff.reset()
            log.info("agent=%s event=started_from_current observations=%d next_sequence=%d",
                     self.agent, len(current.observations), cursor)
        else:
            log.info("agent=%s event=resume instance_id=%d next_sequence=%d",
                     self.agent, self.checkpoint.instance_id, self.checkpoint.next_sequence)
        self._stream_from(self.checkpoint.next_sequence, backoff)

    def _note_instance(self, streams_instance: int | None) -> None:
        probe_instance = self._probe_instance
        if (streams_instance is not None and probe_instance is not None and probe_instance != streams_instance
                and not self._probe_disagreement_logged):
            self._probe_disagreement_logged = True
            log.warning("agent=%s event=probe_instance_disagrees probe_instance=%s streams_instance=%s "
                        "(the streams' instanceId decides; the probe's is ignored)",
                        self.agent, probe_instance, streams_instance)

    def _agent_restarted(self, old: Checkpoint, new_instance_id: int) -> None:
        """A new instanceId: what the old instance had not served is lost; start the new one at 1.

        The gap's `last_missing` is null: how far the old instance got before it went away
        cannot be known any more. If the new instance's buffer no longer starts at 1, the
        stream answers OUT_OF_RANGE and that exact range is recorded as a second gap.
        """
        gap = wire.gap_value(self.agent, old.instance_id, old.next_sequence, None, "AGENT_RESTART")
        log.warning("agent=%s event=gap reason=AGENT_RESTART old_instance=%s new_instance=%s first_missing=%s",
                    self.agent, old.instance_id, new_instance_id, old.next_sequence)
        self._publish_batch([], new_instance_id, 1, [gap])

    def _stream_from(self, cursor: int, backoff: Backoff) -> None:
        assert self.checkpoint is not None
        instance_id = self.checkpoint.instance_id
        flowing = False
        while not self.stop_event.is_set():
            parts = _Prefetch(self.client.stream(cursor, count=self._count,
                                                 interval_ms=self.config.interval_ms,
                                                 heartbeat_ms=self.config.heartbeat_ms),
                              self.client.abort_stream, self.agent)
            try:
                for part in parts:
                    cursor = self._handle_part(part, cursor, instance_id)
                    if not flowing:
                        # Data flows again: only now is a later failure a fresh one.
                        flowing = True
                        self._publish_status("connected", None, instance_id)
                        backoff.reset()
                    if self.stop_event.is_set():
                        return
            except AgentError as exc:
                if "OUT_OF_RANGE" not in exc.codes:
                    raise
                parts.close()
                cursor = self._recover_out_of_range(cursor, instance_id)
                continue
            except DocumentError as exc:
                parts.close()
                cursor = self._isolate(cursor, instance_id, exc)
                continue
            finally:
                parts.close()
            if self.stop_event.is_set():
                return
            # The agent closed the stream (idle timeout, restart): resume from the cursor.
            log.info("agent=%s event=stream_closed next_sequence=%d", self.agent, cursor)

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

    def _handle_part(self, part: StreamsDocument, cursor: int, instance_id: int) -> int:
        header = part.header
        if log.isEnabledFor(logging.DEBUG):
            log.debug("agent=%s event=part cursor=%d first=%s last=%s count=%d header_first=%s header_next=%s",
                      self.agent, cursor, part.observations[0]["sequence"] if part.observations else None,
                      part.observations[-1]["sequence"] if part.observations else None, len(part.observations),
                      header.first_sequence, header.next_sequence)
        if header.instance_id is not None and header.instance_id != instance_id:
            raise _AgentRestarted(self.checkpoint or Checkpoint(instance_id, cursor), header.instance_id)
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
        self._publish_batch(observations, instance_id, next_sequence, gaps)
        return next_sequence

    def _isolate(self, cursor: int, instance_id: int, error: DocumentError) -> int:
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
        while not self.stop_event.is_set():
            payload = self.client.sample_bytes(cursor, count)
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
                self._publish_batch([], instance_id, last_missing + 1, [gap])
                cursor = last_missing + 1
                continue
            if not page.observations:
                return cursor  # caught up with the agent
            cursor = self._handle_part(page, cursor, instance_id)
            if count >= self._count:
                return cursor
            count = min(self._count, count * 2)
        return cursor

    def _recover_out_of_range(self, cursor: int, instance_id: int) -> int:
        """`from` fell out of the agent's buffer: record the exact gap and go on with the oldest data.

        The oldest page is asked for without `from`, so the agent picks its own
        `firstSequence` when it answers; a `firstSequence` read first and requested after
        could already have fallen out of a busy agent's buffer, and so on without end. The
        gap runs from the cursor to just before that page's first observation, and is
        committed together with the page.
        """
        page = self.client.sample(None, self._count)
        header = page.header
        log.info("agent=%s event=out_of_range cursor=%d oldest_first=%s oldest_next=%s",
                 self.agent, cursor, header.first_sequence, header.next_sequence)
        if header.instance_id is not None and header.instance_id != instance_id:
            raise _AgentRestarted(self.checkpoint or Checkpoint(instance_id, cursor), header.instance_id)
        if header.next_sequence is not None and header.next_sequence <= cursor:
            # Not a buffer overrun but a cursor ahead of the agent: start again from current.
            current = self.client.current()
            log.warning("agent=%s event=out_of_range_restart cursor=%d first=%s next=%s",
                        self.agent, cursor, current.header.first_sequence, current.header.next_sequence)
            self._publish_batch(self._unique(current.observations, 0), instance_id, current.header.next_sequence)
            return current.header.next_sequence
        if not page.observations:
            first = header.first_sequence if header.first_sequence is not None else header.next_sequence
            if first is None or first <= cursor:
                return cursor
            log.warning("agent=%s event=gap reason=OUT_OF_RANGE first_missing=%d last_missing=%d",
                        self.agent, cursor, first - 1)
            self._publish_batch([], instance_id, first,
                                [wire.gap_value(self.agent, instance_id, cursor, first - 1, "OUT_OF_RANGE")])
            return first
        return self._handle_part(page, cursor, instance_id)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.client.interrupt()


# Errors librdkafka raises from produce() for one record that can never be sent as it is.
_RECORD_ERRORS = frozenset((KafkaError.MSG_SIZE_TOO_LARGE, KafkaError._MSG_TIMED_OUT, KafkaError._INVALID_ARG))


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


class ProducerService:
    """Runs one follower per configured agent until `stop()` (or SIGTERM via `run_cli`)."""

    def __init__(self, config: ServiceConfig):
        config.validate()
        self.config = config
        self._stop = threading.Event()
        self.followers: list[AgentFollower] = []
        self._lock = threading.Lock()
        self.published = 0

    @property
    def running(self) -> bool:
        return any(f.thread.is_alive() for f in self.followers)

    def _count(self, agent: str, count: int) -> None:
        with self._lock:
            self.published += count

    def start(self) -> bool:
        """Wait for Kafka, create the topics and start the followers; False if stopped first."""
        properties = self.config.kafka_properties()
        if not wait_for_kafka(properties, self._stop):
            return False
        ensure_topics(properties, self.config.topic_prefix, self.config.observation_partitions)
        # One reader of the checkpoints topic for all followers of this process.
        checkpoints = CheckpointStore(properties, self.config.topic_prefix)
        for agent in self.config.agents:
            follower = AgentFollower(agent, self.config, self._stop, self._count, checkpoints)
            self.followers.append(follower)
            follower.start()
        return True

    def run(self, report_every: float = 10.0) -> int:
        if not self.start():
            return 0
        last = time.monotonic()
        last_count = 0
        while not self._stop.wait(0.5):
            if not self.running:
                break
            now = time.monotonic()
            if now - last >= report_every:
                rate = (self.published - last_count) / (now - last)
                log.info("event=progress published=%d obs_per_s=%.0f", self.published, rate)
                last, last_count = now, self.published
        self.join()
        failed = [f for f in self.followers if f.failure is not None]
        return 1 if failed else 0

    def stop(self) -> None:
        self._stop.set()
        for follower in self.followers:
            follower.stop()

    def join(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for follower in self.followers:
            follower.thread.join(max(0.1, deadline - time.monotonic()))


def run_cli(args) -> int:
    try:
        config = build_config(args)
        config.validate()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    service = ProducerService(config)

    def _on_signal(signum, frame) -> None:
        log.info("event=stopping signal=%s", signal.Signals(signum).name)
        service.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info("event=starting agents=%s bootstrap=%s topic_prefix=%r",
             ",".join(config.agents), config.kafka_properties().get("bootstrap.servers"), config.topic_prefix)
    try:
        return service.run()
    except KafkaAuthError as exc:
        log.error("event=kafka_auth_failed %s", exc)
        service.stop()
        return 2
    except KafkaException as exc:
        log.error("event=kafka_unavailable error=%s", exc)
        service.stop()
        return 1
