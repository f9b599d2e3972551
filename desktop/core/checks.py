"""What the settings dialog's Test buttons find out, without Qt and within a time limit.

`test_kafka(settings)` connects with exactly the consumer settings the feed would use and
reports what it found: the brokers, which of the product's topics exist under the prefix,
and whether authentication worked (a SASL or TLS failure is told apart from an address
where nothing answers). `test_agent(url)` asks an MTConnect agent for its probe document and
lists the devices; the entry `replay` (the recorded NIST replay) lists the devices of the
bundled recording. `plant_agents(settings, add=, remove=)` reads (and changes) the plant's
agent list that producer groups follow. All return a `CheckResult` and never raise.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from producer import wire

from desktop.core.settings import REPLAY_AGENT, Settings

KAFKA_TIMEOUT = 8.0
AGENT_TIMEOUT = 8.0
PRODUCT_TOPICS = (wire.OBSERVATIONS, wire.DEVICES, wire.AGENT_STATUS)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    summary: str
    details: tuple[str, ...] = ()
    seconds: float = 0.0
    found: dict[str, Any] = field(default_factory=dict, compare=False)

    def text(self) -> str:
        return "\n".join((self.summary, *self.details))


def _kafka_error_text(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if hasattr(error, "str") else str(exc)


def test_kafka(settings: Settings, bootstrap: str | None = None, timeout: float = KAFKA_TIMEOUT) -> CheckResult:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    began = time.monotonic()
    errors: list[str] = []
    auth_failed: list[str] = []

    def on_error(error: Any) -> None:
        code = error.code()
        if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL):
            auth_failed.append(error.str())
        else:
            errors.append(error.str())

    config = dict(settings.kafka_config(bootstrap))
    config.update({"error_cb": on_error, "socket.connection.setup.timeout.ms": str(int(timeout * 1000)),
                   "logger": _Quiet()})
    where = config.get("bootstrap.servers", "")
    try:
        admin = AdminClient(config)
    except (KafkaException, ValueError, TypeError) as exc:
        return CheckResult(False, f"Settings rejected by the Kafka client: {_kafka_error_text(exc)}")
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        seconds = time.monotonic() - began
        if auth_failed:
            return CheckResult(False, f"Authentication failed at {where}", (auth_failed[0],), seconds)
        detail = errors[0] if errors else _kafka_error_text(exc)
        return CheckResult(False, f"No Kafka broker answered at {where} within {timeout:g} s", (detail,), seconds)
    seconds = time.monotonic() - began
    brokers = sorted(f"{b.host}:{b.port} (id {b.id})" for b in metadata.brokers.values())
    wanted = {base: wire.topic_name(base, settings.topic_prefix) for base in PRODUCT_TOPICS}
    present = [name for name in wanted.values() if name in metadata.topics]
    missing = [name for name in wanted.values() if name not in metadata.topics]
    mechanism = settings.sasl_mechanism if settings.security_protocol.startswith("SASL") and not settings.is_local else ""
    auth = f"authenticated as {settings.sasl_username} ({mechanism})" if mechanism else (
        "TLS connection verified" if settings.security_protocol == "SSL" and not settings.is_local else "no authentication")
    details = [f"Brokers: {', '.join(brokers)}", f"Authentication: {auth}",
               f"Topics present: {', '.join(present) if present else 'none'}"]
    if missing:
        details.append(f"Topics missing: {', '.join(missing)} (the producer creates them when it starts)")
    summary = f"Connected to {len(brokers)} broker(s) at {where} in {seconds:.1f} s"
    return CheckResult(True, summary, tuple(details), seconds, {"brokers": brokers, "present": present, "missing": missing})


def plant_agents(settings: Settings, add: str | None = None, remove: str | None = None,
                 timeout: float = KAFKA_TIMEOUT) -> CheckResult:
    """The plant's agent list - the compacted agents topic under the prefix, which producer
    processes started with `--group` follow - after adding or removing one agent if asked
    (as `python -m producer agents add|remove` does). `found["agents"]` is the list's URLs,
    sorted. A broker that does not answer is found within `timeout` (the same check as
    `test_kafka`); never raises."""
    from confluent_kafka import KafkaException

    from producer.fleet.agents import add_agent, changed_by, read_agents, remove_agent
    from producer.fleet.follower import utc_now_iso

    reach = test_kafka(settings, timeout=timeout)
    if not reach.ok:
        return CheckResult(False, reach.summary, reach.details, reach.seconds)
    began = time.monotonic()
    config: dict[str, Any] = dict(settings.kafka_config())
    config["logger"] = _Quiet()
    prefix = settings.topic_prefix
    topic = wire.topic_name(wire.AGENTS, prefix)
    read_timeout = max(timeout, 10.0)
    done = ""
    try:
        agents = read_agents(config, prefix, read_timeout) if add else None
        if add:
            url = wire.normalise_agent_url(add.strip())
            if url in agents:
                # Written again it would lose the settings given with `producer agents add --set`.
                done = f"{url} is in {topic} already (left as it is)"
            else:
                add_agent(config, prefix, url, {}, utc_now_iso(), changed_by())
                done, agents = f"Added {url} to {topic}", None
        elif remove:
            url = wire.normalise_agent_url(remove.strip())
            done = f"Removed {url} from {topic}" if remove_agent(config, prefix, url) else f"{url} was not in {topic}"
        agents = sorted(agents if agents is not None else read_agents(config, prefix, read_timeout))
    except ValueError as exc:
        return CheckResult(False, str(exc), seconds=time.monotonic() - began)
    except KafkaException as exc:
        what = "changed" if add or remove else "read"
        return CheckResult(False, f"The plant's agent list ({topic}) could not be {what}", (_kafka_error_text(exc),),
                           time.monotonic() - began)
    except Exception as exc:  # noqa: BLE001 - any failure is a result shown to the user, not a crash
        return CheckResult(False, f"The plant's agent list ({topic}): {type(exc).__name__}: {exc}", (),
                           time.monotonic() - began)
    listed = f"{len(agents)} agent(s) in {topic}"
    return CheckResult(True, done or listed, (listed,) if done else (), time.monotonic() - began, {"agents": agents})


class _Quiet:
    """librdkafka's log lines are not wanted in a dialog check: what matters is returned."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_agent(url: str, timeout: float = AGENT_TIMEOUT) -> CheckResult:
    began = time.monotonic()
    if url == REPLAY_AGENT:
        from producer.mtconnect.documents import parse_devices
        from producer.paths import resource_path

        try:
            document = parse_devices(resource_path("replay", "Devices.xml").read_bytes(), "replay")
            names = [device["device_name"] for device in document.devices]
        except Exception as exc:  # noqa: BLE001 - reported to the user
            return CheckResult(False, f"The recorded replay cannot be read: {exc}")
        return CheckResult(True, f"Recorded NIST replay (runs on this PC): {len(names)} devices",
                           (", ".join(names),), time.monotonic() - began, {"devices": names})
    from producer.mtconnect.client import AgentClient, AgentUnreachable
    from producer.mtconnect.documents import AgentError, DocumentError

    try:
        with AgentClient(url, timeout=(timeout, timeout)) as client:
            document = client.probe()
    except (AgentUnreachable, DocumentError, AgentError, ValueError) as exc:
        return CheckResult(False, f"{url}: {exc}", (), time.monotonic() - began)
    except Exception as exc:  # noqa: BLE001 - any failure is a result, not a crash
        return CheckResult(False, f"{url}: {type(exc).__name__}: {exc}", (), time.monotonic() - began)
    names = [device["device_name"] for device in document.devices]
    return CheckResult(True, f"{url}: MTConnect {document.mtconnect_version}, {len(names)} device(s)",
                       (", ".join(names),), time.monotonic() - began, {"devices": names})
