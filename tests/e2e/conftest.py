"""Fixtures for the whole chain: the producer service, replay agents and stations as processes
of their own, each stopped at the end of the test (helpers in `chain_support.py`)."""
from __future__ import annotations

import pytest

from chain_support import ReplayProcess, StationProcess
from producer_process import ProducerProcess


@pytest.fixture
def producer_process(tmp_path):
    process = ProducerProcess(tmp_path / "producer.log")
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
def replay_process(tmp_path):
    started: list[ReplayProcess] = []

    def make(*arguments: str) -> ReplayProcess:
        process = ReplayProcess(tmp_path / f"replay-{len(started) + 1}.log", *arguments)
        started.append(process)
        return process

    try:
        yield make
    finally:
        for process in started:
            process.cleanup()


@pytest.fixture
def station_process(tmp_path):
    started: list[StationProcess] = []

    def make(name: str, bootstrap: str, prefix: str, start_time: float) -> StationProcess:
        station = StationProcess(name, bootstrap, prefix, tmp_path / name, start_time)
        started.append(station)
        return station

    try:
        yield make
    finally:
        for station in started:
            station.kill()
