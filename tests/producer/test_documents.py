"""Parsing the real recorded MTConnect documents into wire observations and device models."""
from __future__ import annotations

import gzip

import pytest
from lxml import etree

from producer import wire
from producer.mtconnect.documents import (
    AgentError,
    DocumentError,
    count_sequenced_elements,
    normalize_timestamp,
    parse_devices,
    parse_streams,
)

NIST_DEVICES = {
    "GFAgie01": "mtc_adapter001", "Mazak01": "mtc_adapter002", "Mazak03": "mtc_adapter004",
    "Hurco01": "mtc_adapter005", "Hurco02": "mtc_adapter006", "Hurco03": "mtc_adapter007",
    "Hurco04": "mtc_adapter008", "Hurco06": "mtc_adapter010",
}


def _sample_page(shared_data, number: int) -> bytes:
    return gzip.decompress((shared_data / "nist-smstestbed" / "sample-pages" / f"qdr_input{number:03d}.xml.gz").read_bytes())


def test_nist_device_file_gives_eight_devices_with_their_data_items(shared_data):
    document = parse_devices((shared_data / "nist-smstestbed" / "agent" / "Devices.xml").read_bytes(), "http://agent")
    assert {d["device_name"]: d["device_uuid"] for d in document.devices} == NIST_DEVICES
    raw = etree.parse(str(shared_data / "nist-smstestbed" / "agent" / "Devices.xml"))
    assert len(document.data_items) == len(raw.getroot().xpath("//*[local-name()='DataItem']"))
    mazak03 = next(d for d in document.devices if d["device_name"] == "Mazak03")
    spindle = [i for i in mazak03["data_items"] if i["type"] == "ROTARY_VELOCITY"]
    assert spindle and all(i["category"] == "SAMPLE" for i in spindle)
    assert document.mtconnect_version == "1.3"


@pytest.mark.parametrize("page", range(1, 11))
def test_every_nist_sample_page_parses_to_one_observation_per_sequenced_element(shared_data, page):
    payload = _sample_page(shared_data, page)
    devices = parse_devices((shared_data / "nist-smstestbed" / "agent" / "Devices.xml").read_bytes(), "http://agent")
    document = parse_streams(payload, "http://agent", devices.data_items)
    assert len(document.observations) == count_sequenced_elements(payload)
    sequences = [o["sequence"] for o in document.observations]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert document.header.instance_id == 1475083573
    for observation in document.observations[:200]:
        assert observation["timestamp"].endswith("Z")
        assert observation["category"] in wire.CATEGORIES


def test_sample_pages_chain_by_next_sequence(shared_data):
    previous = None
    for page in range(1, 4):
        document = parse_streams(_sample_page(shared_data, page), "http://agent")
        if previous is not None:
            assert document.observations[0]["sequence"] == previous.header.next_sequence
        previous = document


def test_nist_current_with_undeclared_extension_prefix_and_fault(shared_data):
    payload = (shared_data / "cppagent" / "simulator-removed-2023" / "out.xml").read_bytes()
    document = parse_streams(payload, "https://smstestbed.nist.gov/vds")
    assert len(document.observations) == 242
    faults = [o for o in document.observations if o["category"] == "CONDITION" and o["level"] == "FAULT"]
    assert any(o["native_code"] == "3AA" for o in faults)
    # The recorded timestamps carry no `Z`; they are UTC and normalised to it.
    assert all(o["timestamp"].endswith("Z") for o in document.observations)


def test_unavailable_three_space_and_numbers_keep_their_shape(shared_data):
    document = parse_streams(_sample_page(shared_data, 3), "http://agent")
    kinds = {type(o["value"]).__name__ for o in document.observations if o["category"] == "SAMPLE"}
    assert {"float", "list"} <= kinds
    path_positions = [o["value"] for o in document.observations if o["type"] == "PATH_POSITION" and o["value"] != "UNAVAILABLE"]
    assert path_positions and all(isinstance(v, list) and len(v) == 3 for v in path_positions)
    first_page = parse_streams(_sample_page(shared_data, 1), "http://agent")
    assert any(o["value"] == wire.UNAVAILABLE for o in first_page.observations)


def test_condition_fields_from_spec_style_document(shared_data):
    document = parse_streams((shared_data / "hivemq-edge" / "streams" / "streams-1-5.xml").read_bytes(), "a")
    conditions = [o for o in document.observations if o["category"] == "CONDITION"]
    assert {o["level"] for o in conditions} >= {"WARNING", "FAULT"}
    assert any(o["qualifier"] == "HIGH" and o["native_code"] for o in conditions)
    series = [o for o in document.observations if o.get("sample_count")]
    assert series and len(series[0]["value"]) == series[0]["sample_count"]


def test_error_document_raises_with_its_code(shared_data):
    payload = (shared_data / "cppagent" / "extracted" / "IntelAgent-2.0.0.1-MTConnectError-OUT_OF_RANGE.xml").read_bytes()
    with pytest.raises(AgentError) as raised:
        parse_streams(payload, "http://intel")
    assert raised.value.codes == {"OUT_OF_RANGE"}
    assert "4871368" in str(raised.value)


def test_malformed_document_error_names_source_and_position(shared_data):
    payload = _sample_page(shared_data, 1)[:5000]
    with pytest.raises(DocumentError) as raised:
        parse_streams(payload, "http://agent")
    assert "http://agent/sample" in str(raised.value) and "line" in str(raised.value)


def test_entities_are_not_expanded():
    hostile = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<MTConnectStreams><Header instanceId="1" nextSequence="2" firstSequence="1" lastSequence="1"/>
<Streams><DeviceStream name="d" uuid="u"><ComponentStream component="Device" componentId="d">
<Events><Message dataItemId="m" sequence="1" timestamp="2020-01-01T00:00:00Z">&lol2;</Message></Events>
</ComponentStream></DeviceStream></Streams></MTConnectStreams>"""
    document = parse_streams(hostile, "http://agent")
    assert "lollol" not in (document.observations[0]["value"] or "")


@pytest.mark.parametrize("text, expected", [
    ("2021-02-11T20:45:18.484534", "2021-02-11T20:45:18.484534Z"),
    ("2016-11-16T20:29:56.063Z", "2016-11-16T20:29:56.063000Z"),
    ("2016-05-13T17:35:52.5056471Z", "2016-05-13T17:35:52.505647Z"),
    ("2016-05-13T17:35:52Z", "2016-05-13T17:35:52.000000Z"),
    ("2016-05-13T19:35:52.1+02:00", "2016-05-13T17:35:52.100000Z"),
])
def test_timestamps_normalise_to_utc_microseconds(text, expected):
    assert normalize_timestamp(text) == expected
