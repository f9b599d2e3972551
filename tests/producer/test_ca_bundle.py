"""`--ca-bundle` adds a plant's CA to the CAs the system trusts; it does not replace them.

Two HTTPS agents with certificates from two different CAs: one CA stands for the system's
store (the environment's CA bundle, which is what a default verification trusts), the other
is the plant's own CA given with `--ca-bundle`. With the plant CA added, both agents verify.
"""
from __future__ import annotations

import argparse

import pytest

from producer.config import build_config
from producer.mtconnect.client import AgentClient, AgentUnreachable
from producer.replay import ReplayAgent
from tlsutil import make_tls_files


@pytest.fixture
def two_cas(tmp_path, monkeypatch):
    system = make_tls_files(tmp_path / "system", common_name="System Store Test CA")
    plant = make_tls_files(tmp_path / "plant", common_name="Plant Test CA")
    # The system's store for this test: what requests and OpenSSL read by default.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(system.ca_cert))
    monkeypatch.setenv("SSL_CERT_FILE", str(system.ca_cert))
    public = ReplayAgent(speed=1, limit=0, tls_cert=system.server_cert, tls_key=system.server_key).start()
    private = ReplayAgent(speed=1, limit=0, tls_cert=plant.server_cert, tls_key=plant.server_key).start()
    try:
        yield public, private, plant.ca_cert
    finally:
        public.stop()
        private.stop()


def _probe(url: str, verify) -> int:
    with AgentClient(url, verify=verify, timeout=(5.0, 10.0)) as client:
        return len(client.probe().devices)


def test_a_plant_ca_is_trusted_in_addition_to_the_system_store(two_cas):
    public, private, plant_ca = two_cas
    assert _probe(public.url, True) == 8
    with pytest.raises(AgentUnreachable, match="certificate could not be verified"):
        _probe(private.url, True)
    # With the plant's CA added, its agent verifies - and so does every agent the system trusts.
    assert _probe(private.url, str(plant_ca)) == 8
    assert _probe(public.url, str(plant_ca)) == 8


def test_the_ca_bundle_option_reaches_the_agent_client(two_cas, tmp_path):
    public, private, plant_ca = two_cas
    args = argparse.Namespace(agent=[private.url, public.url], bootstrap="127.0.0.1:9092", topic_prefix=None,
                              config=None, property=None, ca_bundle=str(plant_ca), insecure=False)
    config = build_config(args, environ={})
    for url in config.agents:
        assert _probe(url, config.verify_tls) == 8


def test_a_ca_bundle_that_is_not_a_ca_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "not-a-ca.pem"
    bogus.write_text("this is not a certificate\n")
    with pytest.raises(ValueError, match=rf"CA bundle {bogus}: not a readable PEM CA file"):
        AgentClient("https://localhost:1", verify=str(bogus))
