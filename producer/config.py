"""Configuration of the producer service, merged in one documented order.

defaults < config file (`--config FILE`, TOML or JSON) < environment
(`MACHINE_MONITOR_AGENTS`, `MACHINE_MONITOR_BOOTSTRAP`, `MACHINE_MONITOR_TOPIC_PREFIX`,
`MACHINE_MONITOR_GROUP`, and `MACHINE_MONITOR_KAFKA_<PROPERTY>` with dots written as
underscores) < command-line arguments (`--agent`, `--group`, `--bootstrap`, `--topic-prefix`,
`-X property=value`). Any librdkafka property passes through to the Kafka clients unchanged.
A process follows either its own `agents` or, with a `group`, its share of the agents topic;
an `--agent` on the command line replaces a group from the file or environment, and the other
way round.
"""
from __future__ import annotations

import argparse
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """Invalid configuration; the message names the file, variable or argument."""


@dataclass
class ServiceConfig:
    agents: list[str] = field(default_factory=list)
    bootstrap: str = ""
    topic_prefix: str = ""
    kafka: dict[str, str] = field(default_factory=dict)
    # Streaming: parts at most every interval, a heartbeat when idle, observations per part.
    interval_ms: int = 100
    heartbeat_ms: int = 2000
    count: int = 10000
    # Every probe/current/sample request must be answered completely within this time.
    http_timeout_s: float = 30.0
    # A stream with neither a part nor a heartbeat for this long is reconnected (default: three
    # heartbeats, at least 10 s).
    stream_idle_s: float | None = None
    # Observations larger than this as JSON are not produced but recorded as REJECTED gaps
    # (Kafka's default record limit is 1,048,588 bytes).
    max_observation_bytes: int = 1_000_000
    verify_tls: bool | str = True
    transactional_id_prefix: str = "machine-monitor-producer"
    observation_partitions: int = 6
    # Several processes share the agents of the agents topic (`python -m producer agents add`)
    # when they run with the same group name; without a group the process follows `agents`.
    group: str | None = None
    # Partitions of the agents topic when this process creates it: at most that many processes
    # of a group follow agents at the same time (the others stand by).
    agents_partitions: int = 6
    # A group member that stops heartbeating for this long is taken out; its agents move on.
    group_session_timeout_ms: int = 10000
    # Each lane commits what its followers handed it at most this often, in one transaction of
    # at most `max_transaction_records` observations.
    commit_interval_ms: int = 100
    max_transaction_records: int = 50000
    # Without a group, the agents are spread over at most this many lanes (transactional producers).
    static_lanes: int = 4
    # Streamed parts per second the process asks its agents for at most, all agents together:
    # with many agents each stream's interval is widened (1,000 agents: 500 ms) so that parts
    # carry several observations each instead of costing a read and a parse (~0.1-0.2 ms of
    # the event loop's one core) for one or two. While the loop runs late, the engine asks for
    # up to 4x fewer parts still (`producer.fleet.engine`), and back when it keeps up.
    max_parts_per_s: int = 2000

    def validate(self) -> None:
        if self.group is not None:
            if not self.group.strip() or any(c.isspace() for c in self.group):
                raise ConfigError(f"group {self.group!r}: give a name without spaces")
            if self.agents:
                raise ConfigError("--agent and --group exclude each other: a group follows the agents of the "
                                  "agents topic (add them with `python -m producer agents add URL`)")
        elif not self.agents:
            raise ConfigError("no agent configured: give --agent URL (or `agents` in the config file), "
                              "or --group NAME to share the agents topic with other producer processes")
        for agent in self.agents:
            if not agent.startswith(("http://", "https://")):
                raise ConfigError(f"agent {agent!r}: the URL must start with http:// or https://")
        if len(set(self.agents)) != len(self.agents):
            raise ConfigError("the same agent is configured twice")
        if not self.bootstrap and not self.kafka.get("bootstrap.servers"):
            raise ConfigError("no Kafka bootstrap servers: give --bootstrap HOST:PORT")
        if self.interval_ms < 0 or self.heartbeat_ms <= 0 or self.count <= 0:
            raise ConfigError("interval_ms must be >= 0, heartbeat_ms and count > 0")
        if self.http_timeout_s <= 0 or (self.stream_idle_s is not None and self.stream_idle_s <= 0):
            raise ConfigError("http_timeout_s and stream_idle_s must be > 0")
        if self.max_observation_bytes < 1024:
            raise ConfigError("max_observation_bytes must be at least 1024")
        if self.commit_interval_ms < 0 or min(self.max_transaction_records, self.static_lanes,
                                              self.max_parts_per_s) < 1:
            raise ConfigError("commit_interval_ms must be >= 0, max_transaction_records, static_lanes and "
                              "max_parts_per_s > 0")
        if self.agents_partitions < 1 or self.group_session_timeout_ms < 1000:
            raise ConfigError("agents_partitions must be > 0 and group_session_timeout_ms at least 1000")

    def stream_idle_seconds(self) -> float:
        if self.stream_idle_s is not None:
            return self.stream_idle_s
        return max(10.0, 3 * self.heartbeat_ms / 1000)

    def kafka_properties(self) -> dict[str, str]:
        properties = dict(self.kafka)
        if self.bootstrap:
            properties["bootstrap.servers"] = self.bootstrap
        return properties


# The type each config-file key must have: (check, what to say when it fails).
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


_FILE_TYPES: dict[str, tuple[Any, str]] = {
    "agents": (lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v), "a list of URLs"),
    "bootstrap": (_is_text, "text (host:port[,host:port])"),
    "topic_prefix": (_is_text, "text"),
    "kafka": (lambda v: isinstance(v, dict) and all(isinstance(x, (str, int, float, bool)) for x in v.values()),
              "a table of librdkafka properties"),
    "interval_ms": (_is_int, "a whole number"),
    "heartbeat_ms": (_is_int, "a whole number"),
    "count": (_is_int, "a whole number"),
    "http_timeout_s": (_is_number, "a number of seconds"),
    "stream_idle_s": (_is_number, "a number of seconds"),
    "max_observation_bytes": (_is_int, "a whole number"),
    "verify_tls": (lambda v: isinstance(v, (bool, str)), "true, false or a CA file"),
    "transactional_id_prefix": (_is_text, "text"),
    "observation_partitions": (_is_int, "a whole number"),
    "group": (_is_text, "text (the group's name)"),
    "agents_partitions": (_is_int, "a whole number"),
    "group_session_timeout_ms": (_is_int, "a whole number"),
    "commit_interval_ms": (_is_int, "a whole number"),
    "max_transaction_records": (_is_int, "a whole number"),
    "static_lanes": (_is_int, "a whole number"),
    "max_parts_per_s": (_is_int, "a whole number"),
}
_FILE_KEYS = set(_FILE_TYPES)


def _kafka_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # librdkafka's spelling, not Python's
    return str(value)


def load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise ConfigError(f"config file {path}: {reason}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected an object of settings at the top level, "
                          f"not a {type(data).__name__}")
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {sorted(unknown)}; known: {sorted(_FILE_KEYS)}")
    for key, value in data.items():
        check, kind = _FILE_TYPES[key]
        if not check(value):
            raise ConfigError(f"config file {path}: {key} must be {kind}, not {value!r}")
    if "kafka" in data:
        data["kafka"] = {str(k): _kafka_text(v) for k, v in data["kafka"].items()}
    return data


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if environ.get("MACHINE_MONITOR_AGENTS"):
        values["agents"] = [a.strip() for a in environ["MACHINE_MONITOR_AGENTS"].split(",") if a.strip()]
    if environ.get("MACHINE_MONITOR_BOOTSTRAP"):
        values["bootstrap"] = environ["MACHINE_MONITOR_BOOTSTRAP"]
    if "MACHINE_MONITOR_TOPIC_PREFIX" in environ:
        values["topic_prefix"] = environ["MACHINE_MONITOR_TOPIC_PREFIX"]
    if environ.get("MACHINE_MONITOR_GROUP"):
        values["group"] = environ["MACHINE_MONITOR_GROUP"]
    kafka = {
        key[len("MACHINE_MONITOR_KAFKA_"):].lower().replace("_", "."): value
        for key, value in environ.items()
        if key.startswith("MACHINE_MONITOR_KAFKA_")
    }
    if kafka:
        values["kafka"] = kafka
    return values


def parse_property(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"-X {text!r}: expected property=value, e.g. -X security.protocol=SASL_SSL")
    return key.strip(), value


def build_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Merge defaults < config file < environment < arguments (later layers win).

    `bootstrap` and the librdkafka property `bootstrap.servers` are one setting: whichever
    layer gives it last wins, however it is spelled (within one layer `bootstrap` wins).
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    kafka: dict[str, str] = {}

    def layer(values: dict[str, Any], properties: Mapping[str, str]) -> None:
        kafka.update(properties)
        if "bootstrap" in values:
            kafka["bootstrap.servers"] = values.pop("bootstrap")
        merged.update(values)

    if getattr(args, "config", None):
        file_values = load_file(Path(args.config))
        layer(file_values, file_values.pop("kafka", None) or {})
    env_values = from_environment(environ)
    layer(env_values, env_values.pop("kafka", {}))
    cli_values: dict[str, Any] = {}
    # A process follows either its own agents or a group's share of the agents topic: what the
    # command line gives replaces the other one from a lower layer.
    if getattr(args, "group", None):
        cli_values["group"] = args.group
        if not args.agent:
            merged.pop("agents", None)  # the group's agents come from the agents topic
    if args.agent:
        cli_values["agents"] = list(args.agent)
        if not getattr(args, "group", None):
            merged.pop("group", None)
    if args.bootstrap:
        cli_values["bootstrap"] = args.bootstrap
    if args.topic_prefix is not None:
        cli_values["topic_prefix"] = args.topic_prefix
    if getattr(args, "ca_bundle", None):
        cli_values["verify_tls"] = args.ca_bundle
    if getattr(args, "insecure", False):
        cli_values["verify_tls"] = False
    layer(cli_values, dict(parse_property(text) for text in args.property or []))
    bootstrap = kafka.pop("bootstrap.servers", "")
    config = ServiceConfig(**merged, bootstrap=bootstrap, kafka=kafka)
    config.validate()
    return config


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", action="append", metavar="URL",
                        help="MTConnect agent base URL (repeat for several agents)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", metavar="P", default=None, help="prefix for every topic name")
    parser.add_argument("--group", metavar="NAME",
                        help="share the agents of the agents topic with every producer process of this group "
                             "(instead of --agent)")
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON config file")
    parser.add_argument("-X", dest="property", action="append", metavar="PROP=VALUE",
                        help="librdkafka property for the Kafka clients, e.g. -X security.protocol=SASL_SSL")
    parser.add_argument("--ca-bundle", metavar="FILE", help="CA bundle to verify HTTPS agents")
    parser.add_argument("--insecure", action="store_true", help="do not verify HTTPS agent certificates")


def agents_client_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None
                         ) -> tuple[dict[str, str], str, int]:
    """(Kafka client properties, topic prefix, agents-topic partitions) for `agents add|remove|list`,
    merged in the same order as the service's configuration."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    kafka: dict[str, str] = {}
    if getattr(args, "config", None):
        file_values = load_file(Path(args.config))
        kafka.update({k: str(v) for k, v in (file_values.pop("kafka", None) or {}).items()})
        merged.update(file_values)
    env_values = from_environment(environ)
    kafka.update(env_values.pop("kafka", {}))
    merged.update(env_values)
    if args.bootstrap:
        merged["bootstrap"] = args.bootstrap
    if args.topic_prefix is not None:
        merged["topic_prefix"] = args.topic_prefix
    for text in args.property or []:
        key, value = parse_property(text)
        kafka[key] = value
    properties = dict(kafka)
    if merged.get("bootstrap"):
        properties["bootstrap.servers"] = merged["bootstrap"]
    if "bootstrap.servers" not in properties:
        raise ConfigError("no Kafka bootstrap servers: give --bootstrap HOST:PORT")
    partitions = int(merged.get("agents_partitions", ServiceConfig.agents_partitions))
    return properties, str(merged.get("topic_prefix", "")), partitions


def add_agents_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["add", "remove", "list"])
    parser.add_argument("url", nargs="?", help="the agent's base URL (add, remove)")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="an agent setting for add: interval_ms, heartbeat_ms, count, http_timeout_s, "
                             "stream_idle_s, verify_tls (true, false or a CA file)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", metavar="P", default=None, help="prefix for every topic name")
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON config file (the service's)")
    parser.add_argument("-X", dest="property", action="append", metavar="PROP=VALUE",
                        help="librdkafka property for the Kafka clients, e.g. -X security.protocol=SASL_SSL")
