"""Why a Kafka TLS handshake failed, in words a user can act on.

librdkafka reports every failed certificate check as the same "certificate verify failed:
broker certificate could not be verified, verify that ssl.ca.location is correctly
configured", whether the CA is unknown or the certificate is for another host name, so its
text alone sends a user with a host name problem to the wrong setting. `diagnose` repeats
the handshake with Python's `ssl` (the same OpenSSL checks, with the client's CA and host
name settings) and reads the verification result OpenSSL gives there: an unknown CA, a host
name the certificate does not list, an expired certificate. It only opens a TLS connection
and closes it: no Kafka request and no credentials are sent.
"""
from __future__ import annotations

import os
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

# Where librdkafka names the broker it failed with: "sasl_ssl://host:9093/bootstrap: SSL handshake failed".
_BROKER_IN_ERROR = re.compile(r"\b(?:sasl_ssl|ssl)://(\[[^\]]+\]|[^\s:/\[\]]+):(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class TlsProblem:
    kind: str  # "untrusted", "hostname", "expired" or "other"
    host: str
    port: int
    detail: str  # OpenSSL's verification message

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def broker_address(error_text: str, bootstrap: str | None) -> tuple[str, int] | None:
    """The broker a librdkafka error is about, else the first bootstrap server."""
    match = _BROKER_IN_ERROR.search(error_text)
    if match:
        return match.group(1).strip("[]"), int(match.group(2))
    first = (bootstrap or "").split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, _, port = first.rpartition(":")
    if host and port.isdigit():
        return host.strip("[]"), int(port)
    return None


def client_context(properties: dict[str, Any]) -> ssl.SSLContext:
    """An `ssl` context that trusts and checks what a librdkafka client with `properties` would."""
    location = str(properties.get("ssl.ca.location") or "")
    inline_pem = properties.get("ssl.ca.pem")
    if location and location != "probe":
        if os.path.isdir(location):
            context = ssl.create_default_context(capath=location)
        else:
            context = ssl.create_default_context(cafile=location)
    elif inline_pem:
        context = ssl.create_default_context(cadata=str(inline_pem))
    else:
        context = ssl.create_default_context()  # the system trust store, as librdkafka uses
    algorithm = str(properties.get("ssl.endpoint.identification.algorithm", "https")).lower()
    context.check_hostname = algorithm != "none"
    return context


def diagnose(properties: dict[str, Any], error_text: str, timeout: float = 5.0) -> TlsProblem | None:
    """What is wrong with the certificate of the broker named in `error_text`; None if unknown.

    None also when the broker cannot be reached now, or its certificate passes the checks
    here (the failure was something else, e.g. a client certificate the broker refused).
    """
    address = broker_address(error_text, properties.get("bootstrap.servers"))
    if address is None:
        return None
    host, port = address
    try:
        context = client_context(properties)
    except (OSError, ssl.SSLError, ValueError):
        return None  # an unreadable CA file: librdkafka says so itself
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as exc:
        detail = exc.verify_message or str(exc)
        code, lowered = exc.verify_code, detail.lower()
        if code in (62, 64) or "mismatch" in lowered:
            kind = "hostname"  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        elif code == 10 or "expired" in lowered:
            kind = "expired"  # X509_V_ERR_CERT_HAS_EXPIRED
        elif code in (2, 18, 19, 20, 21) or "issuer" in lowered or "self-signed" in lowered:
            kind = "untrusted"  # unknown issuer, self-signed, or a chain to a CA not trusted here
        else:
            kind = "other"
        return TlsProblem(kind, host, port, detail)
    except (OSError, ssl.SSLError):
        return None


def describe(problem: TlsProblem, properties: dict[str, Any]) -> str:
    """One line: what is wrong with the broker's certificate and which setting fixes it."""
    ca = properties.get("ssl.ca.location")
    where = f"Kafka TLS certificate of {problem.address}"
    if problem.kind == "hostname":
        return (f"{where} is not issued for the host name {problem.host!r} the client connected to "
                f"({problem.detail}): use a broker address the certificate lists, in --bootstrap and in "
                f"the brokers' advertised.listeners, or have a certificate issued that lists "
                f"{problem.host!r}; -X ssl.endpoint.identification.algorithm=none turns the host name "
                f"check off (not recommended)")
    if problem.kind == "untrusted":
        trusted = (f"the CA file {ca} did not sign it" if ca else
                   "no ssl.ca.location is set and the system trust store does not know its CA")
        return (f"{where} could not be verified ({problem.detail}): {trusted}; "
                f"give the CA that signed the brokers' certificates with -X ssl.ca.location=FILE")
    if problem.kind == "expired":
        return (f"{where} has expired ({problem.detail}): the broker needs a renewed certificate "
                f"(or this machine's clock is wrong)")
    return f"{where} was refused ({problem.detail}); check ssl.ca.location and the broker's certificate"


class HandshakeFailuresAtDebug:
    """A librdkafka `logger` that passes lines on to `target`, TLS handshake failures at DEBUG.

    While the service waits for the cluster, every failed handshake is also an error callback,
    which ends in one message saying what is wrong; librdkafka's own line, repeated for each
    attempt, tells a user with a host name problem to check ssl.ca.location instead.
    """

    def __init__(self, target):
        self._target = target

    def log(self, level: int, message: str, *args) -> None:
        text = message % args if args else message
        if "SSL handshake failed" in text or "in state SSL_HANDSHAKE" in text:
            level = 10  # logging.DEBUG
        self._target.log(level, "%s", text)
