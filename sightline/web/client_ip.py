"""IP addresses on captured events: not stored unless the project asks for them.

By default capture removes ``$ip`` from every event's properties and never adds the request's
address. A project with the setting ``store_ip: true`` (and not ``anonymize_ips: true``) gets
``$ip`` on each event: the value the event itself carries (server-side SDKs may send their
user's address), else the address of the request's client.

Behind a reverse proxy the client is the proxy. ``X-Forwarded-For`` is honoured only when the
direct peer is a trusted proxy: the project setting ``trusted_proxies`` (a list of addresses or
CIDR networks) or the environment variable ``SIGHTLINE_TRUSTED_PROXIES`` (comma-separated).
The client is then the right-most address of the header that is not itself a trusted proxy.

The decision is made once per request (:func:`ip_policy`); applying it costs a dict lookup per
event, plus one JSON encoding for events whose properties change.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from typing import Any, Iterable

import orjson

from sightline.errors import InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def validate_ip_settings(payload: dict[str, Any]) -> None:
    """For the project PATCH: ``store_ip`` is a boolean, ``trusted_proxies`` a list of networks."""
    if "store_ip" in payload and not isinstance(payload["store_ip"], bool):
        raise InvalidInput("store_ip is true or false.", attr="store_ip")
    if "trusted_proxies" in payload:
        value = payload["trusted_proxies"]
        if value is None:
            return
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInput('trusted_proxies is a list of addresses or networks, e.g. ["10.0.0.0/8"].',
                               attr="trusted_proxies")
        for v in value:
            try:
                ipaddress.ip_network(v.strip(), strict=False)
            except ValueError:
                raise InvalidInput(f"trusted_proxies: {v[:60]!r} is not an IP address or network.",
                                   attr="trusted_proxies") from None


@lru_cache(maxsize=64)
def _networks(spec: tuple[str, ...]) -> tuple[Network, ...]:
    out = []
    for item in spec:
        item = item.strip()
        if item:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                continue
    return tuple(out)


def _trusted(addr: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr.strip())
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in networks)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[str, ...]) -> str | None:
    """The client's address: the peer, or (when the peer is a trusted proxy) the right-most
    address in ``X-Forwarded-For`` that is not a trusted proxy."""
    networks = _networks(trusted)
    if not peer or not forwarded_for or not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


def ip_policy(project, request) -> str | None:
    """``None``: drop ``$ip`` from events. Otherwise the request's client address ("" if unknown)."""
    settings = project.settings
    if not settings.get("store_ip") or settings.get("anonymize_ips"):
        return None
    trusted = tuple(settings.get("trusted_proxies") or ()) + \
        tuple(os.environ.get("SIGHTLINE_TRUSTED_PROXIES", "").split(","))
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.get("x-forwarded-for"), trusted) or ""


def apply_ip_policy(events: list, ip: str | None) -> None:
    """Drop (``ip`` None) or set ``$ip`` on normalized events, keeping ``properties_json`` in step."""
    if ip is None:
        for event in events:
            if "$ip" in event.properties:
                del event.properties["$ip"]
                event.properties_json = orjson.dumps(event.properties, option=orjson.OPT_NON_STR_KEYS).decode()
        return
    if not ip:
        return
    for event in events:
        if not event.properties.get("$ip"):
            event.properties["$ip"] = ip
            event.properties_json = orjson.dumps(event.properties, option=orjson.OPT_NON_STR_KEYS).decode()
