"""Which lane, which transactional id, which settings: the pure decisions behind a plant's
producers, checked without Kafka."""
from __future__ import annotations

import argparse
import hashlib

import pytest

from producer.config import ConfigError, ServiceConfig, add_run_arguments, build_config
from producer.fleet.follower import FollowerSettings
from producer.fleet.group import agent_settings, group_id, transactional_id
from producer.service import static_lanes


def _config(**values) -> ServiceConfig:
    return ServiceConfig(bootstrap="127.0.0.1:9092", **values)


def test_a_single_agent_keeps_the_transactional_id_it_had_with_one_producer_per_agent():
    # The id documented in docs/messages.md before lanes existed, computed here from its definition.
    agent = "http://agent7.plant.local:5000"
    expected = "machine-monitor-producer-" + hashlib.sha256(f"line3.|{agent}".encode()).hexdigest()[:16]
    lanes = static_lanes(_config(agents=[agent + "/"], topic_prefix="line3."))
    assert list(lanes.values()) == [(expected, [agent])]


def test_agents_are_spread_over_at_most_static_lanes_lanes_each_agent_once():
    agents = [f"http://10.0.0.{i}:5000" for i in range(1, 41)]
    lanes = static_lanes(_config(agents=agents, static_lanes=4))
    assert 2 <= len(lanes) <= 4
    members = [agent for _, lane_agents in lanes.values() for agent in lane_agents]
    assert sorted(members) == sorted(agents)
    assert len({transactional_id for transactional_id, _ in lanes.values()}) == len(lanes)


def test_the_same_agents_give_the_same_lanes_whatever_their_order_so_a_restart_fences_its_predecessor():
    agents = [f"http://10.0.0.{i}:5000" for i in range(1, 13)]
    first = static_lanes(_config(agents=agents))
    again = static_lanes(_config(agents=list(reversed(agents))))
    assert {k: (t, sorted(a)) for k, (t, a) in first.items()} == {k: (t, sorted(a)) for k, (t, a) in again.items()}


def test_another_topic_prefix_never_shares_a_transactional_id():
    agents = ["http://a:1", "http://b:2"]
    ids = {t for t, _ in static_lanes(_config(agents=agents, topic_prefix="x.")).values()}
    others = {t for t, _ in static_lanes(_config(agents=agents, topic_prefix="y.")).values()}
    assert not ids & others


def test_a_group_has_one_transactional_id_per_agents_topic_partition_and_its_own_consumer_group():
    config = _config(group="plant", topic_prefix="line3.")
    ids = [transactional_id(config, p) for p in range(6)]
    assert len(set(ids)) == 6 and all(i.endswith(f"-p{p}") for p, i in enumerate(ids))
    assert ids[0] != transactional_id(_config(group="other", topic_prefix="line3."), 0)
    assert ids[0] != transactional_id(_config(group="plant", topic_prefix="line4."), 0)
    assert group_id(config) == "line3.mtconnect.producers.plant"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return parser.parse_args(list(argv))


def test_agent_and_group_exclude_each_other_with_a_message_that_says_what_to_do():
    with pytest.raises(ConfigError, match="--agent and --group exclude each other.*agents add URL"):
        build_config(_args("--agent", "http://a:1", "--group", "plant", "--bootstrap", "b:1"), environ={})


def test_a_group_needs_no_agents_and_a_group_from_the_environment_gives_way_to_agents_on_the_command_line():
    config = build_config(_args("--group", "plant", "--bootstrap", "b:1"), environ={})
    assert config.group == "plant" and config.agents == []
    config = build_config(_args("--agent", "http://a:1", "--bootstrap", "b:1"),
                          environ={"MACHINE_MONITOR_GROUP": "plant"})
    assert config.group is None and config.agents == ["http://a:1"]


def test_neither_agents_nor_a_group_is_refused():
    with pytest.raises(ConfigError, match="no agent configured.*--group NAME"):
        build_config(_args("--bootstrap", "b:1"), environ={})


def test_an_agent_record_overrides_the_services_settings_for_that_agent_only():
    config = _config(group="plant", interval_ms=100, count=10000, heartbeat_ms=2000)
    settings = FollowerSettings(config, agent_settings({"settings": {"interval_ms": 250, "count": 500}}))
    assert (settings.interval_ms, settings.count, settings.heartbeat_ms) == (250, 500, 2000)
    assert FollowerSettings(config, agent_settings({"settings": {}})).interval_ms == 100


@pytest.mark.parametrize("value, message", [
    ([], "not a JSON object"),
    ({"settings": []}, "`settings` is not a JSON object"),
    ({"settings": {"colour": "red"}}, r"unknown settings \['colour'\]"),
    ({"settings": {"count": 0}}, r"settings.count=0 is not a valid whole number"),
    ({"settings": {"interval_ms": "fast"}}, r"settings.interval_ms='fast'"),
    ({"settings": {"http_timeout_s": -1}}, r"settings.http_timeout_s=-1 is not a positive number"),
    ({"settings": {"verify_tls": 3}}, "verify_tls must be true, false or the path of a CA file"),
])
def test_a_bad_agent_record_is_refused_naming_the_field(value, message):
    with pytest.raises(ValueError, match=message):
        agent_settings(value)
