"""HTTP for talking to agents we do not trust: deadlines, bounded bodies, same-origin redirects.

`requests` bounds each socket read, not a whole request: an agent that sends one byte every
few seconds would hold a follower forever. Here every request gets a total deadline, enforced
by one process-wide `Watchdog` thread that shuts the request's socket down when it passes
(the connection classes below tell the watchdog which socket a request is using, also while
the response headers are still arriving). Bodies are read in chunks with the size limit
checked as they arrive, after decompression, so neither a huge nor a gzip-bomb response can
fill memory. Redirects are followed only within the agent's own origin (scheme, host, port).
"""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
import zlib
from typing import Callable
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

CHUNK_BYTES = 65536
MAX_REDIRECTS = 5


class Watchdog:
    """Runs callbacks at deadlines on one daemon thread; `cancel` before the deadline is cheap."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._counter = itertools.count()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, callback: Callable[[], None]) -> int:
        token = next(self._counter)
        with self._condition:
            heapq.heappush(self._heap, (time.monotonic() + delay, token, callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            self._condition.notify()
        return token

    def cancel(self, token: int) -> None:
        with self._condition:
            self._cancelled.add(token)
            if len(self._cancelled) > 1024 and len(self._cancelled) * 2 > len(self._heap):
                # Most entries are cancelled requests that finished early: drop them now
                # rather than when their deadline comes round.
                self._heap = [entry for entry in self._heap if entry[1] not in self._cancelled]
                heapq.heapify(self._heap)
                self._cancelled.clear()

    def _run(self) -> None:
        while True:
            with self._condition:
                while True:
                    while self._heap and self._heap[0][1] in self._cancelled:
                        self._cancelled.discard(heapq.heappop(self._heap)[1])
                    if not self._heap:
                        self._condition.wait()
                        continue
                    due, token, callback = self._heap[0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        break
                    self._condition.wait(wait)
            try:
                callback()
            except Exception:  # noqa: BLE001 - a closing socket may already be gone; the reader reports it
                pass


WATCHDOG = Watchdog()

# The request being sent on this thread, so the connection it uses can register its socket.
_current = threading.local()


class RequestGuard:
    """One request's deadline: the socket it uses is shut down when the deadline passes or on `abort`."""

    def __init__(self, deadline_s: float | None):
        self._lock = threading.Lock()
        self._connection: HTTPConnection | None = None
        self.expired = False
        self.aborted = False
        self._token = WATCHDOG.schedule(deadline_s, self._expire) if deadline_s is not None else None

    def bind(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connection = connection
            if self.expired or self.aborted:
                _shutdown(connection)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._connection is not None:
                _shutdown(self._connection)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            if self._connection is not None:
                _shutdown(self._connection)

    def done(self) -> None:
        if self._token is not None:
            WATCHDOG.cancel(self._token)
            self._token = None
        with self._lock:
            self._connection = None


def _shutdown(connection: HTTPConnection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _GuardedMixin:
    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        guard = getattr(_current, "guard", None)
        if guard is not None:
            guard.bind(self)  # the socket may not exist yet: bind() is repeated once connected
        super().request(*args, **kwargs)  # type: ignore[misc]
        if guard is not None:
            guard.bind(self)


class _GuardedHTTPConnection(_GuardedMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections report their sockets to the request's `RequestGuard`."""

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def guarded_session() -> requests.Session:
    session = requests.Session()
    # One more try on a fresh connection when a kept-alive one turns out to be closed (an agent
    # that restarted, or dropped an idle connection just as it was reused); the request's
    # deadline covers both tries.
    adapter = GuardedAdapter(max_retries=Retry(total=1, connect=1, read=1, redirect=0, status=0, other=0))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # Only what `read_body` decodes itself (never brotli/zstd, whose output it could not bound).
    session.headers["Accept-Encoding"] = "gzip, deflate"
    return session


def send(session: requests.Session, url: str, guard: RequestGuard, **kwargs) -> requests.Response:
    """GET `url` under `guard`; the caller reads the body (or stream) and calls `guard.done()`."""
    _current.guard = guard
    try:
        return session.get(url, allow_redirects=False, **kwargs)
    finally:
        _current.guard = None


def same_origin(first: str, second: str) -> bool:
    a, b = urlsplit(first), urlsplit(second)
    default = {"http": 80, "https": 443}
    return (a.scheme.lower(), (a.hostname or "").lower(), a.port or default.get(a.scheme.lower())) == (
        b.scheme.lower(), (b.hostname or "").lower(), b.port or default.get(b.scheme.lower()))


def redirect_target(response: requests.Response) -> str | None:
    """The absolute Location of a redirect response, else None."""
    if response.status_code not in (301, 302, 303, 307, 308):
        return None
    location = response.headers.get("Location")
    return urljoin(response.url, location) if location else None


class BodyTooLarge(ValueError):
    pass


class UnsupportedEncoding(ValueError):
    pass


def decompressor(content_encoding: str):
    """A zlib decompressor for the response's Content-Encoding, or None for identity."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header, as servers vary
    raise UnsupportedEncoding(f"unsupported Content-Encoding {content_encoding!r}")


INFLATE_STEP = 1 << 20


def inflate_bounded(decoder, data: bytes, room: int) -> bytes:
    """Decompress `data`, producing at most `room + 1` bytes (one more than allowed tells "too big")."""
    out = bytearray()
    inflate_into(decoder, data, out, room)
    return bytes(out)


def inflate_into(decoder, data: bytes, out: bytearray, room: int) -> None:
    """Append the decompression of `data` to `out` in steps of at most 1 MB, stopping once more
    than `room` bytes were added: memory never holds more than the limit plus one step."""
    start = len(out)
    out += decoder.decompress(data, min(room + 1, INFLATE_STEP))
    while decoder.unconsumed_tail and len(out) - start <= room:
        out += decoder.decompress(decoder.unconsumed_tail, min(room + 1 - (len(out) - start), INFLATE_STEP))


def read_body(response: requests.Response, limit: int) -> bytes:
    """The whole (decompressed) body, read in chunks; `BodyTooLarge` as soon as it passes `limit`."""
    decoder = decompressor(response.headers.get("Content-Encoding", ""))
    declared = response.headers.get("Content-Length", "")
    if decoder is None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the response declares {int(declared)} bytes, more than the {limit} byte limit")
    body = bytearray()
    for chunk in response.raw.stream(CHUNK_BYTES, decode_content=False):
        if decoder is not None:
            inflate_into(decoder, chunk, body, limit - len(body))
        else:
            body += chunk
        if len(body) > limit:
            what = "decompresses to" if decoder is not None else "is"
            raise BodyTooLarge(f"the response {what} more than the {limit} byte limit")
    if decoder is not None:
        body += decoder.flush()
        if len(body) > limit:
            raise BodyTooLarge(f"the response decompresses to more than the {limit} byte limit")
    return bytes(body)


def system_ca_files() -> list[str]:
    """The CA files a default verification trusts: the environment's bundle if one is set
    (REQUESTS_CA_BUNDLE, SSL_CERT_FILE), else requests' bundle (certifi) and the OS store."""
    import os
    import ssl

    for variable in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(variable)
        if value and os.path.isfile(value):
            return [value]
    files = []
    try:
        import certifi

        files.append(certifi.where())
    except ImportError:  # pragma: no cover - requests depends on certifi
        pass
    system = ssl.get_default_verify_paths().cafile
    if system and os.path.isfile(system) and system not in files:
        files.append(system)
    return files


def trust_store_with(extra_ca: str) -> str:
    """A CA bundle file holding the system's CAs plus `extra_ca` (a plant's own CA): what
    `verify=` needs so that adding a CA does not stop every other certificate verifying."""
    import hashlib
    import os
    import ssl
    import tempfile

    try:
        ssl.create_default_context().load_verify_locations(cafile=extra_ca)
        with open(extra_ca, "rb") as handle:
            extra = handle.read()
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"CA bundle {extra_ca}: not a readable PEM CA file ({exc})") from None
    parts = []
    for path in system_ca_files():
        with open(path, "rb") as handle:
            parts.append(handle.read().rstrip(b"\n") + b"\n")
    parts.append(extra.rstrip(b"\n") + b"\n")
    combined = b"".join(parts)
    digest = hashlib.sha256(combined).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"machine-monitor-ca-{os.getuid() if hasattr(os, 'getuid') else 0}-{digest}.pem")
    if not os.path.isfile(path):
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(combined)
        os.replace(temporary, path)
    return path
