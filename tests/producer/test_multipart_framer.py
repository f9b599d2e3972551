"""The incremental multipart framer of the asynchronous client, fed recorded NIST sample pages
cut at random places: it must return exactly the parts the agent sent, byte for byte, whatever
the cuts, and refuse what would grow without bound."""
from __future__ import annotations

import gzip
import random

import pytest

from producer.mtconnect.documents import DocumentError, parse_streams
from producer.mtconnect.multipart import MultipartFramer, boundary_of

BOUNDARY = "a8f3c2e1b0d94f6a"


def _pages(recorded_data, count=3) -> list[bytes]:
    folder = recorded_data / "nist-smstestbed" / "sample-pages"
    return [gzip.decompress((folder / f"qdr_input{n:03d}.xml.gz").read_bytes()) for n in range(1, count + 1)]


def _body(parts: list[bytes], with_length: bool, crlf: bytes = b"\r\n") -> bytes:
    out = b"preamble to ignore" + crlf
    for part in parts:
        out += f"--{BOUNDARY}".encode() + crlf + b"Content-type: text/xml" + crlf
        if with_length:
            out += f"Content-length: {len(part)}".encode() + crlf
        out += crlf + part + crlf
    return out + f"--{BOUNDARY}--".encode() + crlf


def _feed(payload: bytes, cuts: list[int], limit: int = 64 * 1024 * 1024) -> tuple[list[bytes], MultipartFramer]:
    framer = MultipartFramer(BOUNDARY, "test", limit)
    parts: list[bytes] = []
    position = 0
    for cut in sorted(set(cuts)) + [len(payload)]:
        parts += framer.feed(payload[position:cut])
        position = cut
    return parts, framer


@pytest.mark.parametrize("with_length", [True, False])
@pytest.mark.parametrize("crlf", [b"\r\n", b"\n"])
@pytest.mark.parametrize("seed", range(2))
def test_recorded_pages_come_out_whole_whatever_the_cuts(recorded_data, with_length, crlf, seed):
    pages = _pages(recorded_data)
    payload = _body(pages, with_length, crlf)
    rng = random.Random(seed)
    parts, framer = _feed(payload, rng.sample(range(1, len(payload)), 300))
    assert parts == pages, "every part exactly as sent"
    assert framer.finished


def test_the_parts_parse_as_the_pages_they_are(recorded_data):
    pages = _pages(recorded_data, 2)
    parts, _ = _feed(_body(pages, with_length=False), [4096, 70000])
    assert [parse_streams(p, "a").header.next_sequence for p in parts] == [
        parse_streams(p, "a").header.next_sequence for p in pages]


def test_byte_by_byte_feeding_gives_the_same_parts(recorded_data):
    page = _pages(recorded_data, 1)[0][:20000]  # a prefix keeps the byte loop short; framing does not parse
    payload = _body([page, page], with_length=True)
    parts, _ = _feed(payload, list(range(1, len(payload))))
    assert parts == [page, page]


def test_a_stream_cut_mid_part_returns_only_the_complete_parts(recorded_data):
    pages = _pages(recorded_data, 2)
    payload = _body(pages, with_length=True)
    cut = payload.index(pages[1]) + len(pages[1]) // 2
    parts, framer = _feed(payload[:cut], [1000, 5000])
    assert parts == pages[:1]
    assert not framer.finished and framer.buffered > 0


def test_nothing_after_the_closing_delimiter_is_a_part(recorded_data):
    page = _pages(recorded_data, 1)[0]
    payload = _body([page], with_length=False) + b"--" + BOUNDARY.encode() + b"\r\n\r\nnot a part\r\n"
    parts, framer = _feed(payload, [])
    assert parts == [page] and framer.finished


def test_a_declared_part_over_the_limit_is_refused_before_it_is_read():
    framer = MultipartFramer(BOUNDARY, "http://agent/sample", 1000)
    with pytest.raises(DocumentError, match=r"http://agent/sample: multipart part of 5000 bytes exceeds 1000"):
        framer.feed(f"--{BOUNDARY}\r\nContent-length: 5000\r\n\r\n".encode())


def test_an_unframed_part_is_refused_once_it_passes_the_limit():
    framer = MultipartFramer(BOUNDARY, "http://agent/sample", 1000)
    framer.feed(f"--{BOUNDARY}\r\n\r\n".encode())
    with pytest.raises(DocumentError, match="multipart part larger than 1000 bytes"):
        for _ in range(10):
            framer.feed(b"x" * 200)


def test_an_endless_header_line_is_refused():
    framer = MultipartFramer(BOUNDARY, "http://agent/sample", 10**6)
    with pytest.raises(DocumentError, match="header line longer than 65536 bytes"):
        framer.feed(b"y" * 70000)


def test_a_bad_content_length_names_the_value():
    framer = MultipartFramer(BOUNDARY, "src", 10**6)
    with pytest.raises(DocumentError, match="bad multipart Content-length 'ten'"):
        framer.feed(f"--{BOUNDARY}\r\nContent-length: ten\r\n\r\n".encode())


@pytest.mark.parametrize("content_type, expected", [
    ("multipart/x-mixed-replace;boundary=abc123", "abc123"),
    ('multipart/x-mixed-replace; boundary="with space, comma"', "with space, comma"),
    ("MULTIPART/MIXED; charset=utf-8; BOUNDARY=x", "x"),
    ("text/xml", None),
    ("multipart/x-mixed-replace", None),
])
def test_boundary_from_content_type(content_type, expected):
    assert boundary_of(content_type) == expected
