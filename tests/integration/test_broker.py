"""The local broker as a user runs it: start, produce, consume, status, stop."""
from __future__ import annotations

import subprocess
import sys
import uuid

from confluent_kafka import Consumer, Producer

from producer import wire
from producer.broker import LocalBroker


def _produce_and_consume(bootstrap: str, topic: str, count: int, expect_total: int | None = None) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors = []
    for index in range(count):
        producer.produce(topic, key=b"mtc_adapter004", value=wire.encode({"sequence": index}),
                         on_delivery=lambda err, msg: err and errors.append(err))
        producer.poll(0)
    assert producer.flush(30) == 0
    del producer
    assert errors == []
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(100):
            for message in consumer.consume(num_messages=count, timeout=0.5):
                assert message.error() is None
                values.append(message.value())
            if len(values) >= (expect_total or count):
                break
    finally:
        consumer.close()
    return values


def test_broker_serves_produced_messages_in_order(kafka_broker, topic_prefix):
    values = _produce_and_consume(kafka_broker.bootstrap, topic_prefix + wire.OBSERVATIONS, 50)
    assert [wire.decode(v)["sequence"] for v in values] == list(range(50))


def test_cli_start_is_idempotent_status_and_stop(tmp_path):
    data_dir = tmp_path / "broker"
    cli = [sys.executable, "-m", "producer", "broker"]
    first = subprocess.run(cli + ["start", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=240)
    try:
        assert first.returncode == 0, first.stderr
        bootstrap_lines = [l for l in first.stdout.splitlines() if l.startswith("bootstrap=")]
        assert len(bootstrap_lines) == 1
        bootstrap = bootstrap_lines[0].split("=", 1)[1]
        assert bootstrap.startswith("127.0.0.1:")
        assert any("ready" in line for line in first.stdout.splitlines()), first.stdout

        second = subprocess.run(cli + ["start", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
        assert second.returncode == 0
        assert f"bootstrap={bootstrap}" in second.stdout
        assert "already running" in second.stdout

        status = subprocess.run(cli + ["status", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and f"bootstrap={bootstrap}" in status.stdout

        assert _produce_and_consume(bootstrap, "smoke", 3)
    finally:
        stop = subprocess.run(cli + ["stop", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    status = subprocess.run(cli + ["status", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 3 and "stopped" in status.stdout
    assert LocalBroker(data_dir=data_dir).status() is None
    assert (data_dir / "logs" / "server.log").stat().st_size > 0


def test_broker_keeps_data_across_restart(tmp_path):
    broker = LocalBroker(data_dir=tmp_path / "b", progress=lambda line: None)
    bootstrap = broker.start()
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce("kept", value=b"before-restart")
        assert producer.flush(30) == 0
        del producer
    finally:
        broker.stop()
    assert broker.status() is None
    bootstrap_again = broker.start()
    try:
        assert bootstrap_again == bootstrap  # same ports when they are still free
        values = _produce_and_consume(bootstrap_again, "kept", 1, expect_total=2)
        assert b"before-restart" in values and len(values) == 2
    finally:
        broker.stop()
