"""The JSON every topic carries: the fast encoder writes what the standard one would.

Number spelling may differ (`-0.00001` against `-1e-05`); the decoded values may not.
"""
from __future__ import annotations

import gzip
import json

from producer import wire
from producer.mtconnect.documents import parse_streams


def _stdlib(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_recorded_observations_encode_to_the_same_json_as_the_standard_library(recorded_data):
    page = gzip.decompress((recorded_data / "nist-smstestbed" / "sample-pages" / "qdr_input001.xml.gz").read_bytes())
    observations = parse_streams(page, "http://agent").observations
    assert len(observations) > 10_000
    for observation in observations:
        encoded = wire.encode(observation)
        assert json.loads(encoded) == observation == json.loads(_stdlib(observation))
        assert b"NaN" not in encoded and b"Infinity" not in encoded


def test_values_the_fast_encoder_cannot_take_still_encode_exactly():
    # Sequences are unbounded integers in MTConnect; beyond 64 bits the standard encoder takes over.
    value = wire.checkpoint_value("http://agent", 7, 2**64 + 5)
    assert wire.decode(wire.encode(value))["next_sequence"] == 2**64 + 5
    text = {"value": "Ü 直 ✓", "sequence": 2**63 - 1}
    assert wire.encode(text) == _stdlib(text)
