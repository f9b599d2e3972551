"""The producer against a broker listener secured like a plant's cluster: SASL/SCRAM over TLS.

The test makes its own CA and broker certificate (tests/tlsutil.py) and starts its own local
broker with a SASL_SSL listener (SCRAM-SHA-512, user alice) next to the PLAINTEXT one. What a
user relies on: with the right credentials and CA every observation arrives once over the
secured listener; a wrong password stops the service within 10 s with a message naming the
user; and the broker certificate really is verified (no CA given, no connection).
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from producer import wire
from producer.broker import Listener, LocalBroker
from producer.replay import ReplayAgent
from tlsutil import make_tls_files

pytestmark = pytest.mark.integration

USER = "alice"
PASSWORD = "alice-secret-4f1c"
MECHANISM = "SCRAM-SHA-512"


class SecuredBroker:
    def __init__(self, broker: LocalBroker, ca_cert: Path):
        self.broker = broker
        self.ca_cert = ca_cert
        # The certificate is issued for localhost and 127.0.0.1; bootstrap by name, as users do.
        self.bootstrap = broker.listener_bootstrap("SASL_SSL").replace("127.0.0.1", "localhost")

    def client_config(self, password: str = PASSWORD, with_ca: bool = True) -> dict:
        config = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": USER,
            "sasl.password": password,
        }
        if with_ca:
            config["ssl.ca.location"] = str(self.ca_cert)
        return config

    def producer_command(self, agent_url: str, prefix: str, password: str = PASSWORD) -> list[str]:
        return [
            sys.executable, "-m", "producer", "run", "--agent", agent_url,
            "--bootstrap", self.bootstrap, "--topic-prefix", prefix,
            "-X", "security.protocol=SASL_SSL", "-X", f"sasl.mechanism={MECHANISM}",
            "-X", f"sasl.username={USER}", "-X", f"sasl.password={password}",
            "-X", f"ssl.ca.location={self.ca_cert}",
        ]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    base = tmp_path_factory.mktemp("secured")
    tls = make_tls_files(base / "tls", key_type="ec")
    broker = LocalBroker(
        data_dir=base / "kafka",
        listeners=[Listener.sasl_ssl(keystore=tls.server_keystore, mechanisms=(MECHANISM,))],
        scram_users={USER: PASSWORD},
        progress=lambda line: None,
    )
    try:
        broker.start(timeout=120)
        yield SecuredBroker(broker, tls.ca_cert)
    finally:
        broker.stop()


def _seed_checkpoint(config: dict, prefix: str, agent: ReplayAgent, next_sequence: int) -> None:
    producer = Producer({**config, "acks": "all"})
    producer.produce(prefix + wire.CHECKPOINTS, key=wire.agent_key(agent.url),
                     value=wire.encode(wire.checkpoint_value(agent.url, agent.instance_id, next_sequence)))
    assert producer.flush(30) == 0
    del producer


def _stop(process: subprocess.Popen, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise


def test_producer_delivers_every_observation_over_sasl_ssl(secured, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:10]}."
    topic = prefix + wire.OBSERVATIONS
    stderr_path = tmp_path / "producer.stderr"
    with ReplayAgent(speed="max", limit=2000, buffer_size=20000) as agent:
        # A checkpoint at sequence 1 makes the service publish everything the agent holds.
        _seed_checkpoint(secured.client_config(), prefix, agent, 1)
        deadline = time.monotonic() + 10
        while agent.playing and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not agent.playing, "the replay agent did not finish its 2,000 records"
        expected = set(range(1, agent.next_sequence))
        assert len(expected) > 2000

        consumer = Consumer({**secured.client_config(), "group.id": f"test-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "isolation.level": "read_committed"})
        consumer.subscribe([topic])
        sequences: list[int] = []

        def consume(seconds: float) -> int:
            got = 0
            for message in consumer.consume(num_messages=5000, timeout=seconds):
                error = message.error()
                if error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # the service creates its topics when it starts
                assert error is None, error
                sequences.append(wire.decode(message.value())["sequence"])
                got += 1
            return got

        with open(stderr_path, "w") as stderr:
            process = subprocess.Popen(secured.producer_command(agent.url, prefix),
                                       stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        try:
            deadline = time.monotonic() + 30
            while not expected <= set(sequences) and time.monotonic() < deadline and process.poll() is None:
                consume(0.3)
        finally:
            code = _stop(process)
        try:
            # Anything still arriving after the stop would be a duplicate: read until quiet.
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 1.5:
                if consume(0.3):
                    quiet_since = time.monotonic()
        finally:
            consumer.close()

    log = stderr_path.read_text()
    missing = expected - set(sequences)
    assert not missing, f"{len(missing)} observations missing (first {min(missing)}); producer log:\n{log[-3000:]}"
    assert len(sequences) == len(set(sequences)), "an observation arrived twice"
    assert set(sequences) == expected
    assert code == 0, log[-3000:]
    assert "event=stopping signal=SIGTERM" in log


def test_wrong_password_fails_fast_with_a_clear_message(secured, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:10]}."
    with ReplayAgent(speed=10) as agent:
        started = time.monotonic()
        process = subprocess.Popen(secured.producer_command(agent.url, prefix, password="not-" + PASSWORD),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        timed_out = False
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.kill()
            _, stderr = process.communicate(timeout=30)
        elapsed = time.monotonic() - started
    assert not timed_out, f"the producer was still running 10 s after start with a wrong password; stderr:\n{stderr[-3000:]}"
    assert process.returncode != 0, f"exit 0 after {elapsed:.1f} s with a wrong password; stderr:\n{stderr[-3000:]}"
    lines = [line for line in stderr.splitlines() if "Kafka authentication failed" in line]
    assert lines, f"no 'Kafka authentication failed' line (exit {process.returncode} after {elapsed:.1f} s):\n{stderr[-3000:]}"
    assert any(USER in line for line in lines), f"the message does not name the user {USER!r}:\n" + "\n".join(lines)
    assert PASSWORD not in stderr, "the log must never show a password"


def test_broker_certificate_is_verified(secured):
    # Without the test CA (so only the system CAs) the TLS handshake must fail on the certificate.
    errors: list[KafkaError] = []
    producer = Producer({**secured.client_config(with_ca=False), "error_cb": errors.append,
                         "logger": _silent_logger(), "socket.timeout.ms": 5000})
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    del producer
    assert errors, "no error connecting to the SASL_SSL listener without its CA"
    assert any("certificate" in error.str().lower() for error in errors), [e.str() for e in errors]


def _silent_logger() -> logging.Logger:
    quiet = logging.getLogger("tests.secured.librdkafka")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    return quiet
