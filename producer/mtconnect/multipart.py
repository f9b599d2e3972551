"""Incremental framing of a multipart HTTP body (`multipart/x-mixed-replace`, `multipart/mixed`).

`MultipartFramer` is fed the body's bytes as they arrive, in pieces of any size, and returns
every part that became complete. It frames exactly as the blocking reader of
`producer.mtconnect.client` does: the preamble and anything between parts are skipped up to a
delimiter line; a part is framed by its `Content-length` header or, without one, ends at the
line break before the next delimiter; `--boundary--` ends the body. Nothing grows without
bound: a header line is held to 64 KB and a part to `part_limit` bytes, beyond which
`DocumentError` names the source. Because it never blocks, the asynchronous client can frame
hundreds of streams on one thread.
"""
from __future__ import annotations

import re

from producer.mtconnect.documents import DocumentError

HEADER_LINE_LIMIT = 65536

_BOUNDARY_RE = re.compile(r'(?:^|;)\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;,"]+))', re.IGNORECASE)


def boundary_of(content_type: str) -> str | None:
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


_SEEK, _HEADERS, _SIZED, _UNSIZED, _DONE = range(5)


class MultipartFramer:
    """Turns a multipart body, fed in pieces, into its parts (bytes), in order."""

    def __init__(self, boundary: str, source: str, part_limit: int):
        self._delimiter = b"--" + boundary.encode("latin-1")
        self._closing = self._delimiter + b"--"
        self._marker = b"\n" + self._delimiter
        self._source = source
        self._limit = part_limit
        self._buffer = bytearray()
        self._state = _SEEK
        self._size = 0
        self._scan_from = 0
        self._headers: dict[str, str] = {}

    @property
    def finished(self) -> bool:
        """True once the closing delimiter was seen: nothing after it is a part."""
        return self._state == _DONE

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a part."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._state == _DONE:
            return []
        self._buffer += data
        parts: list[bytes] = []
        while True:
            part = self._next()
            if part is None:
                return parts
            parts.append(part)

    def _line(self) -> bytes | None:
        index = self._buffer.find(b"\n")
        if index < 0:
            if len(self._buffer) > HEADER_LINE_LIMIT:
                raise DocumentError(f"{self._source}: multipart header line longer than {HEADER_LINE_LIMIT} bytes")
            return None
        line = bytes(self._buffer[: index + 1])
        del self._buffer[: index + 1]
        return line

    def _next(self) -> bytes | None:
        buffer = self._buffer
        while True:
            state = self._state
            if state == _SEEK:
                line = self._line()
                if line is None:
                    return None
                stripped = line.strip()
                if stripped == self._delimiter:
                    self._state, self._headers = _HEADERS, {}
                elif stripped == self._closing:
                    self._state = _DONE
                    buffer.clear()
                    return None
            elif state == _HEADERS:
                line = self._line()
                if line is None:
                    return None
                if line.strip():
                    name, _, value = line.decode("latin-1").partition(":")
                    self._headers[name.strip().lower()] = value.strip()
                    continue
                length = self._headers.get("content-length")
                if length is None:
                    self._state, self._scan_from = _UNSIZED, 0
                    continue
                try:
                    size = int(length)
                except ValueError:
                    raise DocumentError(f"{self._source}: bad multipart Content-length {length!r}") from None
                if size > self._limit:
                    raise DocumentError(f"{self._source}: multipart part of {size} bytes exceeds {self._limit}")
                self._state, self._size = _SIZED, size
            elif state == _SIZED:
                if len(buffer) < self._size:
                    return None
                body = bytes(buffer[: self._size])
                del buffer[: self._size]
                self._state = _SEEK
                return body
            else:  # _UNSIZED: the part ends at the line break before the next delimiter
                index = buffer.find(self._marker, self._scan_from)
                if index < 0:
                    if len(buffer) > self._limit:
                        raise DocumentError(f"{self._source}: multipart part larger than {self._limit} bytes")
                    self._scan_from = max(0, len(buffer) - len(self._marker))
                    return None
                body = bytes(buffer[:index])
                del buffer[:index]
                self._state = _SEEK
                return body[:-1] if body.endswith(b"\r") else body
