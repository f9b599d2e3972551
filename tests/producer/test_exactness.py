"""Observations carry exactly what the agent sent: text byte for byte, timestamps as written,
every attribute (empty ones too).

Each test takes its case from recorded data and checks the parser against the test's own
reading of the same bytes with the standard library's ElementTree, not against the parser.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import requests
from lxml import etree

from producer import wire
from producer.mtconnect.documents import parse_streams
from producer.replay import ReplayAgent
from repo_paths import REPLAY_DATA

MAZAK01_DAY = REPLAY_DATA / "Mazak01-20171030-20171031.txt"
# Mazak01's recorded logic_cond Warning 337, whose text the adapter sent with a leading space.
WARNING_LINE = "2017-10-30T08:43:28.680Z|logic_cond|Warning|337||| MODE CHANGE INHIBIT"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2].rpartition(":")[2]


def _elements_by_sequence(payload: bytes) -> dict[int, ET.Element]:
    """The test's own reading of a Streams document: every element that carries a sequence."""
    root = ET.fromstring(payload)
    return {int(e.get("sequence")): e for e in root.iter() if e.get("sequence") is not None}


def test_whitespace_value_is_kept_byte_for_byte():
    assert WARNING_LINE in MAZAK01_DAY.read_text(encoding="utf-8").splitlines()
    recorded_text = WARNING_LINE.split("|")[-1]
    assert recorded_text == " MODE CHANGE INHIBIT"
    agent = ReplayAgent(speed=20, start_time="08:43:27").start()
    url = agent.url
    try:
        deadline = time.monotonic() + 60
        while True:
            payload = requests.get(f"{url}/sample", params={"from": 1, "count": 20000}, timeout=10).content
            served = [e for e in _elements_by_sequence(payload).values()
                      if _local(e.tag) == "Warning" and e.get("nativeCode") == "337"]
            if served or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        agent.stop()
    assert served, "the replay agent never served Mazak01's Warning 337"
    element = served[0]
    assert element.text == recorded_text  # the agent passed the adapter's words through
    observation = next(o for o in parse_streams(payload, url).observations
                       if o["sequence"] == int(element.get("sequence")))
    assert observation["value"] == " MODE CHANGE INHIBIT"
    assert observation["level"] == "WARNING" and observation["native_code"] == "337"
    assert wire.decode(wire.encode(observation))["value"] == " MODE CHANGE INHIBIT"


def test_seven_digit_timestamp_is_kept_as_written(recorded_data):
    # The Okuma recording (IMTS 2022) stamps every line with 7 fractional digits; cppagent
    # passes an adapter's timestamp string through, so its documents carry them unchanged.
    okuma = (recorded_data / "cppagent" / "demo" / "okuma-first-20-lines.txt").read_text(encoding="utf-8")
    seven_digits = okuma.split("|", 1)[0]
    assert seven_digits == "2022-08-08T13:51:34.7167146Z"
    # The real NIST /current response, with the first observation stamped as Okuma's adapter did.
    tree = etree.fromstring((recorded_data / "cppagent" / "simulator-removed-2023" / "out.xml").read_bytes(),
                            etree.XMLParser(recover=True))
    first = next(e for e in tree.iter() if isinstance(e.tag, str) and e.get("sequence") is not None)
    first.set("timestamp", seven_digits)
    payload = etree.tostring(tree)
    sequence = int(first.get("sequence"))
    observation = next(o for o in parse_streams(payload, "http://agent").observations if o["sequence"] == sequence)
    assert observation["timestamp"] == "2022-08-08T13:51:34.7167146Z"
    assert wire.decode(wire.encode(observation))["timestamp"] == seven_digits


def test_empty_attribute_is_kept(recorded_data):
    payload = (recorded_data / "cppagent" / "simulator-removed-2023" / "out.xml").read_bytes()
    # The NIST VDS's /current answers AssetChanged and AssetRemoved with an empty assetType.
    # (It also uses the `x:` prefix without declaring it, which ElementTree refuses: the
    # test's own reading drops the prefix.)
    undeclared_prefix_dropped = payload.replace(b"<x:", b"<").replace(b"</x:", b"</")
    recorded = {seq: e for seq, e in _elements_by_sequence(undeclared_prefix_dropped).items()
                if _local(e.tag) in ("AssetChanged", "AssetRemoved")}
    assert len(recorded) == 16 and all(e.get("assetType") == "" for e in recorded.values())
    observations = {o["sequence"]: o for o in parse_streams(payload, "https://smstestbed.nist.gov/vds").observations}
    for sequence, element in recorded.items():
        observation = observations[sequence]
        assert observation["attributes"] == {"assetType": ""}, observation
        assert observation["value"] == element.text == "UNAVAILABLE"
        assert observation["timestamp"] == element.get("timestamp")
