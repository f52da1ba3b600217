"""The ISA-L fast path of gzip bodies (``decode._gunzip``) against zlib's path (``decode._inflate``).

``_gunzip`` takes ISA-L only for a plain gzip header that decodes whole in one call; every
other body, error or limit must come out exactly as zlib's path answers it.
"""

from __future__ import annotations

import gzip
import random
import struct
import zlib

import pytest

from sightline.errors import SightlineError
from sightline.ingest import decode as decode_mod

pytestmark = pytest.mark.skipif(decode_mod._isal is None, reason="isal is not installed")

RAW = b'{"api_key": "phc_x", "batch": [' + b",".join(
    b'{"event": "$pageview", "distinct_id": "u%d", "properties": {"$current_url": "https://example.com/%d"}}'
    % (i, i * 7) for i in range(300)) + b"]}"


def _plain(data: bytes, level: int = 6) -> bytes:
    """gzip with FLG = 0 and no file name (what gzip.compress and the SDKs write)."""
    co = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = co.compress(data) + co.flush()
    return (b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\xff" + body
            + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF))


def _outcome(fn, data: bytes, max_bytes: int):
    try:
        return ("ok", fn(data, max_bytes))
    except SightlineError as exc:
        return ("error", type(exc).__name__, exc.code, exc.status, exc.detail)


def _zlib_path(data: bytes, max_bytes: int) -> bytes:
    return decode_mod._inflate(data, 31, max_bytes, "gzip")


def _reference_inflate(data: bytes, max_bytes: int) -> bytes:
    """``_inflate`` before its one-call shortcut: the streaming loop alone."""
    out = bytearray()
    d = zlib.decompressobj(31)
    buf = data
    try:
        while True:
            chunk = d.decompress(buf, max_bytes + 1 - len(out))
            out += chunk
            if len(out) > max_bytes:
                raise decode_mod._too_large("decompressed gzip payload", max_bytes)
            if d.eof:
                rest = d.unused_data
                if rest[:2] == b"\x1f\x8b":
                    d = zlib.decompressobj(31)
                    buf = rest
                    continue
                break
            buf = d.unconsumed_tail
            if not buf and not chunk:
                raise decode_mod._bad("invalid gzip data: truncated stream", "invalid_compression")
    except zlib.error as exc:
        raise decode_mod._bad(f"invalid gzip data: {exc}", "invalid_compression") from None
    return bytes(out)


def _flip(data: bytes, index: int, mask: int = 1) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1:]


def _cases() -> list[tuple[str, bytes, int]]:
    g = _plain(RAW)
    rng = random.Random(7)
    cases = [
        ("plain", g, 1 << 20),
        ("gzip.compress", gzip.compress(RAW), 1 << 20),
        ("level 1", _plain(RAW, 1), 1 << 20),
        ("level 9", _plain(RAW, 9), 1 << 20),
        ("empty content", _plain(b""), 1 << 20),
        ("exactly the limit", g, len(RAW)),
        ("one byte over the limit", g, len(RAW) - 1),
        ("far over the limit", g, 100),
        ("bad crc", _flip(g, len(g) - 8), 1 << 20),
        ("bad isize", _flip(g, len(g) - 4), 1 << 20),
        ("truncated trailer", g[:-3], 1 << 20),
        ("no trailer", g[:-8], 1 << 20),
        ("truncated body", g[: len(g) // 2], 1 << 20),
        ("header only", g[:10], 1 << 20),
        ("trailing junk", g + b"junk", 1 << 20),
        ("trailing zeros", g + b"\x00" * 16, 1 << 20),
        ("concatenated members", _plain(RAW[:500]) + _plain(RAW[500:]), 1 << 20),
        ("concatenated, second over the limit", g + g, len(RAW) + 10),
        ("reserved header flag", g[:3] + b"\xe0" + g[4:], 1 << 20),
        ("FNAME header", _with_name(RAW), 1 << 20),
        ("FHCRC header with a wrong crc", g[:3] + b"\x02" + g[4:10] + b"\x00\x00" + g[10:], 1 << 20),
        ("not deflate", g[:2] + b"\x07" + g[3:], 1 << 20),
    ]
    for i in range(40):  # random corruption of the deflate data
        pos = rng.randrange(10, len(g) - 8)
        cases.append((f"flipped byte {pos}", _flip(g, pos, 1 << rng.randrange(8)), 1 << 20))
    return cases


def _with_name(data: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(filename="batch.json", mode="wb", fileobj=buf, mtime=0) as fh:
        fh.write(data)
    return buf.getvalue()


@pytest.mark.parametrize("name,data,max_bytes", _cases(), ids=[c[0] for c in _cases()])
def test_gunzip_matches_zlib_path(name: str, data: bytes, max_bytes: int) -> None:
    assert _outcome(decode_mod._gunzip, data, max_bytes) == _outcome(_zlib_path, data, max_bytes)


@pytest.mark.parametrize("name,data,max_bytes", _cases(), ids=[c[0] for c in _cases()])
def test_inflate_shortcut_matches_streaming_loop(name: str, data: bytes, max_bytes: int) -> None:
    assert _outcome(_zlib_path, data, max_bytes) == _outcome(_reference_inflate, data, max_bytes)


def test_plain_body_takes_isal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The everyday body really goes through ISA-L (else this speed-up silently vanished)."""
    calls = []
    real = decode_mod._isal.decompressobj

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(decode_mod._isal, "decompressobj", spy)
    assert decode_mod._gunzip(_plain(RAW), 1 << 20) == RAW
    assert calls == [(31,)]


def test_whole_pipeline_same_with_and_without_isal(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = [gzip.compress(RAW), _plain(RAW), _with_name(RAW), _plain(RAW)[:-2]]
    with_isal = [_outcome(lambda b, m: decode_mod.decode_capture(
        b, query={}, content_type="application/json", content_encoding="gzip", legacy=False,
        max_bytes=m).events, b, 1 << 20) for b in bodies]
    monkeypatch.setattr(decode_mod, "_isal", None)
    without = [_outcome(lambda b, m: decode_mod.decode_capture(
        b, query={}, content_type="application/json", content_encoding="gzip", legacy=False,
        max_bytes=m).events, b, 1 << 20) for b in bodies]
    assert with_isal == without
    assert with_isal[0][0] == "ok" and with_isal[3][0] == "error"
