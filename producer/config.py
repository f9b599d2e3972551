"""Configuration of the producer service, merged in one documented order.

defaults < config file (`--config FILE`, TOML or JSON) < environment
(`MACHINE_MONITOR_AGENTS`, `MACHINE_MONITOR_BOOTSTRAP`, `MACHINE_MONITOR_TOPIC_PREFIX`,
and `MACHINE_MONITOR_KAFKA_<PROPERTY>` with dots written as underscores) < command-line
arguments (`--agent`, `--bootstrap`, `--topic-prefix`, `-X property=value`). Any
librdkafka property passes through to the Kafka clients unchanged.
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

    def validate(self) -> None:
        if not self.agents:
            raise ConfigError("no agent configured: give --agent URL (or `agents` in the config file)")
        for agent in self.agents:
            if not agent.startswith(("http://", "https://")):
                raise ConfigError(f"agent {agent!r}: the URL must start with http:// or https://")
        if len(set(self.agents)) != len(self.agents):
            raise ConfigError("the same agent is configured twice")
        if not self.bootstrap and "bootstrap.servers" not in self.kafka:
            raise ConfigError("no Kafka bootstrap servers: give --bootstrap HOST:PORT")
        if self.interval_ms < 0 or self.heartbeat_ms <= 0 or self.count <= 0:
            raise ConfigError("interval_ms must be >= 0, heartbeat_ms and count > 0")
        if self.http_timeout_s <= 0 or (self.stream_idle_s is not None and self.stream_idle_s <= 0):
            raise ConfigError("http_timeout_s and stream_idle_s must be > 0")
        if self.max_observation_bytes < 1024:
            raise ConfigError("max_observation_bytes must be at least 1024")

    def stream_idle_seconds(self) -> float:
        if self.stream_idle_s is not None:
            return self.stream_idle_s
        return max(10.0, 3 * self.heartbeat_ms / 1000)

    def kafka_properties(self) -> dict[str, str]:
        properties = dict(self.kafka)
        if self.bootstrap:
            properties["bootstrap.servers"] = self.bootstrap
        return properties


_FILE_KEYS = {"agents", "bootstrap", "topic_prefix", "kafka", "interval_ms", "heartbeat_ms", "count",
              "http_timeout_s", "stream_idle_s", "max_observation_bytes", "verify_tls",
              "transactional_id_prefix", "observation_partitions"}


def load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {sorted(unknown)}; known: {sorted(_FILE_KEYS)}")
    return data


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if environ.get("MACHINE_MONITOR_AGENTS"):
        values["agents"] = [a.strip() for a in environ["MACHINE_MONITOR_AGENTS"].split(",") if a.strip()]
    if environ.get("MACHINE_MONITOR_BOOTSTRAP"):
        values["bootstrap"] = environ["MACHINE_MONITOR_BOOTSTRAP"]
    if "MACHINE_MONITOR_TOPIC_PREFIX" in environ:
        values["topic_prefix"] = environ["MACHINE_MONITOR_TOPIC_PREFIX"]
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
    if args.agent:
        merged["agents"] = list(args.agent)
    if args.bootstrap:
        merged["bootstrap"] = args.bootstrap
    if args.topic_prefix is not None:
        merged["topic_prefix"] = args.topic_prefix
    for text in args.property or []:
        key, value = parse_property(text)
        kafka[key] = value
    if getattr(args, "ca_bundle", None):
        merged["verify_tls"] = args.ca_bundle
    if getattr(args, "insecure", False):
        merged["verify_tls"] = False
    config = ServiceConfig(**merged, kafka=kafka)
    config.validate()
    return config


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", action="append", metavar="URL",
                        help="MTConnect agent base URL (repeat for several agents)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", metavar="P", default=None, help="prefix for every topic name")
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON config file")
    parser.add_argument("-X", dest="property", action="append", metavar="PROP=VALUE",
                        help="librdkafka property for the Kafka clients, e.g. -X security.protocol=SASL_SSL")
    parser.add_argument("--ca-bundle", metavar="FILE", help="CA bundle to verify HTTPS agents")
    parser.add_argument("--insecure", action="store_true", help="do not verify HTTPS agent certificates")
