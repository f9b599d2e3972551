"""AgentClient over real HTTP(S) against the replay agent: the polling fallback for an agent
that cannot stream, HTTPS with a private CA, streams the agent closes, and the multipart
framings other agents use (re-framed real agent documents)."""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from producer.mtconnect.client import AgentClient, AgentUnreachable
from producer.mtconnect.documents import AgentError, StreamsDocument, parse_streams
from producer.replay import ReplayAgent
from tlsutil import TlsFiles, make_tls_files

TIMEOUT = 8.0
REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- helpers -----------------------------------------------------------------------------------


class Follower:
    """Runs `client.stream(...)` on a thread, as the producer service does, and records what it yields."""

    def __init__(self, client: AgentClient, from_sequence: int, **stream_args: int):
        self.client = client
        self.parts: list[StreamsDocument] = []
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self._lock = threading.Lock()
        self._iterator = client.stream(from_sequence, **stream_args)
        self._thread = threading.Thread(target=self._run, name="test-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for part in self._iterator:
                with self._lock:
                    self.parts.append(part)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc
        finally:
            self.ended.set()

    def snapshot(self) -> list[StreamsDocument]:
        with self._lock:
            return list(self.parts)

    def sequences(self) -> list[int]:
        return [observation["sequence"] for part in self.snapshot() for observation in part.observations]

    def heartbeats(self) -> int:
        return sum(1 for part in self.snapshot() if part.is_heartbeat)

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.ended.is_set():
                raise AssertionError(f"the stream ended ({self.error!r}) before {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def wait_ended(self, timeout: float) -> float:
        """Seconds until the iterator ended (fails after `timeout`)."""
        started = time.monotonic()
        assert self.ended.wait(timeout), f"the stream did not end within {timeout} s"
        self._thread.join(timeout)
        return time.monotonic() - started

    def close(self) -> None:
        self.client.abort_stream()
        self.ended.wait(TIMEOUT)
        self._thread.join(TIMEOUT)
        self.client.close()


@pytest.fixture
def followers() -> Iterator[Callable[..., Follower]]:
    """Starts Followers and aborts and joins every one of them at the end of the test."""
    started: list[Follower] = []

    def start(client: AgentClient, from_sequence: int, **stream_args: int) -> Follower:
        follower = Follower(client, from_sequence, **stream_args)
        started.append(follower)
        return follower

    try:
        yield start
    finally:
        for follower in started:
            follower.close()
        assert all(not follower._thread.is_alive() for follower in started), "a stream thread still runs"


def first_part(client: AgentClient, from_sequence: int, **stream_args: int) -> StreamsDocument:
    """The first document of a stream, which is then closed."""
    stream = client.stream(from_sequence, **stream_args)
    try:
        return next(stream)
    finally:
        stream.close()


def agent_pages(agent: ReplayAgent, client: AgentClient, last: int, page: int = 500) -> list[dict]:
    """Observations 1..last as the agent serves them in its own plain sample pages."""
    observations: list[dict] = []
    start = 1
    while start <= last:
        response = requests.get(f"{agent.url}/sample", params={"from": start, "count": min(page, last - start + 1)},
                                timeout=TIMEOUT)
        document = parse_streams(response.content, agent.url, client.data_items)
        assert document.observations, f"no observations from {start}"
        observations.extend(document.observations)
        start = document.observations[-1]["sequence"] + 1
    return observations


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def live_no_stream_agent() -> Iterator[ReplayAgent]:
    """Cannot stream; a minute per second, so new observations arrive while the test runs."""
    agent = ReplayAgent(port=0, speed=60, start_time="20:29:50", no_stream=True).start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def quiet_no_stream_agent() -> Iterator[ReplayAgent]:
    """Cannot stream; only the startup observations, nothing new ever arrives."""
    agent = ReplayAgent(port=0, speed=1, limit=0, no_stream=True).start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def quiet_agent() -> Iterator[ReplayAgent]:
    agent = ReplayAgent(port=0, speed=1, limit=0).start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def https_agent(tls: TlsFiles) -> Iterator[ReplayAgent]:
    agent = ReplayAgent(port=0, speed=1, limit=0, tls_cert=tls.server_cert, tls_key=tls.server_key).start()
    try:
        yield agent
    finally:
        agent.stop()


# ---- an agent that cannot stream ---------------------------------------------------------------


def test_no_stream_agent_answers_interval_with_a_plain_document(quiet_no_stream_agent: ReplayAgent) -> None:
    url = quiet_no_stream_agent.url
    for path in ("sample?from=1&count=5&interval=10&heartbeat=100", "current?interval=10"):
        response = requests.get(f"{url}/{path}", timeout=TIMEOUT)
        assert response.status_code == 200, path
        assert response.headers["Content-Type"] == "text/xml", path
        assert int(response.headers["Content-Length"]) == len(response.content)
    page = parse_streams(requests.get(f"{url}/sample?from=1&count=5&interval=10", timeout=TIMEOUT).content, url)
    assert [observation["sequence"] for observation in page.observations] == [1, 2, 3, 4, 5]
    assert page.header.next_sequence == 6


def test_polling_fallback_yields_every_observation_once_and_follows_new_data(
    live_no_stream_agent: ReplayAgent, followers, caplog: pytest.LogCaptureFixture
) -> None:
    agent = live_no_stream_agent
    caplog.set_level(logging.INFO, logger="producer.mtconnect.client")
    client = AgentClient(agent.url)
    client.probe()
    at_start = agent.next_sequence
    follower = followers(client, 1, count=100, interval_ms=50, heartbeat_ms=1000)
    # Catches up with full pages, then keeps following what the agent releases meanwhile.
    follower.wait_for(lambda: len(follower.sequences()) >= at_start + 300, "new observations after catching up")
    assert follower.error is None

    client.abort_stream()
    assert follower.wait_ended(10.0) < 5.0  # promptly: well before a heartbeat or poll interval
    assert follower.error is None, f"abort_stream() must end the iterator cleanly, got {follower.error!r}"

    parts = follower.snapshot()
    sequences = follower.sequences()
    assert sequences == list(range(1, len(sequences) + 1)), "gaps, repeats or disorder"
    assert all(len(part.observations) <= 100 for part in parts)
    assert all(len(part.observations) == 100 for part in parts[: (at_start - 1) // 100]), "catch-up pages not full"
    assert any(0 < len(part.observations) < 100 for part in parts), "never caught up with the agent"
    assert {part.header.instance_id for part in parts} == {agent.instance_id}
    # The very observations the agent itself serves, page for page, field for field.
    assert [o for part in parts for o in part.observations] == agent_pages(agent, client, sequences[-1])

    fallbacks = [record for record in caplog.records if "polling_fallback" in record.getMessage()]
    assert len(fallbacks) == 1 and fallbacks[0].levelno == logging.INFO
    assert agent.url in fallbacks[0].getMessage()


def test_polling_heartbeats_then_ends_when_the_agent_restarts(
    quiet_no_stream_agent: ReplayAgent, followers
) -> None:
    agent = quiet_no_stream_agent
    client = AgentClient(agent.url)
    cursor = agent.next_sequence
    old_instance = agent.instance_id
    follower = followers(client, cursor, count=100, interval_ms=20, heartbeat_ms=150)
    follower.wait_for(lambda: follower.heartbeats() >= 3, "three polled heartbeats")
    parts = follower.snapshot()
    assert all(part.is_heartbeat and part.header.next_sequence == cursor for part in parts)
    assert {part.header.instance_id for part in parts} == {old_instance}
    # Heartbeats are rate-limited to heartbeat_ms although the agent is polled every 20 ms.
    assert follower.heartbeats() <= 20

    new_instance = agent.restart()
    assert follower.wait_ended(10.0) < 5.0
    assert follower.error is None, f"a restart must end the iterator like a closed stream, got {follower.error!r}"
    assert all(part.header.instance_id == old_instance for part in follower.snapshot())

    # The service then reconnects from its cursor and sees the new instance in the first document.
    with AgentClient(agent.url) as again:
        first = first_part(again, cursor, count=100, interval_ms=20, heartbeat_ms=150)
    assert first.header.instance_id == new_instance


def test_polling_raises_agent_unreachable_when_the_agent_goes_away(
    quiet_no_stream_agent: ReplayAgent, followers
) -> None:
    agent = quiet_no_stream_agent
    url = agent.url
    follower = followers(AgentClient(url, timeout=(2.0, 2.0)), agent.next_sequence, count=100, interval_ms=20,
                         heartbeat_ms=100)
    follower.wait_for(lambda: follower.heartbeats() >= 1, "a polled heartbeat")
    agent.stop()
    follower.wait_ended(3.0)
    assert isinstance(follower.error, AgentUnreachable), repr(follower.error)
    assert url in str(follower.error)


def test_polling_and_streaming_raise_the_agents_errors(quiet_no_stream_agent: ReplayAgent) -> None:
    agent = quiet_no_stream_agent
    with AgentClient(agent.url) as client:
        with pytest.raises(AgentError) as caught:
            next(client.stream(agent.next_sequence + 1000, count=10, interval_ms=20))
    assert caught.value.codes == {"OUT_OF_RANGE"}


def test_abort_ends_a_polling_loop_waiting_between_polls(quiet_no_stream_agent: ReplayAgent, followers) -> None:
    agent = quiet_no_stream_agent
    client = AgentClient(agent.url)
    # A long interval: the loop is asleep between polls when the abort comes.
    follower = followers(client, agent.next_sequence, count=100, interval_ms=30_000, heartbeat_ms=60_000)
    follower.wait_for(lambda: len(follower.snapshot()) >= 1, "the first (plain) document")
    time.sleep(0.2)
    client.abort_stream()
    assert follower.wait_ended(10.0) < 5.0  # promptly: well before a heartbeat or poll interval
    assert follower.error is None


# ---- HTTPS -------------------------------------------------------------------------------------


def test_https_agent_with_its_ca_probes_and_streams(https_agent: ReplayAgent, tls: TlsFiles, followers) -> None:
    agent = https_agent
    assert agent.url.startswith("https://localhost:")
    client = AgentClient(agent.url, verify=str(tls.ca_cert))
    devices = client.probe()
    assert len(devices.devices) == 8
    last = agent.next_sequence - 1
    follower = followers(client, 1, count=100, interval_ms=10, heartbeat_ms=200)
    follower.wait_for(lambda: follower.heartbeats() >= 1, "a heartbeat after the catch-up")
    assert follower.sequences() == list(range(1, last + 1))
    parts = follower.snapshot()
    assert parts[0].header.instance_id == agent.instance_id
    assert parts[-1].is_heartbeat and parts[-1].header.next_sequence == last + 1
    # A multipart read over TLS is unblocked promptly too.
    client.abort_stream()
    assert follower.wait_ended(10.0) < 5.0  # promptly: well before a heartbeat or poll interval
    assert follower.error is None


def test_https_agent_is_refused_without_its_ca(https_agent: ReplayAgent) -> None:
    with AgentClient(https_agent.url) as client:  # verify=True: the system's CAs only
        with pytest.raises(AgentUnreachable) as probe_error:
            client.probe()
        with pytest.raises(AgentUnreachable) as stream_error:
            next(client.stream(1, count=10, interval_ms=10))
    for error in (probe_error.value, stream_error.value):
        message = str(error)
        assert https_agent.url in message
        assert "certificate could not be verified" in message
        assert re.search(r"self.signed|unable to get local issuer", message), message


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_agent_without_verification(https_agent: ReplayAgent) -> None:
    with AgentClient(https_agent.url, verify=False) as client:
        assert len(client.probe().devices) == 8
        assert len(client.current().observations) == 226
        first = first_part(client, 1, count=10, interval_ms=10)
        assert [observation["sequence"] for observation in first.observations] == list(range(1, 11))


def test_cli_serves_https_without_streaming(tls: TlsFiles) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "producer", "replay", "--port", "0", "--speed", "1", "--limit", "0",
         "--no-stream", "--tls-cert", str(tls.server_keystore)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert re.fullmatch(r"listening=https://localhost:\d+", line), line
        url = line.split("=", 1)[1]
        response = requests.get(f"{url}/sample?from=1&count=3&interval=10", timeout=TIMEOUT, verify=str(tls.ca_cert))
        assert response.headers["Content-Type"] == "text/xml"
        assert [o["sequence"] for o in parse_streams(response.content, url).observations] == [1, 2, 3]
    finally:
        process.terminate()
        try:
            process.wait(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
    assert process.returncode == 0


# ---- streams the agent closes ------------------------------------------------------------------


def test_stream_ends_cleanly_when_the_agent_closes_it(quiet_agent: ReplayAgent, followers) -> None:
    agent = quiet_agent
    cursor = agent.next_sequence
    client = AgentClient(agent.url)
    follower = followers(client, cursor, count=100, interval_ms=10, heartbeat_ms=100)
    follower.wait_for(lambda: follower.heartbeats() >= 2, "two streamed heartbeats (an idle stream)")
    assert all(part.is_heartbeat and part.header.next_sequence == cursor for part in follower.snapshot())

    # A restart drops the agent's open streams, as a real agent closing them does.
    new_instance = agent.restart()
    assert follower.wait_ended(10.0) < 5.0  # promptly: well before a heartbeat or poll interval
    assert follower.error is None, f"a closed stream must end the iterator cleanly, got {follower.error!r}"

    # Reconnecting from the cursor works at once; the new instance shows in the first part.
    first = first_part(client, cursor, count=100, interval_ms=10, heartbeat_ms=100)
    assert first.header.instance_id == new_instance


# ---- multipart framings of other agents --------------------------------------------------------


class _Reframer(ThreadingHTTPServer):
    """Serves the replay agent's own sample documents in another agent's multipart framing.

    The replay agent always writes x-mixed-replace, an unquoted boundary, a Content-length
    per part and one part per HTTP chunk; agents in the field also send multipart/mixed,
    quoted boundaries, parts framed only by the boundary, bare LF line ends, parts split
    across chunks, and bodies ended by closing the connection instead of chunked encoding.
    """

    daemon_threads = True

    def __init__(self, documents: list[bytes], content_type: str, boundary: str, with_length: bool,
                 chunk_size: int | None, newline: bytes):
        self.documents = documents
        self.content_type = content_type
        self.boundary = boundary
        self.with_length = with_length
        self.chunk_size = chunk_size
        self.newline = newline
        super().__init__(("127.0.0.1", 0), _ReframeHandler)

    def body(self) -> bytes:
        nl, delimiter = self.newline, b"--" + self.boundary.encode()
        out = b"this preamble is ignored" + nl
        for document in self.documents:
            out += delimiter + nl + b"Content-Type: text/xml" + nl
            if self.with_length:
                out += b"Content-Length: " + str(len(document)).encode() + nl
            out += nl + document + nl
        return out + delimiter + b"--" + nl


class _ReframeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Reframer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        server, body = self.server, self.server.body()
        self.send_response(200)
        self.send_header("Content-Type", server.content_type)
        if server.chunk_size is None:
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), server.chunk_size):
                chunk = body[start:start + server.chunk_size]
                self.wfile.write(b"%X\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


@pytest.mark.parametrize("content_type, boundary, with_length, chunk_size, newline", [
    pytest.param("multipart/x-mixed-replace;boundary={b}", "7f3a9c1e5d", True, 997, b"\r\n", id="x-mixed-length-chunked"),
    pytest.param('multipart/mixed; boundary="{b}"', "mm-Part, of 1=2", False, 4096, b"\r\n", id="mixed-quoted-nolength"),
    pytest.param('multipart/mixed; charset=UTF-8; BOUNDARY="{b}"', "xyz", True, None, b"\r\n", id="mixed-length-close"),
    pytest.param("multipart/x-mixed-replace; boundary={b}", "lf-only", False, None, b"\n", id="x-mixed-lf-nolength"),
])
def test_multipart_framings_of_other_agents(
    quiet_agent: ReplayAgent, content_type: str, boundary: str, with_length: bool, chunk_size: int | None,
    newline: bytes,
) -> None:
    agent = quiet_agent
    last = agent.next_sequence - 1
    assert 300 < last <= 450
    documents = [
        requests.get(f"{agent.url}/sample?from={start}&count=150", timeout=TIMEOUT).content
        for start in (1, 151, 301)
    ]
    documents.append(requests.get(f"{agent.url}/sample?from={last + 1}", timeout=TIMEOUT).content)  # <Streams/>
    assert b"<Streams/>" in documents[-1]
    server = _Reframer(documents, content_type.format(b=boundary), boundary, with_length, chunk_size, newline)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with AgentClient(f"http://127.0.0.1:{server.server_address[1]}") as client:
            parts = list(client.stream(1, count=150, interval_ms=10))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)
    assert len(parts) == 4, "each part once, and the iterator ends at the closing delimiter"
    assert [o["sequence"] for part in parts for o in part.observations] == list(range(1, last + 1))
    assert parts[-1].is_heartbeat and parts[-1].header.next_sequence == last + 1
