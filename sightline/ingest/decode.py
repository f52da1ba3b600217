"""Decode capture request bodies (PostHog wire spec §2.1-2.3, §3).

Pure functions: bytes + headers/query in, parsed JSON / :class:`CaptureRequest` out.
No I/O and no web framework. Every input either decodes or raises a
:class:`~sightline.errors.SightlineError` subclass:

* ``InvalidInput`` (400) with ``code`` one of ``empty_payload``, ``invalid_compression``,
  ``invalid_encoding``, ``invalid_json``, ``invalid_payload``, ``undecodable_payload``
  (last-resort safety net, should never happen), or status 415 with
  ``unsupported_encoding``;
* ``PayloadTooLarge`` (413, ``payload_too_large``).

Pipeline (``decode_body``):

0. Transport: a body (not query ``data``) with ``Content-Encoding`` gzip/deflate/zstd is
   decoded first when it is actually in that format (magic bytes / zlib header); a body
   that is already plain JSON passes through (a proxy may have decoded it already).
1. Payload = query ``data`` if non-empty, else body; empty is ``empty_payload``.
2. A non-form payload that is strict base64 is optimistically decoded (kept only if the
   result is UTF-8 text or gzip). Skipped when the hint says lz64 (lz64 is base64 too).
3. Form bodies (``application/x-www-form-urlencoded``, or a body that starts like a form
   and has a ``data`` field): payload = ``data``; spaces go back to ``+`` in base64-looking
   data. The form payload gets step 2 as well.
4. Compression hint: form ``compression``, else query ``compression``, else
   ``Content-Encoding``; gzip/gzip-js, lz64/lz-string, base64/b64; anything else is none.
5. base64 hint → base64; lz64 hint → LZString decompressFromBase64 (bounded); gzip hint or
   the gzip magic ``1f 8b 08`` → gunzip (bounded, streaming).
6. Legacy paths: if the text is still strict base64, decode once more.
7. UTF-8 → JSON (orjson; fallbacks for NaN/Infinity and lone ``\\uD800`` escapes).
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from sightline.errors import InvalidInput, PayloadTooLarge, SightlineError

try:  # optional: ISA-L's inflate, about twice zlib's speed on the everyday gzip body (_gunzip)
    from isal import isal_zlib as _isal  # type: ignore[import-not-found]
except Exception:  # pragma: no cover - depends on the environment
    _isal = None

try:  # optional: zstd is only needed for opt-in v1 capture bodies
    import zstandard as _zstd  # type: ignore[import-not-found]
except Exception:  # pragma: no cover - depends on the environment
    _zstd = None

__all__ = [
    "CaptureRequest",
    "decode_body",
    "decode_capture",
    "decode_v1_capture",
]

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_UTF8_BOM = b"\xef\xbb\xbf"

#: query ``sent_at``/``_`` values below this (2021-01-01T00:00:00Z in ms) are ignored
MIN_SENT_AT_MS = 1_609_459_200_000
#: ...and so are values beyond the year 9999
MAX_SENT_AT_MS = 253_402_300_799_999

ENVELOPE_KEYS = frozenset(
    {"batch", "api_key", "token", "$token", "sent_at", "historical_migration", "created_at"}
)
#: top-level keys of an /engage-style (mixpanel people) update without ``event``
ENGAGE_KEYS = frozenset(
    {"$set", "$set_once", "$unset", "$add", "$append", "$remove", "$union", "$delete"}
)

#: v1 ``options`` field → legacy property
V1_OPTION_PROPERTIES = {
    "cookieless_mode": "$cookieless_mode",
    "disable_skew_correction": "$ignore_sent_at",
    "product_tour_id": "$product_tour_id",
    "process_person_profile": "$process_person_profile",
}
#: v1 top-level event fields that the SDK lifted out of properties
V1_TOPLEVEL_PROPERTIES = {"session_id": "$session_id", "window_id": "$window_id"}


@dataclass
class CaptureRequest:
    events: list[dict]             # raw event objects as sent, in order (not validated here;
    #                                a non-object item is kept as-is for the validator)
    token: str | None              # batch-level token (envelope api_key/token/$token)
    sent_at: str | None            # envelope ``sent_at`` (ISO string)
    sent_at_ms: int | None         # query ``sent_at`` / ``_`` (ms epoch, >= 2021)
    historical_migration: bool     # envelope ``historical_migration`` is true
    created_at: str | None = None  # v1 envelope ``created_at``


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------

def _bad(detail: str, code: str, status: int | None = None) -> InvalidInput:
    return InvalidInput(detail, code=code, status=status)


def _too_large(what: str, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{what} exceeds the limit of {max_bytes} bytes",
                           code="payload_too_large")


def _raw_limit(max_bytes: int) -> int:
    # Sanity ceiling on the encoded input (base64 inflates by 4/3, urlencoding by up to 3x);
    # the exact max_bytes limit applies to every decoded stage.
    return max_bytes * 4 + 1024


def _looks_like_json(data: bytes) -> bool:
    head = data[:64].lstrip(b" \t\r\n")
    if head.startswith(_UTF8_BOM):
        head = head[3:].lstrip(b" \t\r\n")
    return head[:1] in (b"{", b"[")


_B64_STD = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_B64_URL = re.compile(rb"[A-Za-z0-9_-]+={0,2}")
_B64_LOOSE = re.compile(rb"[A-Za-z0-9+/= ]+")
_B64_ANY = re.compile(rb"[A-Za-z0-9+/_=\-]+")
_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")


def _strict_b64_decode(data: bytes) -> bytes | None:
    """Decode ``data`` if the *whole* payload is strict base64 (standard or urlsafe
    alphabet, sensible length, valid padding); ``None`` otherwise."""
    n = len(data)
    if n < 4 or data[:1] in (b"{", b"["):
        return None
    if n % 4 == 0 and _B64_STD.fullmatch(data):
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return None
    if _B64_URL.fullmatch(data):  # urlsafe alphabet, padding optional
        body = data.rstrip(b"=")
        if (b"=" in data and n % 4) or len(body) % 4 == 1:
            return None
        body = body.translate(_URLSAFE_TO_STD)
        try:
            return base64.b64decode(body + b"=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def _lenient_b64_decode(data: bytes) -> bytes | None:
    """Decode base64 the way a ``compression=base64`` hint allows: spaces that were ``+``,
    line breaks, urlsafe alphabet, missing padding."""
    s = data.strip().replace(b" ", b"+").replace(b"\r", b"").replace(b"\n", b"")
    if not s or not _B64_ANY.fullmatch(s):
        return None
    s = s.rstrip(b"=").translate(_URLSAFE_TO_STD)
    if len(s) % 4 == 1 or b"=" in s:
        return None
    try:
        return base64.b64decode(s + b"=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _optimistic_b64(data: bytes) -> bytes:
    """Spec step 2 / 6: decode strict base64, but keep the result only when it is
    plausible (gzip, or UTF-8 text); a JSON number such as ``1234`` stays as it is."""
    decoded = _strict_b64_decode(data)
    if decoded is None or not decoded:
        return data
    if decoded.startswith(GZIP_MAGIC) or _is_utf8(decoded):
        return decoded
    return data


def _fix_form_spaces(data: bytes) -> bytes:
    """urldecoding turned base64 ``+`` into spaces: turn them back."""
    if b" " in data and _B64_LOOSE.fullmatch(data.strip()):
        return data.strip().replace(b" ", b"+")
    return data


# --------------------------------------------------------------------------------------
# forms
# --------------------------------------------------------------------------------------

_FORM_START = re.compile(rb"[A-Za-z_$][A-Za-z0-9_.$\-\[\]]{0,63}=")


def _parse_form(payload: bytes) -> dict[bytes, bytes]:
    """application/x-www-form-urlencoded → {key: value} (first value wins), bytes-safe."""
    out: dict[bytes, bytes] = {}
    for part in payload.split(b"&"):
        if not part:
            continue
        key, sep, value = part.partition(b"=")
        key = unquote_to_bytes(key.replace(b"+", b" "))
        value = unquote_to_bytes(value.replace(b"+", b" ")) if sep else b""
        out.setdefault(key, value)
    return out


def _is_form_content_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"


# --------------------------------------------------------------------------------------
# decompression
# --------------------------------------------------------------------------------------

def _inflate(data: bytes, wbits: int, max_bytes: int, what: str) -> bytes:
    """Streaming zlib/gzip/raw-deflate decompression with a hard output ceiling.

    Output is produced at most ``max_bytes + 1`` bytes at a time, so a bomb is detected
    without ever materialising more than ``max_bytes + 1`` bytes.
    """
    out = bytearray()
    d = zlib.decompressobj(wbits)
    buf = data
    try:
        while True:
            chunk = d.decompress(buf, max_bytes + 1 - len(out))
            if d.eof and not out and len(chunk) <= max_bytes and \
                    not (wbits == 31 and d.unused_data[:2] == b"\x1f\x8b"):
                return chunk  # the whole stream in one call (the usual case): no copies
            out += chunk
            if len(out) > max_bytes:
                raise _too_large(f"decompressed {what} payload", max_bytes)
            if d.eof:
                rest = d.unused_data
                if wbits == 31 and rest[:2] == b"\x1f\x8b":  # concatenated gzip members
                    d = zlib.decompressobj(wbits)
                    buf = rest
                    continue
                break  # trailing bytes after the stream are ignored
            buf = d.unconsumed_tail
            if not buf and not chunk:
                raise _bad(f"invalid {what} data: truncated stream", "invalid_compression")
    except zlib.error as exc:
        raise _bad(f"invalid {what} data: {exc}", "invalid_compression") from None
    return bytes(out)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    if _isal is not None and data[:4] == b"\x1f\x8b\x08\x00":
        # The SDKs' gzip (deflate, no header flags) through ISA-L when it decodes the whole body in
        # one go: the same bytes as zlib. Everything else (an error, a truncated or concatenated
        # stream, too large, header flags, which ISA-L checks more loosely) takes zlib's path
        # below, so its answer and error messages stay exactly zlib's.
        try:
            d = _isal.decompressobj(31)
            out = d.decompress(data, max_bytes + 1)
            if d.eof and len(out) <= max_bytes and d.unused_data[:2] != b"\x1f\x8b":
                return out
        except _isal.error:
            pass
    return _inflate(data, 31, max_bytes, "gzip")


def _has_zlib_header(data: bytes) -> bool:
    if len(data) < 2:
        return False
    cmf, flg = data[0], data[1]
    return (cmf & 0x0F) == 8 and (cmf >> 4) <= 7 and ((cmf << 8) | flg) % 31 == 0


def _inflate_deflate(data: bytes, max_bytes: int) -> bytes:
    """HTTP ``deflate`` is zlib (RFC 1950); tolerate raw deflate (RFC 1951) too."""
    return _inflate(data, 15 if _has_zlib_header(data) else -15, max_bytes, "deflate")


def _unzstd(data: bytes, max_bytes: int) -> bytes:
    if _zstd is None:
        raise _bad("Content-Encoding zstd is not supported by this server "
                   "(the 'zstandard' module is not installed)", "unsupported_encoding", 415)
    out = bytearray()
    try:
        reader = _zstd.ZstdDecompressor().stream_reader(data)
        try:
            while True:
                chunk = reader.read(min(1 << 16, max_bytes + 1 - len(out)))
                if not chunk:
                    break
                out += chunk
                if len(out) > max_bytes:
                    raise _too_large("decompressed zstd payload", max_bytes)
        finally:
            reader.close()
    except SightlineError:
        raise
    except Exception as exc:  # zstandard.ZstdError and friends
        raise _bad(f"invalid zstd data: {exc}", "invalid_compression") from None
    return bytes(out)


# LZString decompressFromBase64 (lz-string 1.4 algorithm). Own implementation rather than
# ``lzstring.LZString().decompressFromBase64`` because the package cannot cap its output
# (an lz64 bomb grows quadratically), rebuilds its alphabet table for every character,
# and raises KeyError/IndexError/UnboundLocalError on garbage. The tests check this
# decoder against the package.
_LZ_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_LZ_BITS = {ord(ch): format(i, "06b") for i, ch in enumerate(_LZ_ALPHABET)}
_LZ_BITS[ord("=")] = "000000"  # '=' is index 64 in lz-string: reads as six zero bits
_LZ_VALID = re.compile(r"[A-Za-z0-9+/=]*")


def lz_decompress_from_base64(compressed: str, max_units: int) -> str:
    """LZString.decompressFromBase64 with an output cap of ``max_units`` UTF-16 units.

    Raises ``InvalidInput(code='invalid_compression')`` on malformed input and
    ``PayloadTooLarge`` when the output would exceed ``max_units``.
    """
    def invalid(why: str) -> InvalidInput:
        return _bad(f"invalid lz64 data: {why}", "invalid_compression")

    if not compressed:
        raise invalid("empty")
    if not _LZ_VALID.fullmatch(compressed):
        raise invalid("character outside the base64 alphabet")
    bits = compressed.translate(_LZ_BITS)
    total = len(bits)
    bits += "0" * 64  # JS reads zeros past the end; the end check below stops the loop

    first = int(bits[1::-1], 2)
    if first == 0:
        c = chr(int(bits[9:1:-1], 2))
        pos = 10
    elif first == 1:
        c = chr(int(bits[17:1:-1], 2))
        pos = 18
    elif first == 2:
        return ""
    else:
        raise invalid("bad first code")

    dictionary: list[Any] = [0, 1, 2, c]
    w = c
    out = [c]
    out_len = 1
    enlarge_in = 4
    num_bits = 3
    while True:
        if pos >= total:
            raise invalid("truncated stream (no end marker)")
        code = int(bits[pos:pos + num_bits][::-1], 2)
        pos += num_bits
        if code < 2:
            width = 8 if code == 0 else 16
            dictionary.append(chr(int(bits[pos:pos + width][::-1], 2)))
            pos += width
            code = len(dictionary) - 1
            enlarge_in -= 1
        elif code == 2:
            return "".join(out)
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1
        if code < len(dictionary):
            entry = dictionary[code]
        elif code == len(dictionary):
            entry = w + w[0]
        else:
            raise invalid("reference to an unknown dictionary entry")
        out_len += len(entry)
        if out_len > max_units:
            raise PayloadTooLarge(f"decompressed lz64 payload exceeds the limit of "
                                  f"{max_units} bytes", code="payload_too_large")
        out.append(entry)
        dictionary.append(w + entry[0])
        enlarge_in -= 1
        w = entry
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1


def _lz64_to_utf8(data: bytes, max_bytes: int) -> bytes:
    try:
        text = data.strip().replace(b" ", b"+").decode("ascii")
    except UnicodeDecodeError:
        raise _bad("invalid lz64 data: not ASCII base64", "invalid_compression") from None
    units = lz_decompress_from_base64(text, max_bytes)
    if not units:
        raise _bad("invalid lz64 data: decompressed to nothing", "invalid_compression")
    # The output is UTF-16 code units: join surrogate pairs; a lone surrogate becomes U+FFFD.
    out = units.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    encoded = out.encode("utf-8")
    if len(encoded) > max_bytes:
        raise _too_large("decompressed lz64 payload", max_bytes)
    return encoded


# --------------------------------------------------------------------------------------
# compression hints
# --------------------------------------------------------------------------------------

_HINTS = {
    "gzip": "gzip", "gzip-js": "gzip",
    "lz64": "lz64", "lz-string": "lz64",
    "base64": "base64", "b64": "base64",
}


def _hint(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    return _HINTS.get(value.strip().lower())


def _content_encoding(value: str | None) -> str | None:
    """Normalise Content-Encoding → None | 'gzip' | 'deflate' | 'zstd' | 'other:<name>'."""
    if not value or not isinstance(value, str):
        return None
    tokens = [t.strip().lower() for t in value.split(",")]
    tokens = [t for t in tokens if t and t not in ("identity", "none")]
    if not tokens:
        return None
    if len(tokens) > 1:
        return "other:" + ", ".join(tokens)
    tok = tokens[0]
    if tok in ("gzip", "x-gzip", "gzip-js"):
        return "gzip"
    if tok == "deflate":
        return "deflate"
    if tok == "zstd":
        return "zstd"
    return "other:" + tok


def _decode_transport(body: bytes, encoding: str | None, max_bytes: int) -> tuple[bytes, bool]:
    """Undo Content-Encoding on a body. Returns (body, gzip_hint_pending).

    A body that already looks like plain JSON is passed through untouched (some proxies
    decode the body but keep the header). A gzip Content-Encoding on a body without the
    magic bytes stays a pending hint for the payload pipeline (spec §2.1 step 4).
    """
    if encoding is None:
        return body, False
    if encoding == "gzip":
        if body.startswith(GZIP_MAGIC):
            return _gunzip(body, max_bytes), False
        return body, not _looks_like_json(body)
    if _looks_like_json(body):
        return body, False
    if encoding == "deflate":
        return _inflate_deflate(body, max_bytes), False
    if encoding == "zstd":
        return _unzstd(body, max_bytes), False
    name = encoding.split(":", 1)[1]
    raise _bad(f"unsupported Content-Encoding {name!r} (supported: gzip, deflate"
               f"{', zstd' if _zstd is not None else ''})", "unsupported_encoding", 415)


# --------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------

_NAN_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|(-?Infinity|NaN)', re.DOTALL)
_SURROGATE_RE = re.compile(
    rb"\\\\|(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)
_HAS_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _replace_nan(match: re.Match) -> bytes:
    return b"null" if match.group(1) else match.group(0)


def _replace_lone_surrogate(match: re.Match) -> bytes:
    return b"\\uFFFD" if match.group(2) else match.group(0)


def parse_json(data: bytes) -> Any:
    """UTF-8 bytes → JSON value. orjson first; on failure: UTF-8 diagnosis, then lenient
    retries (bare NaN/Infinity → null, lone ``\\uD800``-style escapes → U+FFFD)."""
    if data.startswith(_UTF8_BOM):
        data = data[3:]
    if not data or (data[:1] in b" \t\r\n" and not data.strip(b" \t\r\n")):
        raise _bad("payload is empty after decoding", "empty_payload")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        first_error = exc
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"payload is not valid UTF-8: invalid byte 0x{data[exc.start]:02x} "
                   f"at byte offset {exc.start}", "invalid_encoding") from None
    fixed = data
    if b"NaN" in fixed or b"Infinity" in fixed:
        fixed = _NAN_RE.sub(_replace_nan, fixed)
    if b"\\u" in fixed and _HAS_SURROGATE_ESCAPE.search(fixed):
        fixed = _SURROGATE_RE.sub(_replace_lone_surrogate, fixed)
    if fixed is not data and fixed != data:
        try:
            return orjson.loads(fixed)
        except orjson.JSONDecodeError:
            pass
    raise _bad(f"invalid JSON: {first_error}", "invalid_json") from None


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------

def _qget(query: Mapping[str, str] | None, key: str) -> str | None:
    if not query:
        return None
    try:
        value = query.get(key)
    except Exception:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def decode_body(body: bytes, *, query: Mapping[str, str], content_type: str | None,
                content_encoding: str | None, legacy: bool, max_bytes: int) -> Any:
    """Run the decode pipeline of spec §2.1 steps 1-7 and return the parsed JSON value."""
    try:
        return _decode_body(body, query=query, content_type=content_type,
                            content_encoding=content_encoding, legacy=legacy,
                            max_bytes=max_bytes)
    except SightlineError:
        raise
    except RecursionError:
        raise _bad("payload is nested too deeply", "invalid_json") from None
    except MemoryError:
        raise _too_large("payload", max_bytes) from None
    except Exception as exc:  # safety net: never leak anything but SightlineError
        raise _bad(f"could not decode payload ({type(exc).__name__})",
                   "undecodable_payload") from exc


def _decode_body(body: bytes, *, query: Mapping[str, str], content_type: str | None,
                 content_encoding: str | None, legacy: bool, max_bytes: int) -> Any:
    if body is None:
        body = b""
    elif not isinstance(body, bytes):
        body = bytes(body)

    # 1. payload source
    query_data = _qget(query, "data")
    from_query = bool(query_data)
    if from_query:
        try:
            payload = query_data.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            payload = query_data.encode("utf-8", "replace")
        payload = _fix_form_spaces(payload)
    else:
        payload = body
    if not payload:
        raise _bad("empty request payload", "empty_payload")
    if len(payload) > _raw_limit(max_bytes):
        raise _too_large(f"request payload ({len(payload)} bytes)", max_bytes)

    query_hint = _hint(_qget(query, "compression"))
    ce_hint = None
    if not from_query:  # Content-Encoding describes the body, not the query string
        payload, gzip_pending = _decode_transport(payload, _content_encoding(content_encoding),
                                                  max_bytes)
        ce_hint = "gzip" if gzip_pending else None

    # 3 (detection). form body?
    form: dict[bytes, bytes] | None = None
    if not from_query and (_is_form_content_type(content_type) or _FORM_START.match(payload)):
        if _FORM_START.match(payload):
            parsed = _parse_form(payload)
            if b"data" in parsed:
                form = parsed

    # 2. whole payload strict base64 (not for forms; not when lz64 is announced)
    if form is None and query_hint != "lz64":
        payload = _optimistic_b64(payload)
        if _is_form_content_type(content_type) and _FORM_START.match(payload):
            parsed = _parse_form(payload)  # a base64-wrapped form body
            if b"data" in parsed:
                form = parsed

    # 3. form fields
    form_hint = None
    if form is not None:
        payload = _fix_form_spaces(form[b"data"])
        form_hint = _hint(form.get(b"compression"))
        if not payload:
            raise _bad("empty form field 'data'", "empty_payload")

    # 4. compression hint: form, else query, else Content-Encoding
    hint = form_hint or query_hint or ce_hint

    if form is not None and hint not in ("lz64", "base64"):
        payload = _optimistic_b64(payload)

    # 5. decompress
    if hint == "base64" and not _looks_like_json(payload) and not payload.startswith(GZIP_MAGIC):
        decoded = _lenient_b64_decode(payload)
        if decoded is None:
            raise _bad("compression=base64 but the data is not valid base64",
                       "invalid_compression")
        payload = decoded
    if hint == "lz64" and not _looks_like_json(payload):
        payload = _lz64_to_utf8(payload, max_bytes)
    elif payload.startswith(GZIP_MAGIC):
        payload = _gunzip(payload, max_bytes)
    elif hint == "gzip" and not _looks_like_json(payload):
        unwrapped = _strict_b64_decode(payload)  # base64-wrapped gzip
        if unwrapped is not None and unwrapped.startswith(GZIP_MAGIC):
            payload = _gunzip(unwrapped, max_bytes)
        else:
            payload = _gunzip(payload, max_bytes)  # raises invalid_compression

    # 6. legacy endpoints: still base64 after decompression → decode once more
    if legacy:
        payload = _optimistic_b64(payload)
        if payload.startswith(GZIP_MAGIC):
            payload = _gunzip(payload, max_bytes)

    if len(payload) > max_bytes:
        raise _too_large(f"decoded payload ({len(payload)} bytes)", max_bytes)

    # 7. UTF-8 → JSON
    return parse_json(payload)


def _string_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _token_of(obj: dict) -> str | None:
    for key in ("api_key", "token", "$token"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _query_sent_at_ms(query: Mapping[str, str] | None) -> int | None:
    for key in ("sent_at", "_"):
        raw = _qget(query, key)
        if raw is None:
            continue
        raw = raw.strip()
        if not raw.isascii() or not raw.isdigit() or len(raw) > 16:
            continue
        value = int(raw)
        if MIN_SENT_AT_MS <= value <= MAX_SENT_AT_MS:
            return value
    return None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def interpret_capture(value: Any, *, query: Mapping[str, str] | None = None) -> CaptureRequest:
    """Interpret the top-level JSON shape of a capture request (spec §2.1 step 7)."""
    sent_at_ms = _query_sent_at_ms(query)
    if isinstance(value, list):
        return CaptureRequest(events=value, token=None, sent_at=None, sent_at_ms=sent_at_ms,
                              historical_migration=False)
    if not isinstance(value, dict):
        raise _bad(f"expected an event, an array of events or a batch object, "
                   f"got {_describe(value)}", "invalid_payload")
    if "event" not in value and "batch" in value:
        batch = value["batch"]
        if not isinstance(batch, list):
            raise _bad(f"'batch' must be an array of events, got {_describe(batch)}",
                       "invalid_payload")
        return CaptureRequest(events=batch, token=_token_of(value),
                              sent_at=_string_or_none(value.get("sent_at")),
                              sent_at_ms=sent_at_ms,
                              historical_migration=value.get("historical_migration") is True,
                              created_at=_string_or_none(value.get("created_at")))
    if "event" in value:
        event = value
    elif any(key in ENGAGE_KEYS for key in value):
        event = {"event": "$identify", **value}
    elif any(key not in ENVELOPE_KEYS for key in value):
        event = value
    else:
        raise _bad("payload has neither 'event' nor 'batch'", "invalid_payload")
    return CaptureRequest(events=[event], token=_token_of(event), sent_at=None,
                          sent_at_ms=sent_at_ms, historical_migration=False)


def decode_capture(body: bytes, *, query: Mapping[str, str], content_type: str | None,
                   content_encoding: str | None, legacy: bool, max_bytes: int) -> CaptureRequest:
    """decode_body + interpret the top-level shape (spec §2.1 step 7)."""
    value = decode_body(body, query=query, content_type=content_type,
                        content_encoding=content_encoding, legacy=legacy, max_bytes=max_bytes)
    try:
        return interpret_capture(value, query=query)
    except SightlineError:
        raise
    except Exception as exc:  # pragma: no cover - safety net
        raise _bad(f"could not interpret payload ({type(exc).__name__})",
                   "undecodable_payload") from exc


def _v1_event(event: Any) -> Any:
    """Fold a v1 event's ``options`` (and top-level session/window ids) back into
    legacy properties. Non-object events are returned untouched for the validator."""
    if not isinstance(event, dict):
        return event
    options = event.pop("options", None)
    props = event.get("properties")
    if props is None and (isinstance(options, dict) and options
                          or any(k in event for k in V1_TOPLEVEL_PROPERTIES)):
        props = event["properties"] = {}
    if not isinstance(props, dict):
        return event
    if isinstance(options, dict):
        for option, prop in V1_OPTION_PROPERTIES.items():
            if option in options and options[option] is not None:
                props[prop] = options[option]
    for field, prop in V1_TOPLEVEL_PROPERTIES.items():
        if field in event:
            value = event.pop(field)
            if value is not None and prop not in props:
                props[prop] = value
    return event


def decode_v1_capture(body: bytes, *, content_encoding: str | None,
                      max_bytes: int) -> CaptureRequest:
    """posthog-python's opt-in ``POST /i/v1/analytics/events`` body → CaptureRequest.

    Body: ``{created_at, batch:[{event, uuid, distinct_id, timestamp, options{},
    properties, session_id?, window_id?}], historical_migration?}``, Content-Encoding
    gzip | deflate | zstd | identity. The token comes from the Authorization header,
    so ``token`` is None.
    """
    try:
        return _decode_v1_capture(body, content_encoding=content_encoding, max_bytes=max_bytes)
    except SightlineError:
        raise
    except RecursionError:
        raise _bad("payload is nested too deeply", "invalid_json") from None
    except MemoryError:
        raise _too_large("payload", max_bytes) from None
    except Exception as exc:  # safety net
        raise _bad(f"could not decode payload ({type(exc).__name__})",
                   "undecodable_payload") from exc


def _decode_v1_capture(body: bytes, *, content_encoding: str | None,
                       max_bytes: int) -> CaptureRequest:
    if body is None:
        body = b""
    elif not isinstance(body, bytes):
        body = bytes(body)
    if not body:
        raise _bad("empty request payload", "empty_payload")
    if len(body) > _raw_limit(max_bytes):
        raise _too_large(f"request payload ({len(body)} bytes)", max_bytes)
    payload, gzip_pending = _decode_transport(body, _content_encoding(content_encoding),
                                              max_bytes)
    if gzip_pending or payload.startswith(GZIP_MAGIC):
        payload = _gunzip(payload, max_bytes)  # raises invalid_compression if not gzip
    if len(payload) > max_bytes:
        raise _too_large(f"decoded payload ({len(payload)} bytes)", max_bytes)
    value = parse_json(payload)
    if not isinstance(value, dict):
        raise _bad(f"expected a batch object, got {_describe(value)}", "invalid_payload")
    batch = value.get("batch")
    if not isinstance(batch, list):
        raise _bad(f"'batch' must be an array of events, got {_describe(batch)}",
                   "invalid_payload")
    return CaptureRequest(events=[_v1_event(e) for e in batch], token=None, sent_at=None,
                          sent_at_ms=None,
                          historical_migration=value.get("historical_migration") is True,
                          created_at=_string_or_none(value.get("created_at")))
