"""Every recorded MTConnect document in tests/data/mtconnect, through the parser its root calls for.

Each `.xml` / `.xml.gz` file under the shared data dir is its own test, classified by its
root element. The expected counts come from the raw XML (read by a separate plain lxml
parse and XPath on local names), never from the parser under test.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from lxml import etree
from repo_paths import RECORDED_DATA

from producer import wire
from producer.mtconnect.documents import (
    AgentError,
    DocumentError,
    count_sequenced_elements,
    parse_asset_body,
    parse_assets,
    parse_devices,
    parse_streams,
)

# The same place tests/conftest.py's `recorded_data` fixture points at; needed at collection
# time to give every file its own test id. The fixture still asserts the directory exists.
_FILES = sorted(
    str(path.relative_to(RECORDED_DATA))
    for path in RECORDED_DATA.rglob("*")
    if path.is_file() and path.name.endswith((".xml", ".xml.gz"))
) if RECORDED_DATA.is_dir() else []

# The data set's README lists 65 XML documents.
EXPECTED_FILE_COUNT = 65
# A cppagent unit-test device file with an empty <Devices/>: the one Devices document without a device.
NO_DEVICES = {"cppagent/test_package/resources/samples/empty.xml"}
# cppagent's test resources include one deliberately broken asset body (`</CuttingItmems>`).
MALFORMED = {"cppagent/test_package/resources/asset4.xml": (1, 1427)}


def _payload(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _raw_root(payload: bytes) -> etree._Element:
    """The raw tree, for counting: a plain parse that tolerates NIST's undeclared `x:` prefix."""
    return etree.fromstring(payload, etree.XMLParser(recover=True, resolve_entities=False, no_network=True))


def _local(element: etree._Element) -> str:
    # Recovered documents carry tags such as `x:Motion` that QName refuses: plain string work.
    return element.tag.rpartition("}")[2].rpartition(":")[2]


def _xpath(root: etree._Element, path: str) -> list:
    return root.xpath(path)


def test_the_whole_recorded_set_is_walked(recorded_data):
    assert recorded_data == RECORDED_DATA
    assert len(_FILES) == EXPECTED_FILE_COUNT, _FILES


@pytest.mark.parametrize("relative", _FILES)
def test_recorded_document(recorded_data, relative):
    path = recorded_data / relative
    payload = _payload(path)
    agent = str(path)
    if relative in MALFORMED:
        line, column = MALFORMED[relative]
        for parse in (lambda: parse_assets(payload, agent), lambda: parse_asset_body(payload, agent)):
            with pytest.raises(DocumentError) as raised:
                parse()
            assert agent in str(raised.value) and f"line {line}, column {column}" in str(raised.value)
        return
    raw = _raw_root(payload)
    kind = _local(raw)
    if kind == "MTConnectDevices":
        _check_devices(payload, raw, agent, relative)
    elif kind == "MTConnectStreams":
        _check_streams(payload, raw, agent)
    elif kind == "MTConnectError":
        _check_error(payload, raw, agent)
    elif kind == "MTConnectAssets":
        _check_assets(payload, raw, agent)
    elif raw.get("assetId") is not None:
        _check_bare_asset(payload, raw, agent)
    else:
        pytest.fail(f"{relative}: unclassified root <{kind}>; teach this test what it is")


def _check_devices(payload: bytes, raw: etree._Element, agent: str, relative: str) -> None:
    document = parse_devices(payload, agent)
    devices = _xpath(raw, "/*/*[local-name()='Devices']/*[local-name()='Device' or local-name()='Agent']")
    assert len(document.devices) == len(devices)
    if relative not in NO_DEVICES:
        assert len(document.devices) >= 1
    data_items = _xpath(raw, "//*[local-name()='DataItem']")
    assert len(document.data_items) == len(data_items)
    assert sum(len(device["data_items"]) for device in document.devices) == len(data_items)
    assert {device["device_uuid"] for device in document.devices} == {
        d.get("uuid") or d.get("name") or d.get("id") for d in devices}
    assert document.mtconnect_version
    for device in document.devices:
        assert etree.fromstring(device["device_xml"]).get("id") == device["device_id"]


def _check_streams(payload: bytes, raw: etree._Element, agent: str) -> None:
    document = parse_streams(payload, agent)
    observations = document.observations
    assert len(observations) == count_sequenced_elements(payload)
    assert len(observations) == len(_xpath(raw, "//*[@sequence]"))
    sequences = [o["sequence"] for o in observations]
    assert all(a < b for a, b in zip(sequences, sequences[1:])), "sequences not strictly ascending"
    header = document.header
    assert header.instance_id == int(_xpath(raw, "string(/*/*[local-name()='Header']/@instanceId)"))
    assert header.next_sequence is not None and all(s < header.next_sequence for s in sequences)
    by_sequence = {o["sequence"]: o for o in observations}
    for observation in observations:
        assert set(wire.OBSERVATION_FIELDS) <= set(observation)
        assert observation["agent"] == agent and observation["instance_id"] == header.instance_id
        assert observation["category"] in wire.CATEGORIES
        if observation["category"] == "CONDITION":
            assert observation["level"] in wire.CONDITION_LEVELS
            assert set(wire.CONDITION_FIELDS) <= set(observation)
        assert wire.decode(wire.encode(observation)) == observation
    for element in _xpath(raw, "//*[@sequence]"):
        _assert_exactly_as_sent(element, by_sequence[int(element.get("sequence"))])


# Element attribute -> the observation field that carries it (every other one is in `attributes`).
MAPPED_ATTRIBUTES = {"dataItemId": "data_item_id", "timestamp": "timestamp", "name": "name", "subType": "sub_type",
                     "nativeCode": "native_code", "nativeSeverity": "native_severity", "qualifier": "qualifier",
                     "conditionId": "condition_id", "resetTriggered": "reset_triggered"}


def _assert_exactly_as_sent(element: etree._Element, observation: dict) -> None:
    """The observation holds the element's words exactly: timestamp string, text, every attribute."""
    where = f"sequence {element.get('sequence')} <{_local(element)}>"
    assert observation["timestamp"] == element.get("timestamp"), where
    container = _local(element.getparent())
    has_entries = any(_local(child) == "Entry" for child in element if isinstance(child.tag, str))
    if container == "Condition":
        assert observation["value"] == element.text, where
        assert observation["level"] == _local(element).upper(), where
    elif not has_entries:
        if container == "Samples":
            assert observation["text"] == (element.text or ""), where
        elif observation["value"] != {}:
            assert observation["value"] == (element.text or ""), where
    extra = observation.get("attributes", {})
    for attribute, text in element.attrib.items():
        if attribute == "sequence":
            continue
        field = MAPPED_ATTRIBUTES.get(attribute)
        if attribute == "type" and container == "Condition":
            field = "type"
        if field is not None:
            assert observation[field] == text, (where, attribute)
        elif attribute in ("sampleCount", "sampleRate") and attribute not in extra:
            assert observation["sample_count" if attribute == "sampleCount" else "sample_rate"] == float(text), where
        else:
            assert extra.get(attribute) == text, (where, attribute, extra)


def _recorded_error_codes(raw: etree._Element) -> set[str]:
    return {e.get("errorCode") for e in _xpath(raw, "//*[local-name()='Error']")}


def _check_error(payload: bytes, raw: etree._Element, agent: str) -> None:
    expected = _recorded_error_codes(raw)
    assert expected
    for parse in (parse_streams, parse_devices, parse_assets):
        with pytest.raises(AgentError) as raised:
            parse(payload, agent)
        assert raised.value.codes == expected
        assert agent in str(raised.value)


def test_recorded_cppagent_error_is_out_of_range(recorded_data):
    payload = (recorded_data / "cppagent" / "extracted" / "IntelAgent-2.0.0.1-MTConnectError-OUT_OF_RANGE.xml").read_bytes()
    with pytest.raises(AgentError) as raised:
        parse_streams(payload, "http://intel", source="http://intel/sample?at=1")
    assert raised.value.codes == {"OUT_OF_RANGE"} and raised.value.instance_id == 1649989201
    assert "http://intel/sample?at=1" in str(raised.value) and "4871368" in str(raised.value)


def _check_assets(payload: bytes, raw: etree._Element, agent: str) -> None:
    document = parse_assets(payload, agent)
    elements = _xpath(raw, "/*/*[local-name()='Assets']/*")
    assert len(document.assets) == len(elements) >= 1
    for asset, element in zip(document.assets, elements):
        assert asset["asset_id"] == element.get("assetId")
        assert asset["type"] == _local(element)
        assert asset["removed"] is (element.get("removed") == "true")
        assert asset["device_uuid"] == element.get("deviceUuid")
        assert asset["timestamp"] == element.get("timestamp")
        assert etree.fromstring(asset["xml"]).get("assetId") == asset["asset_id"]


def _check_bare_asset(payload: bytes, raw: etree._Element, agent: str) -> None:
    # A bare asset body is what an adapter sends (`@ASSET@` / PUT), not an agent response:
    # parse_assets refuses it by name, parse_asset_body reads it as the one asset it is.
    with pytest.raises(DocumentError, match="bare asset body"):
        parse_assets(payload, agent)
    asset = parse_asset_body(payload, agent)
    assert asset["asset_id"] == raw.get("assetId") and asset["type"] == _local(raw)
    assert asset["removed"] is False


# ----------------------------------------------------------------------------- what users see


def _streams(recorded_data: Path, *parts: str):
    return parse_streams((recorded_data.joinpath(*parts)).read_bytes(), "http://agent")


def test_nist_current_fault_3aa(recorded_data):
    document = _streams(recorded_data, "cppagent", "simulator-removed-2023", "out.xml")
    fault = next(o for o in document.observations if o.get("native_code") == "3AA")
    assert {key: fault[key] for key in ("sequence", "timestamp", "device_name", "device_uuid", "component",
                                        "data_item_id", "name", "category", "type", "value", "level")} == {
        "sequence": 367917330, "timestamp": "2021-02-11T21:10:36.290052", "device_name": "GFAgie01",
        "device_uuid": "mtc_adapter001", "component": "Device", "data_item_id": "GFAgie01-dtop_3",
        "name": "system", "category": "CONDITION", "type": "SYSTEM", "value": "Key non-functional",
        "level": "FAULT",
    }
    assert fault["native_severity"] is None and fault["qualifier"] is None


def test_nist_current_timestamps_without_z_are_kept_as_sent(recorded_data):
    payload = (recorded_data / "cppagent" / "simulator-removed-2023" / "out.xml").read_bytes()
    assert b'timestamp="2021-02-11T20:45:18.484534"' in payload
    observations = {o["sequence"]: o for o in parse_streams(payload, "a").observations}
    assert observations[367897220]["timestamp"] == "2021-02-11T20:45:18.484534"
    assert observations[367897220]["value"] == "AVAILABLE"
    # The undeclared `x:` extension elements are observations like any other.
    assert any(o["type"] == "MOTION" for o in observations.values())
    header = parse_streams(payload, "a").header
    assert (header.first_sequence, header.next_sequence, header.last_sequence) == (366898420, 367946996, 367946995)


@pytest.mark.parametrize("name", ["streams-1-4.xml", "streams-1-5.xml"])
def test_spec_style_conditions_warning_high_and_several_per_item(recorded_data, name):
    document = _streams(recorded_data, "hivemq-edge", "streams", name)
    overload = [o for o in document.observations if o["data_item_id"] == "afb596b0"]
    assert [(o["level"], o["qualifier"], o["native_code"], o["value"]) for o in overload] == [
        ("NORMAL", None, None, None),
        ("WARNING", "HIGH", "MOT-WARN", "Spindle Motor Warning"),
        ("FAULT", "HIGH", "MOT-OVR", "Spindle Motor Overload"),
    ]
    assert {o["type"] for o in overload} == {"AMPERAGE"}
    assert overload[1]["timestamp"] == "2018-10-31T20:45:19.9981Z"
    position = [o["value"] for o in document.observations if o["data_item_id"] == "dcbc0570"]
    assert position == [wire.UNAVAILABLE, 205.23]


def test_time_series_samples(recorded_data):
    # The data README describes both 1-4 and 1-5 as carrying the TimeSeries, but only
    # streams-1-5.xml does (1-4 has the same conditions and no Electric component).
    assert not [o for o in _streams(recorded_data, "hivemq-edge", "streams", "streams-1-4.xml").observations
                if "sample_count" in o]
    series = [o for o in _streams(recorded_data, "hivemq-edge", "streams", "streams-1-5.xml").observations
              if o["type"] == "VOLT_AMPERE_TIME_SERIES"]
    assert [o["sequence"] for o in series] == [1122, 1123, 1124, 1125]
    for observation in series:
        assert observation["sample_count"] == 10 and observation["sample_rate"] == 100.0
        assert len(observation["value"]) == 10 and all(isinstance(v, float) for v in observation["value"])
    assert series[0]["value"][:3] == [421.23, 422.36, 419.55]


@pytest.mark.parametrize("page", [3, 10])
def test_three_space_values_are_three_element_lists(recorded_data, page):
    payload = gzip.decompress((recorded_data / "nist-smstestbed" / "sample-pages" / f"qdr_input{page:03d}.xml.gz").read_bytes())
    raw = {e.get("sequence"): e.text for e in _xpath(_raw_root(payload), "//*[local-name()='PathPosition']")}
    observations = [o for o in parse_streams(payload, "a").observations if o["type"] == "PATH_POSITION"]
    assert len(observations) == len(raw) > 0
    available = [o for o in observations if o["value"] != wire.UNAVAILABLE]
    assert available
    for observation in available:
        assert observation["value"] == [float(v) for v in raw[str(observation["sequence"])].split()]
        assert len(observation["value"]) == 3
