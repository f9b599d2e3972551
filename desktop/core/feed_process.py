"""The Kafka feed in a process of its own, so reading a plant's stream does not share one
interpreter with the window.

Consuming, decoding and checking every record (`desktop.core.feed`, `desktop.core.batch`)
is most of the app's work per observation. On the window's interpreter it competes with the
core and GUI threads for one lock and so for one core, however many the PC has. Here the
same `Feed` runs in a child process (`python -m desktop --feed-process`; the installed app
runs itself with that flag), and the window's side, `FeedProcess`, has the `run` / `gate`
shape of a `Feed`, so `desktop.ui.workers.FeedWorker` drives either.

The two talk over the child's stdin and stdout in frames: a 5-byte header (payload length,
big-endian, and a kind byte) and a `marshal` payload - plain Python values, several times
cheaper to read than a pickle of the same batch; both ends are the same interpreter, and the
child is the app itself. Window to feed: `C` the feed's configuration (first), `R` the last
batch was applied (the feed's `BatchGate` may hand over the next), `S` stop. Feed to window:
`B` a batch, `T` a status change, `L` a log record of the feed's loggers, `F` why the feed
ended (the error `Feed.run` raised, worded as there), `E` a clean end.

Lifeline: the child stops when its stdin closes (the window quit, crashed or was killed) and
exits at once if the clean stop takes more than `EXIT_GRACE_SECONDS`; it ignores Ctrl+C,
which a terminal sends to the window and its children alike (the window stops it). Anything the child's
libraries print goes to stderr: stdout carries frames only. A child that ends without `F` or
`E` (killed, crashed) is reported as an error naming its exit code, like any feed failure.
"""
from __future__ import annotations

import logging
import marshal
import os
import signal
import struct
import subprocess
import sys
import threading
import traceback
from typing import Any, BinaryIO, Callable

from desktop.core.batch import Batch, pack_batch, unpack_batch
from desktop.core.feed import FeedConfig, STOPPED
from desktop.core.paths import is_frozen

FEED_PROCESS_FLAG = "--feed-process"
_HEADER = struct.Struct(">IB")
# A frame larger than this is not one the feed writes (a merged batch is bounded well below).
MAX_FRAME = 1 << 30
EXIT_GRACE_SECONDS = 10.0
STOP_TIMEOUT = 10.0
# The loggers whose records the child forwards.
FORWARDED_LOGGERS = ("desktop.core.feed", "desktop.kafka", "desktop.core.batch")

log = logging.getLogger(__name__)


def feed_process_command() -> list[str]:
    """How the app starts its feed process: itself, from a checkout or installed."""
    if is_frozen():
        return [sys.executable, FEED_PROCESS_FLAG]
    return [sys.executable, "-m", "desktop", FEED_PROCESS_FLAG]


def _write_frame(stream: BinaryIO, kind: bytes, payload: bytes = b"") -> None:
    # Unbuffered: a write may take only part of a large frame (a signal), so write the rest.
    data = memoryview(_HEADER.pack(len(payload), kind[0]) + payload)
    while data:
        written = stream.write(data)
        data = data[written or 0:]
    stream.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    """(kind, payload), or None at the end of the stream (also when it ends inside a frame)."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    size, kind = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise RuntimeError(f"the Kafka feed process sent a frame of {size:,} bytes (at most {MAX_FRAME:,})")
    payload = _read_exactly(stream, size) if size else b""
    if payload is None:
        return None
    return bytes([kind]), payload


def failure_text(exc: BaseException) -> str:
    """What a user is told when the feed ended on `exc`."""
    if isinstance(exc, RuntimeError):
        return str(exc)  # the feed's own, already worded for people
    # Unexpected: name the exception and where, so a bug report can use it.
    detail = f"{type(exc).__name__}: {exc}"
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    if last:
        detail += f" (at {last[0].filename.replace(os.sep, '/').rsplit('/', 1)[-1]}:{last[0].lineno})"
    return detail


# -- the window's side -----------------------------------------------------------------------


class _RemoteGate:
    """The window's end of the child's `BatchGate`: `release` tells the child."""

    def __init__(self, owner: "FeedProcess") -> None:
        self._owner = owner

    def release(self) -> None:
        self._owner.send(b"R")


class FeedProcess:
    """`Feed`'s shape (`run`, `gate.release`) with the feed in a child process."""

    def __init__(self, config: FeedConfig, command: list[str] | None = None) -> None:
        self.config = config
        self.command = command or feed_process_command()
        self.gate = _RemoteGate(self)
        self.process: subprocess.Popen | None = None
        self._send_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        """A frame to the child; nothing when it has gone (its end is reported by `run`)."""
        process = self.process
        if process is None or process.stdin is None:
            return
        with self._send_lock:
            try:
                _write_frame(process.stdin, kind, payload)
            except (OSError, ValueError):
                pass  # the child ended: run() reads its end and reports it

    def _configuration(self) -> bytes:
        config = self.config
        level = min(logging.getLogger(name).getEffectiveLevel() for name in FORWARDED_LOGGERS)
        return marshal.dumps({
            "bootstrap_servers": config.bootstrap_servers,
            "topic_prefix": config.topic_prefix,
            "kafka_properties": {str(key): value for key, value in config.kafka_properties.items()},
            "history_seconds": float(config.history_seconds),
            "start_time": config.start_time,
            "group_id": config.group_id,
            "log_level": level,
        })

    def run(self, stop_event: threading.Event, on_batch: Callable[[Batch], None],
            on_status: Callable[[str, str], None] | None = None) -> None:
        """As `Feed.run`: until `stop_event` is set; raises RuntimeError when the feed ended
        on an error (in the child, or the child itself ending)."""
        on_status = on_status or (lambda state, detail: None)
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            bufsize=0)
        except OSError as exc:
            raise RuntimeError(f"could not start the Kafka feed process ({' '.join(self.command)}): {exc}") from exc
        process = self.process
        ended = threading.Event()
        stopper = threading.Thread(target=self._stop_when_asked, args=(stop_event, ended), name="kafka-feed-stop",
                                   daemon=True)
        try:
            self.send(b"C", self._configuration())
            stopper.start()
            failure = None
            clean = False
            reader = process.stdout
            while True:
                frame = _read_frame(reader)
                if frame is None:
                    break
                kind, payload = frame
                if kind == b"B":
                    on_batch(unpack_batch(payload))
                elif kind == b"T":
                    state, detail = marshal.loads(payload)
                    on_status(state, detail)
                elif kind == b"L":
                    name, level, text = marshal.loads(payload)
                    logging.getLogger(name).log(level, "%s", text)
                elif kind == b"F":
                    failure = marshal.loads(payload)
                elif kind == b"E":
                    clean = True
            code = self._wait(STOP_TIMEOUT)
            if failure is not None:
                raise RuntimeError(failure)
            if not clean:
                on_status(STOPPED, "")
                raise RuntimeError(f"the Kafka feed process ended unexpectedly (exit code {code})")
        finally:
            ended.set()
            if process.poll() is None:
                self._wait(STOP_TIMEOUT)

    def _stop_when_asked(self, stop_event: threading.Event, ended: threading.Event) -> None:
        while not ended.is_set():
            if stop_event.wait(0.2):
                self.send(b"S")
                return

    def _wait(self, timeout: float) -> int | None:
        """The child's exit code; it is closed off (stdin) and killed if it does not end."""
        process = self.process
        if process is None:
            return None
        if process.stdin is not None:
            with self._send_lock:
                try:
                    process.stdin.close()
                except OSError:
                    pass
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the Kafka feed process (pid %d) did not stop within %g s; killing it", process.pid, timeout)
            process.kill()
            return process.wait(timeout)
        finally:
            if process.stdout is not None:
                process.stdout.close()


# -- the child's side ------------------------------------------------------------------------


class _ForwardingHandler(logging.Handler):
    def __init__(self, send: Callable[[bytes, bytes], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(b"L", marshal.dumps((record.name, record.levelno, record.getMessage())))
        except Exception:  # noqa: BLE001 - logging must not stop the feed
            self.handleError(record)


def child_main() -> int:
    """`--feed-process`: run the feed until stdin says stop or closes, then exit at once.

    At once (`os._exit`, after flushing stderr): the control thread is blocked reading stdin,
    and an interpreter shutting down around a daemon thread inside a buffered read aborts."""
    try:
        code = _child_run()
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
    os._exit(code)


def _child_run() -> int:
    # Ctrl+C in the app's terminal reaches the whole process group: the window decides when
    # its feed stops (and stops it), so the feed does not end on its own first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.stdin is None or sys.stdout is None:
        return 2  # not started by the window (no pipes): nothing to read or write
    # Frames go to the original stdout; whatever else writes to fd 1 lands on stderr (or
    # nowhere, for an installed app without a console).
    frames_fd = os.dup(sys.stdout.fileno())
    if sys.platform == "win32":
        import msvcrt

        msvcrt.setmode(frames_fd, os.O_BINARY)
        msvcrt.setmode(sys.stdin.fileno(), os.O_BINARY)
    out = os.fdopen(frames_fd, "wb", buffering=0)
    if sys.stderr is not None:
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout = sys.stderr
    else:
        sink = os.open(os.devnull, os.O_WRONLY)
        os.dup2(sink, sys.stdout.fileno())
        os.close(sink)
        sys.stdout = None
    source = sys.stdin.buffer
    send_lock = threading.Lock()

    def send(kind: bytes, payload: bytes = b"") -> None:
        with send_lock:
            _write_frame(out, kind, payload)

    frame = _read_frame(source)
    if frame is None or frame[0] != b"C":
        if sys.stderr is not None:
            print("machine monitor feed process: no configuration on stdin", file=sys.stderr)
        return 2
    settings = marshal.loads(frame[1])
    level = settings.pop("log_level", logging.INFO)
    handler = _ForwardingHandler(send)
    for name in FORWARDED_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(handler)
        logger.propagate = False

    from desktop.core.feed import Feed

    feed = Feed(FeedConfig(**settings))
    stop_event = threading.Event()

    def control() -> None:
        while True:
            try:
                frame = _read_frame(source)
            except (OSError, RuntimeError):
                frame = None
            if frame is None or frame[0] == b"S":
                stop_event.set()
                if frame is None:
                    # The window is gone: a clean stop, or none after the grace.
                    deadline = threading.Timer(EXIT_GRACE_SECONDS, os._exit, args=(3,))
                    deadline.daemon = True
                    deadline.start()
                return
            if frame[0] == b"R":
                feed.gate.release()

    threading.Thread(target=control, name="feed-control", daemon=True).start()
    try:
        feed.run(stop_event, lambda batch: send(b"B", pack_batch(batch)),
                 lambda state, detail: send(b"T", marshal.dumps((state, detail))))
    except BaseException as exc:  # noqa: BLE001 - the window is told why, whatever it was
        try:
            send(b"F", marshal.dumps(failure_text(exc)))
        except OSError:
            pass
        return 1
    try:
        send(b"E")
    except OSError:
        pass
    return 0


__all__ = ["FEED_PROCESS_FLAG", "FeedProcess", "child_main", "failure_text", "feed_process_command"]
