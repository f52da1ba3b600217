"""Property tests for sightline.ingest.decode.

1. Robustness: any bytes + headers + query either decode or raise a SightlineError.
2. Round trip: events encoded the way the SDKs do come back unchanged.
3. The bounded lz-string decoder agrees with the ``lzstring`` package.
"""

from __future__ import annotations

import base64
import gzip
import urllib.parse
import zlib

import lzstring
import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sightline.errors import SightlineError
from sightline.ingest.decode import (
    CaptureRequest,
    decode_capture,
    decode_v1_capture,
    lz_decompress_from_base64,
)

FORM = "application/x-www-form-urlencoded"
MB = 1024 * 1024

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def js_units(text: str) -> str:
    raw = text.encode("utf-16-le")
    return "".join(chr(int.from_bytes(raw[i:i + 2], "little")) for i in range(0, len(raw), 2))


def lz64(text: str) -> str:
    return lzstring.LZString().compressToBase64(js_units(text))


# --------------------------------------------------------------------------------------
# 1. robustness
# --------------------------------------------------------------------------------------

json_ish = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=10,
)


@st.composite
def bodies(draw) -> bytes:
    """Arbitrary bytes, plus mangled versions of real-looking payloads so the fuzzer
    reaches the deeper decoding stages."""
    kind = draw(st.sampled_from(["raw", "json", "gzip", "b64", "form", "lz", "truncated",
                                 "prefixed", "nan"]))
    raw = draw(st.binary(max_size=300))
    if kind == "raw":
        return raw
    value = orjson.dumps(draw(json_ish), option=orjson.OPT_NON_STR_KEYS)
    if kind == "json":
        return value
    if kind == "gzip":
        return gzip.compress(draw(st.sampled_from([value, raw])))
    if kind == "b64":
        return base64.b64encode(draw(st.sampled_from([value, raw, gzip.compress(value)])))
    if kind == "form":
        data = draw(st.sampled_from([base64.b64encode(value), value, raw,
                                     gzip.compress(value)]))
        quoted = urllib.parse.quote_from_bytes(data, safe=draw(st.sampled_from(["", "+/=", "/"])))
        comp = draw(st.sampled_from([b"", b"&compression=base64", b"&compression=gzip-js",
                                     b"&compression=lz64", b"&compression=%ff"]))
        return b"data=" + quoted.encode() + comp
    if kind == "lz":
        return lz64(value.decode()).encode()
    if kind == "truncated":
        gz = gzip.compress(value)
        return gz[: draw(st.integers(0, len(gz)))]
    if kind == "prefixed":
        return draw(st.sampled_from([b"\x1f\x8b\x08", b"data=", b"\xef\xbb\xbf", b"[", b"{"])) + raw
    return value.replace(b"null", b"NaN").replace(b"0", b"-Infinity")


queries = st.fixed_dictionaries({}, optional={
    "compression": st.sampled_from(["gzip-js", "gzip", "base64", "b64", "lz64", "lz-string",
                                    "junk"]),
    "data": st.text(max_size=40) | st.sampled_from(
        [base64.b64encode(b'[{"event":"x"}]').decode(), "W3siZXZlbnQiOiJ4In1d", "e30=",
         "a b c d", '[{"event": "x"}]']),
    "_": st.text(max_size=20) | st.integers(-10**20, 10**20).map(str),
    "sent_at": st.text(max_size=20) | st.integers(0, 2 * 10**12).map(str),
})


@FUZZ
@given(body=bodies(),
       content_type=st.sampled_from([None, "application/json", "text/plain", FORM,
                                     FORM + "; charset=UTF-8", "garbage/;;"]),
       query=queries,
       content_encoding=st.sampled_from([None, "gzip", "deflate", "br", "zstd", "gzip, br"]),
       legacy=st.booleans(),
       max_bytes=st.sampled_from([16, 1024, 2 * MB]))
def test_decode_capture_never_leaks_other_exceptions(body, content_type, query,
                                                     content_encoding, legacy, max_bytes):
    try:
        req = decode_capture(body, query=query, content_type=content_type,
                             content_encoding=content_encoding, legacy=legacy,
                             max_bytes=max_bytes)
    except SightlineError as exc:
        assert exc.status in (400, 413, 415)
        assert exc.code != "undecodable_payload", exc.__cause__  # the safety net never fires
        assert isinstance(exc.detail, str) and exc.detail
        return
    assert isinstance(req, CaptureRequest)
    assert isinstance(req.events, list)
    assert req.token is None or isinstance(req.token, str)
    assert req.sent_at is None or isinstance(req.sent_at, str)
    assert req.sent_at_ms is None or req.sent_at_ms >= 1_609_459_200_000
    assert isinstance(req.historical_migration, bool)


@FUZZ
@given(body=bodies(),
       content_encoding=st.sampled_from([None, "gzip", "deflate", "br", "zstd", "identity"]),
       max_bytes=st.sampled_from([16, 1024, 2 * MB]))
def test_decode_v1_never_leaks_other_exceptions(body, content_encoding, max_bytes):
    try:
        req = decode_v1_capture(body, content_encoding=content_encoding, max_bytes=max_bytes)
    except SightlineError as exc:
        assert exc.status in (400, 413, 415)
        assert exc.code != "undecodable_payload", exc.__cause__
        return
    assert isinstance(req, CaptureRequest) and isinstance(req.events, list)
    assert req.token is None


# --------------------------------------------------------------------------------------
# 2. round trip
# --------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=8,
)

events_st = st.lists(
    st.fixed_dictionaries(
        {"event": st.text(min_size=1, max_size=16),
         "distinct_id": st.text(max_size=16) | st.integers(-2**53, 2**53),
         "properties": st.dictionaries(st.text(max_size=10), json_values, max_size=4)},
        optional={"uuid": st.uuids().map(str), "timestamp": st.just("2026-08-01T12:00:00Z"),
                  "$set": st.dictionaries(st.text(max_size=5), json_values, max_size=2)},
    ),
    max_size=4,
)

MODES = ["json", "gzip_header", "gzip_sniff", "gzip_query_hint", "b64_form", "b64_form_spaces",
         "b64_form_no_hint", "lz64_form", "lz64_query", "get_b64", "get_json", "double_b64"]


def encode(mode: str, payload: bytes) -> dict:
    """Return decode_capture kwargs for ``payload`` (UTF-8 JSON) sent in ``mode``."""
    kw = {"body": b"", "query": {}, "content_type": None, "content_encoding": None}
    if mode == "json":
        kw.update(body=payload, content_type="application/json")
    elif mode == "gzip_header":
        kw.update(body=gzip.compress(payload), content_type="application/json",
                  content_encoding="gzip")
    elif mode == "gzip_sniff":
        kw.update(body=gzip.compress(payload), content_type="text/plain")
    elif mode == "gzip_query_hint":
        kw.update(body=gzip.compress(payload), content_type="text/plain",
                  query={"compression": "gzip-js", "ver": "1.0"})
    elif mode == "b64_form":
        enc = urllib.parse.quote(base64.b64encode(payload), safe="")
        kw.update(body=b"data=" + enc.encode(), content_type=FORM, query={"compression": "base64"})
    elif mode == "b64_form_spaces":
        kw.update(body=b"data=" + base64.b64encode(payload), content_type=FORM,
                  query={"compression": "base64"})
    elif mode == "b64_form_no_hint":
        enc = urllib.parse.quote(base64.b64encode(payload), safe="")
        kw.update(body=b"data=" + enc.encode() + b"&ver=1.2.3", content_type=FORM)
    elif mode == "lz64_form":
        enc = urllib.parse.quote(lz64(payload.decode()), safe="")
        kw.update(body=b"data=" + enc.encode() + b"&compression=lz64", content_type=FORM)
    elif mode == "lz64_query":
        kw.update(body=lz64(payload.decode()).encode(), content_type="text/plain",
                  query={"compression": "lz64"})
    elif mode == "get_b64":
        kw.update(query={"data": base64.b64encode(payload).decode(), "ver": "1.0"})
    elif mode == "get_json":
        kw.update(query={"data": payload.decode()})
    elif mode == "double_b64":
        kw.update(body=base64.b64encode(base64.b64encode(payload)), content_type="text/plain")
    else:  # pragma: no cover
        raise AssertionError(mode)
    return kw


@FUZZ
@given(events=events_st, mode=st.sampled_from(MODES), as_envelope=st.booleans(),
       legacy=st.booleans(), token=st.none() | st.text(min_size=1, max_size=20),
       historical=st.booleans())
def test_round_trip(events, mode, as_envelope, legacy, token, historical):
    if mode == "double_b64":
        assume(legacy)  # the second base64 layer is only unwrapped on legacy paths
    if as_envelope:
        body = {"batch": events, "sent_at": "2026-08-01T12:00:00.000Z",
                "historical_migration": historical}
        if token is not None:
            body["api_key"] = token
    else:
        body = events
    payload = orjson.dumps(body)
    kw = encode(mode, payload)
    req = decode_capture(kw.pop("body"), legacy=legacy, max_bytes=2 * MB, **kw)
    assert req.events == events
    if as_envelope:
        assert req.token == token
        assert req.sent_at == "2026-08-01T12:00:00.000Z"
        assert req.historical_migration is historical
    else:
        assert req.token is None and req.sent_at is None and req.historical_migration is False


@FUZZ
@given(event=events_st.filter(bool).map(lambda evs: evs[0]),
       mode=st.sampled_from(MODES), token=st.none() | st.text(min_size=1, max_size=20))
def test_round_trip_single_event(event, mode, token):
    if token is not None:
        event = {**event, "token": token}
    kw = encode(mode, orjson.dumps(event))
    req = decode_capture(kw.pop("body"), legacy=True, max_bytes=2 * MB, **kw)
    assert req.events == [event]
    assert req.token == token


@FUZZ
@given(events=events_st, encoding=st.sampled_from(["gzip", "deflate", None]),
       options=st.fixed_dictionaries({}, optional={
           "cookieless_mode": st.booleans(), "disable_skew_correction": st.booleans(),
           "product_tour_id": st.text(max_size=8), "process_person_profile": st.booleans()}))
def test_v1_round_trip(events, encoding, options):
    wire = [{**e, "options": options} for e in events]
    payload = orjson.dumps({"created_at": "2026-08-01T12:00:00+00:00", "batch": wire})
    if encoding == "gzip":
        payload = gzip.compress(payload)
    elif encoding == "deflate":
        payload = zlib.compress(payload)
    req = decode_v1_capture(payload, content_encoding=encoding, max_bytes=2 * MB)
    mapping = {"cookieless_mode": "$cookieless_mode", "disable_skew_correction": "$ignore_sent_at",
               "product_tour_id": "$product_tour_id",
               "process_person_profile": "$process_person_profile"}
    expected = [{**e, "properties": {**e["properties"],
                                     **{mapping[k]: v for k, v in options.items()}}}
                for e in events]
    assert req.events == expected
    assert req.created_at == "2026-08-01T12:00:00+00:00"


# --------------------------------------------------------------------------------------
# 3. lz-string decoder vs the lzstring package
# --------------------------------------------------------------------------------------

@FUZZ
@given(text=st.text(max_size=200))
def test_lz_decoder_round_trips_package_output(text):
    units = js_units(text)
    compressed = lzstring.LZString().compressToBase64(units)
    assert lz_decompress_from_base64(compressed, 10**6) == units


@FUZZ
@given(garbage=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
                       min_size=1, max_size=120))
def test_lz_decoder_agrees_with_package_on_garbage(garbage):
    try:
        theirs, their_exc = lzstring.LZString().decompressFromBase64(garbage), None
    except Exception as exc:  # the package raises IndexError/UnboundLocalError on garbage
        theirs, their_exc = None, exc
    try:
        mine = lz_decompress_from_base64(garbage, 10**7)
    except SightlineError:
        mine = None
    if isinstance(theirs, str) and theirs:
        assert mine == theirs
    if mine is not None and not isinstance(their_exc, IndexError):
        # the package raises IndexError where JS (and we) read zeros past the end
        assert theirs == mine
