"""How wide the streams' intervals are and how long a connect may take, decided from the loop's
lag: the pure decisions of the fleet engine, checked with lag measurements fed to it."""
from __future__ import annotations

import pytest

from producer.config import ServiceConfig
from producer.fleet.engine import FleetEngine


@pytest.fixture
def engine():
    engine = FleetEngine(ServiceConfig(bootstrap="127.0.0.1:9092", max_parts_per_s=2000), checkpoints=None)
    # A thousand followed agents; the policy only counts them.
    engine.followers = {f"http://10.0.{i // 250}.{i % 250}:5000": None for i in range(1000)}
    yield engine
    engine.loop.close()


def _lags(engine: FleetEngine, start: float, seconds: float, lag: float) -> float:
    """Lag measurements from `start` (seconds before now on the loop's clock) for `seconds`, as
    the engine takes them: every 0.25 s plus the lag itself. The time after the last."""
    now = start
    while now < start + seconds:
        now += 0.25 + lag
        engine.note_lag(now, lag)
    return now


def _start(engine: FleetEngine, seconds: float) -> float:
    return engine.loop.time() - seconds


def test_a_thousand_agents_on_a_punctual_loop_are_asked_for_a_part_every_500_ms(engine):
    _lags(engine, _start(engine, 120.0), 120.0, 0.02)
    # 1,000 agents at 2,000 parts per second for the whole process: one part per agent per 0.5 s.
    assert engine.base_interval_ms() == 500
    assert engine.connect_timeout_s() == pytest.approx(5.02, abs=1e-6)


def test_a_late_loop_asks_for_fewer_fuller_parts_in_steps_up_to_four_times_and_back_when_calm(engine):
    now = _lags(engine, 0.0, 4.0, 0.8)
    assert engine.base_interval_ms() == 500, "four seconds are not yet a trend"
    now = _lags(engine, now, 2.0, 0.8)
    assert engine.base_interval_ms() == 1000, "a loop 0.8 s late for 5 s doubles every interval"
    now = _lags(engine, now, 10.0, 0.8)
    assert engine.base_interval_ms() == 1000, "the reopened streams get time to show their effect"
    now = _lags(engine, now, 10.0, 0.8)
    assert engine.base_interval_ms() == 2000
    now = _lags(engine, now, 60.0, 3.0)
    assert engine.base_interval_ms() == 2000, "never more than four times the fleet's interval"
    now = _lags(engine, now, 30.0, 0.02)
    assert engine.base_interval_ms() == 2000, "half a minute of punctuality is not yet calm"
    now = _lags(engine, now, 40.0, 0.02)
    assert engine.base_interval_ms() == 1000
    _lags(engine, now, 61.0, 0.02)
    assert engine.base_interval_ms() == 500


def test_a_connect_is_given_the_loops_recent_lag_on_top_of_five_seconds(engine):
    # A connect that finished in time must not time out because the loop saw it 8 s late.
    engine.note_lag(engine.loop.time() - 1.0, 8.0)
    assert engine.connect_timeout_s() == pytest.approx(13.0)


def test_one_long_pause_of_the_loop_does_not_widen_the_intervals(engine):
    now = _lags(engine, 0.0, 10.0, 0.01)
    engine.note_lag(now + 0.7, 0.7)  # e.g. a garbage collection
    _lags(engine, now + 0.7, 20.0, 0.01)
    assert engine.base_interval_ms() == 500


def test_widening_applies_to_the_configured_interval_when_few_agents_are_followed(engine):
    engine.followers = {f"http://10.0.0.{i}:5000": None for i in range(50)}
    _lags(engine, 0.0, 6.0, 0.8)
    # 50 agents alone would allow 25 ms parts; the configured 100 ms is what gets doubled.
    assert engine.base_interval_ms() == 200
