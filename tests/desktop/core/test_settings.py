"""Settings: defaults, JSON round trip, validation messages naming the field, config folder."""
from __future__ import annotations

import json

import pytest

from desktop.core import paths
from desktop.core.settings import Settings, SettingsError, load_settings, parse_properties, save_settings


def test_no_file_means_local_defaults(tmp_path):
    settings = load_settings(tmp_path)
    assert settings == Settings()
    assert settings.is_local and settings.replay_speed == 1.0


def test_round_trip_keeps_every_field_and_is_private(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings(
        mode="remote",
        bootstrap_servers="kafka1.plant.local:9093,kafka2.plant.local:9093",
        topic_prefix="plant1.",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="desk",
        sasl_password="s3cret",
        ssl_ca_location=str(ca),
        replay_speed=5.0,
        kafka_properties={"client.id": "shopfloor-3"},
    )
    path = save_settings(settings, tmp_path / "config")
    assert load_settings(tmp_path / "config") == settings
    assert path.stat().st_mode & 0o077 == 0
    config = settings.kafka_config()
    assert config == {
        "bootstrap.servers": "kafka1.plant.local:9093,kafka2.plant.local:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "desk",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(ca),
        "client.id": "shopfloor-3",
    }
    assert settings.kafka_config("127.0.0.1:9092")["bootstrap.servers"] == "127.0.0.1:9092"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"mode": "remote"}, "bootstrap_servers", "Bootstrap servers: required"),
        ({"mode": "remote", "bootstrap_servers": "kafka.local"}, "bootstrap_servers", "is not host:port"),
        ({"mode": "remote", "bootstrap_servers": "kafka.local:99999"}, "bootstrap_servers", "out of range"),
        ({"topic_prefix": "plant 1/"}, "topic_prefix", "Topic prefix"),
        ({"security_protocol": "TLS"}, "security_protocol", "Security protocol"),
        ({"mode": "remote", "bootstrap_servers": "k.plant.local:9093", "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_password": "x"}, "sasl_username", "SASL username: required"),
        ({"mode": "remote", "bootstrap_servers": "k.plant.local:9093", "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "KERBEROS", "sasl_username": "a", "sasl_password": "b"}, "sasl_mechanism", "SASL mechanism"),
        ({"mode": "remote", "bootstrap_servers": "k.plant.local:9093", "ssl_ca_location": "/nonexistent/ca.pem"}, "ssl_ca_location", "CA file: file not found"),
        ({"replay_speed": 0.0}, "replay_speed", "Replay speed"),
        ({"mode": "cloud"}, "mode", "Mode"),
    ],
)
def test_validation_names_the_field(changes, field, words):
    with pytest.raises(SettingsError) as caught:
        Settings(**changes).validate()
    fields = [name for name, _ in caught.value.problems]
    assert field in fields
    assert words in str(caught.value)


def test_broken_files_are_clear_errors(tmp_path):
    (tmp_path / "settings.json").write_text('{"mode": "remote",')
    with pytest.raises(SettingsError, match=r"settings.json: not valid JSON \(line 1"):
        load_settings(tmp_path)
    (tmp_path / "settings.json").write_text(json.dumps({"mode": "local", "bootstrap": "x:1"}))
    with pytest.raises(SettingsError, match="unknown setting 'bootstrap'"):
        load_settings(tmp_path)
    (tmp_path / "settings.json").write_text(json.dumps({"replay_speed": "fast"}))
    with pytest.raises(SettingsError, match="Replay speed: expected a number"):
        load_settings(tmp_path)


def test_extra_properties_text():
    assert parse_properties("# tuning\nclient.id = desk-3\n\nfetch.wait.max.ms=100\n") == {
        "client.id": "desk-3",
        "fetch.wait.max.ms": "100",
    }
    with pytest.raises(SettingsError, match="line 2 is not key=value"):
        parse_properties("a=b\nnonsense\n")


def test_config_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CONFIG_DIR_ENV, str(tmp_path / "env"))
    assert paths.config_dir(tmp_path / "arg") == tmp_path / "arg"
    assert paths.config_dir(None) == tmp_path / "env"
    monkeypatch.delenv(paths.CONFIG_DIR_ENV)
    assert paths.config_dir(None).name == "machine-monitor"


def test_bundled_resources_are_present():
    assert paths.missing_resources() == []
