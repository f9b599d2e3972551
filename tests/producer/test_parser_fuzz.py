"""Property-based tests of the MTConnect parsers (hypothesis; bounded to a few seconds).

1. Real recorded documents, mutated and truncated, and random XML-ish bytes: every parser
   either returns or raises `DocumentError` / `AgentError`, never anything else; what it
   returns is well-formed wire data.
2. Generated observations (64-bit sequences, timestamps with 0–7 fractional digits with
   and without `Z`, every category and value shape) rendered into a Streams document parse
   back to the same values, in sequence order.
"""
from __future__ import annotations

import functools
import gzip
import re
from xml.sax.saxutils import quoteattr

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CANONICAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")

# Small real documents of every kind (a whole NIST page is too big to parse 200 times in a
# few seconds; it is used cut to its first 64 KiB).
_SOURCES = {
    "nist-current": ("cppagent/simulator-removed-2023/out.xml", None),
    "nist-page": ("nist-smstestbed/sample-pages/qdr_input009.xml.gz", 65536),
    "spec-streams": ("hivemq-edge/streams/streams-1-5.xml", None),
    "agent-streams": ("hivemq-edge/streams/streams-1-3.xml", None),
    "probe": ("cppagent/test_package/resources/samples/two_devices.xml", None),
    "probe-no-namespace": ("cppagent/test_package/resources/samples/NoNamespace.xml", None),
    "error": ("cppagent/extracted/IntelAgent-2.0.0.1-MTConnectError-OUT_OF_RANGE.xml", None),
    "assets": ("cppagent/test_package/resources/asset3.xml", None),
    "asset-body": ("cppagent/test_package/resources/cutting_tool_archetype.xml", None),
}


@functools.lru_cache(maxsize=None)
def _source(name: str) -> bytes:
    relative, limit = _SOURCES[name]
    data = (RECORDED_DATA / relative).read_bytes()
    if relative.endswith(".gz"):
        data = gzip.decompress(data)
    return data[:limit] if limit else data


_ATTRIBUTE = re.compile(rb'(sequence|timestamp|nextSequence|firstSequence|lastSequence|instanceId|bufferSize|'
                        rb'sampleCount|sampleRate|count|nativeCode|dataItemId|assetId|removed|errorCode|'
                        rb'category|type|id|uuid|name)="([^"]*)"')
_INTERESTING = [
    b"<", b">", b"&", b"&amp;", b"&lol;", b"&#0;", b"&#x110000;", b'"', b"'", b"/>", b"</", b"<![CDATA[x]]>",
    b"<!--c-->", b"<?pi x?>", b"<!DOCTYPE d>", b"\x00", b"\xff\xfe", b"\xc3\x28", b"x:", b"xmlns:x='u'",
    b"<Entry key='k'>v</Entry>", b"<Cell key='c'>1</Cell>", b" sequence='18446744073709551616'", b"UNAVAILABLE",
    b"<Fault sequence='7' timestamp='2020-01-01T00:00:00' dataItemId='d'/>", b"1 2 3", b"NaN", b"-1", b"\n",
]
_ODD_VALUES = st.one_of(
    st.sampled_from(["", " ", "-1", "1e3", "NaN", "inf", "0x10", "1_000", "١٢", "18446744073709551616",
                     "9" * 40, "UNAVAILABLE", "2016-05-13T17:35:52", "2016-05-13T17:35:52.1234567+13:45",
                     "2016-02-30T25:61:61.0Z", "true", "TRUE", "1 2 3"]),
    st.text(max_size=20),
)


_TEXT = re.compile(rb">([^<>]{1,80})</")


@st.composite
def mutated_documents(draw) -> bytes:
    """A real document with well-formed edits (odd attribute values and element texts) or,
    one time in three, byte-level damage (inserted markup, flipped bytes, cuts)."""
    data = bytearray(_source(draw(st.sampled_from(sorted(_SOURCES)))))
    if draw(st.integers(0, 2)) < 2:
        for _ in range(draw(st.integers(1, 6))):
            pattern, group = draw(st.sampled_from([(_ATTRIBUTE, 2), (_ATTRIBUTE, 2), (_TEXT, 1)]))
            matches = list(pattern.finditer(bytes(data)))
            if not matches:
                continue
            match = matches[draw(st.integers(0, len(matches) - 1))]
            value = draw(_ODD_VALUES)
            if group == 2:
                rendered = quoteattr(value)[1:-1]
            else:
                rendered = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            data[match.start(group):match.end(group)] = rendered.encode("utf-8", "surrogatepass")
        return bytes(data)
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["insert", "flip", "delete", "truncate"]))
        position = draw(st.integers(0, len(data)))
        if operation == "insert":
            data[position:position] = draw(st.sampled_from(_INTERESTING) | st.binary(max_size=8))
        elif operation == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif operation == "delete":
            del data[position:position + draw(st.integers(1, 64))]
        elif operation == "truncate":
            del data[position:]
    return bytes(data)


_TOKENS = [
    b'<?xml version="1.0"?>', b"<MTConnectStreams>", b"</MTConnectStreams>", b'<MTConnectStreams xmlns="urn:x">',
    b'<Header instanceId="1" firstSequence="1" lastSequence="3" nextSequence="4"/>', b"<Streams>", b"</Streams>",
    b'<DeviceStream name="d" uuid="u">', b"</DeviceStream>", b'<ComponentStream component="c">',
    b"</ComponentStream>", b"<Samples>", b"</Samples>", b"<Events>", b"</Events>", b"<Condition>", b"</Condition>",
    b'<Position dataItemId="p" sequence="', b'<x:Motion sequence="', b'<Warning qualifier="HIGH" sequence="',
    b'<VariableDataSet count="1" sequence="', b'<TimeSeries sampleCount="2" sequence="', b"1", b"2", b"99999999999",
    b'" timestamp="2020-01-01T00:00:00.1234567Z">', b'" timestamp="bad">', b'">', b"/>", b"1.5 2.5 3.5",
    b"UNAVAILABLE", b'<Entry key="a">', b"</Entry>", b'<Cell key="b">', b"</Cell>", b"</Position>", b"</Warning>",
    b"<MTConnectError>", b"</MTConnectError>", b"<Errors>", b"</Errors>", b'<Error errorCode="TOO_MANY">',
    b"</Error>", b"<OutOfRange><ErrorMessage>m</ErrorMessage></OutOfRange>", b"<MTConnectDevices>",
    b"</MTConnectDevices>", b"<Devices>", b"</Devices>", b'<Device id="d" uuid="u">', b"</Device>",
    b'<DataItem id="i" category="SAMPLE" type="POSITION"/>', b"<MTConnectAssets>", b"</MTConnectAssets>",
    b"<Assets>", b"</Assets>", b'<CuttingTool assetId="t" removed="true"/>', b"&amp;", b"&#65;", b"&e;",
    b"<!DOCTYPE r [<!ENTITY e 'x'>]>", b"<![CDATA[<]]>", b" ", b"\n", b"\x00", b"\xe2\x82",
]


def _xmlish() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.lists(st.sampled_from(_TOKENS) | st.binary(max_size=4), max_size=60).map(b"".join),
        st.binary(max_size=200),
    )


_PARSERS = {
    "streams": lambda payload: parse_streams(payload, "http://fuzz"),
    "devices": lambda payload: parse_devices(payload, "http://fuzz"),
    "assets": lambda payload: parse_assets(payload, "http://fuzz"),
    "asset-body": lambda payload: parse_asset_body(payload, "fuzz"),
    "count": count_sequenced_elements,
}


def _check_every_parser(payload: bytes) -> None:
    for name, parse in _PARSERS.items():
        try:
            result = parse(payload)
        except (DocumentError, AgentError) as exc:
            assert "fuzz" in str(exc) or name == "count" or isinstance(exc, AgentError)
            continue
        if name == "streams":
            _check_streams(result)
        elif name == "devices":
            for device in result.devices:
                wire.encode(device)
        elif name == "assets":
            for asset in result.assets:
                assert isinstance(asset["removed"], bool)


def _check_streams(document) -> None:
    sequences = [o["sequence"] for o in document.observations]
    assert sequences == sorted(sequences)
    assert isinstance(document.header.next_sequence, int) and isinstance(document.header.instance_id, int)
    for observation in document.observations:
        assert set(wire.OBSERVATION_FIELDS) <= set(observation)
        assert isinstance(observation["sequence"], int) and observation["sequence"] >= 0
        assert observation["category"] in wire.CATEGORIES
        if observation["category"] == "CONDITION":
            assert set(wire.CONDITION_FIELDS) <= set(observation)
        # Whatever came in, what goes to Kafka is JSON that decodes to the same thing.
        assert wire.decode(wire.encode(observation)) == observation


@FUZZ
@given(mutated_documents())
def test_mutated_real_documents_parse_or_raise_document_errors(payload):
    _check_every_parser(payload)


@FUZZ
@given(_xmlish())
def test_random_xmlish_bytes_parse_or_raise_document_errors(payload):
    _check_every_parser(payload)


# ----------------------------------------------------------------------------- round trip

STREAMS_NS = "urn:mtconnect.org:MTConnectStreams:{}"
NIST_NS = "urn:nist.gov:NistStreams:1.3"
# element (namespace None = the document's own) -> the wire `type` it must come out as.
SAMPLE_ELEMENTS = [("Position", None, "POSITION"), ("RotaryVelocity", None, "ROTARY_VELOCITY"),
                   ("PathPosition", None, "PATH_POSITION"), ("Load", None, "LOAD")]
EVENT_ELEMENTS = [("Execution", None, "EXECUTION"), ("Program", None, "PROGRAM"),
                  ("Motion", NIST_NS, "MOTION"), ("ProgramComment", NIST_NS, "PROGRAM_COMMENT")]
LEVELS = ["Normal", "Warning", "Fault", "Unavailable"]

_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
_sequences = st.one_of(st.integers(1, 2**32), st.integers(2**32 + 1, 2**64 - 1))


@st.composite
def timestamps(draw) -> tuple[str, str]:
    """(as an agent writes it, as the wire must carry it - the same string): 0–7 fractional digits, `Z` or not."""
    moment = draw(st.datetimes(min_value=__import__("datetime").datetime(1970, 1, 1),
                               max_value=__import__("datetime").datetime(2199, 12, 31)))
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.text("0123456789", min_size=0, max_size=7))
    zone = draw(st.sampled_from(["", "Z"]))
    raw = f"{base}.{digits}{zone}" if digits else f"{base}{zone}"
    return raw, raw


@st.composite
def observations(draw) -> dict:
    category = draw(st.sampled_from(["SAMPLE", "EVENT", "CONDITION"]))
    raw_time, wire_time = draw(timestamps())
    spec = {"category": category, "raw_time": raw_time, "timestamp": wire_time, "attributes": {},
            "device": draw(st.integers(0, 2)), "component": draw(st.integers(0, 2))}
    if category == "SAMPLE":
        spec["element"], spec["ns"], spec["type"] = draw(st.sampled_from(SAMPLE_ELEMENTS))
        shape = draw(st.sampled_from(["number", "three-space", "unavailable", "time-series"]))
        if shape == "number":
            number = draw(_finite)
            spec["text"], spec["value"] = repr(number), number
        elif shape == "three-space":
            numbers = draw(st.lists(_finite, min_size=3, max_size=3))
            spec["text"], spec["value"] = " ".join(map(repr, numbers)), numbers
        elif shape == "unavailable":
            spec["text"], spec["value"] = "UNAVAILABLE", wire.UNAVAILABLE
        else:
            numbers = draw(st.lists(_finite, min_size=1, max_size=12))
            rate = draw(st.floats(min_value=0.001, max_value=1e6))
            spec["element"], spec["type"] = "VoltAmpereTimeSeries", "VOLT_AMPERE_TIME_SERIES"
            spec["attributes"] = {"sampleCount": str(len(numbers)), "sampleRate": repr(rate)}
            spec["text"], spec["value"] = " ".join(map(repr, numbers)), numbers
            spec["extra"] = {"sample_count": len(numbers), "sample_rate": rate}
    elif category == "EVENT":
        spec["element"], spec["ns"], spec["type"] = draw(st.sampled_from(EVENT_ELEMENTS))
        text = draw(st.one_of(_xml_text, st.just("UNAVAILABLE")))
        spec["text"], spec["value"] = text, text
    else:
        spec["element"] = draw(st.sampled_from(LEVELS))
        spec["ns"] = None
        spec["type"] = draw(st.sampled_from(["SYSTEM", "MOTION_PROGRAM", "TEMPERATURE"]))
        text = draw(st.one_of(st.none(), _xml_text))
        spec["text"], spec["value"] = text, text or None
        condition = {"level": spec["element"].upper(), "native_code": None, "native_severity": None,
                     "qualifier": None, "condition_id": None}
        for attribute, key in (("nativeCode", "native_code"), ("nativeSeverity", "native_severity"),
                               ("qualifier", "qualifier"), ("conditionId", "condition_id")):
            value = draw(st.one_of(st.none(), st.sampled_from(["791", "3AA", "HIGH", "LOW", "c-1"])))
            if value is not None:
                spec["attributes"][attribute] = value
                condition[key] = value
        spec["attributes"]["type"] = spec["type"]
        spec["extra"] = condition
    # Attributes without a field of their own, empty ones included, travel in `attributes`.
    own = draw(st.dictionaries(st.sampled_from(["statistic", "duration", "assetType", "compositionId"]),
                               st.sampled_from(["", "AVERAGE", "10.5", "CuttingTool"]), max_size=2))
    if own:
        spec["attributes"].update(own)
        spec.setdefault("extra", {})["attributes"] = own
    if category == "SAMPLE":
        spec.setdefault("extra", {})["text"] = spec["text"]
    return spec


def _render(specs: list[dict], sequences: list[int], version: str | None, instance_id: int) -> bytes:
    ns = STREAMS_NS.format(version) if version else None

    def q(name: str, namespace: str | None = ns) -> str:
        return f"{{{namespace}}}{name}" if namespace else name

    root = etree.Element(q("MTConnectStreams"), nsmap={None: ns, "x": NIST_NS} if ns else {"x": NIST_NS})
    etree.SubElement(root, q("Header"), {
        "creationTime": "2026-01-01T00:00:00Z", "sender": "fuzz", "instanceId": str(instance_id),
        "version": version or "1.1", "bufferSize": "131072", "firstSequence": str(min(sequences)),
        "lastSequence": str(max(sequences)), "nextSequence": str(max(sequences) + 1)})
    streams = etree.SubElement(root, q("Streams"))
    containers: dict[tuple, etree._Element] = {}
    components: dict[tuple, etree._Element] = {}
    devices: dict[int, etree._Element] = {}
    container_names = {"SAMPLE": "Samples", "EVENT": "Events", "CONDITION": "Condition"}
    for spec, sequence in zip(specs, sequences):
        device = devices.get(spec["device"])
        if device is None:
            device = devices[spec["device"]] = etree.SubElement(
                streams, q("DeviceStream"), {"name": f"dev{spec['device']}", "uuid": f"uuid-{spec['device']}"})
        key = (spec["device"], spec["component"])
        component = components.get(key)
        if component is None:
            component = components[key] = etree.SubElement(
                device, q("ComponentStream"), {"component": "Path", "componentId": f"c{spec['device']}{spec['component']}"})
        container = containers.get(key + (spec["category"],))
        if container is None:
            container = containers[key + (spec["category"],)] = etree.SubElement(
                component, q(container_names[spec["category"]]))
        element = etree.SubElement(container, q(spec["element"], spec["ns"] or ns), {
            "dataItemId": f"i{sequence % 7}", "timestamp": spec["raw_time"], "sequence": str(sequence),
            **spec["attributes"]})
        element.text = spec["text"]
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@FUZZ
@given(st.lists(observations(), min_size=1, max_size=25),
       st.lists(_sequences, min_size=25, max_size=25, unique=True),
       st.sampled_from([None, "1.1", "1.3", "2.0", "2.5"]),
       st.integers(1, 2**63))
def test_generated_observations_round_trip_in_sequence_order(specs, sequences, version, instance_id):
    sequences = sequences[:len(specs)]
    payload = _render(specs, sequences, version, instance_id)
    document = parse_streams(payload, "http://fuzz")
    assert document.header.instance_id == instance_id
    assert document.header.next_sequence == max(sequences) + 1
    expected = sorted(zip(sequences, specs), key=lambda pair: pair[0])
    assert [o["sequence"] for o in document.observations] == [sequence for sequence, _ in expected]
    for observation, (sequence, spec) in zip(document.observations, expected):
        assert observation["instance_id"] == instance_id
        assert observation["timestamp"] == spec["timestamp"]
        assert observation["category"] == spec["category"]
        assert observation["type"] == spec["type"]
        assert observation["value"] == spec["value"]
        assert observation["data_item_id"] == f"i{sequence % 7}"
        assert observation["device_uuid"] == f"uuid-{spec['device']}"
        for key, value in spec.get("extra", {}).items():
            assert observation[key] == value
        assert wire.decode(wire.encode(observation)) == observation
