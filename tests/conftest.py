"""Shared fixtures: a real throwaway Kafka broker for the session, unique topic prefixes,
paths to the recorded MTConnect data, and hermetic per-user folders."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT, RECORDED_DATA

# Qt must never try to reach a display in the test run (tests that need X start Xvfb themselves).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
RESOURCES = REPO_ROOT / "resources"


@pytest.fixture(scope="session", autouse=True)
def _hermetic_user_dirs(tmp_path_factory):
    """Per-user data and settings go to temp dirs; the jar cache stays shared (it is only a cache)."""
    base = tmp_path_factory.mktemp("user")
    os.environ["MACHINE_MONITOR_DATA_DIR"] = str(base / "data")
    os.environ["MACHINE_MONITOR_CONFIG_DIR"] = str(base / "config")
    yield


@pytest.fixture(scope="session")
def recorded_data() -> Path:
    """The recorded MTConnect documents in tests/data/mtconnect (see its README.md)."""
    assert RECORDED_DATA.is_dir(), f"recorded MTConnect data not found at {RECORDED_DATA}"
    return RECORDED_DATA


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real single-node KRaft broker on free ports in a temp dir, stopped at the end."""
    from producer.broker import LocalBroker

    broker = LocalBroker(data_dir=tmp_path_factory.mktemp("kafka"), progress=lambda line: None)
    broker.start(timeout=180)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic namespace per test, so tests sharing the broker never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}."


class Chain:
    """The real data path up to Kafka: replay agent over HTTP → producer service → broker."""

    def __init__(self, bootstrap: str, prefix: str, agent, service, runner):
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.agent = agent
        self.service = service
        self.runner = runner


@pytest.fixture
def nist_chain(kafka_broker, topic_prefix):
    """Replays the NIST days from 20:29:45 (just before Mazak03's recorded Fault 791) at 20x,
    and runs the producer service from a checkpoint at sequence 1 so every observation the
    agent serves reaches Kafka under a fresh topic prefix."""
    import threading

    from confluent_kafka import Producer

    from producer import wire
    from producer.config import ServiceConfig
    from producer.replay import ReplayAgent
    from producer.service import ProducerService

    agent = ReplayAgent(speed=20, start_time="20:29:45").start()
    seed = Producer({"bootstrap.servers": kafka_broker.bootstrap, "acks": "all"})
    seed.produce(topic_prefix + wire.CHECKPOINTS, key=wire.agent_key(agent.url),
                 value=wire.encode(wire.checkpoint_value(agent.url, agent.instance_id, 1)))
    assert seed.flush(30) == 0
    del seed
    service = ProducerService(ServiceConfig(agents=[agent.url], bootstrap=kafka_broker.bootstrap,
                                            topic_prefix=topic_prefix))
    runner = threading.Thread(target=service.run, name="producer-service", daemon=True)
    runner.start()
    try:
        yield Chain(kafka_broker.bootstrap, topic_prefix, agent, service, runner)
    finally:
        service.stop()
        runner.join(60)
        agent.stop()
        assert not runner.is_alive(), "the producer service did not stop"
