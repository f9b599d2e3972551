"""What the settings dialog's Test buttons find out, without Qt and within a time limit.

`test_kafka(settings)` connects with exactly the consumer settings the feed would use and
reports what it found: the brokers, which of the product's topics exist under the prefix,
and whether authentication worked (a SASL or TLS failure is told apart from an address
where nothing answers). `test_agent(url)` asks an MTConnect agent for its probe document and
lists the devices; the entry `replay` (the recorded NIST replay) lists the devices of the
bundled recording. Both return a `CheckResult` and never raise.
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
