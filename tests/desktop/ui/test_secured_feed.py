"""The desktop on a cluster secured like a plant's: SASL_SSL with SCRAM-SHA-512 and its own CA.

A broker of this module's own with a SASL_SSL listener (certificate from tests/tlsutil.py, user
alice). With the settings a user would enter - bootstrap, protocol, mechanism, user, password,
CA file - the window shows the recorded machines; with a wrong password it says that
authentication failed instead of waiting silently."""
from __future__ import annotations

import pytest

import recorded_nist as testing
from desktop.core.settings import Settings
from kafka_records import create_topics, device_messages, hurco_unavailable, mazak03_observations, observation_messages, produce
from producer.broker import Listener, LocalBroker
from tlsutil import make_tls_files

pytestmark = pytest.mark.integration

USER = "alice"
PASSWORD = "alice-secret-4f1c"
MECHANISM = "SCRAM-SHA-512"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    base = tmp_path_factory.mktemp("secured-feed")
    tls = make_tls_files(base / "tls", key_type="ec")
    broker = LocalBroker(data_dir=base / "kafka", progress=lambda line: None, scram_users={USER: PASSWORD},
                         listeners=[Listener.sasl_ssl(keystore=tls.server_keystore, mechanisms=(MECHANISM,))])
    try:
        broker.start(timeout=180)
        # The certificate is for localhost and 127.0.0.1; users give the host name.
        yield broker, broker.listener_bootstrap("SASL_SSL").replace("127.0.0.1", "localhost"), tls.ca_cert
    finally:
        broker.stop()


def secured_settings(bootstrap: str, ca_cert, prefix: str, password: str = PASSWORD) -> Settings:
    return Settings(mode="remote", bootstrap_servers=bootstrap, topic_prefix=prefix, security_protocol="SASL_SSL",
                    sasl_mechanism=MECHANISM, sasl_username=USER, sasl_password=password, ssl_ca_location=str(ca_cert))


def test_window_shows_the_machines_over_sasl_ssl(make_window, qtbot, secured, topic_prefix):
    broker, bootstrap, ca_cert = secured
    settings = secured_settings(bootstrap, ca_cert, topic_prefix)
    # The records travel over the secured listener too (client settings written out by hand).
    client = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM,
              "sasl.username": USER, "sasl.password": PASSWORD, "ssl.ca.location": str(ca_cert)}
    create_topics(client, topic_prefix)
    devices = testing.load_devices()
    observations = hurco_unavailable(devices) + mazak03_observations(devices, last_line=2000)
    produce(client, device_messages(devices, topic_prefix) + observation_messages(observations, topic_prefix))

    window = make_window(settings)
    window.show()
    window.start()
    qtbot.waitUntil(lambda: window.state.observation_records == len(observations), timeout=60_000)
    qtbot.waitUntil(lambda: len(window.overview.tiles) == len(devices), timeout=10_000)
    assert {v.name for v in window.overview.tiles.values()} == {d["device_name"] for d in devices}
    assert window.broker_label.text() == f"Kafka: connected to {bootstrap}"
    qtbot.waitUntil(lambda: window.overview.grid.texts.get("mtc_adapter004", {}).get("state") == "RUNNING")


def test_a_wrong_password_is_shown_as_an_authentication_failure(make_window, qtbot, secured, topic_prefix):
    broker, bootstrap, ca_cert = secured
    window = make_window(secured_settings(bootstrap, ca_cert, topic_prefix, password="not-" + PASSWORD))
    window.show()
    window.start()
    qtbot.waitUntil(lambda: window.broker_label.text().startswith("Kafka: unreachable: authentication failed"),
                    timeout=30_000)
    tip = window.broker_label.toolTip()
    assert MECHANISM in tip and "invalid credentials" in tip, tip
    assert PASSWORD not in tip
    assert "authentication failed" in window.overview.grid.waiting_text  # what the empty overview says
    assert window.state.observation_records == 0 and not window.overview.tiles
