"""Many simulated MTConnect agents in one process, for load tests of a plant-sized producer.

`FleetSimulator` serves N agents, each on its own port of 127.0.0.1, from one asyncio event
loop. Agent i is one of the recorded NIST machines of `resources/replay` (GFAgie01, Mazak01,
Mazak03 in turn), renamed `<machine>-<i>` with its own device uuid and instanceId, and emits
`rate` observations per second: the machine's recorded values in their recorded order
(looping), each stamped with the moment it was generated, so a reader can tell how long an
observation took to become visible. It speaks the MTConnect REST protocol the producer uses:
`probe`, `current`, `sample` with `from`/`count`, the multipart stream of `sample?interval=`
with heartbeats, and `MTConnectError` documents (OUT_OF_RANGE when `from` has left its bounded
buffer, whose `firstSequence` moves on as it overflows; also inside a stream that fell behind).
`python -m producer simulate` runs it from the command line and writes the agents' URLs to a
file. It is a test and benchmark tool, not part of the data path.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import signal
import time
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from producer.replay_data import DEVICES_NS, NIST_NS, STREAMS_NS, format_timestamp, load_replay_data

log = logging.getLogger("producer.simulator")

VERSION = "1.3.0.18"
ERROR_NS = "urn:mtconnect.org:MTConnectError:1.3"
_CATEGORY_ORDER = {"SAMPLE": 0, "EVENT": 1, "CONDITION": 2}
_CATEGORY_TAGS = ("Samples", "Events", "Condition")
_LEVEL_TAGS = {"NORMAL": "Normal", "WARNING": "Warning", "FAULT": "Fault", "UNAVAILABLE": "Unavailable"}


def _tag(clark: str) -> str:
    namespace, _, local = clark[1:].partition("}") if clark.startswith("{") else ("", "", clark)
    return f"x:{local}" if namespace == NIST_NS else local


class _Machine:
    """What every simulated agent of one recorded machine shares: its model and its values."""

    def __init__(self, data, recording):
        self.name = recording.device_name
        device = data.devices[recording.device_index]
        self.uuid = device.uuid
        self.items = [data.data_items[i] for i in device.data_item_indices]
        components = data.components
        # Per data item: (component key, category slot, element start without sequence/timestamp, end tag).
        self.templates: dict[int, tuple[tuple[str, str, str], int, str, str]] = {}
        for item in self.items:
            component = components[item.component_index]
            key = (component.component, component.name, component.component_id)
            slot = _CATEGORY_ORDER.get(item.category, 1)
            attributes = f'dataItemId={quoteattr(item.data_item_id)}'
            if item.name:
                attributes += f' name={quoteattr(item.name)}'
            if item.sub_type:
                attributes += f' subType={quoteattr(item.sub_type)}'
            if item.category == "CONDITION":
                attributes += f' type={quoteattr(item.type)}'
            tag = _tag(item.element_tag)
            self.templates[item.index] = (key, slot, attributes, tag)
        self.records = [record for record in recording.records if record.item in self.templates]
        # (item, record index or -1) -> (component key, slot, element start, rest of the element):
        # the same few hundred recorded values recur in every part of every agent of this machine,
        # so each is rendered once and only the sequence and timestamp are filled in per observation.
        self._parts: dict[tuple[int, int], tuple[tuple[str, str, str], int, str, str]] = {}
        root = etree.fromstring(data.devices_xml, etree.XMLParser(resolve_entities=False, no_network=True))
        self.device_element = next(e for e in root.iter(f"{{{DEVICES_NS}}}Device") if e.get("uuid") == device.uuid)
        self.devices_root = root


    def fragment_parts(self, item: int, record_index: int) -> tuple[tuple[str, str, str], int, str, str]:
        cached = self._parts.get((item, record_index))
        if cached is None:
            cached = self._parts[(item, record_index)] = self._render_parts(item, record_index)
        return cached

    def _render_parts(self, item: int, record_index: int) -> tuple[tuple[str, str, str], int, str, str]:
        key, slot, attributes, tag = self.templates[item]
        if record_index < 0:
            if slot == 2:
                return key, slot, f"<Unavailable {attributes}", "/>"
            return key, slot, f"<{tag} {attributes}", f">UNAVAILABLE</{tag}>"
        record = self.records[record_index]
        if slot == 2:
            level = _LEVEL_TAGS.get(record.level or "NORMAL", "Normal")
            extra = "".join(f" {name}={quoteattr(value)}" for name, value in (
                ("nativeCode", record.native_code), ("nativeSeverity", record.native_severity),
                ("qualifier", record.qualifier)) if value)
            text = escape(record.value) if record.value and record.value != "UNAVAILABLE" else ""
            if text:
                return key, slot, f"<{level} {attributes}", f"{extra}>{text}</{level}>"
            return key, slot, f"<{level} {attributes}", f"{extra}/>"
        return key, slot, f"<{tag} {attributes}", f">{escape(record.value)}</{tag}>"


class SimulatedAgent:
    def __init__(self, index: int, machine: _Machine, buffer_size: int, rate: float):
        self.index = index
        self.machine = machine
        self.name = f"{machine.name}-{index:04d}"
        self.uuid = f"{machine.uuid}-{index:04d}"
        self.buffer_size = buffer_size
        self.rate = rate
        self.instance_id = random.randint(1_000_000, 2_000_000_000)
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        # (item index, record index or -1 for UNAVAILABLE, timestamp text); sequence = base + list index.
        self._observations: list[tuple[int, int, str]] = []
        self._base = 1
        self.next_sequence = 1
        self._latest: dict[int, int] = {}  # item index -> sequence of its latest observation
        self._record = (index * 7919) % max(1, len(machine.records))
        self._owed = 0.0
        self.streams = 0
        now = time.time()
        stamp = format_timestamp(now)
        for item in machine.items:
            self._append(item.index, -1, stamp)
        self._probe = self._devices_document()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def first_sequence(self) -> int:
        return max(self._base, self.next_sequence - self.buffer_size)

    def _append(self, item: int, record: int, stamp: str) -> None:
        self._observations.append((item, record, stamp))
        self._latest[item] = self.next_sequence
        self.next_sequence += 1
        if len(self._observations) >= 2 * self.buffer_size:
            drop = len(self._observations) - self.buffer_size
            del self._observations[:drop]
            self._base += drop

    def generate(self, elapsed_s: float, stamp: str) -> None:
        """The observations due after `elapsed_s` more seconds, stamped `stamp` (the tick's moment)."""
        records = self.machine.records
        if not records:
            return
        self._owed += self.rate * elapsed_s
        while self._owed >= 1.0:
            self._owed -= 1.0
            record = self._record
            self._append(records[record].item, record, stamp)
            self._record = (record + 1) % len(records)

    # -- documents

    def _header(self, **extra: Any) -> str:
        attributes = "".join(f' {key}="{value}"' for key, value in extra.items())
        return (f'<Header creationTime="{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}" sender="simulator" '
                f'instanceId="{self.instance_id}" version="{VERSION}" bufferSize="{self.buffer_size}"{attributes}/>')

    def _devices_document(self) -> bytes:
        machine = self.machine
        element = etree.fromstring(etree.tostring(machine.device_element))
        element.set("name", self.name)
        element.set("uuid", self.uuid)
        device_xml = etree.tostring(element, encoding="unicode")
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<MTConnectDevices xmlns="{DEVICES_NS}" '
                f'xmlns:m="{DEVICES_NS}">{self._header(assetBufferSize=1024, assetCount=0)}'
                f'<Devices>{device_xml}</Devices></MTConnectDevices>').encode()

    def probe_document(self) -> bytes:
        return self._probe

    def error_document(self, code: str, message: str) -> bytes:
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<MTConnectError xmlns="{ERROR_NS}">{self._header()}'
                f'<Errors><Error errorCode="{code}">{escape(message)}</Error></Errors></MTConnectError>').encode()

    def _fragment(self, sequence: int, entry: tuple[int, int, float]) -> tuple[tuple[str, str, str], int, str]:
        item, record_index, stamp = entry
        key, slot, head, tail = self.machine.fragment_parts(item, record_index)
        return key, slot, f'{head} sequence="{sequence}" timestamp="{stamp}"{tail}'

    def _streams_document(self, sequences: Sequence[int], next_sequence: int) -> bytes:
        components: dict[tuple[str, str, str], tuple[list, list, list]] = {}
        base = self._base
        observations = self._observations
        for sequence in sequences:
            key, slot, fragment = self._fragment(sequence, observations[sequence - base])
            buckets = components.get(key)
            if buckets is None:
                buckets = components[key] = ([], [], [])
            buckets[slot].append(fragment)
        body = []
        for (component, name, component_id), buckets in components.items():
            inner = "".join(f"<{_CATEGORY_TAGS[slot]}>{''.join(fragments)}</{_CATEGORY_TAGS[slot]}>"
                            for slot, fragments in enumerate(buckets) if fragments)
            body.append(f'<ComponentStream component="{component}" name={quoteattr(name)} '
                        f'componentId="{component_id}">{inner}</ComponentStream>')
        streams = (f'<Streams><DeviceStream name="{self.name}" uuid="{self.uuid}">{"".join(body)}</DeviceStream>'
                   f'</Streams>') if body else "<Streams/>"
        header = self._header(nextSequence=next_sequence, firstSequence=self.first_sequence,
                              lastSequence=self.next_sequence - 1)
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<MTConnectStreams xmlns="{STREAMS_NS}" '
                f'xmlns:m="{STREAMS_NS}" xmlns:x="{NIST_NS}">{header}{streams}</MTConnectStreams>').encode()

    def sample_document(self, from_sequence: int, count: int) -> tuple[bytes, int, int]:
        """(document, observations in it, the sequence after it) of `sample?from=&count=`."""
        end = min(self.next_sequence, from_sequence + count)
        return self._streams_document(range(from_sequence, end), end), end - from_sequence, end

    def current_document(self) -> bytes:
        sequences = sorted(s for s in self._latest.values() if s >= self.first_sequence)
        return self._streams_document(sequences, self.next_sequence)


class _Request:
    def __init__(self, agent: SimulatedAgent, fleet: "FleetSimulator"):
        self.agent = agent
        self.fleet = fleet

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = request_line.split()
                if len(parts) < 2:
                    return
                target = urlsplit(parts[1])
                query = {k: v[-1] for k, v in parse_qs(target.query).items()}
                path = target.path.rstrip("/").rsplit("/", 1)[-1]
                if not await self._route(path, query, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _send(self, writer: asyncio.StreamWriter, body: bytes, status: int = 200) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n"
                     % (status, reason.encode(), len(body)) + body)

    async def _route(self, path: str, query: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        agent = self.agent
        if path == "probe" or path == "":
            self._send(writer, agent.probe_document())
        elif path == "current":
            self._send(writer, agent.current_document())
        elif path == "sample":
            try:
                from_sequence = int(query["from"]) if "from" in query else agent.first_sequence
                count = int(query.get("count", 100))
                interval = int(query["interval"]) if "interval" in query else None
                heartbeat = int(query.get("heartbeat", 10000))
            except ValueError:
                self._send(writer, agent.error_document("INVALID_REQUEST", "bad query parameter"), 400)
                return True
            if count < 1 or count > agent.buffer_size:
                self._send(writer, agent.error_document(
                    "INVALID_REQUEST", f"'count' must be between 1 and {agent.buffer_size}."), 400)
                return True
            if from_sequence < agent.first_sequence or from_sequence > agent.next_sequence:
                self._send(writer, agent.error_document(
                    "OUT_OF_RANGE", f"'from' must be greater than or equal to {agent.first_sequence}."), 404)
                return True
            if interval is None:
                self._send(writer, agent.sample_document(from_sequence, count)[0])
            else:
                await self._stream(writer, from_sequence, count, interval, max(10, heartbeat))
                return False
        else:
            self._send(writer, agent.error_document("UNSUPPORTED", f"{path!r} is not supported"), 400)
        await writer.drain()
        return True

    async def _stream(self, writer: asyncio.StreamWriter, from_sequence: int, count: int, interval_ms: int,
                      heartbeat_ms: int) -> None:
        agent = self.agent
        boundary = f"{random.getrandbits(64):016x}".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=" + boundary
                     + b"\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n")
        agent.streams += 1
        next_from = from_sequence
        last_part = -1e9
        pause = max(interval_ms, 10) / 1000.0
        try:
            while not self.fleet.closing:
                if next_from < agent.first_sequence:
                    document = agent.error_document(
                        "OUT_OF_RANGE", f"'from' must be greater than or equal to {agent.first_sequence}.")
                    writer.write(self._part(boundary, document))
                    await writer.drain()
                    return
                now = time.monotonic()
                if next_from < agent.next_sequence or now - last_part >= heartbeat_ms / 1000.0:
                    document, _, next_from = agent.sample_document(next_from, count)
                    writer.write(self._part(boundary, document))
                    await writer.drain()
                    last_part = now
                await asyncio.sleep(pause)
        finally:
            agent.streams -= 1

    @staticmethod
    def _part(boundary: bytes, document: bytes) -> bytes:
        return b"--%s\r\nContent-type: text/xml\r\nContent-length: %d\r\n\r\n%s\r\n" % (boundary, len(document), document)


class FleetSimulator:
    """N simulated agents on one event loop (see the module docstring)."""

    def __init__(self, agents: int, rate: float = 20.0, buffer_sizes: Sequence[int] = (8192,),
                 tick_s: float | None = None):
        data = load_replay_data()
        machines = [_Machine(data, recording) for recording in data.recordings if recording.records]
        self.agents = [SimulatedAgent(i, machines[i % len(machines)], buffer_sizes[i % len(buffer_sizes)], rate)
                       for i in range(agents)]
        self.rate = rate
        self.tick_s = tick_s if tick_s is not None else min(0.05, 1.0 / rate if rate > 0 else 0.05)
        self.closing = False
        self._ticker: asyncio.Task | None = None

    async def start(self, host: str = "127.0.0.1") -> None:
        for agent in self.agents:
            handler = _Request(agent, self).handle
            agent.server = await asyncio.start_server(handler, host, 0, backlog=64)
            agent.port = agent.server.sockets[0].getsockname()[1]
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        last = time.monotonic()
        while not self.closing:
            await asyncio.sleep(self.tick_s)
            now_monotonic = time.monotonic()
            elapsed, last = now_monotonic - last, now_monotonic
            # One stamp for the whole tick, formatted once for every agent.
            stamp = format_timestamp(time.time())
            for agent in self.agents:
                agent.generate(elapsed, stamp)

    async def stop(self) -> None:
        self.closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        for agent in self.agents:
            if agent.server is not None:
                agent.server.close()

    def state(self) -> list[dict[str, Any]]:
        return [{"url": agent.url, "name": agent.name, "uuid": agent.uuid, "instance_id": agent.instance_id,
                 "first_sequence": agent.first_sequence, "next_sequence": agent.next_sequence,
                 "buffer_size": agent.buffer_size} for agent in self.agents]


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=int, default=10, help="how many agents (one port each)")
    parser.add_argument("--rate", type=float, default=20.0, help="observations per second per agent")
    parser.add_argument("--buffer", default="8192",
                        help="each agent's buffer size; a comma-separated list is used in turn (e.g. 8192,200)")
    parser.add_argument("--urls-file", type=Path, help="write the agents' URLs (JSON) here once they listen")
    parser.add_argument("--state-file", type=Path,
                        help="on SIGUSR1 and at exit, write every agent's instanceId and sequences (JSON) here")


def run_simulate_cli(args: argparse.Namespace) -> int:
    from producer.fleet.engine import raise_open_file_limit

    try:
        buffers = [int(text) for text in str(args.buffer).split(",") if text.strip()]
    except ValueError:
        log.error("--buffer %r: give whole numbers separated by commas", args.buffer)
        return 2
    if args.agents < 1 or args.rate <= 0 or not buffers or min(buffers) < 1:
        log.error("--agents, --rate and --buffer must be positive")
        return 2
    raise_open_file_limit(4 * args.agents + 256)

    async def main() -> None:
        fleet = FleetSimulator(args.agents, args.rate, buffers)
        await fleet.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def write_state() -> None:
            if args.state_file:
                temporary = args.state_file.with_suffix(".tmp")
                temporary.write_text(json.dumps(fleet.state()))
                temporary.replace(args.state_file)

        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, write_state)
        if args.urls_file:
            temporary = args.urls_file.with_suffix(".tmp")
            temporary.write_text(json.dumps([agent.url for agent in fleet.agents]))
            temporary.replace(args.urls_file)
        log.info("event=simulating agents=%d rate=%g buffers=%s first=%s", args.agents, args.rate, buffers,
                 fleet.agents[0].url)
        await stop.wait()
        await fleet.stop()
        write_state()

    asyncio.run(main())
    return 0
