"""lxml parsers for the MTConnect response documents: Devices, Streams, Assets and Error.

Elements are matched by local name, never by a hard-coded namespace, so every era parses
the same way: no namespace, `urn:mtconnect.com` 1.0, `urn:mtconnect.org` 1.1–2.x, and
vendor extension namespaces such as NIST's `x:` (declared or not).

The parser is hardened: no entity resolution, no DTD loading, no network, a size bound
(`MAX_DOCUMENT_BYTES`), and a document that carries a DOCTYPE at all is refused (no
MTConnect agent sends one; it is how entity bombs and XXE arrive). A bad document raises
`DocumentError` naming its source and, where lxml knows it, the line and column; an
`MTConnectError` document raises `AgentError` whatever the HTTP status was.

Observations come out as the wire dicts of `producer.wire` (`OBSERVATION_FIELDS`, plus
`CONDITION_FIELDS` for conditions and the optional `text`, `attributes`, `sample_count`,
`sample_rate`, `reset_triggered`), ordered by sequence, carrying exactly what the agent sent:
the timestamp string as it was, event and condition text byte for byte (whitespace included),
every attribute (empty ones included) and, for samples, the verbatim text next to the number. `parse_streams` is on the producer's hot path:
keep its inner loop lean (see `bench/producer.py`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from lxml import etree

from producer import wire

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


def _make_parser(recover: bool = False) -> etree.XMLParser:
    # A parser per document: lxml parsers must not be shared between threads, and their
    # error log would otherwise accumulate across documents.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=recover,
    )


class DocumentError(ValueError):
    """A response that is not a usable MTConnect document (malformed, too large, unexpected root)."""


@dataclass(frozen=True)
class ErrorEntry:
    """One error of an MTConnectError document, in either style.

    Before MTConnect 2.6: `<Error errorCode="OUT_OF_RANGE">text</Error>`. From 2.6 the
    element names the error (`<OutOfRange>`) and carries `<ErrorMessage>`, `<URI>`,
    `<Request>` and `<QueryParameter name="from"><Value/><Minimum/><Maximum/>...` children.
    `code` is the upper-snake code (`OUT_OF_RANGE`) for both.
    """

    code: str
    message: str
    element: str = "Error"
    uri: str | None = None
    request: str | None = None
    # Query parameter name -> {child local name (`Value`, `Minimum`, ...): text}.
    query_parameters: dict[str, dict[str, str]] = field(default_factory=dict)


class AgentError(RuntimeError):
    """The agent answered with an MTConnectError document."""

    def __init__(self, source: str, errors: list[tuple[str, str]], instance_id: int | None = None,
                 entries: list[ErrorEntry] | None = None):
        self.source = source
        self.errors = errors
        self.instance_id = instance_id
        self.entries = entries if entries is not None else [ErrorEntry(code, text) for code, text in errors]
        codes = ", ".join(f"{code}: {text}" for code, text in errors) or "no error entries"
        super().__init__(f"{source} answered MTConnectError ({codes})")

    @property
    def codes(self) -> set[str]:
        return {code for code, _ in self.errors}


def _local(tag: Any) -> str:
    if not isinstance(tag, str):
        return ""  # comments, processing instructions, unresolved entity references
    return tag.rpartition("}")[2].rpartition(":")[2]


def _where(element: etree._Element | None) -> str:
    line = getattr(element, "sourceline", None)
    return f" (line {line})" if line else ""


def parse_xml(payload: bytes, source: str) -> etree._Element:
    """The root element of `payload`, parsed by the hardened parser; `DocumentError` otherwise."""
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    if len(payload) > MAX_DOCUMENT_BYTES:
        raise DocumentError(
            f"{source}: document of {len(payload)} bytes exceeds the {MAX_DOCUMENT_BYTES} byte limit"
        )
    parser = _make_parser()
    try:
        root = etree.fromstring(payload, parser=parser)
    except etree.XMLSyntaxError as exc:
        # Real agents (NIST's VDS among them) have served `x:` elements without declaring
        # the prefix; such a document is re-read in recovery mode when that is its only flaw.
        if not _only_undeclared_prefixes(parser):
            line, column = exc.position if exc.position else (None, None)
            raise DocumentError(f"{source}: malformed XML at line {line}, column {column}: {exc.msg}") from None
        try:
            root = etree.fromstring(payload, parser=_make_parser(recover=True))
        except etree.LxmlError as again:
            raise DocumentError(f"{source}: malformed XML: {again}") from None
    except (etree.LxmlError, ValueError) as exc:  # e.g. a str payload with an encoding declaration
        raise DocumentError(f"{source}: not an XML document: {exc}") from None
    if root is None:
        raise DocumentError(f"{source}: empty document")
    if root.getroottree().docinfo.doctype:
        # Entities were not expanded (resolve_entities=False) and nothing was fetched, but a
        # DOCTYPE has no business in an agent response: refuse it outright.
        raise DocumentError(f"{source}: document has a DOCTYPE (DTDs and entities are not accepted)")
    return root


def _only_undeclared_prefixes(parser: etree.XMLParser) -> bool:
    entries = [entry for entry in parser.error_log if entry.level_name in ("ERROR", "FATAL")]
    return bool(entries) and all(entry.type_name == "NS_ERR_UNDEFINED_NAMESPACE" for entry in entries)


def root_kind(root: etree._Element) -> str:
    """`Devices`, `Streams`, `Assets` or `Error` (the MTConnect document kind), else the root's local name."""
    name = _local(root.tag)
    if name.startswith("MTConnect"):
        return name[len("MTConnect"):]
    return name


def _unsigned(text: str) -> int | None:
    """A non-negative decimal integer of any size (sequences are 64-bit), else None."""
    if text.isdigit() and text.isascii():
        return int(text)
    text = text.strip()
    if text.isdigit() and text.isascii():
        return int(text)
    return None


def _int_or_none(value: str | None, what: str = "attribute") -> int | None:
    """Kept for callers of the old helper: None for absent/empty, `DocumentError` if not an integer."""
    if value is None or value == "":
        return None
    number = _unsigned(value)
    if number is None:
        raise DocumentError(f"{what}={value!r} is not an integer")
    return number


# --------------------------------------------------------------------------- Header


@dataclass(frozen=True)
class Header:
    instance_id: int | None
    sender: str | None
    version: str | None
    creation_time: str | None
    buffer_size: int | None
    first_sequence: int | None = None
    last_sequence: int | None = None
    next_sequence: int | None = None
    asset_buffer_size: int | None = None
    asset_count: int | None = None
    device_model_change_time: str | None = None
    # Non-essential numeric attributes whose value was not an integer, e.g.
    # ("instanceId='String'",): they read as None instead of making the document unusable.
    invalid: tuple[str, ...] = ()


_NUMERIC_HEADER = (
    ("instance_id", "instanceId"),
    ("buffer_size", "bufferSize"),
    ("first_sequence", "firstSequence"),
    ("last_sequence", "lastSequence"),
    ("next_sequence", "nextSequence"),
    ("asset_buffer_size", "assetBufferSize"),
    ("asset_count", "assetCount"),
)
# A Streams document is only usable with these: they place its observations in the
# agent's sequence space and tell the reader where to go on.
_STREAMS_ESSENTIAL = frozenset(("instanceId", "firstSequence", "lastSequence", "nextSequence"))
_STREAMS_REQUIRED = ("instanceId", "nextSequence")


def _header(root: etree._Element, source: str = "document", essential: frozenset[str] = frozenset(),
            required: tuple[str, ...] = ()) -> Header:
    element = next((child for child in root if _local(child.tag) == "Header"), None)
    if element is None:
        if required:
            raise DocumentError(f"{source}: <{_local(root.tag)}> has no Header{_where(root)}")
        return Header(None, None, None, None, None)
    get = element.get
    numbers: dict[str, int | None] = {}
    invalid: list[str] = []
    for key, attribute in _NUMERIC_HEADER:
        text = get(attribute)
        if text is None or (text == "" and attribute not in essential):
            if attribute in required:
                raise DocumentError(f"{source}: Header {attribute} is missing{_where(element)}")
            numbers[key] = None
            continue
        value = _unsigned(text)
        if value is None:
            if attribute in essential:
                raise DocumentError(
                    f"{source}: Header {attribute}={text!r} is not a non-negative integer{_where(element)}"
                )
            invalid.append(f"{attribute}={text!r}")
        numbers[key] = value
    return Header(
        sender=get("sender"),
        version=get("version"),
        creation_time=get("creationTime"),
        device_model_change_time=get("deviceModelChangeTime"),
        invalid=tuple(invalid),
        **numbers,
    )


def _namespace_version(root: etree._Element) -> str | None:
    match = re.search(r":(\d+\.\d+)$", etree.QName(root).namespace or "")
    return match.group(1) if match else None


# --------------------------------------------------------------------------- Error

_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _type_from_element(name: str) -> str:
    """`RotaryVelocity` -> `ROTARY_VELOCITY`, `OutOfRange` -> `OUT_OF_RANGE`, `InvalidURI` -> `INVALID_URI`."""
    return _CAMEL_RE.sub("_", name).upper()


def _child_text(element: etree._Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return " ".join("".join(child.itertext()).split())
    return None


def _error_entry(element: etree._Element) -> ErrorEntry:
    name = _local(element.tag)
    if name == "Error":  # the pre-2.6 style
        return ErrorEntry(element.get("errorCode") or "UNKNOWN", " ".join("".join(element.itertext()).split()))
    parameters: dict[str, dict[str, str]] = {}
    for child in element:
        if _local(child.tag) == "QueryParameter":
            parameters[child.get("name", "")] = {
                _local(part.tag): (part.text or "").strip() for part in child if _local(part.tag)
            }
    message = _child_text(element, "ErrorMessage")
    if message is None:
        message = " ".join("".join(element.itertext()).split())
    return ErrorEntry(
        code=element.get("errorCode") or _type_from_element(name),
        message=message,
        element=name,
        uri=_child_text(element, "URI"),
        request=_child_text(element, "Request"),
        query_parameters=parameters,
    )


def raise_if_error(root: etree._Element, source: str) -> None:
    """Raise `AgentError` if `root` is an MTConnectError document (of any version)."""
    if root_kind(root) != "Error":
        return
    # Errors sit in <Errors> (or, in 1.0.1 and earlier, a single <Error> straight under the
    # root). Before 2.6 each is <Error errorCode="...">text</Error>; from 2.6 the element
    # itself names the code, e.g. <OutOfRange><ErrorMessage>...</ErrorMessage></OutOfRange>.
    elements = [child for child in root if _local(child.tag) == "Error"]
    for container in root:
        if _local(container.tag) == "Errors":
            elements.extend(child for child in container if _local(child.tag))
    entries = [_error_entry(element) for element in elements]
    raise AgentError(source, [(entry.code, entry.message) for entry in entries],
                     _header(root, source).instance_id, entries)


# --------------------------------------------------------------------------- Devices


@dataclass(frozen=True)
class DataItemInfo:
    """The static facts of one data item that every observation of it carries."""

    id: str
    name: str | None
    category: str
    type: str
    sub_type: str | None
    units: str | None
    component: str
    component_id: str | None
    device_uuid: str
    device_name: str
    representation: str | None = None


@dataclass
class DevicesDocument:
    header: Header
    devices: list[dict[str, Any]]
    data_items: dict[str, DataItemInfo] = field(default_factory=dict)
    mtconnect_version: str | None = None


def _children(element: etree._Element, *names: str) -> list[etree._Element]:
    return [child for child in element if _local(child.tag) in names]


def parse_devices(payload: bytes, agent: str, source: str | None = None) -> DevicesDocument:
    """Parse a probe response: one dict per `Device` (and 2.x `Agent`) and a DataItem index by id."""
    source = source or f"{agent}/probe"
    root = parse_xml(payload, source)
    raise_if_error(root, source)
    if root_kind(root) != "Devices":
        raise DocumentError(f"{source}: expected MTConnectDevices, got <{_local(root.tag)}>")
    header = _header(root, source)
    # The schema version of the document (its namespace, e.g. 1.3); Header@version is the
    # agent's own version (1.4.0.10) and only stands in when the document has no namespace.
    version = _namespace_version(root) or header.version
    devices: list[dict[str, Any]] = []
    index: dict[str, DataItemInfo] = {}
    for container in _children(root, "Devices"):
        for device in _children(container, "Device", "Agent"):
            devices.append(_device(device, agent, header, version, index))
    return DevicesDocument(header=header, devices=devices, data_items=index, mtconnect_version=version)


def _device(device: etree._Element, agent: str, header: Header, version: str | None,
            index: dict[str, DataItemInfo]) -> dict[str, Any]:
    device_name = device.get("name") or device.get("id") or ""
    device_uuid = device.get("uuid") or device_name
    description = next((c for c in device if _local(c.tag) == "Description"), None)
    items = []
    for item in device.iter("{*}DataItem"):
        # DataItem -> DataItems -> the owning component (or the Device itself).
        parent = item.getparent()
        component_element = parent.getparent() if parent is not None else None
        component = _local(component_element.tag) if component_element is not None else "Device"
        info = DataItemInfo(
            id=item.get("id", ""),
            name=item.get("name"),
            category=(item.get("category") or "").upper(),
            type=item.get("type", ""),
            sub_type=item.get("subType"),
            units=item.get("units"),
            component=component,
            component_id=component_element.get("id") if component_element is not None else None,
            device_uuid=device_uuid,
            device_name=device_name,
            representation=item.get("representation"),
        )
        index[info.id] = info
        items.append({
            "id": info.id, "name": info.name, "category": info.category, "type": info.type,
            "sub_type": info.sub_type, "units": info.units, "component": info.component,
            "component_id": info.component_id,
            "component_name": component_element.get("name") if component_element is not None else None,
            "representation": info.representation,
        })
    return {
        "agent": agent,
        "instance_id": header.instance_id,
        "device_uuid": device_uuid,
        "device_name": device_name,
        "device_id": device.get("id"),
        "manufacturer": description.get("manufacturer") if description is not None else None,
        "model": description.get("model") if description is not None else None,
        "serial_number": description.get("serialNumber") if description is not None else None,
        "description": (description.text or "").strip() if description is not None else None,
        "mtconnect_version": version,
        "data_items": items,
        "device_xml": etree.tostring(device, encoding="unicode", with_tail=False),
    }


# --------------------------------------------------------------------------- Streams

_CONTAINER_CATEGORY = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}
_SET_REPRESENTATIONS = frozenset(("DATA_SET", "TABLE"))
_TIME_SERIES_REPRESENTATIONS = frozenset(("TIME_SERIES",))

# Observation element tag -> (local name, TYPE, LEVEL, is a DataSet/Table, is a TimeSeries).
# Tags come from the schema, so the cache stays small; the bound only guards against a
# hostile agent inventing names.
_TAG_CACHE: dict[Any, tuple[str, str, str, bool, bool]] = {}
_TAG_CACHE_LIMIT = 8192


def _tag_info(tag: Any) -> tuple[str, str, str, bool, bool]:
    info = _TAG_CACHE.get(tag)
    if info is None:
        name = _local(tag)
        info = (name, _type_from_element(name), name.upper(),
                name.endswith(("DataSet", "Table")), name.endswith("TimeSeries"))
        if len(_TAG_CACHE) < _TAG_CACHE_LIMIT:
            _TAG_CACHE[tag] = info
    return info


@dataclass
class StreamsDocument:
    header: Header
    observations: list[dict[str, Any]]

    @property
    def is_heartbeat(self) -> bool:
        return not self.observations


def _entries(element: etree._Element) -> dict[str, Any] | None:
    """DataSet and Table values: {key: value}; a table's cells nest as {key: {cell key: value}}.

    An entry with `removed="true"` is None (the key was deleted).
    """
    values: dict[str, Any] = {}
    found = False
    for entry in element:
        if _local(entry.tag) != "Entry":
            continue
        found = True
        key = entry.get("key", "")
        if entry.get("removed", "").lower() == "true":
            values[key] = None
            continue
        cells = [c for c in entry if _local(c.tag) == "Cell"]
        if cells:
            values[key] = {c.get("key", ""): c.text or "" for c in cells}
        else:
            values[key] = entry.text or ""
    return values if found else None


def _sample_value(text: str | None) -> Any:
    """`wire.sample_value`, with a fast path for the common single finite number."""
    if text is None:
        return ""
    try:
        number = float(text)  # float() ignores surrounding whitespace and refuses inner spaces
    except ValueError:
        return wire.UNAVAILABLE if text == wire.UNAVAILABLE else wire.sample_value(text)
    return number if math.isfinite(number) else text


def _time_series(observation: dict[str, Any], sample_count: str | None, sample_rate: str | None) -> None:
    value = observation["value"]
    if isinstance(value, float):
        observation["value"] = [value]
    if sample_count is not None:
        count = _unsigned(sample_count)
        if count is not None:
            observation["sample_count"] = count
        else:  # not a count: kept as the agent sent it
            observation.setdefault("attributes", {})["sampleCount"] = sample_count
    if sample_rate is not None:
        try:
            rate = float(sample_rate)
        except ValueError:
            rate = math.nan
        if math.isfinite(rate):
            observation["sample_rate"] = rate
        else:
            observation.setdefault("attributes", {})["sampleRate"] = sample_rate


def _bad_sequence(source: str, element: etree._Element, name: str, text: str) -> DocumentError:
    return DocumentError(f"{source}: {name} sequence={text!r} is not a non-negative integer{_where(element)}")


_BY_SEQUENCE = itemgetter("sequence")

# Attributes of an observation element that map to fields of the observation; any other
# attribute is kept as it was sent in `attributes`.
_MAPPED_ATTRIBUTES = frozenset(("dataItemId", "timestamp", "sequence", "name", "subType"))
_MAPPED_SAMPLE_ATTRIBUTES = _MAPPED_ATTRIBUTES | {"sampleCount", "sampleRate", "resetTriggered"}
_MAPPED_CONDITION_ATTRIBUTES = _MAPPED_ATTRIBUTES | {"type", "nativeCode", "nativeSeverity", "qualifier",
                                                    "conditionId"}


def _extra_attributes(element: etree._Element, is_condition: bool) -> dict[str, str]:
    """Every attribute the agent sent that no field of the observation carries, empty ones included
    (`assetType=""` on AssetChanged, `statistic`, `duration`, `compositionId`, ...)."""
    mapped = _MAPPED_CONDITION_ATTRIBUTES if is_condition else _MAPPED_SAMPLE_ATTRIBUTES
    return {name: value for name, value in element.items() if name not in mapped}


def parse_streams(payload: bytes, agent: str, data_items: dict[str, DataItemInfo] | None = None,
                  source: str | None = None) -> StreamsDocument:
    """Parse a current/sample response (or one streamed part) into wire observations.

    Every element under `Samples`, `Events` or `Condition` that carries a `sequence` is one
    observation (elements of any namespace, e.g. NIST's `x:Motion`). `data_items` (from
    `parse_devices`) supplies types, names and units the Streams document leaves out.
    """
    source = source or f"{agent}/sample"
    root = parse_xml(payload, source)
    raise_if_error(root, source)
    if root_kind(root) != "Streams":
        raise DocumentError(f"{source}: expected MTConnectStreams, got <{_local(root.tag)}>")
    header = _header(root, source, _STREAMS_ESSENTIAL, _STREAMS_REQUIRED)
    data_items = data_items or {}
    lookup = data_items.get
    tag_cache = _TAG_CACHE
    observations: list[dict[str, Any]] = []
    append = observations.append
    instance_id = header.instance_id
    for streams in root:
        if _local(streams.tag) != "Streams":
            continue
        for device_stream in streams:
            if _local(device_stream.tag) != "DeviceStream":
                continue
            device_name = device_stream.get("name")
            device_uuid = device_stream.get("uuid") or device_name
            for component_stream in device_stream:
                if _local(component_stream.tag) != "ComponentStream":
                    continue
                component = component_stream.get("component")
                component_id = component_stream.get("componentId")
                for container in component_stream:
                    category = _CONTAINER_CATEGORY.get(_local(container.tag))
                    if category is None:
                        continue
                    is_condition = category == "CONDITION"
                    for element in container:
                        get = element.get
                        sequence_text = get("sequence")
                        if sequence_text is None:
                            continue  # not an observation (e.g. an extension element without one)
                        tag = element.tag
                        tag_info = tag_cache.get(tag) or _tag_info(tag)
                        if sequence_text.isdigit() and sequence_text.isascii():
                            sequence = int(sequence_text)
                        else:
                            sequence = _unsigned(sequence_text)
                            if sequence is None:
                                raise _bad_sequence(source, element, tag_info[0], sequence_text)
                        data_item_id = get("dataItemId")
                        info = lookup(data_item_id)
                        text = element.text
                        name = get("name")
                        sub_type = get("subType")
                        timestamp = get("timestamp")
                        # How many of the element's attributes map to the fields below.
                        mapped = (1 + (data_item_id is not None) + (timestamp is not None)
                                  + (name is not None) + (sub_type is not None))
                        if info is None:
                            units = None
                            item_type = get("type") or tag_info[1] if is_condition else tag_info[1]
                        else:
                            if name is None:
                                name = info.name
                            if sub_type is None:
                                sub_type = info.sub_type
                            units = info.units
                            item_type = get("type") or info.type if is_condition else info.type
                        observation = {
                            "agent": agent,
                            "instance_id": instance_id,
                            "sequence": sequence,
                            # The agent's own words: never reformatted (digits, zone and all).
                            "timestamp": timestamp,
                            "device_uuid": device_uuid,
                            "device_name": device_name,
                            "component": component,
                            "component_id": component_id,
                            "data_item_id": data_item_id,
                            "name": name,
                            "category": category,
                            "type": item_type,
                            "sub_type": sub_type,
                            "units": units,
                        }
                        # Attributes beyond the ones every observation maps to a field.
                        if len(element.attrib) > mapped:
                            extra = _extra_attributes(element, is_condition)
                            if extra:
                                observation["attributes"] = extra
                        if is_condition:
                            observation["value"] = text
                            observation["level"] = tag_info[2]
                            observation["native_code"] = get("nativeCode")
                            observation["native_severity"] = get("nativeSeverity")
                            observation["qualifier"] = get("qualifier")
                            observation["condition_id"] = get("conditionId")
                            append(observation)
                            continue
                        representation = info.representation if info is not None else None
                        if tag_info[3] or len(element) or representation in _SET_REPRESENTATIONS:
                            entries = _entries(element)
                            if entries is not None:
                                observation["value"] = entries
                            elif tag_info[3] or representation in _SET_REPRESENTATIONS \
                                    or get("count") is not None:
                                stripped = text.strip() if text else ""
                                observation["value"] = wire.UNAVAILABLE if stripped == wire.UNAVAILABLE else {}
                            elif category == "SAMPLE":
                                observation["value"] = _sample_value(text)
                            else:
                                observation["value"] = text if text is not None else ""
                        elif category == "SAMPLE":
                            observation["value"] = _sample_value(text)
                            if tag_info[4] or representation in _TIME_SERIES_REPRESENTATIONS:
                                _time_series(observation, get("sampleCount"), get("sampleRate"))
                            else:
                                sample_count = get("sampleCount")
                                if sample_count is not None:
                                    _time_series(observation, sample_count, get("sampleRate"))
                        else:
                            observation["value"] = text if text is not None else ""
                        if category == "SAMPLE":
                            observation["text"] = text if text is not None else ""
                        reset = get("resetTriggered")
                        if reset is not None:
                            observation["reset_triggered"] = reset
                        append(observation)
    observations.sort(key=_BY_SEQUENCE)
    return StreamsDocument(header=header, observations=observations)


def count_sequenced_elements(payload: bytes) -> int:
    """How many elements carry a `sequence` attribute: the observation count a parse must match."""
    root = parse_xml(payload, "count")
    return sum(1 for element in root.iter() if isinstance(element.tag, str) and element.get("sequence") is not None)


# --------------------------------------------------------------------------- Assets


@dataclass
class AssetsDocument:
    header: Header
    assets: list[dict[str, Any]]
    mtconnect_version: str | None = None


def _asset(element: etree._Element) -> dict[str, Any]:
    return {
        "asset_id": element.get("assetId"),
        "type": _local(element.tag),
        "timestamp": element.get("timestamp"),
        "device_uuid": element.get("deviceUuid"),
        "removed": (element.get("removed") or "").strip().lower() == "true",
        "xml": etree.tostring(element, encoding="unicode", with_tail=False),
    }


def parse_assets(payload: bytes, agent: str, source: str | None = None) -> AssetsDocument:
    """Parse an `assets` / `asset/<id>` response: one dict per child element of `<Assets>`.

    Each asset dict has `asset_id`, `type` (the element's local name, e.g. `CuttingTool`),
    `timestamp` (as the agent sent it), `device_uuid`, `removed` (bool) and `xml`
    (the asset element as the agent sent it). Only MTConnectAssets documents are agent
    responses; a bare asset body (a root such as `<CuttingTool assetId=...>`, what an
    adapter sends with `@ASSET@` or an HTTP PUT) is refused here: use `parse_asset_body`.
    """
    source = source or f"{agent}/assets"
    root = parse_xml(payload, source)
    raise_if_error(root, source)
    kind = root_kind(root)
    if kind != "Assets":
        if root.get("assetId") is not None:
            raise DocumentError(
                f"{source}: <{kind}> is a bare asset body (what an adapter sends), not an "
                f"MTConnectAssets response; parse it with parse_asset_body"
            )
        raise DocumentError(f"{source}: expected MTConnectAssets, got <{kind}>")
    header = _header(root, source)
    assets = [
        _asset(element)
        for container in _children(root, "Assets")
        for element in container
        if _local(element.tag)
    ]
    return AssetsDocument(header=header, assets=assets, mtconnect_version=_namespace_version(root) or header.version)


def parse_asset_body(payload: bytes, source: str) -> dict[str, Any]:
    """Parse one bare asset body (an adapter's `@ASSET@` payload, e.g. `<CuttingTool assetId=...>`).

    Returns the same dict as an entry of `parse_assets(...).assets`. The root must carry an
    `assetId` and must not be an MTConnect response document.
    """
    root = parse_xml(payload, source)
    raise_if_error(root, source)
    name = _local(root.tag)
    if name.startswith("MTConnect"):
        raise DocumentError(f"{source}: <{name}> is a response document, not a bare asset body")
    if not root.get("assetId"):
        raise DocumentError(f"{source}: <{name}> has no assetId; not an asset{_where(root)}")
    return _asset(root)
