"""Shared fixtures: a real throwaway Kafka broker for the session, unique topic prefixes,
paths to the recorded MTConnect data, and hermetic per-user folders."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

# Qt must never try to reach a display in the test run (tests that need X start Xvfb themselves).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "mtconnect"
RESOURCES = REPO_ROOT / "resources"


@pytest.fixture(scope="session", autouse=True)
def _hermetic_user_dirs(tmp_path_factory):
    """Per-user data and settings go to temp dirs; the jar cache stays shared (it is only a cache)."""
    base = tmp_path_factory.mktemp("user")
    os.environ["MACHINE_MONITOR_DATA_DIR"] = str(base / "data")
    os.environ["MACHINE_MONITOR_CONFIG_DIR"] = str(base / "config")
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The recorded MTConnect data (falls back to the copy in resources/ for the replay set)."""
    assert SHARED_DATA.is_dir(), f"recorded MTConnect data not found at {SHARED_DATA}"
    return SHARED_DATA


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
