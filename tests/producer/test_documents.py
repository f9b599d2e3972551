"""Parsing the real recorded MTConnect documents into wire observations and device models."""
from __future__ import annotations

import gzip
import re

import pytest
from lxml import etree

from producer import wire
from producer.mtconnect import documents
from producer.mtconnect.documents import (
    AgentError,
    DocumentError,
    count_sequenced_elements,
    parse_asset_body,
    parse_assets,
    parse_devices,
    parse_streams,
)

NIST_DEVICES = {
    "GFAgie01": "mtc_adapter001", "Mazak01": "mtc_adapter002", "Mazak03": "mtc_adapter004",
    "Hurco01": "mtc_adapter005", "Hurco02": "mtc_adapter006", "Hurco03": "mtc_adapter007",
    "Hurco04": "mtc_adapter008", "Hurco06": "mtc_adapter010",
}


def _sample_page(recorded_data, number: int) -> bytes:
    return gzip.decompress((recorded_data / "nist-smstestbed" / "sample-pages" / f"qdr_input{number:03d}.xml.gz").read_bytes())


def test_nist_device_file_gives_eight_devices_with_their_data_items(recorded_data):
    document = parse_devices((recorded_data / "nist-smstestbed" / "agent" / "Devices.xml").read_bytes(), "http://agent")
    assert {d["device_name"]: d["device_uuid"] for d in document.devices} == NIST_DEVICES
    raw = etree.parse(str(recorded_data / "nist-smstestbed" / "agent" / "Devices.xml"))
    assert len(document.data_items) == len(raw.getroot().xpath("//*[local-name()='DataItem']"))
    mazak03 = next(d for d in document.devices if d["device_name"] == "Mazak03")
    spindle = [i for i in mazak03["data_items"] if i["type"] == "ROTARY_VELOCITY"]
    assert spindle and all(i["category"] == "SAMPLE" for i in spindle)
    assert document.mtconnect_version == "1.3"


@pytest.mark.parametrize("page", range(1, 11))
def test_every_nist_sample_page_parses_to_one_observation_per_sequenced_element(recorded_data, page):
    payload = _sample_page(recorded_data, page)
    devices = parse_devices((recorded_data / "nist-smstestbed" / "agent" / "Devices.xml").read_bytes(), "http://agent")
    document = parse_streams(payload, "http://agent", devices.data_items)
    assert len(document.observations) == count_sequenced_elements(payload)
    sequences = [o["sequence"] for o in document.observations]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert document.header.instance_id == 1475083573
    # Every timestamp exactly as the agent wrote it (the test's own scan of the bytes).
    assert sorted(o["timestamp"] for o in document.observations) == sorted(
        t.decode() for t in re.findall(rb'timestamp="([^"]*)"', payload))
    for observation in document.observations[:200]:
        assert observation["category"] in wire.CATEGORIES


def test_sample_pages_chain_by_next_sequence(recorded_data):
    previous = None
    for page in range(1, 4):
        document = parse_streams(_sample_page(recorded_data, page), "http://agent")
        if previous is not None:
            assert document.observations[0]["sequence"] == previous.header.next_sequence
        previous = document


def test_nist_current_with_undeclared_extension_prefix_and_fault(recorded_data):
    payload = (recorded_data / "cppagent" / "simulator-removed-2023" / "out.xml").read_bytes()
    document = parse_streams(payload, "https://smstestbed.nist.gov/vds")
    assert len(document.observations) == 242
    faults = [o for o in document.observations if o["category"] == "CONDITION" and o["level"] == "FAULT"]
    assert any(o["native_code"] == "3AA" for o in faults)
    # Most recorded timestamps carry no `Z`; each is kept exactly as the agent sent it.
    assert sorted(o["timestamp"] for o in document.observations) == sorted(
        t.decode() for t in re.findall(rb'timestamp="([^"]*)"', payload))


def test_unavailable_three_space_and_numbers_keep_their_shape(recorded_data):
    document = parse_streams(_sample_page(recorded_data, 3), "http://agent")
    kinds = {type(o["value"]).__name__ for o in document.observations if o["category"] == "SAMPLE"}
    assert {"float", "list"} <= kinds
    path_positions = [o["value"] for o in document.observations if o["type"] == "PATH_POSITION" and o["value"] != "UNAVAILABLE"]
    assert path_positions and all(isinstance(v, list) and len(v) == 3 for v in path_positions)
    first_page = parse_streams(_sample_page(recorded_data, 1), "http://agent")
    assert any(o["value"] == wire.UNAVAILABLE for o in first_page.observations)


def test_condition_fields_from_spec_style_document(recorded_data):
    document = parse_streams((recorded_data / "hivemq-edge" / "streams" / "streams-1-5.xml").read_bytes(), "a")
    conditions = [o for o in document.observations if o["category"] == "CONDITION"]
    assert {o["level"] for o in conditions} >= {"WARNING", "FAULT"}
    assert any(o["qualifier"] == "HIGH" and o["native_code"] for o in conditions)
    series = [o for o in document.observations if o.get("sample_count")]
    assert series and len(series[0]["value"]) == series[0]["sample_count"]


def test_error_document_raises_with_its_code(recorded_data):
    payload = (recorded_data / "cppagent" / "extracted" / "IntelAgent-2.0.0.1-MTConnectError-OUT_OF_RANGE.xml").read_bytes()
    with pytest.raises(AgentError) as raised:
        parse_streams(payload, "http://intel")
    assert raised.value.codes == {"OUT_OF_RANGE"}
    assert "4871368" in str(raised.value)


def test_malformed_document_error_names_source_and_position(recorded_data):
    payload = _sample_page(recorded_data, 1)[:5000]
    with pytest.raises(DocumentError) as raised:
        parse_streams(payload, "http://agent")
    assert "http://agent/sample" in str(raised.value) and "line" in str(raised.value)


# ----------------------------------------------------------------------------- hardening

def _secret_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-4a7c1e")
    return secret


def _out_xml(recorded_data) -> bytes:
    return (recorded_data / "cppagent" / "simulator-removed-2023" / "out.xml").read_bytes()


def _with_doctype(real: bytes, doctype: str, text_entity: str | None = None) -> bytes:
    """A real document with a DOCTYPE slipped in before its root, optionally referencing an
    entity in the first event's text. (No recorded document has a DOCTYPE: MTConnect agents
    never send one; these are the attacks the parser must survive.)"""
    head, sep, rest = real.partition(b"<MTConnectStreams")
    payload = head + doctype.encode() + b"\n" + sep + rest
    if text_entity:
        payload = payload.replace(b">AVAILABLE</Availability>", f">&{text_entity};</Availability>".encode(), 1)
    return payload


def test_billion_laughs_is_refused_quickly(recorded_data):
    import time
    laughs = '<!ENTITY lol0 "lollollollollollollollollollol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">' for i in range(1, 10))
    payload = _with_doctype(_out_xml(recorded_data), f"<!DOCTYPE MTConnectStreams [{laughs}]>", "lol9")
    started = time.perf_counter()
    with pytest.raises(DocumentError) as raised:
        parse_streams(payload, "http://bomb")
    # Refused outright, never expanded (expanding it would take minutes and gigabytes).
    assert time.perf_counter() - started < 10
    assert "http://bomb/sample" in str(raised.value)


@pytest.mark.parametrize("doctype, entity", [
    ('<!DOCTYPE MTConnectStreams [<!ENTITY xxe SYSTEM "file://{secret}">]>', "xxe"),
    ('<!DOCTYPE MTConnectStreams [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>', None),
    ('<!DOCTYPE MTConnectStreams SYSTEM "file://{secret}">', None),
    ('<!DOCTYPE MTConnectStreams [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/x">]>', "xxe"),
], ids=["general-entity", "parameter-entity", "external-dtd", "network-entity"])
def test_external_entities_are_refused_and_leak_nothing(recorded_data, tmp_path, doctype, entity):
    secret = _secret_file(tmp_path)
    payload = _with_doctype(_out_xml(recorded_data), doctype.format(secret=secret), entity)
    for parse in (lambda: parse_streams(payload, "http://xxe"), lambda: count_sequenced_elements(payload)):
        with pytest.raises(DocumentError) as raised:
            parse()
        assert "TOP-SECRET" not in str(raised.value)


def test_external_entity_in_an_attribute_is_refused(recorded_data, tmp_path):
    secret = _secret_file(tmp_path)
    payload = _with_doctype(_out_xml(recorded_data), f'<!DOCTYPE MTConnectStreams [<!ENTITY xxe SYSTEM "file://{secret}">]>')
    payload = payload.replace(b'name="avail"', b'name="&xxe;"', 1)
    with pytest.raises(DocumentError) as raised:
        parse_streams(payload, "http://xxe")
    assert "TOP-SECRET" not in str(raised.value)


def test_xinclude_is_inert(recorded_data, tmp_path):
    secret = _secret_file(tmp_path)
    payload = _out_xml(recorded_data).replace(
        b">AVAILABLE</Availability>",
        f'><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{secret}" parse="text"/></Availability>'.encode(), 1)
    document = parse_streams(payload, "http://xinclude")
    assert not any("TOP-SECRET" in str(o["value"]) for o in document.observations)
    assert len(document.observations) == 242


def test_documents_over_the_size_bound_are_refused(recorded_data, monkeypatch):
    payload = _out_xml(recorded_data)
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", len(payload) - 1)
    with pytest.raises(DocumentError, match="exceeds"):
        parse_streams(payload, "http://big")
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", len(payload))
    assert len(parse_streams(payload, "http://big").observations) == 242


@pytest.mark.parametrize("payload", [b"", b"   ", b"not xml", b"\xff\xfe\x00", b"<a>", "<MTConnectStreams/>"])
def test_junk_is_a_document_error(payload):
    with pytest.raises(DocumentError) as raised:
        parse_streams(payload, "http://junk")
    assert "http://junk/sample" in str(raised.value)


# ----------------------------------------------------------------------------- headers

def _replace_once(payload: bytes, old: bytes, new: bytes) -> bytes:
    assert old in payload
    return payload.replace(old, new, 1)


@pytest.mark.parametrize("old, new, field", [
    (b'nextSequence="10050"', b'nextSequence="String"', "nextSequence"),
    (b'firstSequence="1"', b'firstSequence="-1"', "firstSequence"),
    (b'lastSequence="10049"', b'lastSequence="1e4"', "lastSequence"),
    (b'instanceId="1475083573"', b'instanceId=""', "instanceId"),
    (b'nextSequence="10050"', b'', "nextSequence"),
    (b'name="avail" sequence="31"', b'name="avail" sequence="3l"', "sequence"),
])
def test_a_bad_sequence_field_of_a_streams_document_names_source_field_and_line(recorded_data, old, new, field):
    payload = _replace_once(_sample_page(recorded_data, 1), old, new)
    with pytest.raises(DocumentError) as raised:
        parse_streams(payload, "http://agent", source="http://agent/sample?from=1")
    message = str(raised.value)
    assert "http://agent/sample?from=1" in message and field in message and "line" in message


def test_a_placeholder_in_a_non_essential_header_attribute_leaves_the_document_usable(recorded_data):
    page = _replace_once(_sample_page(recorded_data, 1), b'bufferSize="131072"', b'bufferSize="String"')
    document = parse_streams(page, "http://agent")
    assert document.header.buffer_size is None and document.header.invalid == ("bufferSize='String'",)
    assert document.header.next_sequence == 10050 and len(document.observations) == 10049
    # cppagent's extension.xml sample carries XMLSpy placeholders: instanceId="String".
    devices = parse_devices(
        (recorded_data / "cppagent" / "test_package" / "resources" / "samples" / "extension.xml").read_bytes(), "file")
    assert devices.header.instance_id is None and "instanceId='String'" in devices.header.invalid
    assert [(i["component"], i["type"]) for i in devices.devices[0]["data_items"]] == [("Pump", "x:FLOW")]


def test_sequences_beyond_64_bits_are_kept_exactly(recorded_data):
    huge = 2**64 + 12345
    payload = _replace_once(_out_xml(recorded_data), b'sequence="367917330"', f'sequence="{huge}"'.encode())
    payload = _replace_once(payload, b'nextSequence="367946996"', f'nextSequence="{huge + 1}"'.encode())
    document = parse_streams(payload, "http://agent")
    assert document.observations[-1]["sequence"] == huge and document.observations[-1]["native_code"] == "3AA"
    assert document.header.next_sequence == huge + 1


def test_mtconnect_version_is_the_document_schema_version(recorded_data):
    # nist.xml comes from agent 1.4.0.10 (Header@version) writing Devices 1.3 documents.
    document = parse_devices((recorded_data / "cppagent" / "simulator-removed-2023" / "nist.xml").read_bytes(), "a")
    assert document.header.version == "1.4.0.10" and document.mtconnect_version == "1.3"
    bare = parse_devices((recorded_data / "cppagent" / "test_package" / "resources" / "samples" / "NoNamespace.xml")
                         .read_bytes(), "a")
    assert bare.mtconnect_version == bare.header.version == "1.1"


# ----------------------------------------------------------------------------- errors

# No recorded agent answered with the MTConnect 2.6 error entities (cppagent writes them from
# 2.6 on); this minimal document follows cppagent's Error entity: the element names the
# error, errorCode is an optional attribute, ErrorMessage/URI/Request/QueryParameter children.
ERROR_2_6 = b"""<?xml version="1.0" encoding="UTF-8"?>
<MTConnectError xmlns="urn:mtconnect.org:MTConnectError:2.6">
  <Header creationTime="2026-01-01T00:00:00Z" sender="agent" instanceId="1700000000" version="2.6.0.1" bufferSize="131072"/>
  <Errors>
    <OutOfRange>
      <ErrorMessage>'from' must be greater than 4871368</ErrorMessage>
      <URI>/sample?from=1</URI>
      <Request>sample</Request>
      <QueryParameter name="from"><Value>1</Value><Minimum>4871368</Minimum><Maximum>4999999</Maximum></QueryParameter>
    </OutOfRange>
    <InvalidURI errorCode="INVALID_URI"><ErrorMessage>no such path</ErrorMessage></InvalidURI>
    <InvalidXPath><ErrorMessage>bad path</ErrorMessage></InvalidXPath>
  </Errors>
</MTConnectError>"""


def test_schema_2_6_error_entities_give_the_same_codes_as_error_elements():
    for parse in (parse_streams, parse_devices, parse_assets):
        with pytest.raises(AgentError) as raised:
            parse(ERROR_2_6, "http://agent26")
        error = raised.value
        assert error.codes == {"OUT_OF_RANGE", "INVALID_URI", "INVALID_XPATH"}
        assert error.instance_id == 1700000000 and "http://agent26" in str(error)
    out_of_range = error.entries[0]
    assert out_of_range.element == "OutOfRange" and out_of_range.message == "'from' must be greater than 4871368"
    assert out_of_range.uri == "/sample?from=1" and out_of_range.request == "sample"
    assert out_of_range.query_parameters == {"from": {"Value": "1", "Minimum": "4871368", "Maximum": "4999999"}}


def test_recorded_error_element_keeps_its_code_message_and_instance(recorded_data):
    payload = (recorded_data / "cppagent" / "extracted" / "IntelAgent-2.0.0.1-MTConnectError-OUT_OF_RANGE.xml").read_bytes()
    with pytest.raises(AgentError) as raised:
        parse_devices(payload, "http://intel")
    assert raised.value.errors == [("OUT_OF_RANGE", "'at' must be greater than 4871368")]
    assert raised.value.instance_id == 1649989201 and raised.value.entries[0].element == "Error"


def test_oldest_error_style_without_errors_container():
    # MTConnect 1.0.1 and earlier: one <Error> straight under the root, no namespace
    # (minimal; no recorded document of that age).
    payload = (b'<MTConnectError><Header instanceId="7"/>'
               b'<Error errorCode="NO_DEVICE">Could not find the device</Error></MTConnectError>')
    with pytest.raises(AgentError) as raised:
        parse_streams(payload, "http://old")
    assert raised.value.codes == {"NO_DEVICE"} and raised.value.instance_id == 7


# ----------------------------------------------------------------------------- values

# No recorded Streams document has DataSet or Table observations (their device models do,
# cppagent's tests build the streams in code); these are the smallest documents showing the
# value shapes the desktop relies on.
DATA_SET_STREAMS = b"""<MTConnectStreams xmlns="urn:mtconnect.org:MTConnectStreams:2.2">
<Header instanceId="1" firstSequence="1" lastSequence="5" nextSequence="6"/>
<Streams><DeviceStream name="d" uuid="u"><ComponentStream component="Path" componentId="p">
<Events>
 <VariableDataSet dataItemId="v" sequence="4" timestamp="2024-01-01T00:00:01Z" count="3" resetTriggered="DAY">
  <Entry key="a">1</Entry><Entry key="b" removed="true"/><Entry key="c">text</Entry></VariableDataSet>
 <WorkOffsetTable dataItemId="w" sequence="2" timestamp="2024-01-01T00:00:02Z" count="1">
  <Entry key="G54"><Cell key="X">1.5</Cell><Cell key="Y">-2</Cell></Entry><Entry key="G55" removed="true"/></WorkOffsetTable>
 <VariableDataSet dataItemId="v" sequence="1" timestamp="2024-01-01T00:00:00Z">UNAVAILABLE</VariableDataSet>
 <VariableDataSet dataItemId="v" sequence="5" timestamp="2024-01-01T00:00:03Z" count="0"/>
</Events>
<Condition>
 <Warning dataItemId="c" sequence="3" timestamp="2024-01-01T00:00:00.5Z" type="TEMPERATURE"
   nativeCode="T1" nativeSeverity="2" qualifier="HIGH" conditionId="T1">hot</Warning>
</Condition>
</ComponentStream></DeviceStream></Streams></MTConnectStreams>"""


def test_data_set_and_table_values():
    observations = parse_streams(DATA_SET_STREAMS, "a").observations
    assert [o["sequence"] for o in observations] == [1, 2, 3, 4, 5]
    by_sequence = {o["sequence"]: o for o in observations}
    assert by_sequence[1]["value"] == wire.UNAVAILABLE
    assert by_sequence[2]["value"] == {"G54": {"X": "1.5", "Y": "-2"}, "G55": None}
    assert by_sequence[2]["type"] == "WORK_OFFSET_TABLE"
    assert by_sequence[4]["value"] == {"a": "1", "b": None, "c": "text"}
    assert by_sequence[4]["reset_triggered"] == "DAY"
    assert by_sequence[5]["value"] == {}
    warning = by_sequence[3]
    assert {f: warning[f] for f in wire.CONDITION_FIELDS} == {
        "level": "WARNING", "native_code": "T1", "native_severity": "2", "qualifier": "HIGH", "condition_id": "T1"}
    assert warning["timestamp"] == "2024-01-01T00:00:00.5Z" and warning["type"] == "TEMPERATURE"
    # `count` has no field of its own: it is kept with the other attributes the agent sent.
    assert by_sequence[4]["attributes"] == {"count": "3"} and by_sequence[5]["attributes"] == {"count": "0"}
    for observation in observations:
        assert set(wire.OBSERVATION_FIELDS) <= set(observation)
        assert wire.decode(wire.encode(observation)) == observation


def test_time_series_with_a_bad_sample_count_keeps_its_values(recorded_data):
    payload = (recorded_data / "hivemq-edge" / "streams" / "streams-1-5.xml").read_bytes()
    payload = _replace_once(payload, b'sampleCount="10" sampleRate="100"', b'sampleCount="ten" sampleRate="NaN"')
    series = [o for o in parse_streams(payload, "a").observations if o["type"] == "VOLT_AMPERE_TIME_SERIES"]
    assert len(series) == 4 and len(series[0]["value"]) == 10
    assert "sample_count" not in series[0] and "sample_rate" not in series[0]
    assert series[0]["attributes"] == {"sampleCount": "ten", "sampleRate": "NaN"}
    assert series[1]["sample_count"] == 10 and series[1]["sample_rate"] == 100.0


# ----------------------------------------------------------------------------- assets

def test_assets_document_gives_each_asset(recorded_data):
    document = parse_assets((recorded_data / "cppagent" / "test_package" / "resources" / "asset3.xml").read_bytes(),
                            "http://agent")
    assert document.header.asset_count == 2 and document.mtconnect_version == "1.2"
    (asset,) = document.assets
    assert asset["asset_id"] == "KSSP300R4SD43L240.1" and asset["type"] == "CuttingTool"
    assert asset["removed"] is True and asset["timestamp"] == "2011-05-11T13:55:22"
    assert etree.fromstring(asset["xml"]).get("assetId") == asset["asset_id"]


def test_bare_asset_body_is_not_an_agent_response(recorded_data):
    payload = (recorded_data / "cppagent" / "test_package" / "resources" / "cutting_tool_archetype.xml").read_bytes()
    with pytest.raises(DocumentError, match="bare asset body"):
        parse_assets(payload, "http://agent")
    asset = parse_asset_body(payload, "adapter")
    assert asset == {
        "asset_id": "KSSP300R4SD43L240", "type": "CuttingToolArchetype",
        "timestamp": "2001-12-17T09:30:47Z", "device_uuid": "7800f530-34a9", "removed": False,
        "xml": asset["xml"],
    }
    with pytest.raises(DocumentError, match="not a bare asset body"):
        parse_asset_body((recorded_data / "hivemq-edge" / "assets" / "assets-1-2.xml").read_bytes(), "adapter")
