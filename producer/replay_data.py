"""The recorded NIST data behind the replay agent: device model, SHDR day files, state folding.

`load_replay_data` reads the agent's `Devices.xml` (MTConnectDevices 1.3, the file the NIST
VDS agent ran with) into flat, index-addressed tables of devices, components and data items,
and every `<device>-<YYYYMMDD>-<YYYYMMDD>.txt` SHDR day file next to it into a
`DayRecording`: the opening snapshot (the then-current value of every item, stamped with older
times) and the day's records as offsets in seconds from the first record of the day. Records
whose name is not in the device model are skipped and counted, as a real agent ignores keys
it does not know. Everything here is immutable once loaded, so one load can be shared by any
number of agents and threads; `producer.replay` turns it into live observations.
"""
from __future__ import annotations

import calendar
import functools
import logging
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from lxml import etree

log = logging.getLogger(__name__)

DEVICES_NS = "urn:mtconnect.org:MTConnectDevices:1.3"
STREAMS_NS = "urn:mtconnect.org:MTConnectStreams:1.3"
# The NIST VDS's extension namespace (agent.cfg `StreamsNamespaces x`); DataItem types such
# as `x:MOTION` stream as `<x:Motion>` elements in it.
NIST_NS = "urn:nist.gov:NistStreams:1.3"
EXTENSION_NAMESPACES = {"x": NIST_NS}

CONDITION_LEVELS = ("NORMAL", "WARNING", "FAULT", "UNAVAILABLE")
ACTIVE_LEVELS = ("WARNING", "FAULT")
UNAVAILABLE = "UNAVAILABLE"

# Characters XML 1.0 cannot carry; a stray control byte in a recording must not break a document.
_NOT_XML = re.compile(r"[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DAY_FILE = re.compile(r"^(?P<device>[^-]+)-(?P<day>\d{8})-\d{8}\.txt$")


def default_data_dir() -> Path:
    """`resources/replay`, next to the packages or inside a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources" / "replay"
    return Path(__file__).resolve().parent.parent / "resources" / "replay"


def pascal_case(data_item_type: str) -> str:
    """`ROTARY_VELOCITY` -> `RotaryVelocity`, the Streams element name of a DataItem type."""
    return "".join(word.capitalize() for word in data_item_type.split("_") if word)


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    index: int
    device_index: int
    component: str  # element name: Device, Linear, Controller, Path ...
    name: str
    component_id: str


@dataclass(frozen=True, slots=True)
class DataItemInfo:
    index: int
    device_index: int
    component_index: int
    data_item_id: str
    name: str | None
    type: str
    sub_type: str | None
    category: str
    # Clark-notation tag of the Streams element for SAMPLE/EVENT items (conditions use the level).
    element_tag: str

    @property
    def is_condition(self) -> bool:
        return self.category == "CONDITION"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    index: int
    name: str
    uuid: str
    device_id: str
    data_item_indices: tuple[int, ...]
    # SHDR key -> data item index: the item's name, its <Source> and its id, as cppagent matches.
    keys: dict[str, int]


class Record(NamedTuple):
    """One SHDR value, `offset_s` seconds after the first record of its day."""

    offset_s: float
    item: int
    value: str
    level: str | None = None  # conditions only: NORMAL, WARNING, FAULT, UNAVAILABLE
    native_code: str = ""
    native_severity: str = ""
    qualifier: str = ""


@dataclass(frozen=True)
class DayRecording:
    """One device's SHDR day file."""

    device_index: int
    device_name: str
    path: Path
    day: str  # YYYYMMDD from the file name
    day_start_epoch: float  # recorded UTC time of the first record of the day (offset 0)
    initial: tuple[Record, ...]  # opening snapshot, offsets <= 0
    records: tuple[Record, ...]  # the day, by offset
    skipped: Counter[str]  # names not in the device model -> record count

    @property
    def duration_s(self) -> float:
        return self.records[-1].offset_s if self.records else 0.0

    def offset_for_time_of_day(self, seconds_of_day: float) -> float:
        """Offset of a UTC time of day on the recorded day; 0 when the day holds no such time."""
        midnight = calendar.timegm(datetime.strptime(self.day, "%Y%m%d").timetuple())
        offset = midnight + seconds_of_day - self.day_start_epoch
        if offset < 0 or offset > self.duration_s:
            return 0.0
        return offset


@dataclass(frozen=True)
class ReplayData:
    devices_xml: bytes  # the Devices.xml bytes, re-parsed per probe (lxml trees are not shared)
    devices: tuple[DeviceInfo, ...]
    components: tuple[ComponentInfo, ...]
    data_items: tuple[DataItemInfo, ...]
    recordings: tuple[DayRecording, ...]

    def find_device(self, name_or_uuid: str) -> DeviceInfo | None:
        for device in self.devices:
            if name_or_uuid in (device.name, device.uuid):
                return device
        return None


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _element_tag(data_item_type: str) -> str:
    prefix, _, base = data_item_type.rpartition(":")
    namespace = EXTENSION_NAMESPACES.get(prefix, STREAMS_NS) if prefix else STREAMS_NS
    return f"{{{namespace}}}{pascal_case(base)}"


def parse_devices(devices_xml: bytes, source: str = "Devices.xml") -> tuple[
    tuple[DeviceInfo, ...], tuple[ComponentInfo, ...], tuple[DataItemInfo, ...]
]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(devices_xml, parser=parser)
    if _local(root.tag) != "MTConnectDevices":
        raise ValueError(f"{source}: root is {_local(root.tag)}, not MTConnectDevices")
    devices: list[DeviceInfo] = []
    components: list[ComponentInfo] = []
    data_items: list[DataItemInfo] = []
    for device_element in root.iter(f"{{{DEVICES_NS}}}Device"):
        device_index = len(devices)
        component_of: dict[etree._Element, int] = {}
        keys: dict[str, int] = {}
        ids: dict[str, int] = {}
        sources: dict[str, int] = {}
        indices: list[int] = []
        for data_item in device_element.iter(f"{{{DEVICES_NS}}}DataItem"):
            # DataItem -> DataItems -> the component (or the Device itself) that owns it.
            owner = data_item.getparent().getparent()
            if owner not in component_of:
                component_of[owner] = len(components)
                components.append(
                    ComponentInfo(
                        index=len(components),
                        device_index=device_index,
                        component=_local(owner.tag),
                        name=owner.get("name") or owner.get("id") or "",
                        component_id=owner.get("id") or "",
                    )
                )
            category = (data_item.get("category") or "").upper()
            data_item_type = data_item.get("type") or ""
            info = DataItemInfo(
                index=len(data_items),
                device_index=device_index,
                component_index=component_of[owner],
                data_item_id=data_item.get("id") or "",
                name=data_item.get("name"),
                type=data_item_type,
                sub_type=data_item.get("subType"),
                category=category,
                element_tag=_element_tag(data_item_type),
            )
            data_items.append(info)
            indices.append(info.index)
            if info.name:
                keys.setdefault(info.name, info.index)
            source_element = data_item.find(f"{{{DEVICES_NS}}}Source")
            if source_element is not None and source_element.text:
                sources.setdefault(source_element.text.strip(), info.index)
            ids[info.data_item_id] = info.index
        # Names win over sources, sources over ids, so no key can shadow a more specific one.
        for key, index in sources.items():
            keys.setdefault(key, index)
        for key, index in ids.items():
            keys.setdefault(key, index)
        devices.append(
            DeviceInfo(
                index=device_index,
                name=device_element.get("name") or device_element.get("id") or "",
                uuid=device_element.get("uuid") or "",
                device_id=device_element.get("id") or "",
                data_item_indices=tuple(indices),
                keys=keys,
            )
        )
    return tuple(devices), tuple(components), tuple(data_items)


@functools.lru_cache(maxsize=4096)
def _epoch_of_second(text: str) -> int:
    return calendar.timegm(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timetuple())


def parse_shdr_time(text: str) -> float:
    """UTC epoch seconds of an SHDR timestamp (`Z` optional, 0-7 fractional digits)."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1]
    whole, _, fraction = text.partition(".")
    seconds = _epoch_of_second(whole)
    if fraction:
        digits = fraction[:9]
        return seconds + int(digits) / 10 ** len(digits)
    return float(seconds)


def _parse_line(
    line: str, device: DeviceInfo, data_items: Sequence[DataItemInfo], skipped: Counter[str]
) -> tuple[float, list[Record]] | None:
    line = line.rstrip("\r\n")
    if _NOT_XML.search(line):
        line = _NOT_XML.sub("", line)
    fields = line.split("|")
    if len(fields) < 3 or not fields[0]:
        return None
    try:
        epoch = parse_shdr_time(fields[0])
    except ValueError:
        return None
    records: list[Record] = []
    position = 1
    while position + 1 < len(fields):
        key = fields[position]
        item = device.keys.get(key)
        if item is None:
            skipped[key] += 1
            # An unknown key still has to be stepped over: a condition takes five fields.
            looks_like_condition = fields[position + 1].upper() in CONDITION_LEVELS and (
                len(fields) - position > 5
            )
            position += 6 if looks_like_condition else 2
            continue
        if data_items[item].is_condition:
            level, native_code, native_severity, qualifier, text = (fields[position + 1 : position + 6] + [""] * 5)[:5]
            level = level.upper() or UNAVAILABLE
            if level not in CONDITION_LEVELS:
                level = UNAVAILABLE
            records.append(Record(0.0, item, text, level, native_code, native_severity, qualifier))
            position += 6
        else:
            records.append(Record(0.0, item, fields[position + 1]))
            position += 2
    return epoch, records


def parse_day_file(
    path: Path, device: DeviceInfo, data_items: Sequence[DataItemInfo], day: str
) -> DayRecording:
    """Split an SHDR day file into its opening snapshot and the day's records.

    The snapshot is every leading line stamped before the named day. Some files (GFAgie01)
    carry their snapshot stamped exactly at the day boundary instead; when no line precedes
    the day, a leading block that shares the first timestamp and names each item once is
    taken as the snapshot, so playback does not begin with hours of nothing.
    """
    day_midnight = calendar.timegm(datetime.strptime(day, "%Y%m%d").timetuple())
    skipped: Counter[str] = Counter()
    timed: list[tuple[float, list[Record]]] = []
    with path.open("r", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            parsed = _parse_line(line, device, data_items, skipped)
            if parsed is not None:
                timed.append(parsed)
    snapshot_end = 0
    while snapshot_end < len(timed) and timed[snapshot_end][0] < day_midnight:
        snapshot_end += 1
    if snapshot_end == 0 and timed:
        first_epoch = timed[0][0]
        seen: set[int] = set()
        end = 0
        while end < len(timed) and timed[end][0] == first_epoch:
            items = {record.item for record in timed[end][1]}
            if items & seen:
                break
            seen |= items
            end += 1
        # Only a block followed by later records is a snapshot; a file that is one block is a day.
        if end < len(timed):
            snapshot_end = end
    day_records = timed[snapshot_end:]
    day_start = day_records[0][0] if day_records else (timed[-1][0] if timed else float(day_midnight))
    initial = tuple(
        record._replace(offset_s=epoch - day_start)
        for epoch, records in timed[:snapshot_end]
        for record in records
    )
    records = [
        record._replace(offset_s=epoch - day_start) for epoch, line_records in day_records for record in line_records
    ]
    # Files are in time order; the stable sort only guards against a stray out-of-order line.
    records.sort(key=lambda record: record.offset_s)
    return DayRecording(
        device_index=device.index,
        device_name=device.name,
        path=path,
        day=day,
        day_start_epoch=day_start,
        initial=initial,
        records=tuple(records),
        skipped=skipped,
    )


def next_condition_entries(entries: dict[str, Any] | None, observation: Any) -> dict[str, Any]:
    """A condition item's state after `observation`, as a new dict native_code -> observation.

    Works on anything with `level` and `native_code` (records and observations). Like
    cppagent: a Warning/Fault is added under its native code; a Normal with a code clears
    that code; a Normal without a code or an Unavailable clears everything. When nothing is
    active the item shows its last Normal/Unavailable. The dict is new each time so snapshots
    can share the old ones without copying.
    """
    level = observation.level
    if level in ACTIVE_LEVELS:
        updated = {code: entry for code, entry in (entries or {}).items() if entry.level in ACTIVE_LEVELS}
        updated[observation.native_code] = observation
        return updated
    if level == "NORMAL" and observation.native_code:
        updated = {
            code: entry
            for code, entry in (entries or {}).items()
            if entry.level in ACTIVE_LEVELS and code != observation.native_code
        }
        return updated or {"": observation}
    return {"": observation}


def fold_state(records: Iterable[Record], data_items: Sequence[DataItemInfo]) -> tuple[Record, ...]:
    """The records that reproduce the state after `records`: one per item, or per active condition.

    This is what an adapter sends when an agent connects mid-day: the latest value of each
    item, and for a condition every still-active Warning/Fault (or its last Normal/Unavailable).
    The result keeps the order in which the values were last set.
    """
    position_of: dict[int, int] = {}
    state: dict[int, Any] = {}
    for position, record in enumerate(records):
        position_of[id(record)] = position
        if data_items[record.item].is_condition:
            state[record.item] = next_condition_entries(state.get(record.item), record)
        else:
            state[record.item] = record
    folded: list[Record] = []
    for value in state.values():
        folded.extend(value.values() if isinstance(value, dict) else (value,))
    folded.sort(key=lambda record: position_of[id(record)])
    return tuple(folded)


def load_replay_data(data_dir: Path | str | None = None) -> ReplayData:
    """Load (once per folder and file version) the device model and the SHDR day files."""
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = folder.resolve()
    devices_path = folder / "Devices.xml"
    if not devices_path.is_file():
        raise FileNotFoundError(f"replay data: {devices_path} not found")
    stamp = tuple(
        (path.name, path.stat().st_mtime_ns, path.stat().st_size)
        for path in sorted(folder.iterdir())
        if path.is_file()
    )
    return _load_cached(folder, stamp)


@functools.lru_cache(maxsize=4)
def _load_cached(folder: Path, stamp: tuple) -> ReplayData:
    devices_xml = (folder / "Devices.xml").read_bytes()
    devices, components, data_items = parse_devices(devices_xml, str(folder / "Devices.xml"))
    by_name = {device.name: device for device in devices}
    recordings: list[DayRecording] = []
    taken: set[str] = set()
    for path in sorted(folder.glob("*.txt")):
        match = _DAY_FILE.match(path.name)
        if not match:
            continue
        device = by_name.get(match["device"])
        if device is None:
            log.warning("replay data: %s names no device in Devices.xml; ignored", path.name)
            continue
        if device.name in taken:
            log.warning("replay data: %s is a second day for %s; only the first is played", path.name, device.name)
            continue
        taken.add(device.name)
        recordings.append(parse_day_file(path, device, data_items, match["day"]))
    return ReplayData(
        devices_xml=devices_xml,
        devices=devices,
        components=components,
        data_items=data_items,
        recordings=tuple(recordings),
    )


def format_timestamp(epoch_s: float) -> str:
    """`2026-11-28T09:15:02.123456Z`: UTC with microseconds, as a live agent stamps."""
    whole = int(epoch_s)
    micros = int(round((epoch_s - whole) * 1_000_000))
    if micros >= 1_000_000:
        whole += 1
        micros -= 1_000_000
    return f"{_second_text(whole)}.{micros:06d}Z"


@functools.lru_cache(maxsize=256)
def _second_text(whole: int) -> str:
    return datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
