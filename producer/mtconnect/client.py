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
import ssl
import threading
import time
from typing import Iterator

import requests

from producer.mtconnect import http, multipart
from producer.mtconnect.documents import (
    MAX_DOCUMENT_BYTES,
    DataItemInfo,
    DevicesDocument,
    DocumentError,
    StreamsDocument,
    parse_devices,
    parse_streams,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (5.0, 30.0)
MAX_PART_BYTES = MAX_DOCUMENT_BYTES
# A stream that delivers neither a part nor a heartbeat for this long is dead, however many
# bytes still trickle in (at least three heartbeats, and never less than this).
MIN_STREAM_IDLE_S = 10.0
# The shortest pause between two polls of an agent that cannot stream (interval=0 would spin).
MIN_POLL_INTERVAL_MS = 10


class AgentUnreachable(ConnectionError):
    """The agent could not be reached or the connection broke; the message names the agent."""


class AgentClient:
    """One agent's REST endpoints. `base_url` is the agent root, e.g. https://smstestbed.nist.gov/vds.

    `timeout` is (connect, request) seconds: every probe/current/sample request must be
    answered completely within the request time, however slowly the agent trickles bytes.
    A stream must deliver a part or a heartbeat at least every `stream_idle_s` seconds.
    `verify` is True (the system's CAs), False, or a CA file trusted in addition to them.
    """

    def __init__(self, base_url: str, *, verify: bool | str = True,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, session: requests.Session | None = None,
                 stream_idle_s: float | None = None):
        self.base_url = base_url.rstrip("/")
        self.verify = http.trust_store_with(verify) if isinstance(verify, str) else verify
        self.timeout = timeout
        self.stream_idle_s = stream_idle_s
        self._session = session
        self._open_stream: requests.Response | None = None
        self._abort: threading.Event | None = None  # set by abort_stream() for the running stream()
        self._guards: set[http.RequestGuard] = set()
        self._guards_lock = threading.Lock()
        self._interrupted = False
        self._polling_logged = False
        self.data_items: dict[str, DataItemInfo] = {}

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = http.guarded_session()
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

    def interrupt(self) -> None:
        """Stop everything at once, for shutdown: the stream, and any request in flight now or later."""
        self._interrupted = True
        self.abort_stream()
        with self._guards_lock:
            guards = list(self._guards)
        for guard in guards:
            guard.abort()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def _request_s(self) -> float:
        return self.timeout[1]

    def _get(self, path: str, params: dict | None = None, stream: bool = False
             ) -> tuple[requests.Response, http.RequestGuard]:
        """The response to GET `path` (headers read) and the guard whose deadline still runs.

        Redirects are followed only within the agent's origin; the caller reads the body and
        calls `guard.done()`.
        """
        url = f"{self.base_url}/{path}"
        for _ in range(http.MAX_REDIRECTS + 1):
            guard = self._guard()
            try:
                response = http.send(self.session, url, guard, params=params, stream=True,
                                     timeout=(self.timeout[0], self._socket_timeout(stream)), verify=self.verify)
            except requests.exceptions.SSLError as exc:
                self._release(guard)
                verify_error = _certificate_error(exc)
                if verify_error is not None:
                    raise AgentUnreachable(
                        f"{url}: the agent's TLS certificate could not be verified ({verify_error}); "
                        f"trust its CA with --ca-bundle FILE, or turn verification off with --insecure"
                    ) from exc
                raise AgentUnreachable(f"{url}: TLS failed: {exc}") from exc
            except requests.RequestException as exc:
                self._release(guard)
                raise AgentUnreachable(self._failure(url, guard, exc)) from exc
            target = http.redirect_target(response)
            if target is None:
                return response, guard
            response.close()
            self._release(guard)
            if not http.same_origin(url, target):
                raise AgentUnreachable(
                    f"{url}: the agent redirects to {target}, another origin; refusing to follow "
                    f"(configure the agent's own address)")
            url, params = target, None
        raise AgentUnreachable(f"{self.base_url}/{path}: more than {http.MAX_REDIRECTS} redirects")

    def _socket_timeout(self, stream: bool) -> float:
        return min(self._request_s, self._idle_s()) if stream else self._request_s

    def _idle_s(self) -> float:
        return self.stream_idle_s if self.stream_idle_s is not None else MIN_STREAM_IDLE_S

    def _guard(self, deadline_s: float | None = None) -> http.RequestGuard:
        guard = http.RequestGuard(self._request_s if deadline_s is None else deadline_s)
        with self._guards_lock:
            self._guards.add(guard)
        if self._interrupted:
            guard.abort()
        return guard

    def _release(self, guard: http.RequestGuard) -> None:
        guard.done()
        with self._guards_lock:
            self._guards.discard(guard)

    def _failure(self, url: str, guard: http.RequestGuard, exc: BaseException) -> str:
        if guard.expired:
            return f"{url}: no complete answer within {self._request_s:g} s (the agent is too slow or stalled)"
        if guard.aborted:
            return f"{url}: interrupted (shutting down)"
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return f"{url}: ConnectTimeout: no connection within {self.timeout[0]:g} s"
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return f"{url}: ReadTimeout: the agent sent nothing for {self._request_s:g} s"
        reason = _os_error(exc)
        if reason is not None:
            return f"{url}: {type(exc).__name__}: {reason}"
        return f"{url}: {type(exc).__name__}: {exc}"

    def _body(self, response: requests.Response, guard: http.RequestGuard) -> bytes:
        try:
            with response:
                try:
                    body = http.read_body(response, MAX_DOCUMENT_BYTES)
                except http.BodyTooLarge as exc:
                    raise DocumentError(f"{response.url}: {exc}") from None
                except http.UnsupportedEncoding as exc:
                    raise DocumentError(f"{response.url}: {exc}") from None
                except Exception as exc:  # urllib3 and http.client raise many kinds on a broken read
                    raise AgentUnreachable(self._failure(response.url, guard, exc)) from exc
        finally:
            self._release(guard)
        # An MTConnectError document is the answer whatever the status (agents use 200, 400,
        # 404 and 500); only a 5xx without an XML body means the agent itself is in trouble.
        looks_like_xml = body.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<")
        if response.status_code >= 500 and not looks_like_xml:
            raise AgentUnreachable(f"{response.url}: HTTP {response.status_code}")
        if not looks_like_xml:
            raise DocumentError(f"{response.url}: HTTP {response.status_code}, not an XML document")
        return body

    def _document(self, path: str, params: dict | None = None) -> bytes:
        return self._body(*self._get(path, params))

    def probe(self) -> DevicesDocument:
        document = parse_devices(self._document("probe"), self.base_url)
        self.data_items = document.data_items
        return document

    def current(self) -> StreamsDocument:
        return parse_streams(self._document("current"), self.base_url, self.data_items,
                             source=f"{self.base_url}/current")

    def sample(self, from_sequence: int | None, count: int = 1000) -> StreamsDocument:
        """One page of `sample`; without `from_sequence` the agent starts at its oldest observation."""
        params = {"count": count} if from_sequence is None else {"from": from_sequence, "count": count}
        return parse_streams(
            self._document("sample", params),
            self.base_url, self.data_items,
            source=f"{self.base_url}/sample" + ("" if from_sequence is None else f"?from={from_sequence}"),
        )

    def sample_bytes(self, from_sequence: int, count: int) -> bytes:
        """The raw bytes of one `sample?from=&count=` page (for reading a document that does not parse)."""
        return self._document("sample", {"from": from_sequence, "count": count})

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
                response, guard = self._get("sample", params, stream=True)
            except AgentUnreachable:
                if abort.is_set():
                    return
                raise
            if abort.is_set():
                response.close()
                self._release(guard)
                return
            boundary = multipart.boundary_of(response.headers.get("Content-Type", ""))
            if boundary is None:
                first = parse_streams(self._body(response, guard), self.base_url, self.data_items, source=source)
            else:
                # The headers came in time; from now on the stream is judged by its parts.
                self._release(guard)
                with response:
                    self._open_stream = response
                    if abort.is_set():  # abort_stream() ran before it could see this response
                        return
                    try:
                        decoder = http.decompressor(response.headers.get("Content-Encoding", ""))
                    except http.UnsupportedEncoding as exc:
                        raise DocumentError(f"{source}: {exc}") from None
                    try:
                        for part in _multipart_parts(response, boundary, source, self._idle_s(), decoder):
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
            if _instance_changed(self.base_url, instance_id, page):
                return  # as a stream ends when its agent restarts; the caller sees the new instance
            caught_up = _caught_up(page, count)
            next_from = _next_from(page, next_from)
            now = time.monotonic()
            if page.observations or now - last_yield >= heartbeat_s:
                last_yield = now
                yield page


def _instance_changed(base_url: str, instance_id: int | None, page: StreamsDocument) -> bool:
    """Whether a polled page comes from another agent instance than the one polling began with (logged)."""
    page_instance = page.header.instance_id
    if instance_id is None or page_instance is None or page_instance == instance_id:
        return False
    log.info("agent=%s event=polling_ended reason=instance_changed old_instance=%s new_instance=%s",
             base_url, instance_id, page_instance)
    return True


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


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception behind it (causes, contexts, wrapped reasons), each once."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(current.args)
        pending.extend((current.__cause__, current.__context__, getattr(current, "reason", None)))


def _os_error(exc: BaseException) -> str | None:
    """The operating system's words behind a connection failure (`Connection refused`), if any."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        if type(cause).__name__ == "NameResolutionError":
            return "the agent's host name could not be resolved"
    return None


def _certificate_error(exc: BaseException) -> str | None:
    """The verification failure behind a requests SSLError (e.g. `self-signed certificate`), if any."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or str(cause)
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else None


class _Reader:
    """A byte buffer over a streamed response that returns data as soon as it arrives.

    `mark_part()` is called whenever a part or heartbeat completes; a stream that goes
    `idle_s` seconds without one raises `AgentUnreachable`, however many bytes still trickle
    in. A compressed stream (`decoder`) is inflated as it arrives, never beyond the part limit.
    """

    def __init__(self, response: requests.Response, source: str, idle_s: float = MIN_STREAM_IDLE_S,
                 decoder=None):
        self._raw = response.raw
        self._buffer = bytearray()
        self._source = source
        self._idle_s = idle_s
        self._decoder = decoder
        self._last_part = time.monotonic()
        self.eof = False

    def mark_part(self) -> None:
        self._last_part = time.monotonic()

    def _fill(self) -> bool:
        if time.monotonic() - self._last_part > self._idle_s:
            raise AgentUnreachable(f"{self._source}: no part or heartbeat for {self._idle_s:g} s; reconnecting")
        try:
            chunk = self._raw.read1(262144)
        except Exception as exc:  # urllib3/http.client raise a variety of errors on a broken stream
            if time.monotonic() - self._last_part > self._idle_s:
                raise AgentUnreachable(
                    f"{self._source}: no part or heartbeat for {self._idle_s:g} s; reconnecting") from exc
            raise AgentUnreachable(f"{self._source}: stream broken: {type(exc).__name__}: {exc}") from exc
        if not chunk:
            self.eof = True
            return False
        if self._decoder is not None:
            chunk = http.inflate_bounded(self._decoder, chunk, MAX_PART_BYTES)
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


def _multipart_parts(response: requests.Response, boundary: str, source: str,
                     idle_s: float = MIN_STREAM_IDLE_S, decoder=None) -> Iterator[bytes]:
    reader = _Reader(response, source, idle_s, decoder)
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
        reader.mark_part()  # the idle clock runs while the agent owes us a part, not while we work
