"""The MTConnect replay agent: the recorded NIST test-bed data served as a live MTConnect 1.3 agent.

`ReplayAgent` plays the SHDR day files of `resources/replay` (see `producer.replay_data`) in
real time, scaled by a speed factor, every machine in parallel and looping, and serves the
observations over the real MTConnect REST protocol on 127.0.0.1: `probe`, `current` (with
`at`), `sample` (with `from`/`count`) and multipart streaming (`interval`/`heartbeat`), the
`MTConnectError` documents a cppagent 1.x sends, and a bounded, sequence-numbered buffer whose
`firstSequence` moves on as it overflows. `restart()` gives a new `instanceId` and starts the
sequence again at 1, so the producer's resume, gap and restart handling can be exercised
against the same protocol a real agent speaks. `python -m producer replay` runs it from the
command line (`add_replay_arguments` / `run_replay_cli`).

Two options make it behave like other agents in tests: `no_stream` (`--no-stream`) turns it
into an agent that cannot stream (it ignores `interval` and answers a plain document), and
`tls_cert`/`tls_key` (`--tls-cert`/`--tls-key`) serve HTTPS, with the URL naming `localhost`.
"""
from __future__ import annotations

import argparse
import heapq
import io
import logging
import math
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from lxml import etree

from producer.replay_data import (
    DEVICES_NS,
    NIST_NS,
    STREAMS_NS,
    UNAVAILABLE,
    DataItemInfo,
    DayRecording,
    DeviceInfo,
    Record,
    ReplayData,
    fold_state,
    format_timestamp,
    load_replay_data,
    next_condition_entries,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 5000  # cppagent's default
DEFAULT_BUFFER = 131072  # 2^17, cppagent's default BufferSize
DEFAULT_COUNT = 100
DEFAULT_HEARTBEAT_MS = 10_000
# The agent version written into every Header: the 1.3 line the NIST VDS ran when the data
# was recorded, so clients pick their MTConnect 1.3 code paths.
AGENT_VERSION = "1.3.0.18"
ERROR_NS = "urn:mtconnect.org:MTConnectError:1.3"
ASSETS_NS = "urn:mtconnect.org:MTConnectAssets:1.3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
# A looping day restarts one recorded second after its last record, so the last and first
# records of consecutive loops never share a timestamp.
LOOP_GAP_S = 1.0
# Records released per lock hold at `max` speed, so readers are never starved.
MAX_BATCH = 1000
# The host name in the URL of an HTTPS agent: the name its test certificate is issued for.
TLS_HOST = "localhost"
# A client that connects over TLS but never finishes the handshake holds no thread longer than this.
TLS_HANDSHAKE_TIMEOUT_S = 10.0

_STATUS = {
    "OUT_OF_RANGE": 404,
    "NO_DEVICE": 404,
    "ASSET_NOT_FOUND": 404,
    "INVALID_REQUEST": 400,
    "UNSUPPORTED": 400,
    "INTERNAL_ERROR": 500,
}
_CONDITION_TAGS = {
    "NORMAL": f"{{{STREAMS_NS}}}Normal",
    "WARNING": f"{{{STREAMS_NS}}}Warning",
    "FAULT": f"{{{STREAMS_NS}}}Fault",
    "UNAVAILABLE": f"{{{STREAMS_NS}}}Unavailable",
}
_CATEGORY_SLOT = {"SAMPLE": 0, "EVENT": 1, "CONDITION": 2}
_CATEGORY_TAGS = (f"{{{STREAMS_NS}}}Samples", f"{{{STREAMS_NS}}}Events", f"{{{STREAMS_NS}}}Condition")
_STREAMS_NSMAP = {None: STREAMS_NS, "x": NIST_NS, "xsi": XSI_NS}
_STREAMS_ROOT_ATTRIBUTES = {
    f"{{{XSI_NS}}}schemaLocation": f"{STREAMS_NS} http://schemas.mtconnect.org/schemas/MTConnectStreams_1.3.xsd "
    f"{NIST_NS} /schemas/NistStreams_1.3.xsd"
}
_STREAMS_ROOT_TAG = b"<MTConnectStreams "
_STREAMS_ROOT_TAG_WITH_M = f'<MTConnectStreams xmlns:m="{STREAMS_NS}" '.encode()
# The small Error and Assets documents are trees under a parsed root: declaring the default
# namespace first makes lxml write unprefixed elements while still declaring `m` as cppagent does.
_ERROR_ROOT = (
    f'<MTConnectError xmlns="{ERROR_NS}" xmlns:m="{ERROR_NS}" xmlns:xsi="{XSI_NS}" '
    f'xsi:schemaLocation="{ERROR_NS} http://schemas.mtconnect.org/schemas/MTConnectError_1.3.xsd"/>'
).encode()
_ASSETS_ROOT = (
    f'<MTConnectAssets xmlns="{ASSETS_NS}" xmlns:m="{ASSETS_NS}" xmlns:xsi="{XSI_NS}" '
    f'xsi:schemaLocation="{ASSETS_NS} http://schemas.mtconnect.org/schemas/MTConnectAssets_1.3.xsd"/>'
).encode()


class Observation(NamedTuple):
    """One released value; immutable, so documents are built from it without a lock."""

    sequence: int
    timestamp: str
    item: int
    value: str
    level: str | None
    native_code: str
    native_severity: str
    qualifier: str


class RequestError(Exception):
    """A request the agent answers with an MTConnectError document."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Page:
    """What one response needs, copied out of the buffer under the lock."""

    instance_id: int
    generation: int
    first_sequence: int
    last_sequence: int
    next_sequence: int  # the Header's nextSequence for this page
    observations: list[Observation]


class _Cursor:
    """Where one device's recording stands: its next record and when it is due."""

    def __init__(self, recording: DayRecording, start_index: int, start_offset_s: float, loop: bool):
        self.recording = recording
        self.index = start_index
        # Recorded seconds after playback start at which this pass's offset 0 falls.
        self.base = -start_offset_s
        self.loop = loop
        self.period = recording.duration_s + LOOP_GAP_S

    @property
    def due(self) -> float:
        return self.base + self.recording.records[self.index].offset_s

    def advance(self) -> bool:
        """Step to the next record; False when the recording is over and does not loop."""
        self.index += 1
        if self.index < len(self.recording.records):
            return True
        if not self.loop:
            return False
        self.index = 0
        self.base += self.period
        return True


def parse_speed(text: str | float) -> float:
    """`max` (or 0) -> infinity: release everything as fast as possible; else a positive factor."""
    if isinstance(text, str) and text.strip().lower() in ("max", "inf", "infinity"):
        return math.inf
    speed = float(text)
    if math.isnan(speed) or speed < 0:
        raise ValueError(f"speed must be a positive number or 'max', not {text!r}")
    return math.inf if speed == 0 else speed


def parse_time_of_day(text: str) -> float:
    """`HH:MM[:SS[.fff]]` -> seconds since midnight."""
    parts = text.strip().split(":")
    if not 2 <= len(parts) <= 3:
        raise ValueError(f"time of day must be HH:MM:SS, not {text!r}")
    hours, minutes = int(parts[0]), int(parts[1])
    seconds = float(parts[2]) if len(parts) == 3 else 0.0
    if not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= seconds < 60):
        raise ValueError(f"time of day out of range: {text!r}")
    return hours * 3600 + minutes * 60 + seconds


class ReplayAgent:
    """An MTConnect 1.3 agent on 127.0.0.1 replaying the recorded NIST data.

    `speed` scales recorded time (60 = one recorded minute per second; `"max"`, 0 or inf =
    no waiting). `start_offset_s` is where playback starts, in seconds after each day's first
    record, for all devices or as `{device_name: seconds}`; `start_time` ("HH:MM:SS", UTC time
    of day on each recorded day) overrides it. `limit` caps the number of replayed records
    (the startup UNAVAILABLE and snapshot observations are not counted); at `max` speed
    without a limit each day plays once, otherwise days loop.

    `max_rate` (observations per second) caps how fast the agent releases: the recorded days
    come in bursts (machines that report many items at one instant, hours of silence before a
    start-up), tens of thousands of observations a second for a moment even where the average
    is a few thousand. With a cap, playback slows down for a burst instead - the observations
    keep their order and spacing but are stamped with the moment they are released, as a
    machine producing at most that rate would stamp them - so a load test offers a steady rate.

    `no_stream=True` makes an agent that cannot stream: `interval` and `heartbeat` are ignored
    and `sample`/`current` always answer one plain document, as some older or proxied agents
    do. `tls_cert` (PEM certificate chain) and `tls_key` (its PEM private key; omit it when
    the cert file holds the key too) serve HTTPS on the same port; `url` then reads
    `https://localhost:PORT`, so the certificate must be issued for `localhost`.
    """

    def __init__(
        self,
        port: int = 0,
        speed: float | str = 1.0,
        buffer_size: int = DEFAULT_BUFFER,
        data_dir: Path | str | None = None,
        start_offset_s: float | Mapping[str, float] = 0.0,
        limit: int | None = None,
        start_time: str | None = None,
        host: str = "127.0.0.1",
        no_stream: bool = False,
        tls_cert: Path | str | None = None,
        tls_key: Path | str | None = None,
        max_rate: float | None = None,
    ):
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        if max_rate is not None and not (max_rate > 0 and math.isfinite(max_rate)):
            raise ValueError("max_rate must be a positive number of observations per second")
        self.max_rate = max_rate
        self.speed = parse_speed(speed)
        self.buffer_size = int(buffer_size)
        self.limit = limit
        self.host = host
        self.no_stream = bool(no_stream)
        if tls_key is not None and tls_cert is None:
            raise ValueError("tls_key needs tls_cert")
        self._tls_context: ssl.SSLContext | None = None
        if tls_cert is not None:
            # Loaded here, so a missing or mismatched file fails before anything starts.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls_cert), str(tls_key) if tls_key is not None else None)
            self._tls_context = context
        self._requested_port = port
        self.data: ReplayData = load_replay_data(data_dir)
        self._items: tuple[DataItemInfo, ...] = self.data.data_items
        self._is_condition = [item.is_condition for item in self._items]
        self._start_offsets = self._resolve_start_offsets(start_offset_s, start_time)
        self._log_skipped()
        self._element_statics = [_element_static(item) for item in self._items]
        self._sender = socket.gethostname() or "localhost"

        # Everything below is guarded by _changed (a Condition over one lock).
        self._changed = threading.Condition()
        self._instance_id = 0
        self._generation = 0
        self._next_sequence = 1
        self._ring: list[Observation | None] = [None] * self.buffer_size
        self._state: list[Any] = [None] * len(self._items)  # Observation, or dict for conditions
        self._base_state: list[Any] = [None] * len(self._items)  # state before firstSequence
        self._closing = False

        self._lifecycle = threading.Lock()
        self._player: threading.Thread | None = None
        self._player_stop = threading.Event()
        self._server: _AgentServer | None = None
        self._server_thread: threading.Thread | None = None
        self.released_records = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> ReplayAgent:
        with self._lifecycle:
            if self._server is not None:
                return self
            self._server = _AgentServer((self.host, self._requested_port), self, self._tls_context)
            with self._changed:
                self._closing = False
            self._reset(int(time.time()))
            self._start_player()
            self._server_thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="replay-http", daemon=True
            )
            self._server_thread.start()
        log.info(
            "replay agent %s: %d devices, %d data items, speed %s, buffer %d, instanceId %d",
            self.url, len(self.data.devices), len(self._items),
            "max" if math.isinf(self.speed) else f"{self.speed:g}", self.buffer_size, self._instance_id,
        )
        return self

    def stop(self) -> None:
        """Stop playback and serving; joins every thread and closes every socket."""
        with self._lifecycle:
            self._stop_player()
            with self._changed:
                self._closing = True
                self._changed.notify_all()
            server, self._server = self._server, None
            if server is None:
                return
            server.shutdown()
            server.close_connections()
            server.server_close()  # joins the request threads
            if self._server_thread is not None:
                self._server_thread.join()
                self._server_thread = None

    def restart(self, new_instance_id: int | None = None) -> int:
        """Restart in-process as a fresh agent would: new instanceId, buffer cleared, sequence 1.

        Open streams end (a real restart drops them); the HTTP port stays the same.
        Returns the new instanceId.
        """
        with self._lifecycle:
            self._stop_player()
            old = self._instance_id
            instance_id = new_instance_id if new_instance_id is not None else max(int(time.time()), old + 1)
            self._reset(int(instance_id))
            if self._server is not None:
                self._start_player()
        log.info("replay agent restarted: instanceId %d -> %d", old, instance_id)
        return int(instance_id)

    def __enter__(self) -> ReplayAgent:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("replay agent not started")
        return self._server.server_address[1]

    @property
    def tls(self) -> bool:
        return self._tls_context is not None

    @property
    def url(self) -> str:
        if self._tls_context is not None:
            return f"https://{TLS_HOST}:{self.port}"
        return f"http://{self.host}:{self.port}"

    @property
    def instance_id(self) -> int:
        with self._changed:
            return self._instance_id

    @property
    def next_sequence(self) -> int:
        with self._changed:
            return self._next_sequence

    @property
    def first_sequence(self) -> int:
        with self._changed:
            return self._first_sequence()

    @property
    def playing(self) -> bool:
        """True while records are still being released (False once a limit or single pass is done)."""
        player = self._player
        return player is not None and player.is_alive()

    def wait_closed(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when the agent stops or restarts meanwhile (streams end then)."""
        deadline = time.monotonic() + seconds
        with self._changed:
            generation = self._generation
            while not self._closing and self._generation == generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    # ---- playback --------------------------------------------------------------------------

    def _resolve_start_offsets(
        self, start_offset_s: float | Mapping[str, float], start_time: str | None
    ) -> dict[str, float]:
        offsets: dict[str, float] = {}
        seconds_of_day = parse_time_of_day(start_time) if start_time else None
        for recording in self.data.recordings:
            if seconds_of_day is not None:
                offset = recording.offset_for_time_of_day(seconds_of_day)
            elif isinstance(start_offset_s, Mapping):
                offset = float(start_offset_s.get(recording.device_name, 0.0))
            else:
                offset = float(start_offset_s)
            period = recording.duration_s + LOOP_GAP_S
            offsets[recording.device_name] = offset % period if offset >= period or offset < 0 else offset
        return offsets

    def _log_skipped(self) -> None:
        skipped = {
            recording.device_name: recording.skipped for recording in self.data.recordings if recording.skipped
        }
        if skipped:
            summary = "; ".join(
                f"{device}: {sum(counter.values())} records of {len(counter)} names ({', '.join(sorted(counter)[:5])}"
                f"{', ...' if len(counter) > 5 else ''})"
                for device, counter in skipped.items()
            )
            log.info("replay data: skipped SHDR keys not in Devices.xml: %s", summary)

    def _startup_records(self) -> list[Record]:
        """Each device's state at its start offset: the opening snapshot plus the skipped part of the day."""
        records: list[Record] = []
        for recording in self.data.recordings:
            start = self._start_offsets[recording.device_name]
            skipped_part = [record for record in recording.records if record.offset_s < start]
            records.extend(fold_state([*recording.initial, *skipped_part], self._items))
        return records

    def _reset(self, instance_id: int) -> None:
        """Empty buffer, sequence 1, then UNAVAILABLE for every item and the startup state."""
        now = format_timestamp(time.time())
        with self._changed:
            self._generation += 1
            self._instance_id = instance_id
            self._next_sequence = 1
            self._ring = [None] * self.buffer_size
            self._state = [None] * len(self._items)
            self._base_state = [None] * len(self._items)
            self.released_records = 0
            # As cppagent does at startup: every item UNAVAILABLE until its adapter speaks.
            for item in self._items:
                level = UNAVAILABLE if item.is_condition else None
                self._append(Observation(0, now, item.index, "" if level else UNAVAILABLE, level, "", "", ""))
            for record in self._startup_records():
                self._append(_observation(0, now, record))
            self._changed.notify_all()

    def _start_player(self) -> None:
        self._player_stop = threading.Event()
        self._player = threading.Thread(
            target=self._play, args=(self._player_stop, self._generation), name="replay-player", daemon=True
        )
        self._player.start()

    def _stop_player(self) -> None:
        if self._player is not None:
            self._player_stop.set()
            self._player.join()
            self._player = None

    def _play(self, stop: threading.Event, generation: int) -> None:
        try:
            self._play_loop(stop, generation)
        except Exception:  # a dead player would silently freeze the agent: say so
            log.exception("replay player failed")

    def _play_loop(self, stop: threading.Event, generation: int) -> None:
        fastest = math.isinf(self.speed)
        loop = not fastest or self.limit is not None
        heap: list[tuple[float, int, _Cursor]] = []
        for order, recording in enumerate(self.data.recordings):
            if not recording.records:
                continue
            start = self._start_offsets[recording.device_name]
            index = next((i for i, record in enumerate(recording.records) if record.offset_s >= start), None)
            if index is None:  # start lies in the loop gap: begin with the next pass
                cursor = _Cursor(recording, 0, start - recording.duration_s - LOOP_GAP_S, loop)
                if not loop:
                    continue
            else:
                cursor = _Cursor(recording, index, start, loop)
            heap.append((cursor.due, order, cursor))
        heapq.heapify(heap)
        wall_start = time.time()
        mono_start = time.monotonic()
        released = 0
        # The rate cap: a token bucket holding at most a tenth of a second's worth, spent in
        # chunks of a hundredth (not one release, lock and wake-up per observation).
        max_rate = self.max_rate
        tokens = burst = max(1.0, max_rate / 10) if max_rate is not None else 0.0
        chunk = max(1.0, burst / 10)
        last_fill = mono_start
        capped = False
        while heap and not stop.is_set():
            if self.limit is not None and released >= self.limit:
                break
            now_mono = time.monotonic()
            now_elapsed = math.inf if fastest else (now_mono - mono_start) * self.speed
            batch: list[tuple[float, Record]] = []
            room = MAX_BATCH if self.limit is None else min(MAX_BATCH, self.limit - released)
            if max_rate is not None:
                tokens = min(burst, tokens + (now_mono - last_fill) * max_rate)
                last_fill = now_mono
                if tokens < chunk and heap and heap[0][0] <= now_elapsed:
                    stop.wait((chunk - tokens) / max_rate)
                    continue
                capped = int(tokens) < room
                room = min(room, int(tokens))
            while heap and heap[0][0] <= now_elapsed and len(batch) < room:
                due, order, cursor = heapq.heappop(heap)
                batch.append((due, cursor.recording.records[cursor.index]))
                if cursor.advance():
                    heapq.heappush(heap, (cursor.due, order, cursor))
            if max_rate is not None and not fastest and capped and heap and heap[0][0] <= now_elapsed \
                    and len(batch) == room:
                # Held back by the cap: playback falls behind its schedule by what is still
                # due, so the next observation is due now rather than late - the clock of
                # the recording slows down through the burst.
                behind = (now_elapsed - heap[0][0]) / self.speed
                mono_start += behind
                wall_start += behind
            if batch:
                tokens -= len(batch)
                if fastest:
                    stamp = format_timestamp(time.time())
                    observations = [_observation(0, stamp, record) for _, record in batch]
                else:
                    # Stamped with the scheduled wall time, so a busy moment keeps its spacing.
                    observations = [
                        _observation(0, format_timestamp(wall_start + due / self.speed), record) for due, record in batch
                    ]
                if not self._release(observations, generation):
                    return
                released += len(batch)
                continue
            stop.wait(min((heap[0][0] - now_elapsed) / self.speed, 0.5))

    def _release(self, observations: Iterable[Observation], generation: int) -> bool:
        with self._changed:
            if generation != self._generation:
                return False
            count = 0
            for observation in observations:
                self._append(observation)
                count += 1
            self.released_records += count
            self._changed.notify_all()
        return True

    def _append(self, observation: Observation) -> None:
        """Number and store one observation; caller holds the lock."""
        sequence = self._next_sequence
        observation = observation._replace(sequence=sequence)
        slot = sequence % self.buffer_size
        evicted = self._ring[slot]
        if evicted is not None:
            # The base state follows the buffer's tail so `current?at=` can be rebuilt.
            _apply(self._base_state, evicted, self._is_condition)
        self._ring[slot] = observation
        _apply(self._state, observation, self._is_condition)
        self._next_sequence = sequence + 1

    def _first_sequence(self) -> int:
        return max(1, self._next_sequence - self.buffer_size)

    # ---- reading the buffer (called from request threads) -------------------------------------

    def _page_locked(self, from_sequence: int, count: int, items: frozenset[int] | None) -> _Page:
        """Observations from `from_sequence` on (at most `count`); caller holds the lock."""
        first, agent_next = self._first_sequence(), self._next_sequence
        if from_sequence < first:
            raise RequestError("OUT_OF_RANGE", f"'from' must be greater than or equal to {first}.")
        if from_sequence > agent_next:
            raise RequestError("OUT_OF_RANGE", f"'from' must be less than or equal to {agent_next}.")
        ring, size = self._ring, self.buffer_size
        if items is None:
            end = min(agent_next, from_sequence + count)
            observations = [ring[sequence % size] for sequence in range(from_sequence, end)]
        else:
            observations = []
            for sequence in range(from_sequence, agent_next):
                observation = ring[sequence % size]
                if observation.item in items:
                    observations.append(observation)
                    if len(observations) == count:
                        break
        # As cppagent: one past the last returned when the page is full, else all was scanned.
        page_next = observations[-1].sequence + 1 if len(observations) == count else agent_next
        return _Page(self._instance_id, self._generation, first, agent_next - 1, page_next, observations)

    def sample_page(self, from_sequence: int | None, count: int, items: frozenset[int] | None = None) -> _Page:
        with self._changed:
            start = self._first_sequence() if from_sequence is None else from_sequence
            return self._page_locked(start, count, items)

    def current_page(self, at: int | None = None, items: frozenset[int] | None = None) -> _Page:
        with self._changed:
            first, agent_next = self._first_sequence(), self._next_sequence
            if at is None:
                state = list(self._state)
                replay: list[Observation] = []
                page_next = agent_next
            else:
                if not first <= at < agent_next:
                    raise RequestError(
                        "OUT_OF_RANGE", f"'at' must be between {first} and {agent_next - 1}."
                    )
                state = list(self._base_state)
                replay = [self._ring[sequence % self.buffer_size] for sequence in range(first, at + 1)]
                page_next = at + 1
            instance_id, generation = self._instance_id, self._generation
        for observation in replay:
            _apply(state, observation, self._is_condition)
        observations: list[Observation] = []
        for index, value in enumerate(state):
            if value is None or (items is not None and index not in items):
                continue
            observations.extend(value.values() if isinstance(value, dict) else (value,))
        observations.sort(key=lambda observation: observation.sequence)
        return _Page(instance_id, generation, first, agent_next - 1, page_next, observations)

    # ---- documents -------------------------------------------------------------------------

    def _header_attributes(self, instance_id: int, **extra: Any) -> dict[str, str]:
        attributes = {
            "creationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sender": self._sender,
            "instanceId": str(instance_id),
            "version": AGENT_VERSION,
        }
        attributes.update({key: str(value) for key, value in extra.items()})
        return attributes

    def streams_document(self, page: _Page) -> bytes:
        """An MTConnectStreams 1.3 document of `page`, grouped device > component > category.

        Written with lxml's incremental `xmlfile` rather than a tree: a 10,000-observation
        page takes about half the time, which is what a catching-up client waits for.
        """
        items, statics = self._items, self._element_statics
        # device index -> component index -> [samples, events, conditions], in sequence order.
        grouped: dict[int, dict[int, tuple[list, list, list]]] = {}
        for observation in page.observations:
            item = items[observation.item]
            components = grouped.get(item.device_index)
            if components is None:
                components = grouped[item.device_index] = {}
            buckets = components.get(item.component_index)
            if buckets is None:
                buckets = components[item.component_index] = ([], [], [])
            buckets[_CATEGORY_SLOT.get(item.category, 1)].append(observation)
        header = self._header_attributes(
            page.instance_id, bufferSize=self.buffer_size, nextSequence=page.next_sequence,
            firstSequence=page.first_sequence, lastSequence=page.last_sequence,
        )
        output = io.BytesIO()
        with etree.xmlfile(output, encoding="UTF-8") as xml:
            xml.write_declaration()
            with xml.element(f"{{{STREAMS_NS}}}MTConnectStreams", _STREAMS_ROOT_ATTRIBUTES, nsmap=_STREAMS_NSMAP):
                with xml.element(f"{{{STREAMS_NS}}}Header", header):
                    pass
                with xml.element(f"{{{STREAMS_NS}}}Streams"):
                    for device_index in sorted(grouped):
                        device = self.data.devices[device_index]
                        with xml.element(f"{{{STREAMS_NS}}}DeviceStream", {"name": device.name, "uuid": device.uuid}):
                            components = grouped[device_index]
                            for component_index in sorted(components):
                                component = self.data.components[component_index]
                                with xml.element(
                                    f"{{{STREAMS_NS}}}ComponentStream",
                                    {
                                        "component": component.component,
                                        "name": component.name,
                                        "componentId": component.component_id,
                                    },
                                ):
                                    for slot, observations in enumerate(components[component_index]):
                                        if observations:
                                            with xml.element(_CATEGORY_TAGS[slot]):
                                                _write_observations(xml, observations, statics)
        # xmlfile declares each namespace once; cppagent also declares the default one as `m`,
        # so it is added to the root start tag, which this function wrote itself. The empty
        # Header (and Streams of a heartbeat) are closed the short way, as cppagent writes them.
        document = output.getvalue().replace(_STREAMS_ROOT_TAG, _STREAMS_ROOT_TAG_WITH_M, 1)
        document = document.replace(b"></Header>", b"/>", 1)
        if not grouped:
            document = document.replace(b"<Streams></Streams>", b"<Streams/>", 1)
        return document

    def devices_document(self, device: DeviceInfo | None = None) -> bytes:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        root = etree.fromstring(self.data.devices_xml, parser=parser)
        old_header = root.find(f"{{{DEVICES_NS}}}Header")
        with self._changed:
            instance_id = self._instance_id
        header = etree.Element(
            f"{{{DEVICES_NS}}}Header",
            {
                "creationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sender": self._sender,
                "instanceId": str(instance_id),
                "version": AGENT_VERSION,
                "assetBufferSize": "1024",
                "assetCount": "0",
                "bufferSize": str(self.buffer_size),
            },
        )
        if old_header is not None:
            old_header.addprevious(header)
            header.tail = old_header.tail
            root.remove(old_header)
        else:
            root.insert(0, header)
        if device is not None:
            for element in list(root.iter(f"{{{DEVICES_NS}}}Device")):
                if element.get("uuid") != device.uuid:
                    element.getparent().remove(element)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def assets_document(self) -> bytes:
        root = etree.fromstring(_ASSETS_ROOT)
        etree.SubElement(
            root, f"{{{ASSETS_NS}}}Header",
            self._header_attributes(self.instance_id, assetBufferSize=1024, assetCount=0),
        )
        etree.SubElement(root, f"{{{ASSETS_NS}}}Assets")
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def error_document(self, code: str, message: str) -> bytes:
        root = etree.fromstring(_ERROR_ROOT)
        etree.SubElement(
            root, f"{{{ERROR_NS}}}Header", self._header_attributes(self.instance_id, bufferSize=self.buffer_size)
        )
        errors = etree.SubElement(root, f"{{{ERROR_NS}}}Errors")
        etree.SubElement(errors, f"{{{ERROR_NS}}}Error", {"errorCode": code}).text = message
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def device_items(self, device: DeviceInfo | None) -> frozenset[int] | None:
        return None if device is None else frozenset(device.data_item_indices)


def _observation(sequence: int, timestamp: str, record: Record) -> Observation:
    return Observation(
        sequence, timestamp, record.item, record.value, record.level,
        record.native_code, record.native_severity, record.qualifier,
    )


def _apply(state: list[Any], observation: Observation, is_condition: Sequence[bool]) -> None:
    if is_condition[observation.item]:
        state[observation.item] = next_condition_entries(state[observation.item], observation)
    else:
        state[observation.item] = observation


def _write_observations(
    xml: Any, observations: list[Observation], statics: Sequence[tuple[str, dict[str, str]]]
) -> None:
    for observation in observations:
        tag, template = statics[observation.item]
        # Copying a template keeps cppagent's attribute order for free.
        attributes = template.copy()
        attributes["timestamp"] = observation.timestamp
        attributes["sequence"] = str(observation.sequence)
        if observation.level is not None:
            tag = _CONDITION_TAGS[observation.level]
            if observation.native_code:
                attributes["nativeCode"] = observation.native_code
            if observation.native_severity:
                attributes["nativeSeverity"] = observation.native_severity
            if observation.qualifier:
                attributes["qualifier"] = observation.qualifier
        with xml.element(tag, attributes):
            if observation.value:
                xml.write(observation.value)


def _element_static(item: DataItemInfo) -> tuple[str, dict[str, str]]:
    """Per-item tag and attribute template, in cppagent's attribute order.

    `timestamp` and `sequence` are placeholders filled per observation.
    """
    template: dict[str, str] = {"dataItemId": item.data_item_id, "timestamp": ""}
    if item.name:
        template["name"] = item.name
    template["sequence"] = ""
    if item.is_condition:
        template["type"] = item.type
    if item.sub_type:
        template["subType"] = item.sub_type
    return item.element_tag, template


# ---- HTTP --------------------------------------------------------------------------------------


class _AgentServer(ThreadingHTTPServer):
    # Request threads are joined on close; stop() first shuts their sockets so none can hang.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], agent: ReplayAgent, tls: ssl.SSLContext | None = None):
        self.agent = agent
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._closing = False
        super().__init__(address, _AgentRequestHandler)
        if tls is not None:
            # Accepted connections come out as TLS sockets; each one's handshake runs in its
            # request thread (see _AgentRequestHandler.setup), never in the accepting one.
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def track(self, connection: socket.socket, active: bool) -> None:
        with self._connections_lock:
            if not active:
                self._connections.discard(connection)
                return
            self._connections.add(connection)
            closing = self._closing
        if closing:  # accepted just before shutdown: must not wait for a next request
            _shutdown_socket(connection)

    def close_connections(self) -> None:
        """Wake every request thread (idle keep-alive reads included) so close can join them."""
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections)
        for connection in connections:
            _shutdown_socket(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("replay agent: connection from %s failed", client_address, exc_info=True)


def _shutdown_socket(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


_REQUESTS = ("probe", "current", "sample", "assets", "asset")


class _AgentRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MachineMonitorReplayAgent/" + AGENT_VERSION
    server: _AgentServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.settimeout(TLS_HANDSHAKE_TIMEOUT_S)
                self.connection.do_handshake()
                self.connection.settimeout(self.timeout)
            except BaseException:
                # finish() does not run when setup() fails; a refused certificate ends here.
                self.server.track(self.connection, False)
                raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        log.debug("replay agent %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._headers_sent = False
        try:
            self._route()
        except RequestError as error:
            self._send_error_document(error.code, error.message)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception:
            log.exception("replay agent: %s failed", self.path)
            self._send_error_document("INTERNAL_ERROR", "The replay agent failed to answer this request.")

    # ---- routing ----

    def _route(self) -> None:
        agent = self.server.agent
        url = urlsplit(self.path)
        segments = [unquote(segment) for segment in url.path.split("/") if segment]
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        device: DeviceInfo | None = None
        if not segments:
            request = "probe"
        elif len(segments) == 1 and segments[0] in _REQUESTS:
            request = segments[0]
        elif len(segments) == 2 and segments[0] in ("assets", "asset"):
            raise RequestError("ASSET_NOT_FOUND", f"Could not find asset: {segments[1]}")
        elif len(segments) <= 2:
            device = agent.data.find_device(segments[0])
            request = segments[1] if len(segments) == 2 else "probe"
            if request not in ("probe", "current", "sample"):
                raise RequestError("UNSUPPORTED", f"The following path is invalid: {url.path}")
            if device is None:
                raise RequestError("NO_DEVICE", f"Could not find the device '{segments[0]}'")
        else:
            raise RequestError("UNSUPPORTED", f"The following path is invalid: {url.path}")

        if request == "probe":
            self._send_document(agent.devices_document(device))
        elif request in ("assets", "asset"):
            self._send_document(agent.assets_document())
        elif request == "current":
            self._current(agent, device, query)
        else:
            self._sample(agent, device, query)

    def _current(self, agent: ReplayAgent, device: DeviceInfo | None, query: dict[str, str]) -> None:
        at = _int_param(query, "at", None, 0)
        interval = None if agent.no_stream else _int_param(query, "interval", None, 0, 2**31 - 1)
        items = agent.device_items(device)
        if interval is not None:
            if at is not None:
                raise RequestError("INVALID_REQUEST", "'at' cannot be used with 'interval'.")
            self._stream_current(agent, items, interval)
            return
        self._send_document(agent.streams_document(agent.current_page(at, items)))

    def _sample(self, agent: ReplayAgent, device: DeviceInfo | None, query: dict[str, str]) -> None:
        from_sequence = _int_param(query, "from", None, 0)
        count = _int_param(query, "count", DEFAULT_COUNT, 1, agent.buffer_size)
        items = agent.device_items(device)
        if agent.no_stream:  # an agent that cannot stream: interval/heartbeat are unknown to it
            self._send_document(agent.streams_document(agent.sample_page(from_sequence, count, items)))
            return
        interval = _int_param(query, "interval", None, 0, 2**31 - 1)
        heartbeat = _int_param(query, "heartbeat", DEFAULT_HEARTBEAT_MS, 10, 600_000)
        if interval is None:
            self._send_document(agent.streams_document(agent.sample_page(from_sequence, count, items)))
            return
        # Validate `from` before committing to a 200 stream, so a bad start is a plain error.
        first_page = agent.sample_page(from_sequence, count, items)
        self._stream_samples(agent, first_page, count, items, interval, heartbeat)

    # ---- streaming ----

    def _begin_stream(self) -> bytes:
        boundary = secrets.token_hex(16)
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={boundary}")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self._headers_sent = True
        self.close_connection = True
        return boundary.encode("ascii")

    def _send_part(self, boundary: bytes, document: bytes) -> None:
        part = b"".join(
            (b"--", boundary, b"\r\nContent-type: text/xml\r\nContent-length: ",
             str(len(document)).encode("ascii"), b"\r\n\r\n", document, b"\r\n")
        )
        self.wfile.write(b"%X\r\n%s\r\n" % (len(part), part))

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    def _stream_samples(
        self, agent: ReplayAgent, page: _Page, count: int, items: frozenset[int] | None,
        interval_ms: int, heartbeat_ms: int,
    ) -> None:
        boundary = self._begin_stream()
        generation = page.generation
        heartbeat_s = heartbeat_ms / 1000.0
        last_part = -math.inf
        try:
            while True:
                if page is not None:
                    self._send_part(boundary, agent.streams_document(page))
                    last_part = time.monotonic()
                    next_from = page.next_sequence
                    if interval_ms and agent.wait_closed(interval_ms / 1000.0):
                        return
                page = None
                with agent._changed:
                    while page is None:
                        if agent._closing or agent._generation != generation:
                            return
                        if next_from < agent._first_sequence():
                            break  # fell behind the buffer: report below, outside the lock
                        if next_from < agent._next_sequence:
                            candidate = agent._page_locked(next_from, count, items)
                            if candidate.observations:
                                page = candidate
                                break
                            next_from = candidate.next_sequence  # only other devices' data
                            continue
                        remaining = last_part + heartbeat_s - time.monotonic()
                        if remaining <= 0:
                            page = agent._page_locked(next_from, count, items)  # heartbeat: empty
                            break
                        agent._changed.wait(remaining)
                if page is None:
                    first = agent.first_sequence
                    self._send_part(
                        boundary,
                        agent.error_document("OUT_OF_RANGE", f"'from' must be greater than or equal to {first}."),
                    )
                    return
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return
        finally:
            self._end_stream()

    def _stream_current(self, agent: ReplayAgent, items: frozenset[int] | None, interval_ms: int) -> None:
        """`current?interval=`: a whole current document every interval."""
        boundary = self._begin_stream()
        generation = None
        try:
            while True:
                page = agent.current_page(None, items)
                if generation is None:
                    generation = page.generation
                elif page.generation != generation:
                    return
                self._send_part(boundary, agent.streams_document(page))
                if agent.wait_closed(max(interval_ms, 10) / 1000.0):
                    return
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return
        finally:
            self._end_stream()

    # ---- plain responses ----

    def _send_document(self, document: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(document)))
        self.end_headers()
        self._headers_sent = True
        self.wfile.write(document)

    def _send_error_document(self, code: str, message: str) -> None:
        if getattr(self, "_headers_sent", False):
            self.close_connection = True
            return
        try:
            self._send_document(self.server.agent.error_document(code, message), _STATUS.get(code, 400))
        except OSError:
            self.close_connection = True
        except Exception:
            log.exception("replay agent: could not send an error document")
            self.close_connection = True


def _int_param(
    query: Mapping[str, str], name: str, default: int | None, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise RequestError("INVALID_REQUEST", f"'{name}' must be an integer, not '{text[:40]}'.") from None
    if minimum is not None and value < minimum:
        raise RequestError("INVALID_REQUEST", f"'{name}' must be greater than or equal to {minimum}.")
    if maximum is not None and value > maximum:
        raise RequestError("INVALID_REQUEST", f"'{name}' must be less than or equal to {maximum}.")
    return value


# ---- command line ------------------------------------------------------------------------------


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m producer replay`."""
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port on 127.0.0.1 (0 = any free port; default %(default)s)")
    parser.add_argument(
        "--speed", type=_speed_argument, default=1.0,
        help="recorded seconds per real second (60 = a minute per second); 'max' = no waiting (default 1)",
    )
    parser.add_argument(
        "--max-rate", type=float, default=None, metavar="OBS_PER_S",
        help="release at most this many observations per second: playback slows down through the "
             "recorded bursts, each observation stamped when released (default: no cap)",
    )
    parser.add_argument("--buffer", type=int, default=DEFAULT_BUFFER, help="observations kept for sample requests (default %(default)s)")
    parser.add_argument(
        "--limit", type=int, default=None,
        help="stop after this many replayed records (default: none; at --speed max each day plays once)",
    )
    parser.add_argument(
        "--start", metavar="HH:MM:SS", type=_time_argument, default=None,
        help="start every recording at this UTC time of its day (a device whose day has no such time starts at its beginning)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="folder with Devices.xml and SHDR day files (default: resources/replay)")
    parser.add_argument(
        "--no-stream", action="store_true",
        help="behave like an agent that cannot stream: ignore 'interval' and answer plain sample documents",
    )
    parser.add_argument(
        "--tls-cert", metavar="PEM", type=Path, default=None,
        help=f"serve HTTPS with this certificate chain (issued for '{TLS_HOST}'; the URL then names {TLS_HOST})",
    )
    parser.add_argument(
        "--tls-key", metavar="PEM", type=Path, default=None,
        help="the private key of --tls-cert (not needed when the --tls-cert file holds the key too)",
    )


def run_replay_cli(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; prints `listening=http://127.0.0.1:PORT` (or https://localhost:PORT) once ready.

    SIGHUP restarts the agent in place (new instanceId, sequence 1) and prints `restarted instance_id=N`.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop_requested = threading.Event()
    previous: dict[int, Any] = {}

    restart_requested = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stop_requested.set()

    def request_restart(signum: int, _frame: Any) -> None:
        restart_requested.set()
        stop_requested.set()  # wakes the wait below, which tells the two apart

    try:
        handlers = {signal.SIGTERM: request_stop, signal.SIGINT: request_stop, signal.SIGHUP: request_restart}
        for signum, handler in handlers.items():
            try:
                previous[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread: Ctrl-C still ends the wait below
                pass
        log.info("loading the recorded NIST data ...")
        try:
            agent = ReplayAgent(
                port=args.port,
                speed=args.speed,
                buffer_size=args.buffer,
                data_dir=args.data_dir,
                limit=args.limit,
                start_time=args.start,
                no_stream=getattr(args, "no_stream", False),
                tls_cert=getattr(args, "tls_cert", None),
                tls_key=getattr(args, "tls_key", None),
                max_rate=getattr(args, "max_rate", None),
            )
            agent.start()
        except (OSError, ValueError) as error:
            print(f"replay: cannot start the agent: {error}", file=sys.stderr, flush=True)
            return 2
        try:
            print(f"listening={agent.url}", flush=True)
            while True:
                stop_requested.wait(0.5)
                if restart_requested.is_set():
                    # SIGHUP: restart as a real agent would, new instanceId and sequence 1.
                    restart_requested.clear()
                    stop_requested.clear()
                    print(f"restarted instance_id={agent.restart()}", flush=True)
                elif stop_requested.is_set():
                    break
        except KeyboardInterrupt:
            pass
        finally:
            agent.stop()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _speed_argument(text: str) -> float:
    try:
        return parse_speed(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _time_argument(text: str) -> str:
    try:
        parse_time_of_day(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
