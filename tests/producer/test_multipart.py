"""The multipart stream reader, fed recorded NIST sample pages in arbitrarily cut chunks."""
from __future__ import annotations

import gzip
import random

import pytest

from producer.mtconnect.client import _multipart_parts
from producer.mtconnect.documents import parse_streams


class _Raw:
    def __init__(self, payload: bytes, cuts: list[int]):
        self._chunks = []
        position = 0
        for cut in sorted(cuts) + [len(payload)]:
            self._chunks.append(payload[position:cut])
            position = cut
        self._chunks = [c for c in self._chunks if c]

    def read1(self, size: int) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


class _Response:
    def __init__(self, payload: bytes, cuts: list[int]):
        self.raw = _Raw(payload, cuts)


def _pages(recorded_data, count=3) -> list[bytes]:
    folder = recorded_data / "nist-smstestbed" / "sample-pages"
    return [gzip.decompress((folder / f"qdr_input{n:03d}.xml.gz").read_bytes()) for n in range(1, count + 1)]


def _body(parts: list[bytes], boundary: str, with_length: bool) -> bytes:
    out = b"preamble to ignore\r\n"
    for part in parts:
        out += f"--{boundary}\r\nContent-type: text/xml\r\n".encode()
        if with_length:
            out += f"Content-length: {len(part)}\r\n".encode()
        out += b"\r\n" + part + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("with_length", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_parts_survive_any_chunking(recorded_data, with_length, seed):
    pages = _pages(recorded_data)
    boundary = "a8f3c2e1b0d94f6a"
    payload = _body(pages, boundary, with_length)
    rng = random.Random(seed)
    cuts = rng.sample(range(1, len(payload)), 200)
    parts = list(_multipart_parts(_Response(payload, cuts), boundary, "test"))
    assert len(parts) == len(pages)
    for part, page in zip(parts, pages):
        assert parse_streams(part, "a").header.next_sequence == parse_streams(page, "a").header.next_sequence


def test_stream_cut_mid_part_yields_only_complete_parts(recorded_data):
    pages = _pages(recorded_data, 2)
    payload = _body(pages, "xyz", True)
    truncated = payload[: len(payload) - 1000]
    parts = list(_multipart_parts(_Response(truncated, [4096, 70000]), "xyz", "test"))
    assert len(parts) == 1
