"""lxml parsers for the MTConnect response documents: Devices, Streams and Error.

Elements are matched by local name, never by a hard-coded namespace, so every era parses
the same way: no namespace, `urn:mtconnect.com` 1.0, `urn:mtconnect.org` 1.1–2.x, and
vendor extension namespaces such as NIST's `x:`. The parser is hardened: no entity
resolution, no DTD loading, no network, and a size bound; a bad document raises
`DocumentError` naming its source and, where lxml knows it, the line and column.
Observations come out as the wire dicts of `producer.wire`, ordered by sequence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
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


class AgentError(RuntimeError):
    """The agent answered with an MTConnectError document."""

    def __init__(self, source: str, errors: list[tuple[str, str]], instance_id: int | None = None):
        self.source = source
        self.errors = errors
        self.instance_id = instance_id
        codes = ", ".join(f"{code}: {text}" for code, text in errors) or "no error entries"
        super().__init__(f"{source} answered MTConnectError ({codes})")

    @property
    def codes(self) -> set[str]:
        return {code for code, _ in self.errors}


def _local(tag: Any) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2].rpartition(":")[2]


def parse_xml(payload: bytes, source: str) -> etree._Element:
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
        if _only_undeclared_prefixes(parser):
            root = etree.fromstring(payload, parser=_make_parser(recover=True))
        else:
            line, column = exc.position if exc.position else (None, None)
            raise DocumentError(f"{source}: malformed XML at line {line}, column {column}: {exc.msg}") from None
    if root is None:
        raise DocumentError(f"{source}: empty document")
    return root


def _only_undeclared_prefixes(parser: etree.XMLParser) -> bool:
    entries = [entry for entry in parser.error_log if entry.level_name in ("ERROR", "FATAL")]
    return bool(entries) and all(entry.type_name == "NS_ERR_UNDEFINED_NAMESPACE" for entry in entries)


def root_kind(root: etree._Element) -> str:
    """`Devices`, `Streams`, `Assets` or `Error` (the MTConnect document kind)."""
    name = _local(root.tag)
    if name.startswith("MTConnect"):
        return name[len("MTConnect"):]
    return name


def _int_or_none(value: str | None, what: str = "attribute") -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise DocumentError(f"{what}={value!r} is not an integer") from None


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


def _header(root: etree._Element, source: str = "document") -> Header:
    element = next((child for child in root if _local(child.tag) == "Header"), None)
    if element is None:
        return Header(None, None, None, None, None)
    get = element.get

    def number(attribute: str) -> int | None:
        return _int_or_none(get(attribute), f"{source}: Header {attribute}")

    return Header(
        instance_id=number("instanceId"),
        sender=get("sender"),
        version=get("version"),
        creation_time=get("creationTime"),
        buffer_size=number("bufferSize"),
        first_sequence=number("firstSequence"),
        last_sequence=number("lastSequence"),
        next_sequence=number("nextSequence"),
    )


def _namespace_version(root: etree._Element) -> str | None:
    match = re.search(r":(\d+\.\d+)$", etree.QName(root).namespace or "")
    return match.group(1) if match else None


def raise_if_error(root: etree._Element, source: str) -> None:
    if root_kind(root) != "Error":
        return
    # Errors sit in <Errors> (or, in the oldest agents, straight under the root). Before 2.6
    # each is <Error errorCode="...">text</Error>; from 2.6 the element itself names the
    # code, e.g. <OutOfRange><ErrorMessage>...</ErrorMessage></OutOfRange>.
    entries = [child for child in root if _local(child.tag) == "Error"]
    for container in root:
        if _local(container.tag) == "Errors":
            entries.extend(container)
    errors: list[tuple[str, str]] = []
    for element in entries:
        name = _local(element.tag)
        if not name:
            continue
        if name == "Error":
            errors.append((element.get("errorCode", "UNKNOWN"), (element.text or "").strip()))
        else:
            message = " ".join(t.strip() for t in element.itertext() if t.strip())
            errors.append((_type_from_element(name), message))
    raise AgentError(source, errors, _header(root, source).instance_id)


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


def parse_devices(payload: bytes, agent: str) -> DevicesDocument:
    source = f"{agent}/probe"
    root = parse_xml(payload, source)
    raise_if_error(root, source)
    if root_kind(root) != "Devices":
        raise DocumentError(f"{source}: expected MTConnectDevices, got <{_local(root.tag)}>")
    header = _header(root, source)
    version = header.version or _namespace_version(root)
    devices: list[dict[str, Any]] = []
    index: dict[str, DataItemInfo] = {}
    for device in root.iter():
        if _local(device.tag) not in ("Device", "Agent") or device.getparent() is None:
            continue
        if _local(device.getparent().tag) != "Devices":
            continue
        device_name = device.get("name") or device.get("id") or ""
        device_uuid = device.get("uuid") or device_name
        description = next((c for c in device if _local(c.tag) == "Description"), None)
        items = []
        for item in device.iter():
            if _local(item.tag) != "DataItem":
                continue
            component_element = item.getparent().getparent() if item.getparent() is not None else None
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
        devices.append({
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
            "device_xml": etree.tostring(device, encoding="unicode"),
        })
    return DevicesDocument(header=header, devices=devices, data_items=index, mtconnect_version=version)


# --------------------------------------------------------------------------- Streams

_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$")


def normalize_timestamp(text: str | None) -> str | None:
    """ISO-8601 UTC with microseconds and `Z`, whatever the agent sent (no `Z`, 0–7 digits, offsets)."""
    if not text:
        return None
    match = _TS_RE.match(text.strip())
    if not match:
        return text
    base, fraction, zone = match.groups()
    fraction = ((fraction or "") + "000000")[:6]
    if zone in (None, "Z", "+00:00", "+0000", "-00:00"):
        return f"{base}.{fraction}Z"
    moment = datetime.fromisoformat(f"{base}.{fraction}{zone[:3]}:{zone[-2:]}")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _type_from_element(name: str) -> str:
    return _CAMEL_RE.sub("_", name).upper()


_CONTAINER_CATEGORY = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}


@dataclass
class StreamsDocument:
    header: Header
    observations: list[dict[str, Any]]

    @property
    def is_heartbeat(self) -> bool:
        return not self.observations


def _entries(element: etree._Element) -> dict[str, Any] | None:
    """DataSet and Table values: {key: value}; a table's cells nest as {key: {cell key: value}}."""
    entries = [child for child in element if _local(child.tag) == "Entry"]
    if not entries:
        return None
    values: dict[str, Any] = {}
    for entry in entries:
        key = entry.get("key", "")
        if entry.get("removed", "").lower() == "true":
            values[key] = None
            continue
        cells = [c for c in entry if _local(c.tag) == "Cell"]
        if cells:
            values[key] = {c.get("key", ""): (c.text or "").strip() for c in cells}
        else:
            values[key] = (entry.text or "").strip()
    return values


def parse_streams(payload: bytes, agent: str, data_items: dict[str, DataItemInfo] | None = None,
                  source: str | None = None) -> StreamsDocument:
    """Parse a current/sample response (or one streamed part) into wire observations."""
    source = source or f"{agent}/sample"
    root = parse_xml(payload, source)
    raise_if_error(root, source)
    if root_kind(root) != "Streams":
        raise DocumentError(f"{source}: expected MTConnectStreams, got <{_local(root.tag)}>")
    header = _header(root, source)
    data_items = data_items or {}
    observations: list[dict[str, Any]] = []
    append = observations.append
    instance_id = header.instance_id
    for device_stream in root.iter("{*}DeviceStream", "DeviceStream"):
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
                for element in container:
                    get = element.get
                    sequence = get("sequence")
                    if sequence is None:
                        continue
                    element_name = _local(element.tag)
                    data_item_id = get("dataItemId")
                    info = data_items.get(data_item_id)
                    text = element.text
                    if category == "CONDITION":
                        item_type = get("type") or (info.type if info else "")
                    else:
                        item_type = info.type if info else _type_from_element(element_name)
                    observation = {
                        "agent": agent,
                        "instance_id": instance_id,
                        "sequence": _int_or_none(sequence, f"{source}: {element_name} sequence"),
                        "timestamp": normalize_timestamp(get("timestamp")),
                        "device_uuid": device_uuid,
                        "device_name": device_name,
                        "component": component,
                        "component_id": component_id,
                        "data_item_id": data_item_id,
                        "name": get("name") or (info.name if info else None),
                        "category": category,
                        "type": item_type,
                        "sub_type": get("subType") or (info.sub_type if info else None),
                        "units": info.units if info else None,
                    }
                    if category == "CONDITION":
                        level = element_name.upper()
                        observation["value"] = text.strip() if text and text.strip() else None
                        observation["level"] = level
                        observation["native_code"] = get("nativeCode")
                        observation["native_severity"] = get("nativeSeverity")
                        observation["qualifier"] = get("qualifier")
                        observation["condition_id"] = get("conditionId")
                    else:
                        entries = _entries(element) if len(element) else None
                        if entries is not None or get("count") is not None:
                            observation["value"] = entries if entries is not None else {}
                            if get("resetTriggered"):
                                observation["reset_triggered"] = get("resetTriggered")
                        elif category == "SAMPLE":
                            observation["value"] = wire.sample_value(text)
                            if get("sampleCount") is not None:
                                observation["sample_count"] = int(get("sampleCount"))
                                if get("sampleRate") is not None:
                                    observation["sample_rate"] = float(get("sampleRate"))
                                if not isinstance(observation["value"], list) and isinstance(
                                        observation["value"], float):
                                    observation["value"] = [observation["value"]]
                        else:
                            observation["value"] = text.strip() if text is not None else ""
                        if get("resetTriggered") and "reset_triggered" not in observation:
                            observation["reset_triggered"] = get("resetTriggered")
                    append(observation)
    observations.sort(key=lambda o: o["sequence"])
    return StreamsDocument(header=header, observations=observations)


def count_sequenced_elements(payload: bytes) -> int:
    """How many elements carry a `sequence` attribute: the observation count a parse must match."""
    root = parse_xml(payload, "count")
    return sum(1 for element in root.iter() if isinstance(element.tag, str) and element.get("sequence") is not None)
