"""The desktop app's settings: where Kafka is, how to reach it, and how to run local services.

A `Settings` value is immutable; it is read from and written to `settings.json` in the
per-user config folder (see `paths.config_dir`). No file means the defaults: local mode,
where the app starts its own broker, replay agent and producer. Remote mode points the app
at an existing cluster; the security fields and any extra librdkafka properties are passed
to the consumer unchanged. `validate` names the offending field in every message so the
settings dialog (and the command line) can say exactly what is wrong.

A settings file that exists but cannot be used - not a regular file, unreadable, not UTF-8,
not JSON, or with wrong types or values - is a `SettingsError` naming the file, never a
traceback and never a silent fall-back to the defaults (which would start local mode with
demo data in place of the plant's cluster). `set_aside` moves such a file to
`settings.json.bad`, so new settings can be saved without losing what the user had.

Secrets: the SASL password is never written to `settings.json` unless the user ticked
"store the password in the settings file" (`store_password_in_file`, for a PC without any
keyring); otherwise `save_settings` puts it into the OS keyring through `desktop.core.secrets`
and `load_settings` reads it back from there. Values of fields that do not apply to the
chosen mode (the remote cluster's address and credentials while in local mode) are kept, so
switching modes never loses what was entered; they are validated only when they apply.

Besides the connection, the settings hold what an operator tunes: the agents the local
producer follows (`agents`; `replay` stands for the recorded NIST replay on this PC), where
the replay starts (`replay_start`: empty = where the last run stopped), when a silent
machine counts as offline, shift start times, notifications, tray and start-up behaviour.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from producer import wire

if TYPE_CHECKING:
    from desktop.core.secrets import SecretStore

SETTINGS_FILE = "settings.json"
SET_ASIDE_SUFFIX = ".bad"
# A settings file is a few hundred bytes; anything this large is not one.
MAX_SETTINGS_BYTES = 1 << 20
MODES = ("local", "remote")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
MAX_REPLAY_SPEED = 1000.0
# The agent list entry that stands for the recorded NIST replay agent the app runs itself.
REPLAY_AGENT = "replay"
AGENT_PRESETS = (("Recorded NIST replay", REPLAY_AGENT), ("NIST SMS test bed (live)", "https://smstestbed.nist.gov/vds"))
DEFAULT_SHIFTS = ("06:00", "14:00", "22:00")
NOTIFY_LEVELS = ("faults", "faults_and_warnings", "none")
_TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")

# Kafka topic names allow these characters and at most 249 of them; the prefix must leave
# room for the longest base name.
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")
_MAX_TOPIC_LENGTH = 249
_LONGEST_BASE = max(len(base) for base in wire.ALL_TOPICS)
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")

# Human names of the fields, used in validation messages and by the dialog.
FIELD_LABELS = {
    "mode": "Mode",
    "bootstrap_servers": "Bootstrap servers",
    "topic_prefix": "Topic prefix",
    "security_protocol": "Security protocol",
    "sasl_mechanism": "SASL mechanism",
    "sasl_username": "SASL username",
    "sasl_password": "SASL password",
    "ssl_ca_location": "CA file",
    "replay_speed": "Replay speed",
    "kafka_properties": "Extra Kafka properties",
    "agents": "Agents",
    "replay_start": "Replay start",
    "offline_after": "Offline after",
    "shifts": "Shift start times",
    "notify": "Notifications",
    "close_to_tray": "Close to tray",
    "start_minimised": "Start minimised",
    "start_at_login": "Start at login",
    "store_password_in_file": "Store the password in the settings file",
}

_TEXT_FIELDS = ("mode", "bootstrap_servers", "topic_prefix", "security_protocol", "sasl_mechanism", "sasl_username",
                "sasl_password", "ssl_ca_location", "replay_start", "notify")
_BOOL_FIELDS = ("close_to_tray", "start_minimised", "start_at_login", "store_password_in_file")
_NUMBER_FIELDS = ("replay_speed", "offline_after")
_LIST_FIELDS = ("agents", "shifts")


def agent_url_problem(agent: str) -> str | None:
    """What is wrong with an entry of the agent list (the words follow the entry), or None."""
    if agent == REPLAY_AGENT or re.match(r"^https?://[^\s/]+(/\S*)?$", agent):
        return None
    return "is not an http:// or https:// URL"


class SettingsError(ValueError):
    """Settings that cannot be used; `problems` holds (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "", path: Path | None = None) -> None:
        self.problems = problems
        # The settings file the problems are in (None: the command line or the dialog).
        self.path = path
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(message for _, message in problems))

    @property
    def problem(self) -> str:
        """The problems without the file name, for a dialog that names the file itself."""
        return "; ".join(message for _, message in self.problems)


@dataclass(frozen=True)
class Settings:
    mode: str = "local"
    bootstrap_servers: str = ""
    topic_prefix: str = ""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_ca_location: str = ""
    replay_speed: float = 1.0
    # Any other librdkafka consumer property, passed through unchanged.
    kafka_properties: Mapping[str, str] = field(default_factory=dict, hash=False)
    agents: tuple[str, ...] = (REPLAY_AGENT,)
    replay_start: str = ""
    offline_after: float = 60.0
    shifts: tuple[str, ...] = DEFAULT_SHIFTS
    notify: str = "faults"
    close_to_tray: bool = True
    start_minimised: bool = False
    start_at_login: bool = False
    store_password_in_file: bool = False

    @property
    def is_local(self) -> bool:
        return self.mode == "local"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def kafka_config(self, bootstrap_servers: str | None = None) -> dict[str, str]:
        """librdkafka properties for a consumer: security fields only when set, extras last.

        `bootstrap_servers` overrides the configured one (local mode learns it from the
        broker it starts).
        """
        config: dict[str, str] = {"bootstrap.servers": bootstrap_servers or self.bootstrap_servers}
        if self.is_local:
            # The app's own broker listens in plain text on this PC; the remote cluster's
            # credentials stay in the settings for when the user switches back.
            config.update({str(key): str(value) for key, value in self.kafka_properties.items()})
            return config
        if self.security_protocol and self.security_protocol != "PLAINTEXT":
            config["security.protocol"] = self.security_protocol
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism:
                config["sasl.mechanism"] = self.sasl_mechanism
            if self.sasl_username:
                config["sasl.username"] = self.sasl_username
            if self.sasl_password:
                config["sasl.password"] = self.sasl_password
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        config.update({str(key): str(value) for key, value in self.kafka_properties.items()})
        return config

    @property
    def replay_agent(self) -> bool:
        return REPLAY_AGENT in self.agents

    @property
    def remote_agents(self) -> tuple[str, ...]:
        return tuple(agent for agent in self.agents if agent != REPLAY_AGENT)

    def to_json(self, include_password: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kafka_properties"] = dict(self.kafka_properties)
        data["agents"] = list(self.agents)
        data["shifts"] = list(self.shifts)
        if not include_password:
            data.pop("sasl_password")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "", password_optional: bool = False) -> "Settings":
        """Settings from a decoded JSON object; unknown keys are an error (typos must show)."""
        if not isinstance(data, Mapping):
            raise SettingsError([("", "expected a JSON object")], source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError([(name, f"unknown setting {name!r}") for name in unknown], source)
        values = dict(data)
        problems: list[tuple[str, str]] = []
        for name in _TEXT_FIELDS:
            if name in values and not isinstance(values[name], str):
                problems.append((name, f"{FIELD_LABELS[name]}: expected text, got {values[name]!r}"))
        for name in _BOOL_FIELDS:
            if name in values and not isinstance(values[name], bool):
                problems.append((name, f"{FIELD_LABELS[name]}: expected true or false, got {values[name]!r}"))
        for name in _NUMBER_FIELDS:
            if name in values:
                number = values[name]
                if isinstance(number, bool) or not isinstance(number, (int, float)):
                    problems.append((name, f"{FIELD_LABELS[name]}: expected a number, got {number!r}"))
                else:
                    values[name] = float(number)
        for name in _LIST_FIELDS:
            if name in values:
                entries = values[name]
                if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
                    problems.append((name, f"{FIELD_LABELS[name]}: expected a list of texts"))
                else:
                    values[name] = tuple(entries)
        if "kafka_properties" in values:
            extra = values["kafka_properties"]
            if not isinstance(extra, Mapping):
                problems.append(("kafka_properties", "Extra Kafka properties: expected a JSON object"))
            else:
                for name, value in extra.items():
                    if isinstance(value, (dict, list)) or value is None:
                        problems.append(("kafka_properties", f"Extra Kafka properties: {name[:60]!r} must be text or a number"))
                if not problems:
                    values["kafka_properties"] = {str(k): str(v) for k, v in extra.items()}
        if problems:
            raise SettingsError(problems, source)
        settings = cls(**values)
        problems = settings.problems()
        if password_optional and not settings.sasl_password:
            problems = [p for p in problems if p[0] != "sasl_password"]
        if problems:
            raise SettingsError(problems, source)
        return settings

    def problems(self) -> list[tuple[str, str]]:
        """Every problem as (field, message naming the field); empty when usable."""
        problems: list[tuple[str, str]] = []

        def add(name: str, message: str) -> None:
            problems.append((name, f"{FIELD_LABELS[name]}: {message}"))

        if self.mode not in MODES:
            add("mode", f"must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "remote":
            servers = [part.strip() for part in self.bootstrap_servers.split(",") if part.strip()]
            if not servers:
                add("bootstrap_servers", "required in remote mode (host:port[,host:port...])")
            for server in servers:
                match = _HOST_PORT.match(server)
                if not match:
                    add("bootstrap_servers", f"{server!r} is not host:port")
                elif not 1 <= int(match.group(2)) <= 65535:
                    add("bootstrap_servers", f"port {match.group(2)} in {server!r} is out of range 1-65535")
        if not _TOPIC_CHARS.match(self.topic_prefix):
            add("topic_prefix", "may only contain letters, digits, '.', '_' and '-'")
        elif len(self.topic_prefix) + _LONGEST_BASE > _MAX_TOPIC_LENGTH:
            add("topic_prefix", f"too long (at most {_MAX_TOPIC_LENGTH - _LONGEST_BASE} characters)")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            add("security_protocol", f"must be one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.security_protocol.startswith("SASL") and self.mode == "remote":
            if self.sasl_mechanism not in SASL_MECHANISMS:
                add("sasl_mechanism", f"must be one of {', '.join(SASL_MECHANISMS)} with {self.security_protocol}")
            if not self.sasl_username:
                add("sasl_username", f"required with {self.security_protocol}")
            if not self.sasl_password:
                add("sasl_password", f"required with {self.security_protocol}")
        if self.ssl_ca_location and self.mode == "remote" and not Path(self.ssl_ca_location).expanduser().is_file():
            add("ssl_ca_location", f"file not found: {self.ssl_ca_location}")
        for agent in self.agents:
            problem = agent_url_problem(agent)
            if problem is not None:
                add("agents", f"{agent[:80]!r} {problem}")
        if len(set(self.agents)) != len(self.agents):
            add("agents", "an agent is listed twice")
        if self.mode == "local" and not self.agents:
            add("agents", "local mode needs at least one agent to follow")
        if self.replay_start and not _TIME_OF_DAY.match(self.replay_start):
            add("replay_start", f"{self.replay_start!r} is not a time of day HH:MM[:SS] (empty: continue where the last run stopped)")
        if not (0 <= self.offline_after <= 86400):
            add("offline_after", "must be between 0 (never) and 86400 seconds")
        shift_minutes = []
        for shift in self.shifts:
            if not _TIME_OF_DAY.match(shift):
                add("shifts", f"{shift!r} is not a time of day HH:MM")
            else:
                hours, minutes = shift.split(":")[:2]
                shift_minutes.append(int(hours) * 60 + int(minutes))
        if not self.shifts:
            add("shifts", "at least one shift start time is needed")
        elif len(set(shift_minutes)) != len(shift_minutes):
            add("shifts", "a time appears twice")
        if self.notify not in NOTIFY_LEVELS:
            add("notify", f"must be one of {', '.join(NOTIFY_LEVELS)}")
        if not (0 < self.replay_speed <= MAX_REPLAY_SPEED):
            add("replay_speed", f"must be greater than 0 and at most {MAX_REPLAY_SPEED:g}")
        for key in self.kafka_properties:
            if not key or any(ch.isspace() for ch in key) or "=" in key:
                add("kafka_properties", f"invalid property name {key!r}")
        return problems

    def validate(self, source: str = "") -> None:
        problems = self.problems()
        if problems:
            raise SettingsError(problems, source)


def parse_properties(text: str) -> dict[str, str]:
    """`key=value` lines (blank lines and `#` comments ignored) as a dict; errors name the line."""
    properties: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SettingsError(
                [("kafka_properties", f"Extra Kafka properties: line {number} is not key=value: {raw!r}")]
            )
        properties[key.strip()] = value.strip()
    return properties


def format_properties(properties: Mapping[str, str]) -> str:
    return "\n".join(f"{key}={value}" for key, value in properties.items())


def settings_path(directory: Path) -> Path:
    return directory / SETTINGS_FILE


def _file_error(path: Path, message: str) -> SettingsError:
    return SettingsError([("", message)], str(path), path=path)


def load_settings(directory: Path, secrets: "SecretStore | None" = None) -> Settings:
    """The saved settings, or the defaults (local mode) when nothing was saved yet; a SASL
    password that is not in the file comes from the keyring.

    Raises `SettingsError` (with `path` set) for a file that is there but cannot be used.
    """
    return _load_file(directory, secrets)


def _load_file(directory: Path, secrets: "SecretStore | None" = None) -> Settings:
    path = settings_path(directory)
    try:
        info = path.stat()
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        raise _file_error(path, f"cannot be read: {exc.strerror or exc}") from None
    # Checked before opening: opening a FIFO would wait for a writer forever.
    if stat.S_ISDIR(info.st_mode):
        raise _file_error(path, "is a folder, not a settings file")
    if not stat.S_ISREG(info.st_mode):
        raise _file_error(path, "is not a regular file (a pipe, socket or device)")
    if info.st_size > MAX_SETTINGS_BYTES:
        raise _file_error(path, f"is {info.st_size:,} bytes, too large for a settings file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _file_error(path, f"cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _file_error(path, f"is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _file_error(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    except (RecursionError, ValueError) as exc:
        raise _file_error(path, f"not valid JSON: {'nested too deeply' if isinstance(exc, RecursionError) else exc}") from None
    if isinstance(data, dict) and not data.get("sasl_password") and isinstance(data.get("sasl_username"), str) \
            and data.get("sasl_username"):
        from desktop.core.secrets import SecretStore, password_key

        probe = Settings(bootstrap_servers=str(data.get("bootstrap_servers") or ""), sasl_username=data["sasl_username"])
        # A password the keyring no longer has is asked for again, not a broken settings file.
        data = {**data, "sasl_password": (secrets or SecretStore()).get(password_key(probe)) or ""}
    try:
        settings = Settings.from_json(data, source=str(path), password_optional=True)
    except SettingsError as exc:
        exc.path = path
        raise
    return settings


def set_aside(directory: Path) -> Path | None:
    """Move an unusable settings file (or folder) out of the way, keeping its content:
    to `settings.json.bad`, or `settings.json.bad.2`... when that exists. Returns where it
    went, or None when there was nothing to move."""
    path = settings_path(directory)
    if not os.path.lexists(path):
        return None
    target = path.with_name(path.name + SET_ASIDE_SUFFIX)
    number = 1
    while os.path.lexists(target):
        number += 1
        target = path.with_name(f"{path.name}{SET_ASIDE_SUFFIX}.{number}")
    os.replace(path, target)
    return target


def save_settings(settings: Settings, directory: Path, secrets: "SecretStore | None" = None) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves half a settings file.

    The SASL password goes to the keyring, not the file, unless `store_password_in_file`;
    without a keyring and without that choice, nothing is saved (`SettingsError` naming the
    password field) - a secret is never put into a plain file behind the user's back."""
    settings.validate()
    in_file = settings.store_password_in_file
    if settings.sasl_password and not in_file:
        from desktop.core.secrets import SecretStore, SecretStoreError, password_key

        store = secrets or SecretStore()
        try:
            store.set(password_key(settings), settings.sasl_password)
        except SecretStoreError as exc:
            raise SettingsError([("sasl_password", f"{FIELD_LABELS['sasl_password']}: {exc}")]) from None
    directory.mkdir(parents=True, exist_ok=True)
    path = settings_path(directory)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(settings.to_json(include_password=in_file), indent=2, sort_keys=True) + "\n",
                         encoding="utf-8")
    # The file may hold a password: keep it private to the user.
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path
