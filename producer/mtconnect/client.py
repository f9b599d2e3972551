"""HTTP client for one MTConnect agent: probe, current, sample and the multipart sample stream.

The stream reader understands `multipart/x-mixed-replace` and `multipart/mixed` with any
boundary, parts framed by `Content-length` or only by the next boundary, carried in
chunked or plain bodies. Every part is parsed into a `StreamsDocument`; an
`MTConnectError` part or response raises `AgentError` whatever the HTTP status was.
"""
from __future__ import annotations

import re
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

DEFAULT_TIMEOUT = (5.0, 30.0)
MAX_PART_BYTES = 64 * 1024 * 1024


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
        self.data_items: dict[str, DataItemInfo] = {}

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
            self._session.headers["Accept"] = "application/xml, text/xml"
        return self._session

    def abort_stream(self) -> None:
        """Unblock a `stream()` read from another thread (used by a prompt shutdown)."""
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
        except requests.RequestException as exc:
            raise AgentUnreachable(f"{url}: {type(exc).__name__}: {exc}") from exc

    def _body(self, response: requests.Response) -> bytes:
        with response:
            try:
                body = response.content
            except requests.RequestException as exc:
                raise AgentUnreachable(f"{response.url}: reading the response failed: {exc}") from exc
        if response.status_code >= 500:
            raise AgentUnreachable(f"{response.url}: HTTP {response.status_code}")
        if not body.lstrip().startswith(b"<"):
            raise DocumentError(f"{response.url}: HTTP {response.status_code}, not an XML document")
        return body

    def probe(self) -> DevicesDocument:
        document = parse_devices(self._body(self._get("probe")), self.base_url)
        self.data_items = document.data_items
        return document

    def current(self) -> StreamsDocument:
        return parse_streams(self._body(self._get("current")), self.base_url, self.data_items,
                             source=f"{self.base_url}/current")

    def sample(self, from_sequence: int, count: int = 1000) -> StreamsDocument:
        return parse_streams(
            self._body(self._get("sample", {"from": from_sequence, "count": count})),
            self.base_url, self.data_items, source=f"{self.base_url}/sample?from={from_sequence}",
        )

    def stream(self, from_sequence: int, count: int = 1000, interval_ms: int = 100,
               heartbeat_ms: int = 10000) -> Iterator[StreamsDocument]:
        """Follow `sample?from=&interval=` as a multipart stream, one document per part.

        Ends when the agent closes the stream. If the agent answers with a plain document
        (it cannot stream), that one document is yielded and the iterator ends, so the
        caller can fall back to polling.
        """
        params = {"from": from_sequence, "count": count, "interval": interval_ms, "heartbeat": heartbeat_ms}
        response = self._get("sample", params, stream=True)
        source = f"{self.base_url}/sample?from={from_sequence}&interval={interval_ms}"
        self._open_stream = response
        with response:
            content_type = response.headers.get("Content-Type", "")
            boundary = _boundary(content_type)
            if boundary is None:
                yield parse_streams(self._body(response), self.base_url, self.data_items, source=source)
                return
            try:
                for part in _multipart_parts(response, boundary, source):
                    yield parse_streams(part, self.base_url, self.data_items, source=source)
            finally:
                self._open_stream = None


def _boundary(content_type: str) -> str | None:
    if not content_type.lower().startswith("multipart/"):
        return None
    match = re.search(r'boundary\s*=\s*"?([^";,]+)"?', content_type, re.IGNORECASE)
    return match.group(1).strip() if match else None


class _Reader:
    """A byte buffer over a streamed response that returns data as soon as it arrives."""

    def __init__(self, response: requests.Response, source: str):
        self._raw = response.raw
        self._buffer = bytearray()
        self._source = source
        self.eof = False

    def _fill(self) -> bool:
        try:
            chunk = self._raw.read1(65536)
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
            body = reader.read_until(b"\r\n" + delimiter, MAX_PART_BYTES)
        if body is None:
            return  # the agent closed mid-part; the caller resumes from its cursor
        yield body
