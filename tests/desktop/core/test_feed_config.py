"""The feed's consumer configuration: merge order, unique group, topic names."""
from __future__ import annotations

from desktop.core.feed import FeedConfig
from desktop.core.settings import Settings


def test_properties_merge_defaults_then_settings_then_what_the_feed_controls():
    settings = Settings(mode="remote", bootstrap_servers="kafka.local:9092",
                        kafka_properties={"auto.offset.reset": "latest", "enable.auto.commit": "true", "client.id": "desk"})
    config = FeedConfig("kafka.local:9092", "plant1.", settings.kafka_config())
    properties = config.consumer_properties()
    assert properties["auto.offset.reset"] == "latest"  # a user setting beats a default
    assert properties["client.id"] == "desk"
    assert properties["enable.auto.commit"] is False  # the feed never commits
    assert properties["isolation.level"] == "read_committed"
    assert properties["group.id"] == config.group_id
    assert properties["bootstrap.servers"] == "kafka.local:9092"


def test_group_ids_are_unique_per_instance_and_topics_prefixed():
    first, second = FeedConfig("a:1"), FeedConfig("a:1")
    assert first.group_id != second.group_id
    assert first.group_id.startswith("machine-monitor-desktop-")
    assert FeedConfig("a:1", "plant1.").topics() == {
        "mtconnect.devices": "plant1.mtconnect.devices",
        "mtconnect.agent-status": "plant1.mtconnect.agent-status",
        "mtconnect.observations": "plant1.mtconnect.observations",
    }
