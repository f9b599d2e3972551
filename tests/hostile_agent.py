"""A misbehaving MTConnect agent for the hostile-input tests: a real HTTP server in front of the
real replay agent that serves the replay agent's own documents, changed in one named way.

It speaks the protocol the producer uses (probe, current, sample with from/count, and
sample with interval as a multipart stream, which it frames itself from upstream pages) and
applies one `mode`:

- `probe_huge`: the probe answer is `size` bytes (the real device model, then an XML comment),
  streamed in chunks, so the test process never holds it; with `chunked=True` it is sent with
  chunked transfer encoding and no Content-Length, so its size shows only while it is read.
- `probe_gzip_bomb`: the probe is gzip-encoded and inflates to `size` bytes.
- `probe_trickle`: the probe's status and headers come at once, then one byte every `every_s`.
- `stream_trickle`: the stream's first part is whole, then one byte every `every_s`.
- `stream_no_boundary`: a part whose closing boundary never comes (the bytes stop).
- `value_huge`, `text_huge`, `value_invalid_utf8`: the observation with sequence `sequence`
  gets a 2 MB value, an 11 MB text node, or bytes that are not UTF-8, wherever it is served.
- `probe_model_huge`: the probe carries `items` extra data items (a device model over 1 MB).
- `probe_instance`: the probe's header says instanceId `instance`; the streams keep theirs.
- `duplicates`: every observation element appears twice in every page and part.
- `stream_fails`: probe and current work; every sample request is answered 500.
- `redirect_other_origin`, `redirect_same_origin`: the probe answers 302 to another port, or
  to `/same/probe` on this server (which serves the real probe).

`requests` counts what was asked for, per path.
"""
from __future__ import annotations

import collections
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

BOUNDARY = "hostile-7f3a9c"


class HostileAgent(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, mode: str, **options):
        self.upstream = upstream.rstrip("/")
        self.mode = mode
        self.options = options
        self.requests: collections.Counter[str] = collections.Counter()
        self._stopping = threading.Event()
        self._bomb: bytes | None = None
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "HostileAgent":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self.shutdown()
        self.server_close()
        self._thread.join(10)

    # -- documents, from the real agent

    def fetch(self, path: str, params: dict | None = None) -> bytes:
        return requests.get(f"{self.upstream}/{path}", params=params, timeout=30).content

    def mutate(self, document: bytes) -> bytes:
        mode, sequence = self.mode, self.options.get("sequence")
        if mode == "duplicates":
            return re.sub(rb"(<(\w+:)?\w+ [^<>]*\bsequence=\"\d+\"[^<>]*?(/>|>[^<]*</[^<>]+>))", rb"\1\1", document)
        if mode in ("value_huge", "text_huge", "value_invalid_utf8") and sequence is not None:
            pattern = re.compile(rb"(<(?:\w+:)?\w+ [^<>]*\bsequence=\"%d\"[^<>]*?)(/>|>[^<]*(</[^<>]+>))" % sequence)
            replacement = {"value_huge": b"A" * (2 * 1024 * 1024), "text_huge": b"B" * (11 * 1024 * 1024),
                           "value_invalid_utf8": b"bad \xff\xfe bytes"}[mode]

            def swap(match: re.Match) -> bytes:
                closing = match.group(3)
                if closing is None:  # an empty element: close it with its own name
                    name = re.match(rb"<((?:\w+:)?\w+)", match.group(1)).group(1)
                    closing = b"</" + name + b">"
                return match.group(1) + b">" + replacement + closing
            return pattern.sub(swap, document)
        return document

    def probe(self) -> bytes:
        document = self.fetch("probe")
        if self.mode == "probe_instance":
            document = re.sub(rb'instanceId="\d+"', b'instanceId="%d"' % self.options["instance"], document, count=1)
        if self.mode == "probe_model_huge":
            items = b"".join(b'<DataItem category="EVENT" id="extra_%d" name="extra_%d" type="MESSAGE"/>' % (n, n)
                             for n in range(self.options["items"]))
            document = document.replace(b"</DataItems>", items + b"</DataItems>", 1)
        return document

    def gzip_bomb(self) -> bytes:
        if self._bomb is None:
            compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # fast; still ~230:1
            document = self.fetch("probe")
            head, _, tail = document.rpartition(b"</MTConnectDevices>")
            parts = [compressor.compress(head), compressor.compress(b"<!--")]
            block = b"x" * (1 << 20)
            for _ in range(self.options["size"] >> 20):
                parts.append(compressor.compress(block))
            parts += [compressor.compress(b"-->" + b"</MTConnectDevices>" + tail), compressor.flush()]
            self._bomb = b"".join(parts)
        return self._bomb


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileAgent

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, content_type: str = "text/xml", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        server = self.server
        split = urlsplit(self.path)
        path = split.path.strip("/")
        params = {key: values[-1] for key, values in parse_qs(split.query).items()}
        server.requests[path] += 1
        mode = server.mode
        try:
            if path in ("probe", "same/probe"):
                return self._probe(path)
            if path == "current":
                return self._send(200, server.mutate(server.fetch("current")))
            if path == "sample":
                if mode == "stream_fails":
                    return self._send(500, b"internal error", "text/plain")
                if "interval" in params:
                    return self._stream(params)
                return self._send(200, server.mutate(server.fetch("sample", params)))
            self._send(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _probe(self, path: str) -> None:
        server, mode = self.server, self.server.mode
        if mode == "redirect_other_origin" and path == "probe":
            return self._send(302, b"", Location=f"http://127.0.0.1:{server.options['port']}/probe")
        if mode == "redirect_same_origin" and path == "probe":
            return self._send(302, b"", Location="/same/probe")
        if mode == "probe_huge":
            document = server.fetch("probe")
            head, _, tail = document.rpartition(b"</MTConnectDevices>")
            closing = b"-->" + b"</MTConnectDevices>" + tail
            padding = server.options["size"] - len(head) - len(closing) - 4
            chunked = server.options.get("chunked", False)
            write = self._chunk if chunked else self.wfile.write
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(head) + 4 + padding + len(closing)))
            self.end_headers()
            write(head + b"<!--")
            block = b"x" * (1 << 20)
            while padding > 0 and not server._stopping.is_set():
                write(block[:padding])
                padding -= len(block)
            write(closing)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            return
        if mode == "probe_gzip_bomb":
            return self._send(200, server.gzip_bomb(), Content_Encoding="gzip")
        if mode == "probe_trickle":
            body = server.probe()
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for index in range(len(body)):
                if server._stopping.wait(server.options["every_s"]):
                    return
                self.wfile.write(body[index:index + 1])
                self.wfile.flush()
            return
        self._send(200, server.probe())

    def _stream(self, params: dict[str, str]) -> None:
        server, mode = self.server, self.server.mode
        cursor = int(params.get("from", 1))
        count = int(params.get("count", 100))
        interval = int(params.get("interval", 100)) / 1000
        heartbeat = int(params.get("heartbeat", 10000)) / 1000
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        parts = 0
        last_sent = time.monotonic()
        while not server._stopping.is_set():
            document = server.mutate(server.fetch("sample", {"from": cursor, "count": count}))
            match = re.search(rb'nextSequence="(\d+)"', document)
            has_observations = b' sequence="' in document
            if not has_observations and time.monotonic() - last_sent < heartbeat:
                if server._stopping.wait(interval):
                    return
                continue
            part = (b"--" + BOUNDARY.encode() + b"\r\nContent-type: text/xml\r\nContent-length: "
                    + str(len(document)).encode() + b"\r\n\r\n" + document + b"\r\n")
            if parts >= 1 and mode == "stream_trickle":
                for index in range(len(part)):
                    if server._stopping.wait(server.options["every_s"]):
                        return
                    self._chunk(part[index:index + 1])
                return
            if parts >= 1 and mode == "stream_no_boundary":
                self._chunk(part[:len(part) // 2])
                server._stopping.wait(3600)
                return
            self._chunk(part)
            parts += 1
            last_sent = time.monotonic()
            if match:
                cursor = max(cursor, int(match.group(1)))
            if server._stopping.wait(interval):
                return

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()
