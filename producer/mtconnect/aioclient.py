"""Asynchronous HTTP client for MTConnect agents: many agents on one event loop.

`AsyncAgentClient` speaks to one agent exactly as the blocking `AgentClient` does (probe,
current, sample, the multipart sample stream with the polling fallback), with the same
defences against agents we do not trust and the same error texts: every request must be
answered completely within the request deadline, a stream must deliver a part or a heartbeat
within its idle deadline, bodies are bounded while they are read (after decompression, which
is done here so that it can be bounded), redirects are followed only within the agent's
origin, and an `MTConnectError` document raises `AgentError` whatever the HTTP status.

Why asyncio with aiohttp: a plant is hundreds of agents that each send a small part every
100 ms, so what must scale is the number of open streams, not bytes per stream. One event
loop holds them all on one thread, where the blocking client needs a thread (and its stack)
per stream. aiohttp is a maintained asyncio HTTP/1.1 client with an HTTP parser in C, which
matters at thousands of parts per second (a pure-Python parser such as httpx's h11 costs
several times more per read); it streams a body chunk by chunk and lets us switch off its own
decompression and redirects so that both stay under our bounds. Deadlines are asyncio
timeouts, and stopping is task cancellation, which ends a blocked read at once.

Large documents (a catching-up page of thousands of observations, a device model of
megabytes) are parsed on the `parse_executor` thread, so that one big agent does not hold up
the small parts of all the others; small parts are parsed inline, which is cheaper than a
hand-over to another thread.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable
from urllib.parse import urljoin

import aiohttp

from producer.mtconnect import http
from producer.mtconnect.client import (
    DEFAULT_TIMEOUT,
    MAX_PART_BYTES,
    MIN_POLL_INTERVAL_MS,
    MIN_STREAM_IDLE_S,
    AgentUnreachable,
    _caught_up,
    _instance_changed,
    _certificate_error,
    _next_from,
)
from producer.mtconnect.documents import (
    MAX_DOCUMENT_BYTES,
    DataItemInfo,
    DevicesDocument,
    DocumentError,
    StreamsDocument,
    parse_devices,
    parse_streams,
)
from producer.mtconnect.multipart import MultipartFramer, boundary_of

log = logging.getLogger("producer.mtconnect.client")

# Documents up to this size are parsed on the event loop; larger ones on the parse executor.
INLINE_PARSE_BYTES = 128 * 1024
# One read from a stream takes at most this much of what has arrived.
STREAM_READ_BYTES = 256 * 1024
# A timeout that fires while the loop runs at least this late is granted again, this many times.
LATE_S = 1.0
LATE_RETRIES = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_HEADERS = {"Accept": "application/xml, text/xml", "Accept-Encoding": "gzip, deflate"}


def make_session(read_bufsize: int = 256 * 1024) -> aiohttp.ClientSession:
    """One HTTP session for every agent of a process (call inside the running event loop).

    No connection limit (each stream holds a connection for as long as it runs), no cookies,
    no automatic decompression or redirects: the client does both itself, bounded.
    """
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=False)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                 cookie_jar=aiohttp.DummyCookieJar(), read_bufsize=read_bufsize,
                                 timeout=aiohttp.ClientTimeout(total=None), headers=_HEADERS)


_SSL_CONTEXTS: dict[Any, Any] = {}


def ssl_setting(verify: bool | str) -> Any:
    """aiohttp's `ssl=` for `verify`: True (the system's CAs), False, or a CA file trusted in addition."""
    if verify is True:
        return True
    if verify is False:
        return False
    context = _SSL_CONTEXTS.get(verify)
    if context is None:
        context = _SSL_CONTEXTS[verify] = ssl.create_default_context(cafile=http.trust_store_with(verify))
    return context


class AsyncAgentClient:
    """One agent's REST endpoints over a shared `aiohttp.ClientSession`.

    `timeout` is (connect, request) seconds (connect may be a callable giving the seconds at
    each connect); a timeout that fires while the loop runs late (`loop_lateness_s`, from the
    engine) is granted once more, up to `LATE_RETRIES` times; `stream_idle_s` the longest a stream may go
    without a part or heartbeat. `pending_parts` tells, after each streamed part, how many
    more complete parts had already arrived with it (a stream that has fallen behind).
    """

    def __init__(self, base_url: str, session: aiohttp.ClientSession, *, verify: bool | str = True,
                 timeout: tuple[float | Callable[[], float], float] = DEFAULT_TIMEOUT, stream_idle_s: float | None = None,
                 parse_executor: Executor | None = None, loop_lateness_s: Callable[[], float] | None = None):
        self.base_url = base_url.rstrip("/")
        # How late the event loop runs now (the engine measures it). A timeout that fires while
        # the loop is this late may be the loop's, not the agent's: the answer can be waiting in
        # the socket, unread. Such a wait is granted again instead of failing the agent.
        self._lateness = loop_lateness_s or _PUNCTUAL
        self.session = session
        self._ssl = ssl_setting(verify)
        self.timeout = timeout
        self.stream_idle_s = stream_idle_s
        self._executor = parse_executor
        self._polling_logged = False
        self.data_items: dict[str, DataItemInfo] = {}
        self.pending_parts = 0

    @property
    def _request_s(self) -> float:
        return self.timeout[1]

    @property
    def _connect_s(self) -> float:
        # The engine passes a callable: the connect timeout grows with the loop's recent lag.
        connect = self.timeout[0]
        return connect() if callable(connect) else connect

    def _idle_s(self) -> float:
        return self.stream_idle_s if self.stream_idle_s is not None else MIN_STREAM_IDLE_S

    def _too_slow(self, url: str) -> AgentUnreachable:
        return AgentUnreachable(f"{url}: no complete answer within {self._request_s:g} s "
                                f"(the agent is too slow or stalled)")

    async def _parse(self, function: Callable[..., Any], payload: bytes, *args: Any, **kwargs: Any) -> Any:
        if self._executor is None or len(payload) <= INLINE_PARSE_BYTES:
            return function(payload, *args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(payload, *args, **kwargs))

    # -- requests

    async def _get(self, path: str, params: dict | None) -> aiohttp.ClientResponse:
        """The response to GET `path` with its headers read (the caller reads the body and closes it).

        Redirects are followed only within the agent's origin. The caller holds the deadline.
        """
        url = f"{self.base_url}/{path}"
        for _ in range(http.MAX_REDIRECTS + 1):
            try:
                response = await self._connect_get(url, params)
            except aiohttp.ClientConnectorCertificateError as exc:
                verify_error = _certificate_error(exc.certificate_error) or str(exc.certificate_error)
                raise AgentUnreachable(
                    f"{url}: the agent's TLS certificate could not be verified ({verify_error}); "
                    f"trust its CA with --ca-bundle FILE, or turn verification off with --insecure") from exc
            except aiohttp.ClientSSLError as exc:
                raise AgentUnreachable(f"{url}: TLS failed: {exc}") from exc
            except aiohttp.ClientConnectorError as exc:
                # Named as the blocking client names it, so a refused agent reads the same in both.
                raise AgentUnreachable(f"{url}: ConnectionError: {_connect_failure(exc)}") from exc
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise AgentUnreachable(f"{url}: {type(exc).__name__}: {exc}") from exc
            target = _redirect_target(response)
            if target is None:
                return response
            response.close()
            if not http.same_origin(url, target):
                raise AgentUnreachable(
                    f"{url}: the agent redirects to {target}, another origin; refusing to follow "
                    f"(configure the agent's own address)")
            url, params = target, None
        raise AgentUnreachable(f"{self.base_url}/{path}: more than {http.MAX_REDIRECTS} redirects")

    async def _connect_get(self, url: str, params: dict | None) -> aiohttp.ClientResponse:
        """GET `url`: a connect that timed out while the loop ran late is tried again."""
        retries = LATE_RETRIES
        while True:
            try:
                return await self.session.get(url, params=params, allow_redirects=False, ssl=self._ssl,
                                              timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_s))
            except aiohttp.ConnectionTimeoutError:
                if not self._late(retries):
                    raise
                retries -= 1
                log.info("agent=%s event=connect_retried lateness_s=%.1f (the loop, not the agent, was late)",
                         self.base_url, self._lateness())

    def _late(self, retries_left: int) -> bool:
        """Whether a wait that just timed out is to be granted again (the loop ran late)."""
        return retries_left > 0 and self._lateness() >= LATE_S

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        url = str(response.url)
        try:
            decoder = http.decompressor(response.headers.get("Content-Encoding", ""))
        except http.UnsupportedEncoding as exc:
            raise DocumentError(f"{url}: {exc}") from None
        limit = MAX_DOCUMENT_BYTES
        declared = response.headers.get("Content-Length", "")
        if decoder is None and declared.isdigit() and int(declared) > limit:
            raise DocumentError(f"{url}: the response declares {int(declared)} bytes, more than the {limit} byte limit")
        body = bytearray()
        try:
            while True:
                chunk = await response.content.read(http.CHUNK_BYTES * 4)
                if not chunk:
                    break
                if decoder is not None:
                    chunk = http.inflate_bounded(decoder, chunk, limit - len(body))
                body += chunk
                if len(body) > limit:
                    what = "decompresses to" if decoder is not None else "is"
                    raise DocumentError(f"{url}: the response {what} more than the {limit} byte limit")
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentUnreachable(f"{url}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # zlib.error on a damaged compressed body
            if isinstance(exc, DocumentError):
                raise
            raise DocumentError(f"{url}: the body could not be decoded: {exc}") from None
        if decoder is not None:
            body += decoder.flush()
            if len(body) > limit:
                raise DocumentError(f"{url}: the response decompresses to more than the {limit} byte limit")
        # An MTConnectError document is the answer whatever the status (agents use 200, 400,
        # 404 and 500); only a 5xx without an XML body means the agent itself is in trouble.
        looks_like_xml = body.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<")
        if response.status >= 500 and not looks_like_xml:
            raise AgentUnreachable(f"{url}: HTTP {response.status}")
        if not looks_like_xml:
            raise DocumentError(f"{url}: HTTP {response.status}, not an XML document")
        return bytes(body)

    async def _document(self, path: str, params: dict | None = None) -> bytes:
        url = f"{self.base_url}/{path}"
        retries = LATE_RETRIES
        while True:
            try:
                async with asyncio.timeout(self._request_s):
                    response = await self._get(path, params)
                    try:
                        return await self._read_body(response)
                    finally:
                        response.close()
            except TimeoutError:
                if not self._late(retries):
                    raise self._too_slow(url) from None
                retries -= 1

    async def probe(self) -> DevicesDocument:
        payload = await self._document("probe")
        document = await self._parse(parse_devices, payload, self.base_url)
        self.data_items = document.data_items
        return document

    async def current(self) -> StreamsDocument:
        payload = await self._document("current")
        return await self._parse(parse_streams, payload, self.base_url, self.data_items,
                                 source=f"{self.base_url}/current")

    async def sample(self, from_sequence: int | None, count: int = 1000) -> StreamsDocument:
        """One page of `sample`; without `from_sequence` the agent starts at its oldest observation."""
        params = {"count": count} if from_sequence is None else {"from": from_sequence, "count": count}
        payload = await self._document("sample", params)
        return await self._parse(parse_streams, payload, self.base_url, self.data_items,
                                 source=f"{self.base_url}/sample" + ("" if from_sequence is None
                                                                     else f"?from={from_sequence}"))

    async def sample_bytes(self, from_sequence: int, count: int) -> bytes:
        """The raw bytes of one `sample?from=&count=` page (for reading a document that does not parse)."""
        return await self._document("sample", {"from": from_sequence, "count": count})

    # -- the stream

    async def stream(self, from_sequence: int, count: int = 1000, interval_ms: int = 100,
                     heartbeat_ms: int = 10000) -> AsyncIterator[StreamsDocument]:
        """Follow `sample?from=&interval=` as a multipart stream, one document per part.

        Behaves as `AgentClient.stream`: parts in sequence order, an empty part is a heartbeat,
        the iterator ends when the agent closes the stream, an `MTConnectError` part raises
        `AgentError`, a broken or idle stream `AgentUnreachable`; an agent that answers with a
        plain document is polled with `sample?from=&count=` instead. Closing the iterator (or
        cancelling its task) ends the request at once.
        """
        params = {"from": from_sequence, "count": count, "interval": interval_ms, "heartbeat": heartbeat_ms}
        source = f"{self.base_url}/sample?from={from_sequence}&interval={interval_ms}"
        url = f"{self.base_url}/sample"
        self.pending_parts = 0
        retries = LATE_RETRIES
        while True:
            try:
                async with asyncio.timeout(self._request_s):
                    response = await self._get("sample", params)
                break
            except TimeoutError:
                if not self._late(retries):
                    raise self._too_slow(url) from None
                retries -= 1
        try:
            boundary = boundary_of(response.headers.get("Content-Type", ""))
            if boundary is None:
                try:
                    async with asyncio.timeout(self._request_s):
                        body = await self._read_body(response)
                except TimeoutError:
                    raise self._too_slow(url) from None
                first = await self._parse(parse_streams, body, self.base_url, self.data_items, source=source)
                response.close()
                yield first
                async for page in self._poll(first, from_sequence, count, interval_ms, heartbeat_ms):
                    yield page
                return
            try:
                decoder = http.decompressor(response.headers.get("Content-Encoding", ""))
            except http.UnsupportedEncoding as exc:
                raise DocumentError(f"{source}: {exc}") from None
            async for document in self._parts(response, boundary, source, decoder):
                yield document
        finally:
            response.close()

    async def _parts(self, response: aiohttp.ClientResponse, boundary: str, source: str,
                     decoder) -> AsyncIterator[StreamsDocument]:
        framer = MultipartFramer(boundary, source, MAX_PART_BYTES)
        idle_s = self._idle_s()
        loop = asyncio.get_running_loop()
        # The idle clock runs while the agent owes us a part, not while the caller works.
        last_part = loop.time()
        deadline = last_part + idle_s
        read = response.content.read
        late_retries = LATE_RETRIES
        while not framer.finished:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await read(STREAM_READ_BYTES)
            except TimeoutError:
                if self._late(late_retries):
                    late_retries -= 1
                    deadline = loop.time() + idle_s
                    continue
                raise AgentUnreachable(f"{source}: no part or heartbeat for {idle_s:g} s; reconnecting") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise AgentUnreachable(f"{source}: stream broken: {type(exc).__name__}: {exc}") from exc
            if not chunk:
                return  # the agent closed the stream; the caller resumes from its cursor
            if decoder is not None:
                chunk = http.inflate_bounded(decoder, chunk, MAX_PART_BYTES)
            parts = framer.feed(chunk)
            if not parts:
                continue
            late_retries = LATE_RETRIES
            remaining = len(parts)
            for part in parts:
                remaining -= 1
                self.pending_parts = remaining
                yield await self._parse(parse_streams, part, self.base_url, self.data_items, source=source)
            last_part = loop.time()
            deadline = last_part + idle_s

    async def _poll(self, first: StreamsDocument, from_sequence: int, count: int, interval_ms: int,
                    heartbeat_ms: int) -> AsyncIterator[StreamsDocument]:
        """The stream of an agent that cannot stream: `sample?from=&count=` pages, polled."""
        if not self._polling_logged:
            self._polling_logged = True
            log.info("agent=%s event=polling_fallback interval_ms=%d: the agent answered sample?interval= "
                     "with a plain document, so it is polled with sample?from=&count= instead",
                     self.base_url, interval_ms)
        instance_id = first.header.instance_id
        next_from = _next_from(first, from_sequence)
        caught_up = _caught_up(first, count)
        pause_s = max(interval_ms, MIN_POLL_INTERVAL_MS) / 1000.0
        heartbeat_s = heartbeat_ms / 1000.0
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        while True:
            if caught_up:
                await asyncio.sleep(pause_s)
            page = await self.sample(next_from, count)
            if _instance_changed(self.base_url, instance_id, page):
                return  # as a stream ends when its agent restarts; the caller sees the new instance
            caught_up = _caught_up(page, count)
            next_from = _next_from(page, next_from)
            now = loop.time()
            if page.observations or now - last_yield >= heartbeat_s:
                last_yield = now
                yield page


def _punctual() -> float:
    return 0.0


_PUNCTUAL = _punctual


def _redirect_target(response: aiohttp.ClientResponse) -> str | None:
    """The absolute Location of a redirect response, else None."""
    if response.status not in _REDIRECTS:
        return None
    location = response.headers.get("Location")
    return urljoin(str(response.url), location) if location else None


def _connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """The operating system's words for a failed connect (`Connection refused`), as the blocking client says them.

    asyncio words a refused connect as "Connect call failed ('127.0.0.1', 8080)"; the errno behind it
    says what the user can act on.
    """
    error = exc.os_error
    if isinstance(error, socket.gaierror):
        return "the agent's host name could not be resolved"
    if error is not None and error.errno:
        return os.strerror(error.errno)
    return str(exc)
