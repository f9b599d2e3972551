"""Recorded NIST test-bed data shaped like the Kafka messages, for tests without Kafka.

The unit and UI tests exercise the model with real machine data rather than invented
values: this module reads the VDS agent's device file (`Devices.xml`) into device records as
the producer writes them to `mtconnect.devices`, and turns SHDR adapter lines (one day of a
machine's data per file) into observations as the producer writes them to
`mtconnect.observations` - same field names, CONDITION fields, UNAVAILABLE kept distinct,
sample values through `wire.sample_value`. An agent reports UNAVAILABLE for every item of a
device whose adapter sends nothing (the Hurco machines); `unavailable_observations` gives that
initial state. `records` encodes messages with `wire.encode`, so tests also run the real
decoding path of `batch.build_batch`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from producer import wire
from producer.mtconnect.documents import parse_devices

from desktop.core.batch import Batch, Record, build_batch
from repo_paths import REPLAY_DATA

RECORDED_AGENT = "http://recorded.invalid/nist-vds"


def nist_devices_xml() -> Path:
    """The NIST VDS device file, as the replay agent serves it (`resources/replay`)."""
    return REPLAY_DATA / "Devices.xml"


def nist_shdr(name: str) -> Path:
    """One recorded SHDR day file of `resources/replay`, e.g. `Mazak03-20161116-20161117.txt`."""
    return REPLAY_DATA / name


def load_devices(devices_xml: Path | None = None, agent: str = RECORDED_AGENT) -> list[dict[str, Any]]:
    """Device records (the `mtconnect.devices` value) from an MTConnectDevices document,
    parsed by the producer's own parser so they are exactly what it publishes."""
    path = devices_xml or nist_devices_xml()
    return parse_devices(path.read_bytes(), agent).devices


def device_named(devices: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for device in devices:
        if device["device_name"] == name:
            return device
    raise KeyError(f"no device named {name!r}")


def _observation(device: Mapping[str, Any], item: Mapping[str, Any], timestamp: str, sequence: int,
                 agent: str) -> dict[str, Any]:
    return {
        "agent": agent,
        "instance_id": device.get("instance_id", 0),
        "sequence": sequence,
        "timestamp": timestamp,
        "device_uuid": device["device_uuid"],
        "device_name": device["device_name"],
        "component": item.get("component"),
        "component_id": item.get("component_id"),
        "data_item_id": item["id"],
        "name": item.get("name"),
        "category": item["category"],
        "type": item.get("type"),
        "sub_type": item.get("sub_type"),
        "units": item.get("units"),
        "value": None,
    }


def _condition_fields(observation: dict[str, Any], level: str, code: str, severity: str, qualifier: str,
                      text: str) -> None:
    observation.update(
        {
            "level": level.upper() or "UNAVAILABLE",
            "native_code": code or None,
            "native_severity": severity or None,
            "qualifier": qualifier or None,
            "condition_id": code or None,
            "value": text or None,
        }
    )


def shdr_observations(path: Path, device: Mapping[str, Any], first_line: int = 1, last_line: int | None = None,
                      agent: str = RECORDED_AGENT, first_sequence: int = 1) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, observation) for each value on SHDR lines `first_line..last_line`.

    The sequence numbers count observations from `first_sequence` in file order, as an
    agent's would. Asset records and names the device does not define are skipped.
    """
    by_name = {item["name"]: item for item in device["data_items"] if item.get("name")}
    by_id = {item["id"]: item for item in device["data_items"]}
    sequence = first_sequence
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if number < first_line:
                continue
            if last_line is not None and number > last_line:
                break
            fields = line.rstrip("\r\n").split("|")
            if len(fields) < 3 or fields[1].startswith("@"):
                continue
            timestamp, rest = fields[0], fields[1:]
            index = 0
            while index < len(rest):
                item = by_name.get(rest[index]) or by_id.get(rest[index])
                if item is None:
                    break  # unknown name: its arity is unknown, so the rest of the line is too
                observation = _observation(device, item, timestamp, sequence, agent)
                if item["category"] == "CONDITION":
                    level, code, severity, qualifier, text = (rest[index + 1 : index + 6] + [""] * 5)[:5]
                    _condition_fields(observation, level, code, severity, qualifier, text)
                    index += 6
                else:
                    raw = rest[index + 1] if index + 1 < len(rest) else ""
                    observation["value"] = wire.sample_value(raw) if item["category"] == "SAMPLE" else raw
                    index += 2
                sequence += 1
                yield number, observation


def unavailable_observations(device: Mapping[str, Any], timestamp: str, agent: str = RECORDED_AGENT,
                             first_sequence: int = 1) -> list[dict[str, Any]]:
    """What an agent reports for every item of a device whose adapter has sent nothing."""
    observations = []
    for offset, item in enumerate(device["data_items"]):
        observation = _observation(device, item, timestamp, first_sequence + offset, agent)
        if item["category"] == "CONDITION":
            _condition_fields(observation, "UNAVAILABLE", "", "", "", "")
        else:
            observation["value"] = wire.UNAVAILABLE
        observations.append(observation)
    return observations


def records(devices: Iterable[Mapping[str, Any]] = (), observations: Iterable[Mapping[str, Any]] = (),
            agent_statuses: Iterable[Mapping[str, Any]] = (), topic_prefix: str = "") -> list[Record]:
    """Kafka records as the producer writes them (keys and JSON values from `wire`)."""
    result: list[Record] = []
    offsets: dict[str, int] = {}

    def add(base: str, key: bytes, value: Mapping[str, Any]) -> None:
        topic = wire.topic_name(base, topic_prefix)
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        result.append(Record(topic, 0, offset, key, wire.encode(value)))

    for device in devices:
        add(wire.DEVICES, wire.device_key(device), device)
    for status in agent_statuses:
        add(wire.AGENT_STATUS, wire.agent_key(status["agent"]), status)
    for observation in observations:
        add(wire.OBSERVATIONS, wire.observation_key(observation), observation)
    return result


def batch_of(devices: Iterable[Mapping[str, Any]] = (), observations: Iterable[Mapping[str, Any]] = (),
             agent_statuses: Iterable[Mapping[str, Any]] = (), topic_prefix: str = "") -> Batch:
    """A batch exactly as the feed would build it from these messages."""
    return build_batch(records(devices, observations, agent_statuses, topic_prefix), topic_prefix)
