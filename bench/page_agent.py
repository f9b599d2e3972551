"""A small MTConnect agent for benchmarks that serves the recorded NIST `/sample` pages.

The pages are `qdr_input001..010.xml.gz` from the NIST SMS test bed: real cppagent 1.3.0.17
`/sample` responses for GFAgie01 (instanceId 1475083573) that chain, each page starting
at the previous page's `nextSequence`. They hold ~10,006 observations each (001 holds
10,049, 009 only 2,620; 92,748 in all) and are served **whole**: `count` is ignored.

Everything is prepared at construction time, before anything is timed: the pages are
decompressed and, for a run long enough to measure, the ten pages are repeated `loops`
times. Loop k adds k*span (span = the last page's nextSequence - 1 = 92,748) to every
`sequence` attribute and to the header's `nextSequence`/`lastSequence` (`firstSequence`
stays 1, `instanceId` is kept), so all pages chain into one sequence space 1..end-1.
The rewrite is a bytes substitution, so loop 0 is byte-for-byte the recorded page; it is
checked against lxml's count of sequenced elements and against the page chain. The final
bytes of every page, and of its multipart part, are kept pre-rendered: serving a page is
a socket write, nothing is rendered per request.

Endpoints (any device prefix such as `/GFAgie01/sample` is accepted and ignored):

* `/probe`: the NIST device file `agent/Devices.xml` the VDS agent ran with, as is
  except for its Header: the file's own header says `instanceId='1'`
  `bufferSize='524288'`, and a real agent answers /probe with a header of its own, so
  those two attributes are set to the sample pages' 1475083573 and 131072 (with
  `instanceId='1'` a client would see two different agent instances).
* `/current`: an MTConnectStreams 1.3 document with an empty `<Streams/>` whose header's
  `nextSequence` is the end of the served data (a client without a checkpoint starts there).
* `/sample?from=F[&count=C]`: the one recorded page that starts at F. F must be a page
  boundary (1 or a page's `nextSequence`); anything else is answered with an
  MTConnectError `INVALID_REQUEST`, because this agent only serves whole recorded pages.
  F missing means 1; F = end gives an empty document; F > end is `OUT_OF_RANGE`.
* `/sample?from=F&interval=I[&heartbeat=H]`: a `multipart/x-mixed-replace` stream (HTTP/1.1,
  chunked) of the page at F and every page after it, one part each, as fast as the socket
  takes them (`interval` is NOT honoured between pages: a real agent would leave at least
  `interval` ms between parts), then an empty heartbeat document (header `nextSequence` =
  end) every H ms (default 10000) until the client disconnects or `stop()` is called.

`PageAgent(...).start()` serves on 127.0.0.1 on a free port in a thread of its own;
`url` is its base URL; `stop()` shuts the listener and every open stream down promptly.
Run it alone with `python bench/page_agent.py [--loops N] [--port P]`.
"""
from __future__ import annotations

import argparse
import gzip
import math
import re
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from lxml import etree

NIST = Path(__file__).resolve().parent.parent / "tests" / "data" / "mtconnect" / "nist-smstestbed"
PAGES_DIR = NIST / "sample-pages"
DEVICES_FILE = NIST / "agent" / "Devices.xml"
PAGE_FILES = tuple(PAGES_DIR / f"qdr_input{n:03d}.xml.gz" for n in range(1, 11))

INSTANCE_ID = 1475083573
BUFFER_SIZE = 131072
SENDER = "machine-monitor-bench"
VERSION = "1.3.0.17"
STREAMS_NS = "urn:mtconnect.org:MTConnectStreams:1.3"
ERROR_NS = "urn:mtconnect.org:MTConnectError:1.3"
DEFAULT_MIN_OBSERVATIONS = 400_000
DEFAULT_HEARTBEAT_MS = 10_000
BOUNDARY = b"8c3bd1e2f0a94c5b9e1d7a6f4c2b0e93"  # fixed: every part is pre-rendered with it

_SEQUENCE_ATTR = re.compile(rb'(?<=\s)sequence="(\d+)"')
_HEADER = re.compile(rb"<Header\b[^>]*>")


def _header_attr(header: bytes, name: str) -> int:
    match = re.search(rb"\s" + name.encode() + rb"=[\"'](\d+)[\"']", header)
    if match is None:
        raise ValueError(f"recorded page header has no {name}: {header[:200]!r}")
    return int(match.group(1))


def _set_header_attr(header: bytes, name: str, value: int) -> bytes:
    pattern = re.compile(rb"(\s" + name.encode() + rb"=)([\"'])\d+\2")
    new, count = pattern.subn(lambda m: m.group(1) + m.group(2) + str(value).encode() + m.group(2), header, 1)
    if count != 1:
        raise ValueError(f"header has no {name}")
    return new


def _count_sequenced(payload: bytes) -> int:
    root = etree.fromstring(payload)
    return sum(1 for e in root.iter() if isinstance(e.tag, str) and e.get("sequence") is not None)


class Page:
    """One pre-rendered page: the document, its multipart chunk and its sequence range."""

    __slots__ = ("first", "next", "observations", "document", "chunk")

    def __init__(self, first: int, next_sequence: int, observations: int, document: bytes):
        self.first = first
        self.next = next_sequence
        self.observations = observations
        self.document = document
        part = b"".join((b"--", BOUNDARY, b"\r\nContent-type: text/xml\r\nContent-length: ",
                         str(len(document)).encode(), b"\r\n\r\n", document, b"\r\n"))
        self.chunk = b"%X\r\n%s\r\n" % (len(part), part)  # one HTTP/1.1 chunk per part


def load_recorded() -> list[bytes]:
    return [gzip.decompress(path.read_bytes()) for path in PAGE_FILES]


def build_pages(recorded: list[bytes], loops: int) -> tuple[list[Page], int, int]:
    """The chained pages of `loops` repetitions; returns (pages, span, end = next sequence)."""
    # Check the recording once: every page's body starts at the previous nextSequence, ends
    # at its own nextSequence - 1, and the regex finds exactly the sequenced elements.
    originals = []
    expected_first = 1
    for number, payload in enumerate(recorded, 1):
        header_match = _HEADER.search(payload)
        if header_match is None:
            raise ValueError(f"page {number}: no Header")
        header = header_match.group(0)
        if _header_attr(header, "instanceId") != INSTANCE_ID:
            raise ValueError(f"page {number}: unexpected instanceId")
        next_sequence = _header_attr(header, "nextSequence")
        sequences = [int(m.group(1)) for m in _SEQUENCE_ATTR.finditer(payload)]
        if len(sequences) != _count_sequenced(payload):
            raise ValueError(f"page {number}: the sequence regex does not match lxml's count")
        if min(sequences) != expected_first or max(sequences) != next_sequence - 1 \
                or len(set(sequences)) != next_sequence - expected_first:
            raise ValueError(f"page {number}: sequences {min(sequences)}..{max(sequences)} do not chain "
                             f"from {expected_first} to nextSequence {next_sequence}")
        originals.append((payload, header_match.span(), header, expected_first, next_sequence, len(sequences)))
        expected_first = next_sequence
    span = expected_first - 1
    pages: list[Page] = []
    for loop in range(loops):
        offset = loop * span
        for payload, (h_start, h_end), header, first, next_sequence, count in originals:
            if offset == 0:
                document = payload
            else:
                new_header = _set_header_attr(header, "nextSequence", next_sequence + offset)
                new_header = _set_header_attr(new_header, "lastSequence",
                                              _header_attr(header, "lastSequence") + offset)
                body = _SEQUENCE_ATTR.sub(lambda m: b'sequence="%d"' % (int(m.group(1)) + offset),
                                          payload[h_end:])
                document = payload[:h_start] + new_header + body
            pages.append(Page(first + offset, next_sequence + offset, count, document))
    return pages, span, loops * span + 1


def loops_for(min_observations: int, span: int = 92_748) -> int:
    return max(1, math.ceil(min_observations / span))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PageAgent:
    """The recorded NIST sample pages behind a real HTTP/1.1 MTConnect agent (see the module doc)."""

    def __init__(self, loops: int | None = None, min_observations: int = DEFAULT_MIN_OBSERVATIONS,
                 host: str = "127.0.0.1", port: int = 0):
        recorded = load_recorded()
        if loops is None:
            loops = loops_for(min_observations)
        self.loops = loops
        self.pages, self.span, self.end = build_pages(recorded, loops)
        self.by_first = {page.first: index for index, page in enumerate(self.pages)}
        self.observations = sum(page.observations for page in self.pages)
        assert self.observations == self.end - 1
        devices = DEVICES_FILE.read_bytes()
        header = _HEADER.search(devices)
        new_header = _set_header_attr(_set_header_attr(header.group(0), "instanceId", INSTANCE_ID),
                                      "bufferSize", BUFFER_SIZE)
        self.probe_document = devices[:header.start()] + new_header + devices[header.end():]
        self.instance_id = INSTANCE_ID
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        self.streams_opened = 0
        self.pages_sent = 0

    # -- documents rendered on demand (small)

    def empty_streams(self) -> bytes:
        """A valid Streams document with no observations: /current, heartbeats, from=end."""
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<MTConnectStreams xmlns:m="{STREAMS_NS}" xmlns="{STREAMS_NS}" '
            f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xsi:schemaLocation="{STREAMS_NS} http://www.mtconnect.org/schemas/MTConnectStreams_1.3.xsd">\n'
            f'  <Header creationTime="{_now()}" sender="{SENDER}" instanceId="{INSTANCE_ID}" version="{VERSION}" '
            f'bufferSize="{BUFFER_SIZE}" nextSequence="{self.end}" firstSequence="1" lastSequence="{self.end - 1}"/>\n'
            f'  <Streams/>\n'
            f'</MTConnectStreams>\n'
        ).encode()

    def error_document(self, code: str, text: str) -> bytes:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<MTConnectError xmlns:m="{ERROR_NS}" xmlns="{ERROR_NS}" '
            f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xsi:schemaLocation="{ERROR_NS} http://www.mtconnect.org/schemas/MTConnectError_1.3.xsd">\n'
            f'  <Header creationTime="{_now()}" sender="{SENDER}" instanceId="{INSTANCE_ID}" version="{VERSION}" '
            f'bufferSize="{BUFFER_SIZE}"/>\n'
            f'  <Errors>\n    <Error errorCode="{code}">{text}</Error>\n  </Errors>\n'
            f'</MTConnectError>\n'
        ).encode()

    # -- lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the agent is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "PageAgent":
        agent = self

        class Handler(_Handler):
            pass

        Handler.agent = agent
        server = ThreadingHTTPServer((self._host, self._port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="page-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and end every open request and stream now."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections = list(self._connections)
            handlers = list(self._handlers)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for handler in handlers:
            handler.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "PageAgent":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _track(self, connection: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
                self._handlers.add(threading.current_thread())
            else:
                self._connections.discard(connection)
                self._handlers.discard(threading.current_thread())


class _RequestError(Exception):
    def __init__(self, status: int, code: str, text: str):
        super().__init__(text)
        self.status, self.code, self.text = status, code, text


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    text = values[-1]
    if not text.isdigit():
        raise _RequestError(400, "INVALID_REQUEST", f"'{name}' must be a non-negative integer, got '{text}'.")
    return int(text)


class _Handler(BaseHTTPRequestHandler):
    agent: PageAgent
    protocol_version = "HTTP/1.1"
    server_version = "MachineMonitorBenchPageAgent/1.0"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.agent._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.agent._track(self.connection, False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: this is a benchmark
        pass

    def _send_document(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        agent = self.agent
        if agent._stopping.is_set():
            self.close_connection = True
            return
        split = urlsplit(self.path)
        endpoint = split.path.rstrip("/").rsplit("/", 1)[-1]
        query = parse_qs(split.query)
        try:
            if endpoint == "probe" or endpoint == "":
                self._send_document(agent.probe_document)
            elif endpoint == "current":
                self._send_document(agent.empty_streams())
            elif endpoint == "sample":
                self._sample(query)
            else:
                raise _RequestError(404, "UNSUPPORTED", f"The following path is invalid: {split.path}.")
        except _RequestError as exc:
            self._send_document(agent.error_document(exc.code, exc.text), exc.status)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _sample(self, query: dict[str, list[str]]) -> None:
        agent = self.agent
        start = _int_param(query, "from")
        start = 1 if start is None else start
        _int_param(query, "count")  # validated, then ignored: pages are served whole
        interval = _int_param(query, "interval")
        heartbeat = _int_param(query, "heartbeat")
        heartbeat_ms = DEFAULT_HEARTBEAT_MS if not heartbeat else max(10, heartbeat)
        if start > agent.end:
            raise _RequestError(404, "OUT_OF_RANGE", f"'from' must be less than or equal to {agent.end}.")
        index = agent.by_first.get(start)
        if index is None and start != agent.end:
            raise _RequestError(
                400, "INVALID_REQUEST",
                f"'from' = {start} is not the first sequence of a recorded page. This benchmark agent only "
                f"serves whole recorded NIST sample pages (about 10,006 observations each, 'count' is "
                f"ignored); 'from' must be 1 or a page's nextSequence.")
        if interval is None:
            document = agent.empty_streams() if index is None else agent.pages[index].document
            self._send_document(document)
            return
        self._stream(len(agent.pages) if index is None else index, heartbeat_ms)

    def _stream(self, index: int, heartbeat_ms: int) -> None:
        agent = self.agent
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY.decode()}")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        with agent._lock:
            agent.streams_opened += 1
        send = self.connection.sendall
        try:
            for page in agent.pages[index:]:
                if agent._stopping.is_set():
                    return
                send(page.chunk)
                agent.pages_sent += 1
            while not agent._stopping.wait(heartbeat_ms / 1000.0):
                document = agent.empty_streams()
                part = b"".join((b"--", BOUNDARY, b"\r\nContent-type: text/xml\r\nContent-length: ",
                                 str(len(document)).encode(), b"\r\n\r\n", document, b"\r\n"))
                send(b"%X\r\n%s\r\n" % (len(part), part))
        except OSError:  # the client went away, or stop() shut the socket down
            return
        try:
            send(b"0\r\n\r\n")
        except OSError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    agent = PageAgent(loops=args.loops, port=args.port).start()
    print(f"{agent.url}: {len(agent.pages)} pages, {agent.observations:,} observations, end {agent.end}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
