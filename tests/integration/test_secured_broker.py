"""The producer against a broker listener secured like a plant's cluster: SASL/SCRAM over TLS.

The test makes its own CA and broker certificate (tests/tlsutil.py) and starts its own local
broker with a SASL_SSL listener (SCRAM-SHA-512, user alice) next to the PLAINTEXT one. What a
user relies on: with the right credentials and CA every observation arrives once over the
secured listener; a wrong password stops the service within 10 s with a message naming the
user; and the broker certificate really is verified: without the CA, or reaching a listener
whose certificate is for another host name, the service exits 2 with one message saying which
setting to change.
"""
from __future__ import annotations

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
from tlsutil import issue_server_files, make_tls_files

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

    def producer_command(self, agent_url: str, prefix: str, password: str = PASSWORD,
                         with_ca: bool = True, bootstrap: str | None = None) -> list[str]:
        command = [
            sys.executable, "-m", "producer", "run", "--agent", agent_url,
            "--bootstrap", bootstrap or self.bootstrap, "--topic-prefix", prefix,
            "-X", "security.protocol=SASL_SSL", "-X", f"sasl.mechanism={MECHANISM}",
            "-X", f"sasl.username={USER}", "-X", f"sasl.password={password}",
        ]
        if with_ca:
            command += ["-X", f"ssl.ca.location={self.ca_cert}"]
        return command


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    base = tmp_path_factory.mktemp("secured")
    tls = make_tls_files(base / "tls", key_type="ec")
    # A second listener, same CA, with a certificate for a name no client here uses.
    other_name = issue_server_files(tls, base / "tls-other-name", hostnames=["kafka.plant.invalid"], ips=[],
                                    key_type="ec")
    broker = LocalBroker(
        data_dir=base / "kafka",
        listeners=[Listener.sasl_ssl(keystore=tls.server_keystore, mechanisms=(MECHANISM,)),
                   Listener.sasl_ssl(keystore=other_name.server_keystore, mechanisms=(MECHANISM,),
                                     name="OTHER_NAME")],
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
    assert process.returncode == 2, f"exit {process.returncode} after {elapsed:.1f} s with a wrong password; stderr:\n{stderr[-3000:]}"
    lines = [line for line in stderr.splitlines() if "Kafka authentication failed" in line]
    assert lines, f"no 'Kafka authentication failed' line (exit {process.returncode} after {elapsed:.1f} s):\n{stderr[-3000:]}"
    assert any(USER in line for line in lines), f"the message does not name the user {USER!r}:\n" + "\n".join(lines)
    assert PASSWORD not in stderr, "the log must never show a password"


def _run_until_exit(command: list[str], bound: float = 60) -> tuple[int | None, str, float]:
    """Run the product; its exit code (None if still running after `bound` s), stderr, seconds."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=bound)
        return process.returncode, stderr, time.monotonic() - started
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate(timeout=30)
        return None, stderr, time.monotonic() - started


def _failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line or " CRITICAL " in line]


def test_without_the_ca_the_service_exits_2_saying_to_configure_the_ca_file(secured):
    # No ssl.ca.location: only the system trust store, which does not know the test CA.
    with ReplayAgent(speed=10) as agent:
        command = secured.producer_command(agent.url, f"t{uuid.uuid4().hex[:10]}.", with_ca=False)
        code, stderr, elapsed = _run_until_exit(command)
    assert code == 2, f"exit {code} after {elapsed:.0f} s without the CA; stderr:\n{stderr[-3000:]}"
    errors = _failure_lines(stderr)
    assert len(errors) == 1, "\n".join(errors) or stderr[-3000:]
    assert "certificate" in errors[0] and "ssl.ca.location" in errors[0], errors[0]
    assert "host name" not in errors[0], errors[0]
    assert PASSWORD not in stderr, "the log must never show a password"


def test_a_certificate_for_another_host_name_exits_2_saying_which_name(secured):
    # The right CA, but this listener's certificate lists only kafka.plant.invalid, while the
    # client reaches it as localhost (and the broker advertises 127.0.0.1).
    bootstrap = secured.broker.listener_bootstrap("OTHER_NAME").replace("127.0.0.1", "localhost")
    with ReplayAgent(speed=10) as agent:
        command = secured.producer_command(agent.url, f"t{uuid.uuid4().hex[:10]}.", bootstrap=bootstrap)
        code, stderr, elapsed = _run_until_exit(command)
    assert code == 2, f"exit {code} after {elapsed:.0f} s with a certificate for another name; stderr:\n{stderr[-3000:]}"
    errors = _failure_lines(stderr)
    assert len(errors) == 1, "\n".join(errors) or stderr[-3000:]
    assert "host name" in errors[0] and "'localhost'" in errors[0], errors[0]
    assert "ssl.endpoint.identification.algorithm" in errors[0], errors[0]
    assert "ssl.ca.location" not in errors[0], f"the CA is right; the message must not blame it: {errors[0]}"
    assert PASSWORD not in stderr, "the log must never show a password"
