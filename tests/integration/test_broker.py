"""The local broker as a user runs it: start, produce, consume, status, stop; and what it
does when the world is not as it should be: its port taken by another process, its data dir
open to others, its disk full, its jar cache damaged."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from producer import wire
from producer.broker import BrokerError, LocalBroker, find_java


def _produce_and_consume(bootstrap: str, topic: str, count: int, expect_total: int | None = None) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors = []
    for index in range(count):
        producer.produce(topic, key=b"mtc_adapter004", value=wire.encode({"sequence": index}),
                         on_delivery=lambda err, msg: err and errors.append(err))
        producer.poll(0)
    assert producer.flush(30) == 0
    del producer
    assert errors == []
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(100):
            for message in consumer.consume(num_messages=count, timeout=0.5):
                assert message.error() is None
                values.append(message.value())
            if len(values) >= (expect_total or count):
                break
    finally:
        consumer.close()
    return values


def test_broker_serves_produced_messages_in_order(kafka_broker, topic_prefix):
    values = _produce_and_consume(kafka_broker.bootstrap, topic_prefix + wire.OBSERVATIONS, 50)
    assert [wire.decode(v)["sequence"] for v in values] == list(range(50))


def test_cli_start_is_idempotent_status_and_stop(tmp_path):
    data_dir = tmp_path / "broker"
    cli = [sys.executable, "-m", "producer", "broker"]
    first = subprocess.run(cli + ["start", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=240)
    try:
        assert first.returncode == 0, first.stderr
        bootstrap_lines = [l for l in first.stdout.splitlines() if l.startswith("bootstrap=")]
        assert len(bootstrap_lines) == 1
        bootstrap = bootstrap_lines[0].split("=", 1)[1]
        assert bootstrap.startswith("127.0.0.1:")
        assert any("ready" in line for line in first.stdout.splitlines()), first.stdout

        second = subprocess.run(cli + ["start", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
        assert second.returncode == 0
        assert f"bootstrap={bootstrap}" in second.stdout
        assert "already running" in second.stdout

        status = subprocess.run(cli + ["status", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and f"bootstrap={bootstrap}" in status.stdout

        assert _produce_and_consume(bootstrap, "smoke", 3)
    finally:
        stop = subprocess.run(cli + ["stop", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    status = subprocess.run(cli + ["status", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 3 and "stopped" in status.stdout
    assert LocalBroker(data_dir=data_dir).status() is None
    assert (data_dir / "logs" / "server.log").stat().st_size > 0


def test_broker_keeps_data_across_restart(tmp_path):
    broker = LocalBroker(data_dir=tmp_path / "b", progress=lambda line: None)
    bootstrap = broker.start()
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce("kept", value=b"before-restart")
        assert producer.flush(30) == 0
        del producer
    finally:
        broker.stop()
    assert broker.status() is None
    bootstrap_again = broker.start()
    try:
        assert bootstrap_again == bootstrap  # same ports when they are still free
        values = _produce_and_consume(bootstrap_again, "kept", 1, expect_total=2)
        assert b"before-restart" in values and len(values) == 2
    finally:
        broker.stop()


# --------------------------------------------------------------------------- helpers

CLI = [sys.executable, "-m", "producer", "broker"]


def _cli(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention `path` (a broker names its data dir)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in text and int(cmdline.parent.name) != os.getpid():
            found.append(f"{cmdline.parent.name}: {text[:200]}")
    return found


def _listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _stop_everything_in(data_dir: Path) -> None:
    """Finalizer: the broker of `data_dir` is stopped, whatever the test left behind."""
    LocalBroker(data_dir=data_dir, progress=lambda line: None).stop()
    for line in _processes_using(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


# --------------------------------------------------------------------------- ports


def test_cli_start_refuses_a_recorded_port_that_another_process_holds(tmp_path):
    data_dir = tmp_path / "broker"
    first = _cli("start", "--data-dir", str(data_dir))
    try:
        assert first.returncode == 0, first.stderr
        bootstrap = next(line.split("=", 1)[1] for line in first.stdout.splitlines() if line.startswith("bootstrap="))
    finally:
        stop = _cli("stop", "--data-dir", str(data_dir), timeout=120)
    assert stop.returncode == 0, stop.stderr
    port = int(bootstrap.rsplit(":", 1)[1])
    listening_before = _listening_ports()

    # Something else now serves on the address clients know the broker by.
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        refused = _cli("start", "--data-dir", str(data_dir), timeout=120)
        try:
            assert refused.returncode != 0, refused.stdout
            errors = [line for line in refused.stderr.splitlines() if line.strip()]
            assert len(errors) == 1, refused.stderr
            assert f"port {port}" in errors[0], errors[0]
            assert f"pid {os.getpid()}" in errors[0], f"the message does not name the process holding it: {errors[0]}"
            # Nothing started elsewhere: no broker process, no new listening port, same address on record.
            assert _processes_using(data_dir) == []
            assert _listening_ports() - listening_before - {port} == set()
            assert "bootstrap=" not in refused.stdout
            assert LocalBroker(data_dir=data_dir).read_state()["port"] == port
        finally:
            _stop_everything_in(data_dir)
    finally:
        squatter.close()

    # Once the port is free again, the broker is back at the address its clients know.
    again = _cli("start", "--data-dir", str(data_dir))
    try:
        assert again.returncode == 0, again.stderr
        assert f"bootstrap={bootstrap}" in again.stdout
        assert _produce_and_consume(bootstrap, "back", 1)
    finally:
        _cli("stop", "--data-dir", str(data_dir), timeout=120)


def test_a_configured_port_that_is_taken_is_an_error_naming_the_holder(tmp_path):
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = LocalBroker(data_dir=tmp_path / "b", port=port, progress=lambda line: None)
        with pytest.raises(BrokerError) as raised:
            broker.start(timeout=60)
        message = str(raised.value)
        assert "\n" not in message
        assert f"port {port}" in message and f"pid {os.getpid()}" in message, message
        assert broker.status() is None and _processes_using(broker.data_dir) == []
    finally:
        squatter.close()
        _stop_everything_in(tmp_path / "b")


# --------------------------------------------------------------------------- privacy


def _modes(root: Path) -> dict[str, int]:
    modes = {}
    for directory, subdirs, files in os.walk(root):
        for name in [directory, *(os.path.join(directory, f) for f in files)]:
            modes[os.path.relpath(name, root)] = stat.S_IMODE(os.lstat(name).st_mode)
    return modes


def _not_private(root: Path) -> dict[str, str]:
    wrong = {}
    for name, mode in _modes(root).items():
        wanted = 0o700 if (root / name).is_dir() else 0o600
        if mode != wanted:
            wrong[name] = oct(mode)
    return wrong


def test_broker_data_is_private_to_the_user(tmp_path):
    data_dir = tmp_path / "broker"
    broker = LocalBroker(data_dir=data_dir, progress=lambda line: None)
    old_umask = os.umask(0o022)  # what most desktops have: new files readable by everyone
    try:
        broker.start()
        try:
            producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
            producer.produce("private", value=b"plant data")
            assert producer.flush(30) == 0
            del producer
            # Everything, including what Kafka itself wrote (segments, logs), while it runs.
            for name in ("broker.json", "server.properties", "cluster-id", "logs/server.log",
                         "logs/broker.out", "kraft-logs/meta.properties"):
                assert (data_dir / name).exists(), name
            assert any(name.startswith("kraft-logs/private-") for name in _modes(data_dir))
            assert _not_private(data_dir) == {}
        finally:
            broker.stop()

        # A data dir left open by an older version is closed again on the next start.
        for name in _modes(data_dir):
            os.chmod(data_dir / name, 0o755 if (data_dir / name).is_dir() else 0o644)
        assert _not_private(data_dir) != {}
        broker.start()
        try:
            assert _not_private(data_dir) == {}
        finally:
            broker.stop()
    finally:
        os.umask(old_umask)


# --------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def small_filesystem(base: Path, size_mb: int, how: str = "mount"):
    """A real file system of `size_mb` MB (tmpfs) at a path under `base`; it runs out for real.

    As root (tests and CI run as root): `mount -t tmpfs`. Without the right to mount, the
    same tmpfs is mounted in a mount namespace of our own user namespace (`unshare`) and
    reached through /proc/PID/root of the process holding it; `how="userns"` forces that.
    If neither works the test fails, saying why: it is never skipped.
    """
    mount_point = base / f"small-fs-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir(parents=True)
    errors = []
    if how == "mount":
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs",
                                  str(mount_point)], capture_output=True, text=True)
        if mounted.returncode == 0:
            try:
                yield mount_point
            finally:
                if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
            return
        errors.append(f"mount: {mounted.stderr.strip()}")
    holder = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o size={size_mb}m tmpfs '{mount_point}' && echo mounted && exec sleep 3600"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "mounted":
            holder.wait(10)
            errors.append(f"unshare: {holder.stderr.read().strip()}")
            pytest.fail("cannot make a small file system to fill: " + "; ".join(errors))
        yield Path(f"/proc/{holder.pid}/root{mount_point}")
    finally:
        holder.kill()
        holder.communicate(timeout=10)  # also closes its pipes


def _fill(path: Path, byte: bytes = b"\0") -> int:
    """Append `byte`s to `path` until the disk is full (ENOSPC, really); return how many it took."""
    written = 0
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (byte * (1 << 20), byte * 4096, byte):
            while True:
                try:
                    written += os.write(descriptor, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(descriptor)
    return written


@pytest.mark.parametrize("how", ["mount", "userns"])
def test_small_filesystem_really_runs_out_of_space(tmp_path, how):
    # The fallback for machines where mounting is not allowed must provoke ENOSPC as well.
    with small_filesystem(tmp_path, 8, how=how) as small:
        assert os.statvfs(small).f_blocks * os.statvfs(small).f_frsize == 8 * 1024 * 1024
        written = _fill(small / "filler")
        assert 7 * 1024 * 1024 < written <= 8 * 1024 * 1024
        assert shutil.disk_usage(small).free == 0


def test_start_refuses_a_disk_without_room_before_java_runs(tmp_path):
    with small_filesystem(tmp_path, 64) as small:
        data_dir = small / "broker"
        refused = _cli("start", "--data-dir", str(data_dir), timeout=120)
        assert refused.returncode != 0
        errors = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(errors) == 1, refused.stderr
        free_mb = shutil.disk_usage(small).free / 1e6
        assert str(data_dir) in errors[0] and f"{free_mb:.1f} MB free" in errors[0], errors[0]
        assert not (data_dir / "logs" / "broker.out").exists(), "Java was launched"
        assert _processes_using(data_dir) == []


def test_a_file_that_cannot_be_written_is_an_error_naming_it(tmp_path):
    with small_filesystem(tmp_path, 8) as small:
        data_dir = small / "broker"
        data_dir.mkdir()
        _fill(small / "filler")
        # No free-space threshold, so the writes themselves meet the full disk.
        broker = LocalBroker(data_dir=data_dir, min_free_bytes=0, progress=lambda line: None)
        with pytest.raises(BrokerError) as raised:
            broker.start(timeout=60)
        message = str(raised.value)
        assert "\n" not in message
        assert f"{data_dir}/" in message and "No space left on device" in message, message
        assert not (data_dir / "logs" / "broker.out").exists(), "Java was launched"
        assert _processes_using(data_dir) == []


def test_a_broker_killed_by_a_full_disk_says_so_and_starts_again_once_there_is_room(tmp_path):
    with small_filesystem(tmp_path, 160) as small:
        data_dir = small / "broker"
        try:
            started = _cli("start", "--data-dir", str(data_dir))
            assert started.returncode == 0, started.stderr
            bootstrap = next(line.split("=", 1)[1] for line in started.stdout.splitlines()
                             if line.startswith("bootstrap="))
            producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50,
                                 "message.timeout.ms": 10000, "logger": _quiet()})
            producer.produce("fill", value=b"first")
            assert producer.flush(30) == 0
            _fill(small / "filler")
            # The disk is full to the last byte: even the room left in the last block of the
            # broker's log files is taken, so nothing it logs from now on fits by luck.
            for log_file in ("server.log", "broker.out"):
                _fill(data_dir / "logs" / log_file, b"\n")

            broker = LocalBroker(data_dir=data_dir, progress=lambda line: None)
            payload = os.urandom(1000)
            for _ in range(200):  # at most ~200 s; a broker on a full disk dies within seconds
                if broker.status() is None:
                    break
                for _ in range(2000):
                    with contextlib.suppress(BufferError):
                        producer.produce("fill", value=payload)
                producer.flush(1)
            assert broker.status() is None, "the broker kept running on a full disk"
            del producer

            status = _cli("status", "--data-dir", str(data_dir), timeout=60)
            assert status.returncode == 3, status.stdout  # stopped, as the desktop expects
            lines = [line for line in status.stdout.splitlines() if line.strip()]
            assert len(lines) == 1 and "no space left on device" in lines[0].lower(), status.stdout

            refused = _cli("start", "--data-dir", str(data_dir), timeout=120)
            assert refused.returncode != 0
            errors = [line for line in refused.stderr.splitlines() if line.strip()]
            assert len(errors) == 1 and "0.0 MB free" in errors[0] and str(data_dir) in errors[0], refused.stderr

            (small / "filler").unlink()
            again = _cli("start", "--data-dir", str(data_dir))
            assert again.returncode == 0, again.stderr
            assert f"bootstrap={bootstrap}" in again.stdout
            values = _produce_and_consume(bootstrap, "after-full-disk", 1)
            assert values
        finally:
            _stop_everything_in(data_dir)


def _quiet():
    import logging

    quiet = logging.getLogger("tests.broker.librdkafka")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    return quiet


# --------------------------------------------------------------------------- the jar cache


@pytest.fixture
def jar_cache_copy(tmp_path):
    """A copy of the real jar cache in a temp dir, and the env pointing the product at it."""
    from producer.broker import fetch_jars

    real_lib = fetch_jars(progress=lambda line: None)
    cache = tmp_path / "cache"
    lib = cache / real_lib.parent.name / real_lib.name
    shutil.copytree(real_lib, lib)
    return real_lib, lib, {"MACHINE_MONITOR_CACHE_DIR": str(cache)}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_damaged_jar_is_named_and_fetched_again_before_java_runs(tmp_path, jar_cache_copy):
    real_lib, lib, env = jar_cache_copy
    # The jar holding kafka.tools.StorageTool and kafka.Kafka, cut short as an interrupted copy leaves it.
    damaged = next(lib.glob("kafka_2.13-*.jar"))
    with open(damaged, "r+b") as handle:
        handle.truncate(damaged.stat().st_size // 2)
    data_dir = tmp_path / "broker"

    # Without Maven the cache cannot be repaired: one clear line, and Java never runs on it.
    java_only = tmp_path / "bin"
    java_only.mkdir()
    (java_only / "java").symlink_to(find_java())  # the Java the product would use
    refused = _cli("start", "--data-dir", str(data_dir), env={**env, "PATH": str(java_only)}, timeout=120)
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, refused.stderr
    assert damaged.name in errors[0] and "python -m producer broker fetch" in errors[0], errors[0]
    assert "Could not find or load main class" not in refused.stdout + refused.stderr
    assert not (data_dir / "kraft-logs" / "meta.properties").exists(), "the storage tool ran on the damaged jar"
    assert not (data_dir / "logs" / "broker.out").exists(), "the broker was launched on the damaged jar"
    assert _processes_using(data_dir) == []

    # With Maven, a start repairs the cache first (it is only a cache) and says so.
    started = _cli("start", "--data-dir", str(data_dir), env=env)
    try:
        assert started.returncode == 0, started.stderr
        lines = started.stdout.splitlines()
        damaged_notes = [i for i, line in enumerate(lines) if damaged.name in line and "damaged" in line]
        formatting = [i for i, line in enumerate(lines) if line.startswith("formatting")]
        assert damaged_notes and formatting and damaged_notes[0] < formatting[0], started.stdout
        assert _sha256(damaged) == _sha256(real_lib / damaged.name)
        bootstrap = next(line.split("=", 1)[1] for line in lines if line.startswith("bootstrap="))
        assert _produce_and_consume(bootstrap, "repaired", 1)
    finally:
        _stop_everything_in(data_dir)


def test_fetch_verifies_an_existing_cache_and_repairs_a_missing_jar(jar_cache_copy):
    real_lib, lib, env = jar_cache_copy
    intact = _cli("fetch", env=env, timeout=60)
    assert intact.returncode == 0, intact.stderr
    assert "fetching" not in intact.stdout  # an intact cache is only verified, not fetched again

    missing = next(lib.glob("kafka-clients-*.jar"))
    missing.unlink()
    fetched = _cli("fetch", env=env, timeout=600)
    assert fetched.returncode == 0, fetched.stderr
    assert any(missing.name in line and "missing" in line for line in fetched.stdout.splitlines()), fetched.stdout
    assert _sha256(missing) == _sha256(real_lib / missing.name)
    # The recorded checksums hold for the repaired cache, checked independently of the product.
    checked = subprocess.run(["sha256sum", "-c", "--quiet", "jars.sha256"], cwd=lib, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert len(list(lib.glob("*.jar"))) == len(list(real_lib.glob("*.jar")))
