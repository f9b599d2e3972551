"""Throwaway TLS material for tests: a private CA and one server certificate it signed.

    files = make_tls_files(tmp_path)                      # localhost + 127.0.0.1
    files = make_tls_files(tmp_path, hostnames=["localhost", "broker"], ips=["127.0.0.1", "::1"])
    other = issue_server_files(files, tmp_path / "other", hostnames=["kafka.plant.invalid"], ips=[])
                                                          # same CA, a certificate for other names

Files written in `directory` (all PEM; keys are unencrypted PKCS#8, readable by the owner only):

    ca.pem               the CA certificate: what clients trust (requests `verify=`,
                         librdkafka `ssl.ca.location`, Java `ssl.truststore.type=PEM`)
    ca.key               the CA's private key, to sign more certificates if a test needs them
    server.pem           the server certificate followed by the CA certificate (the chain)
    server.key           the server's private key
    server-keystore.pem  server.key + server.pem in one file: the form Apache Kafka's
                         `ssl.keystore.type=PEM` keystore file expects (PKCS#8 key, then the
                         chain), also accepted by Python's `SSLContext.load_cert_chain(file)`

The server certificate carries every given host name and IP address as a subjectAltName and
is good for both serverAuth and clientAuth, so the same files serve an HTTPS agent, a Kafka
SSL/SASL_SSL listener and its inter-broker connections. Certificates are valid from an hour
ago (clock skew) for `days` days. RSA-2048 keys by default (what every TLS stack accepts);
`key_type="ec"` makes P-256 keys, which are faster to generate.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsFiles", "issue_server_files", "make_tls_files"]


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the files `make_tls_files` wrote, and the names the server certificate is for."""

    directory: Path
    ca_cert: Path  # ca.pem
    ca_key: Path  # ca.key
    server_cert: Path  # server.pem: server certificate + CA certificate
    server_key: Path  # server.key: PKCS#8, unencrypted
    server_keystore: Path  # server-keystore.pem: server.key + server.pem
    hostnames: tuple[str, ...]
    ips: tuple[str, ...]


def make_tls_files(
    directory: Path | str,
    hostnames: Iterable[str] = ("localhost",),
    ips: Iterable[str] = ("127.0.0.1",),
    *,
    days: int = 2,
    key_type: str = "rsa",
    common_name: str | None = None,
) -> TlsFiles:
    """Write a fresh CA and a server certificate for `hostnames`/`ips` into `directory`.

    `directory` is created if needed; existing files of the same names are overwritten.
    `common_name` defaults to the first host name (or IP); clients match only the SANs.
    """
    hostnames = tuple(hostnames)
    ips = tuple(str(ipaddress.ip_address(ip)) for ip in ips)
    if not hostnames and not ips:
        raise ValueError("the server certificate needs at least one host name or IP address")
    if days < 1:
        raise ValueError("days must be at least 1")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=days)

    ca_key = _new_key(key_type)
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Machine Monitor tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Machine Monitor throwaway test CA"),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    _write(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / "ca.key", _pkcs8(ca_key), private=True)
    return _write_server_files(directory, ca_key, ca_cert, hostnames, ips, days, key_type, common_name)


def issue_server_files(
    ca: TlsFiles,
    directory: Path | str,
    hostnames: Iterable[str] = ("localhost",),
    ips: Iterable[str] = ("127.0.0.1",),
    *,
    days: int = 2,
    key_type: str = "rsa",
    common_name: str | None = None,
) -> TlsFiles:
    """Another server certificate signed by the CA of `ca`, written into `directory` as above.

    The CA files are copied beside it, so the result is used exactly like `make_tls_files`'s;
    e.g. a certificate for names a client does not use, trusted through the same CA file.
    """
    hostnames = tuple(hostnames)
    ips = tuple(str(ipaddress.ip_address(ip)) for ip in ips)
    if not hostnames and not ips:
        raise ValueError("the server certificate needs at least one host name or IP address")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)
    _write(directory / "ca.pem", ca.ca_cert.read_bytes())
    _write(directory / "ca.key", ca.ca_key.read_bytes(), private=True)
    return _write_server_files(directory, ca_key, ca_cert, hostnames, ips, days, key_type, common_name)


def _write_server_files(directory: Path, ca_key, ca_cert: x509.Certificate, hostnames: tuple[str, ...],
                        ips: tuple[str, ...], days: int, key_type: str, common_name: str | None) -> TlsFiles:
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(hours=1)
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_name = ca_cert.subject
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    server_key = _new_key(key_type)
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Machine Monitor tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or (hostnames or ips)[0]),
    ])
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in hostnames]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(server_key, rsa.RSAPrivateKey),
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    chain_pem = server_cert.public_bytes(serialization.Encoding.PEM) + ca_pem
    server_key_pem = _pkcs8(server_key)
    files = TlsFiles(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        server_keystore=directory / "server-keystore.pem",
        hostnames=hostnames,
        ips=ips,
    )
    _write(files.server_cert, chain_pem)
    _write(files.server_key, server_key_pem, private=True)
    _write(files.server_keystore, server_key_pem + chain_pem, private=True)
    return files


def _new_key(key_type: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"key_type must be 'rsa' or 'ec', not {key_type!r}")


def _pkcs8(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    # Created owner-only from the start, so a key is never briefly readable by others.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    if private:
        os.chmod(path, 0o600)  # an existing file keeps its mode through O_TRUNC
