"""HTTP client for one MTConnect agent: probe, current, sample and the multipart sample stream.

The stream reader understands `multipart/x-mixed-replace` and `multipart/mixed` with any
boundary (quoted or not), parts framed by `Content-length` or only by the next boundary,
carried in chunked or plain bodies. Every part is parsed into a `StreamsDocument`; an
`MTConnectError` part or response raises `AgentError` whatever the HTTP status was.
An agent that cannot stream (it answers `sample?interval=` with a plain document) is
polled with `sample?from=&count=` instead, behind the same `stream()` iterator.
"""
from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from typing import Iterator

import requests

from producer.mtconnect.documents import (
    DataItemInfo,
    DevicesDocument,
    DocumentError,
    StreamsDocument,
    parse_devices,
    parse_streams,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (5.0, 30.0)
MAX_PART_BYTES = 64 * 1024 * 1024
# The shortest pause between two polls of an agent that cannot stream (interval=0 would spin).
MIN_POLL_INTERVAL_MS = 10


class AgentUnreachable(ConnectionError):
    """The agent could not be reached or the connection broke; the message names the agent."""


class AgentClient:
    """One agent's REST endpoints. `base_url` is the agent root, e.g. https://smstestbed.nist.gov/vds."""

    def __init__(self, base_url: str, *, verify: bool | str = True,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.verify = verify
        self.timeout = timeout
        self._session = session
        self._open_stream: requests.Response | None = None
        self._abort: threading.Event | None = None  # set by abort_stream() for the running stream()
        self._polling_logged = False
        self.data_items: dict[str, DataItemInfo] = {}

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
            self._session.headers["Accept"] = "application/xml, text/xml"
        return self._session

    def abort_stream(self) -> None:
        """End the running `stream()` promptly, from another thread (used by a prompt shutdown).

        Whatever the stream is doing, its iterator then ends without an exception: a blocked
        multipart read is woken by shutting its socket down, the wait between two polls is cut
        short (an in-flight poll request finishes first), and a stream still connecting ends as
        soon as its request returns. It ends this client's most recent `stream()`; a
        `stream()` created afterwards is not affected.
        """
        abort = self._abort
        if abort is not None:
            abort.set()
        response = self._open_stream
        if response is not None:
            try:
                response.raw.shutdown()
            except Exception:  # noqa: BLE001 - the stream may be closing on its own right now
                response.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _get(self, path: str, params: dict | None = None, stream: bool = False) -> requests.Response:
        url = f"{self.base_url}/{path}"
        try:
            return self.session.get(url, params=params, timeout=self.timeout, verify=self.verify, stream=stream)
        except requests.exceptions.SSLError as exc:
            verify_error = _certificate_error(exc)
            if verify_error is not None:
                raise AgentUnreachable(
                    f"{url}: the agent's TLS certificate could not be verified ({verify_error}); "
                    f"trust its CA with verify=<CA file>, or turn verification off with verify=False"
                ) from exc
            raise AgentUnreachable(f"{url}: TLS failed: {exc}") from exc
        except requests.RequestException as exc:
            raise AgentUnreachable(f"{url}: {type(exc).__name__}: {exc}") from exc

    def _body(self, response: requests.Response) -> bytes:
        with response:
            try:
                body = response.content
            except requests.RequestException as exc:
                raise AgentUnreachable(f"{response.url}: reading the response failed: {exc}") from exc
        # An MTConnectError document is the answer whatever the status (agents use 200, 400,
        # 404 and 500); only a 5xx without an XML body means the agent itself is in trouble.
        looks_like_xml = body.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<")
        if response.status_code >= 500 and not looks_like_xml:
            raise AgentUnreachable(f"{response.url}: HTTP {response.status_code}")
        if not looks_like_xml:
            raise DocumentError(f"{response.url}: HTTP {response.status_code}, not an XML document")
        return body

    def probe(self) -> DevicesDocument:
        document = parse_devices(self._body(self._get("probe")), self.base_url)
        self.data_items = document.data_items
        return document

    def current(self) -> StreamsDocument:
        return parse_streams(self._body(self._get("current")), self.base_url, self.data_items,
                             source=f"{self.base_url}/current")

    def sample(self, from_sequence: int | None, count: int = 1000) -> StreamsDocument:
        """One page of `sample`; without `from_sequence` the agent starts at its oldest observation."""
        params = {"count": count} if from_sequence is None else {"from": from_sequence, "count": count}
        return parse_streams(
            self._body(self._get("sample", params)),
            self.base_url, self.data_items,
            source=f"{self.base_url}/sample" + ("" if from_sequence is None else f"?from={from_sequence}"),
        )

    def stream(self, from_sequence: int, count: int = 1000, interval_ms: int = 100,
               heartbeat_ms: int = 10000) -> Iterator[StreamsDocument]:
        """Follow `sample?from=&interval=` as a multipart stream, one document per part.

        Parts come in sequence order, each starting where the previous one ended; a part
        without observations is a heartbeat. The iterator ends when the agent closes the
        stream (idle timeout, restart: resume from your cursor) or `abort_stream()` is called.
        An `MTConnectError` part raises `AgentError`, a broken connection `AgentUnreachable`.

        If the agent cannot stream (it answers with a plain document), that document is
        yielded and the agent is then polled with `sample?from=<nextSequence>&count=<count>`:
        at once while it has more than a page waiting, else every `interval_ms`. Every page
        with observations is yielded, and an empty one at least every `heartbeat_ms` as a
        heartbeat. Polling goes on until the agent errors, the connection fails, the
        agent's instanceId changes (the iterator ends, as a stream does when an agent
        restarts) or `abort_stream()` is called.
        """
        abort = threading.Event()
        self._abort = abort
        return self._stream(abort, from_sequence, count, interval_ms, heartbeat_ms)

    def _stream(self, abort: threading.Event, from_sequence: int, count: int, interval_ms: int,
                heartbeat_ms: int) -> Iterator[StreamsDocument]:
        params = {"from": from_sequence, "count": count, "interval": interval_ms, "heartbeat": heartbeat_ms}
        source = f"{self.base_url}/sample?from={from_sequence}&interval={interval_ms}"
        try:
            try:
                response = self._get("sample", params, stream=True)
            except AgentUnreachable:
                if abort.is_set():
                    return
                raise
            if abort.is_set():
                response.close()
                return
            boundary = _boundary(response.headers.get("Content-Type", ""))
            if boundary is None:
                first = parse_streams(self._body(response), self.base_url, self.data_items, source=source)
            else:
                with response:
                    self._open_stream = response
                    if abort.is_set():  # abort_stream() ran before it could see this response
                        return
                    try:
                        for part in _multipart_parts(response, boundary, source):
                            yield parse_streams(part, self.base_url, self.data_items, source=source)
                            if abort.is_set():
                                return
                    except AgentUnreachable:
                        if abort.is_set():
                            return  # the broken read is the abort itself
                        raise
                return
            yield first
            if abort.is_set():
                return
            yield from self._poll(abort, first, from_sequence, count, interval_ms, heartbeat_ms)
        finally:
            if self._abort is abort:
                self._abort = None
                self._open_stream = None

    def _poll(self, abort: threading.Event, first: StreamsDocument, from_sequence: int, count: int,
              interval_ms: int, heartbeat_ms: int) -> Iterator[StreamsDocument]:
        """The stream of an agent that cannot stream: `sample?from=&count=` pages, polled."""
        if not self._polling_logged:
            self._polling_logged = True
            log.info("agent=%s event=polling_fallback interval_ms=%d: the agent answered sample?interval= "
                     "with a plain document, so it is polled with sample?from=&count= instead",
                     self.base_url, interval_ms)
        else:
            log.debug("agent=%s event=polling_fallback", self.base_url)
        instance_id = first.header.instance_id
        next_from = _next_from(first, from_sequence)
        caught_up = _caught_up(first, count)
        pause_s = max(interval_ms, MIN_POLL_INTERVAL_MS) / 1000.0
        heartbeat_s = heartbeat_ms / 1000.0
        last_yield = time.monotonic()
        while True:
            if abort.wait(pause_s) if caught_up else abort.is_set():
                return
            try:
                page = self.sample(next_from, count)
            except AgentUnreachable:
                if abort.is_set():
                    return
                raise
            if abort.is_set():
                return
            page_instance = page.header.instance_id
            if instance_id is not None and page_instance is not None and page_instance != instance_id:
                log.info("agent=%s event=polling_ended reason=instance_changed old_instance=%s new_instance=%s",
                         self.base_url, instance_id, page_instance)
                return  # as a stream ends when its agent restarts; the caller sees the new instance
            caught_up = _caught_up(page, count)
            next_from = _next_from(page, next_from)
            now = time.monotonic()
            if page.observations or now - last_yield >= heartbeat_s:
                last_yield = now
                yield page


def _next_from(page: StreamsDocument, current: int) -> int:
    """Where the page after `page` starts; never before `current` (no page is read twice)."""
    if page.header.next_sequence is not None:
        return max(page.header.next_sequence, current)
    if page.observations:
        return max(page.observations[-1]["sequence"] + 1, current)
    return current


def _caught_up(page: StreamsDocument, count: int) -> bool:
    """True when `page` reached the agent's newest observation (the next poll should wait)."""
    header = page.header
    if header.next_sequence is not None and header.last_sequence is not None:
        return header.next_sequence > header.last_sequence
    return len(page.observations) < count


def _certificate_error(exc: BaseException) -> str | None:
    """The verification failure behind a requests SSLError (e.g. `self-signed certificate`), if any."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or str(current)
        pending.extend(current.args)
        pending.extend((current.__cause__, current.__context__, getattr(current, "reason", None)))
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else None


_BOUNDARY_RE = re.compile(r'(?:^|;)\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;,"]+))', re.IGNORECASE)


def _boundary(content_type: str) -> str | None:
    """The boundary of a `multipart/*` Content-Type, quoted (RFC 2046 allows spaces and commas) or not."""
    media_type, _, parameters = content_type.partition(";")
    if not media_type.strip().lower().startswith("multipart/"):
        return None
    match = _BOUNDARY_RE.search(";" + parameters)
    if match is None:
        return None
    if match.group(1) is not None:
        value = re.sub(r"\\(.)", r"\1", match.group(1))
    else:
        value = match.group(2)
    return value or None


class _Reader:
    """A byte buffer over a streamed response that returns data as soon as it arrives."""

    def __init__(self, response: requests.Response, source: str):
        self._raw = response.raw
        self._buffer = bytearray()
        self._source = source
        self.eof = False

    def _fill(self) -> bool:
        try:
            chunk = self._raw.read1(262144)
        except Exception as exc:  # urllib3/http.client raise a variety of errors on a broken stream
            raise AgentUnreachable(f"{self._source}: stream broken: {type(exc).__name__}: {exc}") from exc
        if not chunk:
            self.eof = True
            return False
        self._buffer += chunk
        return True

    def read_line(self, limit: int = 65536) -> bytes | None:
        while True:
            index = self._buffer.find(b"\n")
            if index >= 0:
                line = bytes(self._buffer[: index + 1])
                del self._buffer[: index + 1]
                return line
            if len(self._buffer) > limit:
                raise DocumentError(f"{self._source}: multipart header line longer than {limit} bytes")
            if not self._fill():
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                return None

    def read_exact(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            if not self._fill():
                return None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_until(self, marker: bytes, limit: int) -> bytes | None:
        start = 0
        while True:
            index = self._buffer.find(marker, start)
            if index >= 0:
                data = bytes(self._buffer[:index])
                del self._buffer[:index]
                return data
            if len(self._buffer) > limit:
                raise DocumentError(f"{self._source}: multipart part larger than {limit} bytes")
            start = max(0, len(self._buffer) - len(marker))
            if not self._fill():
                return None


def _multipart_parts(response: requests.Response, boundary: str, source: str) -> Iterator[bytes]:
    reader = _Reader(response, source)
    delimiter = b"--" + boundary.encode("latin-1")
    while True:
        # Find the next boundary line (skipping the preamble and the CRLF after a part).
        while True:
            line = reader.read_line()
            if line is None:
                return
            stripped = line.strip()
            if stripped == delimiter:
                break
            if stripped == delimiter + b"--":
                return
        headers: dict[str, str] = {}
        while True:
            line = reader.read_line()
            if line is None:
                return
            if not line.strip():
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise DocumentError(f"{source}: bad multipart Content-length {length!r}") from None
            if size > MAX_PART_BYTES:
                raise DocumentError(f"{source}: multipart part of {size} bytes exceeds {MAX_PART_BYTES}")
            body = reader.read_exact(size)
        else:
            # Without a length the part ends at the line break before the next delimiter.
            body = reader.read_until(b"\n" + delimiter, MAX_PART_BYTES)
            if body is not None and body.endswith(b"\r"):
                body = body[:-1]
        if body is None:
            return  # the agent closed mid-part; the caller resumes from its cursor
        yield body
