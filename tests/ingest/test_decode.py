"""Example tests for sightline.ingest.decode (wire spec §2.1-2.3, §3)."""

from __future__ import annotations

import base64
import gzip
import time
import urllib.parse
import zlib

import lzstring
import orjson
import pytest

from sightline.errors import InvalidInput, PayloadTooLarge, SightlineError
from sightline.ingest import decode as decode_mod
from sightline.ingest.decode import (
    CaptureRequest,
    decode_body,
    decode_capture,
    decode_v1_capture,
    lz_decompress_from_base64,
)

FORM = "application/x-www-form-urlencoded"
MB = 1024 * 1024

EVENTS = [
    {"event": "$pageview", "distinct_id": "user-1", "uuid": "0190a8c2-0000-7000-8000-000000000001",
     "properties": {"token": "phc_abc", "$current_url": "https://example.com/?q=a+b&x=1",
                    "emoji": "héllo 😀 中文", "nested": {"a": [1, 2.5, None, True]}}},
    {"event": "clicked", "distinct_id": 42, "properties": {"token": "phc_abc"}},
]


def cap(body: bytes = b"", *, query=None, content_type=None, content_encoding=None,
        legacy=True, max_bytes=2 * MB) -> CaptureRequest:
    return decode_capture(body, query=query or {}, content_type=content_type,
                          content_encoding=content_encoding, legacy=legacy, max_bytes=max_bytes)


def body_of(body: bytes = b"", *, query=None, content_type=None, content_encoding=None,
            legacy=True, max_bytes=2 * MB):
    return decode_body(body, query=query or {}, content_type=content_type,
                       content_encoding=content_encoding, legacy=legacy, max_bytes=max_bytes)


def js_units(text: str) -> str:
    """A Python str holding the UTF-16 code units of ``text``, like a JS string."""
    raw = text.encode("utf-16-le")
    return "".join(chr(int.from_bytes(raw[i:i + 2], "little")) for i in range(0, len(raw), 2))


def lz64(text: str) -> str:
    return lzstring.LZString().compressToBase64(js_units(text))


def envelope(**extra) -> bytes:
    return orjson.dumps({"api_key": "phc_abc", "batch": EVENTS,
                         "sent_at": "2026-08-01T12:00:00.000Z", **extra})


def b64_with_plus_and_slash(obj_factory) -> tuple[bytes, bytes]:
    """Find a JSON payload whose base64 contains both '+' and '/'."""
    for i in range(2000):
        raw = orjson.dumps(obj_factory("~" * i + "\u00ff\u07ff\uffee"))
        enc = base64.b64encode(raw)
        if b"+" in enc and b"/" in enc:
            return raw, enc
    raise AssertionError("no payload with + and / found")


# --------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------

class TestShapes:
    def test_plain_json_envelope_with_api_key(self):
        req = cap(envelope(), content_type="application/json")
        assert req.events == EVENTS
        assert req.token == "phc_abc"
        assert req.sent_at == "2026-08-01T12:00:00.000Z"
        assert req.sent_at_ms is None
        assert req.historical_migration is False
        assert req.created_at is None

    def test_envelope_with_token_key(self):
        req = cap(orjson.dumps({"token": "phc_tok", "batch": EVENTS}))
        assert req.token == "phc_tok"
        assert req.sent_at is None
        assert req.events == EVENTS

    def test_envelope_with_dollar_token(self):
        assert cap(orjson.dumps({"$token": "phc_d", "batch": []})).token == "phc_d"

    def test_envelope_api_key_preferred_and_non_string_ignored(self):
        req = cap(orjson.dumps({"api_key": 5, "token": "phc_t", "batch": []}))
        assert req.token == "phc_t"
        assert cap(orjson.dumps({"api_key": None, "batch": []})).token is None

    def test_bare_array(self):
        req = cap(orjson.dumps(EVENTS))
        assert req.events == EVENTS
        assert req.token is None and req.sent_at is None

    def test_empty_array_is_zero_events(self):
        assert cap(b"[]").events == []
        assert cap(b'{"batch": []}').events == []

    def test_non_object_items_are_kept_as_is(self):
        req = cap(b'[{"event": "a"}, 5, "x", null, []]')
        assert req.events == [{"event": "a"}, 5, "x", None, []]

    def test_single_event(self):
        ev = {"event": "single", "distinct_id": "d", "properties": {"a": 1}}
        req = cap(orjson.dumps(ev))
        assert req.events == [ev]
        assert req.token is None

    def test_single_event_own_token_counts(self):
        assert cap(b'{"event": "e", "api_key": "phc_1"}').token == "phc_1"
        assert cap(b'{"event": "e", "token": "phc_2"}').token == "phc_2"
        assert cap(b'{"event": "e", "$token": "phc_3"}').token == "phc_3"

    def test_single_event_without_event_key_is_kept_for_validation(self):
        req = cap(b'{"distinct_id": "d", "properties": {}}')
        assert req.events == [{"distinct_id": "d", "properties": {}}]

    def test_event_key_beats_batch_key(self):
        req = cap(b'{"event": "e", "batch": 5}')
        assert req.events == [{"event": "e", "batch": 5}]

    def test_engage_becomes_identify(self):
        body = {"$set": {"email": "a@b.c"}, "$token": "phc_e", "$distinct_id": "u1"}
        req = cap(orjson.dumps(body))
        assert req.events == [{"event": "$identify", **body}]
        assert req.token == "phc_e"

    def test_engage_set_once(self):
        req = cap(b'{"$set_once": {"a": 1}, "distinct_id": "u"}')
        assert req.events[0]["event"] == "$identify"

    def test_historical_migration(self):
        assert cap(envelope(historical_migration=True)).historical_migration is True
        assert cap(envelope(historical_migration=False)).historical_migration is False
        assert cap(envelope(historical_migration="true")).historical_migration is False

    def test_envelope_sent_at_must_be_a_string(self):
        assert cap(orjson.dumps({"batch": [], "sent_at": 1700000000000})).sent_at is None

    @pytest.mark.parametrize("value", [
        b'"a string"', b"42", b"1.5", b"null", b"true", b'{"batch": 5}', b'{"batch": {}}',
        b'{"batch": null}', b"{}", b'{"api_key": "phc"}', b'{"sent_at": "x"}',
    ])
    def test_invalid_top_level(self, value):
        with pytest.raises(InvalidInput) as ei:
            cap(value)
        assert ei.value.code == "invalid_payload"
        assert ei.value.status == 400

    def test_decode_body_returns_any_json_value(self):
        assert body_of(b'"a string"') == "a string"
        assert body_of(b'{"batch": 5}') == {"batch": 5}


# --------------------------------------------------------------------------------------
# sent_at from the query
# --------------------------------------------------------------------------------------

class TestQuerySentAt:
    def test_underscore(self):
        assert cap(b"[]", query={"_": "1754049600000"}).sent_at_ms == 1754049600000

    def test_sent_at(self):
        assert cap(b"[]", query={"sent_at": "1754049600000"}).sent_at_ms == 1754049600000

    def test_sent_at_preferred_over_underscore(self):
        req = cap(b"[]", query={"sent_at": "1754049600001", "_": "1754049600000"})
        assert req.sent_at_ms == 1754049600001

    @pytest.mark.parametrize("value", ["1609459199999", "1700000000", "0", "-1754049600000",
                                       "17540496000.5", "abc", "", "1e12", "99999999999999999999"])
    def test_ignored(self, value):
        assert cap(b"[]", query={"_": value}).sent_at_ms is None

    def test_boundary_2021(self):
        assert cap(b"[]", query={"_": "1609459200000"}).sent_at_ms == 1609459200000

    def test_with_envelope_sent_at_both_kept(self):
        req = cap(envelope(), query={"_": "1754049600000"})
        assert req.sent_at == "2026-08-01T12:00:00.000Z"
        assert req.sent_at_ms == 1754049600000


# --------------------------------------------------------------------------------------
# encodings
# --------------------------------------------------------------------------------------

class TestEncodings:
    def test_gzip_with_content_encoding(self):
        req = cap(gzip.compress(envelope()), content_type="application/json",
                  content_encoding="gzip", legacy=False)
        assert req.events == EVENTS and req.token == "phc_abc"

    def test_gzip_content_encoding_case_insensitive(self):
        assert cap(gzip.compress(envelope()), content_encoding=" GZIP ").events == EVENTS

    def test_gzip_without_hint_is_sniffed(self):
        # posthog-js >= 1.398.2: gzip body, text/plain, no compression param
        req = cap(gzip.compress(envelope()), content_type="text/plain")
        assert req.events == EVENTS

    def test_gzip_js_query_hint(self):
        req = cap(gzip.compress(orjson.dumps(EVENTS)),
                  query={"compression": "gzip-js", "ver": "1.200.0", "_": "1754049600000"},
                  content_type="text/plain")
        assert req.events == EVENTS
        assert req.sent_at_ms == 1754049600000

    def test_gzip_query_hint_plain_value(self):
        assert cap(gzip.compress(orjson.dumps(EVENTS)), query={"compression": "gzip"}).events == EVENTS

    def test_multi_member_gzip(self):
        raw = orjson.dumps(EVENTS)
        half = len(raw) // 2
        body = gzip.compress(raw[:half]) + gzip.compress(raw[half:])
        assert cap(body).events == EVENTS

    def test_gzip_hint_but_body_is_plain_json_is_tolerated(self):
        assert cap(orjson.dumps(EVENTS), content_encoding="gzip").events == EVENTS
        assert cap(orjson.dumps(EVENTS), query={"compression": "gzip-js"}).events == EVENTS

    def test_base64_wrapped_gzip_without_hint(self):
        body = base64.b64encode(gzip.compress(orjson.dumps(EVENTS)))
        assert cap(body, legacy=False).events == EVENTS

    def test_base64_wrapped_gzip_with_gzip_hint(self):
        body = base64.b64encode(gzip.compress(orjson.dumps(EVENTS)))
        assert cap(body, query={"compression": "gzip-js"}, legacy=False).events == EVENTS

    def test_form_base64_with_query_hint(self):
        raw, enc = b64_with_plus_and_slash(lambda pad: {"api_key": "phc_abc", "batch": EVENTS,
                                                        "pad": pad})
        body = b"data=" + urllib.parse.quote(enc, safe="").encode()
        req = cap(body, query={"compression": "base64"}, content_type=FORM)
        assert req.events == EVENTS and req.token == "phc_abc"

    def test_form_base64_spaces_instead_of_plus(self):
        raw, enc = b64_with_plus_and_slash(lambda pad: [dict(EVENTS[0], pad=pad)])
        # the client forgot to urlencode: '+' arrives literally and urldecodes to ' '
        body = b"data=" + enc
        assert b"+" in body
        req = cap(body, query={"compression": "base64"}, content_type=FORM)
        assert req.events == orjson.loads(raw)

    def test_form_base64_charset_in_content_type(self):
        enc = base64.b64encode(orjson.dumps(EVENTS))
        body = b"data=" + urllib.parse.quote(enc, safe="").encode() + b"&compression=base64"
        assert cap(body, content_type=FORM + "; charset=UTF-8").events == EVENTS

    def test_form_compression_beats_query_compression(self):
        enc = base64.b64encode(orjson.dumps(EVENTS))
        body = b"data=" + urllib.parse.quote(enc, safe="").encode() + b"&compression=base64"
        req = cap(body, query={"compression": "lz64"}, content_type=FORM, legacy=False)
        assert req.events == EVENTS

    def test_form_base64_without_any_hint(self):
        enc = base64.b64encode(orjson.dumps(EVENTS))
        body = b"data=" + urllib.parse.quote(enc, safe="").encode() + b"&ver=1.2.3"
        assert cap(body, content_type=FORM, legacy=False).events == EVENTS

    def test_form_plain_json_data(self):
        body = b"ver=1.2.3&data=" + urllib.parse.quote(orjson.dumps(EVENTS)).encode()
        assert cap(body, content_type=FORM).events == EVENTS

    def test_form_detected_without_form_content_type(self):
        enc = base64.b64encode(orjson.dumps(EVENTS))
        body = b"data=" + urllib.parse.quote(enc, safe="").encode() + b"&compression=base64"
        assert cap(body, content_type="text/plain").events == EVENTS
        assert cap(body, content_type=None).events == EVENTS

    def test_form_content_type_with_json_body_is_tolerated(self):
        assert cap(orjson.dumps(EVENTS), content_type=FORM).events == EVENTS

    def test_form_gzip_data(self):
        gz = gzip.compress(orjson.dumps(EVENTS))
        body = b"compression=gzip-js&data=" + urllib.parse.quote_from_bytes(gz, safe="").encode()
        assert cap(body, content_type=FORM).events == EVENTS

    def test_form_empty_data_is_empty_payload(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b"data=&compression=base64", content_type=FORM)
        assert ei.value.code == "empty_payload"

    def test_get_query_data_base64(self):
        enc = base64.b64encode(orjson.dumps(EVENTS[0])).decode()
        req = cap(b"", query={"data": enc, "ver": "1.0"})
        assert req.events == [EVENTS[0]]

    def test_get_query_data_base64_with_spaces(self):
        raw, enc = b64_with_plus_and_slash(lambda pad: dict(EVENTS[0], pad=pad))
        req = cap(b"", query={"data": enc.decode().replace("+", " ")})
        assert req.events == [orjson.loads(raw)]

    def test_get_query_data_urlsafe_base64(self):
        raw, enc = b64_with_plus_and_slash(lambda pad: dict(EVENTS[0], pad=pad))
        urlsafe = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        assert cap(b"", query={"data": urlsafe}).events == [orjson.loads(raw)]

    def test_get_query_data_unpadded_without_urlsafe_chars(self):
        for i in range(200):
            raw = orjson.dumps([{"event": "e" * i}])
            enc = base64.urlsafe_b64encode(raw).rstrip(b"=")
            if len(enc) % 4 and b"-" not in enc and b"_" not in enc:
                break
        else:  # pragma: no cover
            raise AssertionError("no suitable payload")
        assert cap(b"", query={"data": enc.decode()}).events == orjson.loads(raw)

    def test_get_query_data_plain_json(self):
        req = cap(b"", query={"data": orjson.dumps(EVENTS).decode()})
        assert req.events == EVENTS

    def test_query_data_beats_body(self):
        req = cap(b'[{"event": "from-body"}]', query={"data": '[{"event": "from-query"}]'})
        assert req.events == [{"event": "from-query"}]

    def test_empty_query_data_falls_back_to_body(self):
        assert cap(orjson.dumps(EVENTS), query={"data": ""}).events == EVENTS

    def test_query_data_ignores_content_encoding(self):
        req = cap(b"", query={"data": orjson.dumps(EVENTS).decode()}, content_encoding="br")
        assert req.events == EVENTS

    def test_lz64_form(self):
        text = orjson.dumps(EVENTS).decode()
        body = b"data=" + urllib.parse.quote(lz64(text), safe="").encode() + b"&compression=lz64"
        assert cap(body, content_type=FORM).events == EVENTS

    def test_lz64_form_with_spaces_instead_of_plus(self):
        for i in range(500):
            events = [dict(EVENTS[0], pad="x" * i)]
            c = lz64(orjson.dumps(events).decode())
            if "+" in c:
                break
        else:  # pragma: no cover
            raise AssertionError("no lz64 output with '+'")
        body = b"data=" + c.encode() + b"&compression=lz-string"
        assert cap(body, content_type=FORM).events == events

    def test_lz64_raw_body_with_query_hint(self):
        c = lz64(orjson.dumps(EVENTS).decode())
        assert cap(c.encode(), query={"compression": "lz64"}).events == EVENTS

    def test_lz64_get_query_data(self):
        c = lz64(orjson.dumps(EVENTS).decode())
        assert cap(b"", query={"data": c, "compression": "lz64"}).events == EVENTS

    def test_lz64_lone_surrogate_becomes_replacement_char(self):
        c = lzstring.LZString().compressToBase64('[{"event": "x\ud800y"}]')
        assert cap(c.encode(), query={"compression": "lz64"}).events == [{"event": "x\ufffdy"}]

    def test_legacy_double_base64(self):
        body = base64.b64encode(base64.b64encode(orjson.dumps(EVENTS)))
        assert cap(body, legacy=True).events == EVENTS

    def test_legacy_base64_inside_gzip(self):
        body = gzip.compress(base64.b64encode(orjson.dumps(EVENTS)))
        assert cap(body, legacy=True).events == EVENTS

    def test_non_legacy_does_not_decode_twice(self):
        body = base64.b64encode(base64.b64encode(orjson.dumps(EVENTS)))
        with pytest.raises(InvalidInput) as ei:
            cap(body, legacy=False)
        assert ei.value.code == "invalid_json"

    def test_base64_hint_on_raw_body(self):
        body = base64.b64encode(orjson.dumps(EVENTS))
        assert cap(body, query={"compression": "b64"}, legacy=False).events == EVENTS

    def test_base64_hint_with_json_body_is_tolerated(self):
        assert cap(orjson.dumps(EVENTS), query={"compression": "base64"}).events == EVENTS

    def test_base64_hint_with_garbage(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b"data=%21%21not-base64%21%21", query={"compression": "base64"},
                content_type=FORM)
        assert ei.value.code == "invalid_compression"

    def test_json_number_that_looks_like_base64_is_not_decoded(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b"12345678")
        assert ei.value.code == "invalid_payload"

    def test_junk_compression_hint_is_ignored(self):
        assert cap(orjson.dumps(EVENTS), query={"compression": "junk"}).events == EVENTS

    def test_utf8_bom_is_tolerated(self):
        assert cap(b"\xef\xbb\xbf" + orjson.dumps(EVENTS)).events == EVENTS

    def test_deflate_content_encoding(self):
        assert cap(zlib.compress(orjson.dumps(EVENTS)), content_encoding="deflate").events == EVENTS

    def test_unknown_content_encoding_with_plain_json_passes(self):
        assert cap(orjson.dumps(EVENTS), content_encoding="br").events == EVENTS

    def test_unknown_content_encoding_with_binary_body_is_415(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b"\x8b\x05\x80binary", content_encoding="br")
        assert ei.value.code == "unsupported_encoding"
        assert ei.value.status == 415


class TestJsonLeniency:
    def test_nan_and_infinity_become_null(self):
        assert body_of(b'{"a": NaN, "b": [Infinity, -Infinity, 1]}') == \
            {"a": None, "b": [None, None, 1]}

    def test_nan_inside_strings_is_untouched(self):
        assert body_of(b'{"NaN": "x NaN \\" Infinity", "v": NaN}') == \
            {"NaN": 'x NaN " Infinity', "v": None}

    def test_lone_surrogate_escape_becomes_replacement(self):
        assert body_of(b'["a\\ud83d", "\\ud83d\\ude00", "\\\\ud800", "\\udc00z"]') == \
            ["a\ufffd", "\U0001F600", "\\ud800", "\ufffdz"]

    def test_bad_json_reports_orjson_message(self):
        with pytest.raises(InvalidInput) as ei:
            body_of(b'{"a": 1,}')
        assert ei.value.code == "invalid_json"
        assert "trailing comma" in ei.value.detail

    def test_deep_nesting_is_invalid_json(self):
        with pytest.raises(InvalidInput) as ei:
            body_of(b"[" * 5000 + b"]" * 5000)
        assert ei.value.code == "invalid_json"


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------

_BOMB_CACHE: dict[str, bytes] = {}


def gzip_bomb(size: int = 200 * MB) -> bytes:
    """``size`` zero bytes, gzip level 9, built by streaming (~200 KB)."""
    key = f"gz{size}"
    if key not in _BOMB_CACHE:
        co = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = bytes(MB)
        parts = [co.compress(block) for _ in range(size // MB)]
        parts.append(co.flush())
        _BOMB_CACHE[key] = b"".join(parts)
    return _BOMB_CACHE[key]


class TestErrors:
    def test_empty_body(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b"")
        assert (ei.value.status, ei.value.code) == (400, "empty_payload")

    def test_whitespace_only_body(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b"   \n")
        assert ei.value.code == "empty_payload"

    def test_not_json(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b"this is not json")
        assert (ei.value.status, ei.value.code) == (400, "invalid_json")
        assert ei.value.detail.startswith("invalid JSON:")

    def test_non_utf8(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b'[{"event": "caf\xe9"}]')
        assert (ei.value.status, ei.value.code) == (400, "invalid_encoding")
        assert "offset 15" in ei.value.detail

    def test_non_utf8_inside_gzip(self):
        with pytest.raises(InvalidInput) as ei:
            cap(gzip.compress(b'["\xff"]'))
        assert ei.value.code == "invalid_encoding"

    def test_corrupt_gzip(self):
        good = gzip.compress(orjson.dumps(EVENTS))
        corrupt = good[:10] + bytes(b ^ 0x5A for b in good[10:30]) + good[30:]
        with pytest.raises(InvalidInput) as ei:
            cap(corrupt, content_encoding="gzip")
        assert (ei.value.status, ei.value.code) == (400, "invalid_compression")

    def test_truncated_gzip(self):
        good = gzip.compress(orjson.dumps(EVENTS))
        with pytest.raises(InvalidInput) as ei:
            cap(good[: len(good) // 2])
        assert ei.value.code == "invalid_compression"

    def test_gzip_magic_then_garbage(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b"\x1f\x8b\x08garbage garbage")
        assert ei.value.code == "invalid_compression"

    def test_gzip_hint_with_garbage(self):
        with pytest.raises(InvalidInput) as ei:
            cap(b"\x00\x01garbage", query={"compression": "gzip-js"})
        assert ei.value.code == "invalid_compression"

    def test_gzip_bomb(self):
        bomb = gzip_bomb()
        assert len(bomb) < 1 * MB
        start = time.perf_counter()
        with pytest.raises(PayloadTooLarge) as ei:
            cap(bomb, content_encoding="gzip", legacy=False, max_bytes=20 * MB)
        assert (ei.value.status, ei.value.code) == (413, "payload_too_large")
        assert time.perf_counter() - start < 5

    def test_gzip_bomb_without_hint(self):
        with pytest.raises(PayloadTooLarge):
            cap(gzip_bomb(), content_type="text/plain", max_bytes=2 * MB)

    def test_gzip_exactly_at_limit_and_one_over(self):
        data = b"[" + b" " * 1022 + b"]"
        assert cap(gzip.compress(data), max_bytes=1024).events == []
        with pytest.raises(PayloadTooLarge):
            cap(gzip.compress(data + b" "), max_bytes=1024)

    def test_uncompressed_too_large(self):
        body = orjson.dumps([{"event": "x" * 3000}])
        with pytest.raises(PayloadTooLarge) as ei:
            cap(body, max_bytes=1000)
        assert ei.value.status == 413

    def test_raw_body_far_too_large(self):
        with pytest.raises(PayloadTooLarge):
            cap(b"[" + b" " * 10_000 + b"]", max_bytes=1000)

    def test_lz64_garbage(self):
        for garbage in [b"!!!!", b"zzzzzzzz", b"AAAA", b"\xff\xfe"]:
            with pytest.raises(InvalidInput) as ei:
                cap(garbage, query={"compression": "lz64"})
            assert ei.value.code == "invalid_compression", garbage

    def test_lz64_bomb(self):
        c = lzstring.LZString().compressToBase64("[" + " " * 500_000 + "]")
        assert len(c) < 20_000
        with pytest.raises(PayloadTooLarge):
            cap(c.encode(), query={"compression": "lz64"}, max_bytes=10_000)
        assert cap(c.encode(), query={"compression": "lz64"}, max_bytes=600_000).events == []

    def test_errors_are_sightline_errors_with_json(self):
        with pytest.raises(SightlineError) as ei:
            cap(b"nope")
        assert ei.value.to_json()["code"] == "invalid_json"


# --------------------------------------------------------------------------------------
# v1
# --------------------------------------------------------------------------------------

V1_BODY = {
    "created_at": "2026-08-01T12:00:00+00:00",
    "batch": [
        {"event": "signed_up", "uuid": "0190a8c2-0000-7000-8000-000000000002", "distinct_id": "u1",
         "timestamp": "2026-08-01T11:59:59+00:00",
         "options": {"cookieless_mode": True, "disable_skew_correction": True,
                     "product_tour_id": "tour-7", "process_person_profile": False},
         "properties": {"plan": "pro"}},
        {"event": "plain", "uuid": "0190a8c2-0000-7000-8000-000000000003", "distinct_id": "u2",
         "timestamp": "2026-08-01T11:59:59+00:00", "options": {}, "properties": {},
         "session_id": "s-1", "window_id": "w-1"},
    ],
    "historical_migration": True,
}
V1_EXPECTED = [
    {"event": "signed_up", "uuid": "0190a8c2-0000-7000-8000-000000000002", "distinct_id": "u1",
     "timestamp": "2026-08-01T11:59:59+00:00",
     "properties": {"plan": "pro", "$cookieless_mode": True, "$ignore_sent_at": True,
                    "$product_tour_id": "tour-7", "$process_person_profile": False}},
    {"event": "plain", "uuid": "0190a8c2-0000-7000-8000-000000000003", "distinct_id": "u2",
     "timestamp": "2026-08-01T11:59:59+00:00",
     "properties": {"$session_id": "s-1", "$window_id": "w-1"}},
]


class TestV1:
    def _check(self, req: CaptureRequest):
        assert req.events == V1_EXPECTED
        assert req.token is None
        assert req.created_at == "2026-08-01T12:00:00+00:00"
        assert req.historical_migration is True
        assert req.sent_at is None and req.sent_at_ms is None

    def test_gzip(self):
        self._check(decode_v1_capture(gzip.compress(orjson.dumps(V1_BODY)),
                                      content_encoding="gzip", max_bytes=MB))

    def test_deflate_zlib(self):
        self._check(decode_v1_capture(zlib.compress(orjson.dumps(V1_BODY)),
                                      content_encoding="deflate", max_bytes=MB))

    def test_deflate_raw(self):
        co = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = co.compress(orjson.dumps(V1_BODY)) + co.flush()
        self._check(decode_v1_capture(body, content_encoding="deflate", max_bytes=MB))

    @pytest.mark.parametrize("enc", [None, "identity", "none", ""])
    def test_identity(self, enc):
        self._check(decode_v1_capture(orjson.dumps(V1_BODY), content_encoding=enc, max_bytes=MB))

    def test_defaults(self):
        req = decode_v1_capture(b'{"batch": [{"event": "e"}]}', content_encoding=None,
                                max_bytes=MB)
        assert req.events == [{"event": "e"}]
        assert req.historical_migration is False and req.created_at is None

    def test_options_dropped_when_not_object(self):
        req = decode_v1_capture(b'{"batch": [{"event": "e", "options": null, "properties": {}}]}',
                                content_encoding=None, max_bytes=MB)
        assert req.events == [{"event": "e", "properties": {}}]

    def test_options_without_properties(self):
        req = decode_v1_capture(b'{"batch": [{"event": "e", "options": '
                                b'{"process_person_profile": false}}]}',
                                content_encoding=None, max_bytes=MB)
        assert req.events == [{"event": "e", "properties": {"$process_person_profile": False}}]

    @pytest.mark.skipif(decode_mod._zstd is not None, reason="zstandard is installed")
    def test_zstd_unavailable_is_415(self):
        with pytest.raises(InvalidInput) as ei:
            decode_v1_capture(b"\x28\xb5\x2f\xfd\x00\x00", content_encoding="zstd", max_bytes=MB)
        assert (ei.value.status, ei.value.code) == (415, "unsupported_encoding")

    @pytest.mark.skipif(decode_mod._zstd is None, reason="zstandard is not installed")
    def test_zstd(self):  # pragma: no cover - depends on the environment
        body = decode_mod._zstd.ZstdCompressor().compress(orjson.dumps(V1_BODY))
        self._check(decode_v1_capture(body, content_encoding="zstd", max_bytes=MB))

    def test_brotli_is_415(self):
        with pytest.raises(InvalidInput) as ei:
            decode_v1_capture(b"\x1b\x00\x00binary", content_encoding="br", max_bytes=MB)
        assert (ei.value.status, ei.value.code) == (415, "unsupported_encoding")

    @pytest.mark.parametrize("body,code", [
        (b"", "empty_payload"),
        (b"[]", "invalid_payload"),
        (b'{"batch": 5}', "invalid_payload"),
        (b'{"created_at": "x"}', "invalid_payload"),
        (b"{", "invalid_json"),
        (b'{"batch": ["\xff"]}', "invalid_encoding"),
    ])
    def test_errors(self, body, code):
        with pytest.raises(InvalidInput) as ei:
            decode_v1_capture(body, content_encoding=None, max_bytes=MB)
        assert ei.value.code == code

    def test_corrupt_gzip(self):
        with pytest.raises(InvalidInput) as ei:
            decode_v1_capture(b"not gzip at all", content_encoding="gzip", max_bytes=MB)
        assert ei.value.code == "invalid_compression"

    def test_corrupt_deflate(self):
        with pytest.raises(InvalidInput) as ei:
            decode_v1_capture(b"\x78\x9cnot deflate", content_encoding="deflate", max_bytes=MB)
        assert ei.value.code == "invalid_compression"

    def test_gzip_bomb(self):
        with pytest.raises(PayloadTooLarge):
            decode_v1_capture(gzip_bomb(), content_encoding="gzip", max_bytes=20 * MB)

    def test_deflate_bomb(self):
        co = zlib.compressobj(9)
        bomb = b"".join(co.compress(bytes(MB)) for _ in range(50)) + co.flush()
        with pytest.raises(PayloadTooLarge):
            decode_v1_capture(bomb, content_encoding="deflate", max_bytes=MB)


# --------------------------------------------------------------------------------------
# the lz-string decoder against the lzstring package
# --------------------------------------------------------------------------------------

class TestLzDecoder:
    @pytest.mark.parametrize("text", ["", "a", "hello", "a" * 1000, "héllo wörld 中文",
                                      js_units("😀 astral 𝄞"), "\x00\x01\uffff", "ab" * 5000])
    def test_matches_package(self, text):
        c = lzstring.LZString().compressToBase64(text)
        assert lz_decompress_from_base64(c, 10**7) == text
        assert lzstring.LZString().decompressFromBase64(c) == text

    def test_cap(self):
        c = lzstring.LZString().compressToBase64("x" * 10_000)
        assert lz_decompress_from_base64(c, 10_000) == "x" * 10_000
        with pytest.raises(PayloadTooLarge):
            lz_decompress_from_base64(c, 9_999)
