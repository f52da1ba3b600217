"""IP addresses: not stored unless the project enables `store_ip`; `X-Forwarded-For` only
from trusted proxies."""

from __future__ import annotations

import uuid

import httpx

from sightline.web.client_ip import client_ip


def send(srv, props: dict | None = None, headers: dict | None = None) -> dict:
    did = f"ip-{uuid.uuid4().hex[:8]}"
    event = {"event": "$pageview", "distinct_id": did, "timestamp": "2025-07-01T10:00:00Z",
             "properties": props or {}}
    r = httpx.post(srv.url + "/batch/", json={"api_key": srv.token, "batch": [event]}, headers=headers or {})
    assert r.status_code == 200, r.text
    [stored] = srv.events(distinct_id=did)
    return stored["properties"]


def patch(srv, **settings) -> httpx.Response:
    with srv.api() as c:
        return c.patch("/api/projects/@current/", json=settings)


def test_ip_is_dropped_by_default_and_stored_only_when_enabled(fresh_server):
    srv = fresh_server
    # default: an $ip sent by the SDK is dropped and the request's address is not added
    props = send(srv, {"$ip": "198.51.100.7", "$browser": "Firefox"})
    assert props == {"$browser": "Firefox"}
    assert "127.0.0.1" not in str(props)
    assert "198.51.100.7" not in "".join(str(e["properties"]) for e in srv.events())

    assert patch(srv, store_ip="yes").status_code == 400
    r = patch(srv, trusted_proxies=["not-an-ip"])
    assert r.status_code == 400 and r.json()["attr"] == "trusted_proxies"
    r = patch(srv, store_ip=True)
    assert r.status_code == 200 and r.json()["store_ip"] is True

    assert send(srv)["$ip"] == "127.0.0.1"
    assert send(srv, {"$ip": "198.51.100.7"})["$ip"] == "198.51.100.7"  # the SDK's own value is kept
    # X-Forwarded-For is ignored unless the peer is a trusted proxy
    assert send(srv, headers={"X-Forwarded-For": "203.0.113.9"})["$ip"] == "127.0.0.1"
    assert patch(srv, trusted_proxies=["127.0.0.1", "10.0.0.0/8"]).status_code == 200
    assert send(srv, headers={"X-Forwarded-For": "203.0.113.9, 10.1.2.3"})["$ip"] == "203.0.113.9"

    # anonymize_ips (PostHog's setting) wins over store_ip
    assert patch(srv, anonymize_ips=True).status_code == 200
    assert "$ip" not in send(srv, {"$ip": "198.51.100.7"})
    assert patch(srv, anonymize_ips=False, store_ip=False).status_code == 200
    assert "$ip" not in send(srv)


def test_client_ip_takes_the_rightmost_untrusted_hop():
    trusted = ("10.0.0.0/8", "127.0.0.1")
    assert client_ip("127.0.0.1", "1.1.1.1, 2.2.2.2, 10.0.0.5", trusted) == "2.2.2.2"
    assert client_ip("192.0.2.1", "1.1.1.1", trusted) == "192.0.2.1"  # the peer is no proxy
    assert client_ip("127.0.0.1", None, trusted) == "127.0.0.1"
    assert client_ip("127.0.0.1", "1.1.1.1", ()) == "127.0.0.1"
    assert client_ip("::1", "2001:db8::1", ("::1",)) == "2001:db8::1"
