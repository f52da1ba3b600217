"""Tests for sightline.demo: the deterministic demo-data generator.

The realism checks recompute funnels, seasonality, retention and the experiment with plain
Python from the generated events, independently of Sightline's query engine.
"""

from __future__ import annotations

import gc
import json
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from sightline.demo import PLAN_PRICES, checkout_variant, flag_hash, generate

UTC = timezone.utc
END = datetime(2025, 6, 2, 15, tzinfo=UTC)          # a Monday, mid-afternoon
DAYS = 90
N_EVENTS = 200_000     # enough sign-ups for the experiment to show its true effect


@pytest.fixture(scope="module")
def events():
    # Holding 200k events makes every cyclic-GC pass walk them all: build them with the GC
    # off and freeze them out of later collections (test speed only).
    gc.disable()
    try:
        data = list(generate(N_EVENTS, seed=42, end=END, days=DAYS))
    finally:
        gc.enable()
    gc.freeze()
    yield data
    gc.unfreeze()


# ---------------------------------------------------------------------------------------------
# Contract
# ---------------------------------------------------------------------------------------------


def test_speed(capsys):
    """Prints the throughput (no assertion on time: CI machines vary)."""
    list(generate(10, seed=11, end=END))          # warm up: the one-off calibration run
    n = 100_000
    started = time.perf_counter()
    count = sum(1 for _ in generate(n, seed=11, end=END))
    elapsed = time.perf_counter() - started
    assert count == n
    with capsys.disabled():
        print(f"\nsightline.demo: {n} events in {elapsed:.2f}s = {n / elapsed:,.0f} events/s")


def test_deterministic_for_same_seed():
    first = list(generate(20_000, seed=7, end=END))
    second = list(generate(20_000, seed=7, end=END))
    assert first == second                   # dict equality: every field, uuids included
    assert [list(e["properties"]) for e in first[:500]] == \
        [list(e["properties"]) for e in second[:500]]


def test_different_seed_gives_different_data():
    a = list(generate(2_000, seed=1, end=END))
    b = list(generate(2_000, seed=2, end=END))
    assert [e["uuid"] for e in a] != [e["uuid"] for e in b]
    assert [e["distinct_id"] for e in a] != [e["distinct_id"] for e in b]


def test_partial_consumption_gives_the_same_prefix():
    full = list(generate(5_000, seed=3, end=END))
    it = generate(5_000, seed=3, end=END)
    head = [next(it) for _ in range(100)]
    assert head == full[:100]


@pytest.mark.parametrize("n", [0, 1, 1000, 20_001])
def test_exact_count(n):
    assert sum(1 for _ in generate(n, seed=5, end=END)) == n


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        generate(-1)
    with pytest.raises(ValueError):
        generate(10, days=0)


def test_default_end_is_now_rounded_down_to_the_hour():
    now = datetime.now(UTC)
    evs = list(generate(300, seed=1, days=3))
    assert len(evs) == 300
    top = now.replace(minute=0, second=0, microsecond=0)
    assert all(e["timestamp"] < top + timedelta(hours=1) for e in evs)
    assert all(e["timestamp"] >= top - timedelta(days=3, hours=1) for e in evs)


def test_naive_end_is_utc():
    naive = list(generate(500, seed=1, end=datetime(2025, 6, 2, 15), days=10))
    aware = list(generate(500, seed=1, end=END, days=10))
    assert naive == aware


def test_event_shape_and_order(events):
    assert len(events) == N_EVENTS
    start = END - timedelta(days=DAYS)
    previous = start
    uuids = set()
    for e in events:
        assert isinstance(e["event"], str) and e["event"]
        assert isinstance(e["distinct_id"], str) and e["distinct_id"]
        ts = e["timestamp"]
        assert ts.tzinfo is not None and ts.utcoffset() == timedelta(0)
        assert previous <= ts <= END
        previous = ts
        uuids.add(e["uuid"])
        assert isinstance(e["properties"], dict)
        assert set(e) <= {"event", "distinct_id", "timestamp", "uuid", "properties", "$set",
                          "$set_once"}
    assert len(uuids) == len(events)
    for e in events[::13]:
        assert str(uuid.UUID(e["uuid"])) == e["uuid"]


def test_events_are_plain_json_apart_from_the_timestamp(events):
    def check(value):
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            for v in value.values():
                check(v)
        elif isinstance(value, list):
            for v in value:
                check(v)
        else:
            assert value is None or isinstance(value, (str, int, float, bool)), repr(value)

    for e in events[::41]:
        check({k: v for k, v in e.items() if k != "timestamp"})
        assert json.loads(json.dumps({**e, "timestamp": e["timestamp"].isoformat()}))["uuid"] \
            == e["uuid"]


def test_uuids_and_ids_are_uuidv7_like_the_sdks(events):
    sample = events[::997]
    for e in sample:
        u = uuid.UUID(e["uuid"])
        assert u.version == 7 and u.variant == uuid.RFC_4122
        # The UUIDv7 time is the event time.
        ms = u.int >> 80
        assert abs(ms - e["timestamp"].timestamp() * 1000) < 1
        sid = e["properties"].get("$session_id")
        if sid is not None:
            s = uuid.UUID(sid)
            assert s.version == 7 and (s.int >> 80) <= ms
    anon = [e for e in events if e["properties"].get("$lib") == "web"
            and not e["distinct_id"].startswith("user_")]
    assert anon and all(uuid.UUID(e["distinct_id"]).version == 7 for e in anon[::101])


def test_covers_the_whole_range(events):
    per_day = Counter(e["timestamp"].date() for e in events)
    start = (END - timedelta(days=DAYS)).date()
    assert min(per_day) == start
    assert max(per_day) == END.date()
    assert len(per_day) == DAYS + 1
    # The last (partial) day is not a spike of make-up traffic.
    full_days = [per_day[d] for d in sorted(per_day)[-8:-1]]
    assert per_day[END.date()] < 1.5 * max(full_days)


# ---------------------------------------------------------------------------------------------
# SDK shapes
# ---------------------------------------------------------------------------------------------


def test_web_events_look_like_posthog_js(events):
    pageviews = [e for e in events if e["event"] == "$pageview"]
    assert len(pageviews) > 0.3 * len(events)
    for e in pageviews[::53]:
        p = e["properties"]
        assert p["$lib"] == "web" and p["$lib_version"] == "1.300.0"
        for key in ("$current_url", "$pathname", "$host", "$referrer", "$referring_domain",
                    "$session_id", "$window_id", "$browser", "$browser_version", "$os",
                    "$device_type", "$screen_width", "$screen_height", "$geoip_country_code",
                    "$geoip_country_name", "$device_id"):
            assert key in p, key
        assert p["$current_url"].startswith(f"https://{p['$host']}{p['$pathname']}")
        assert p["$host"] in ("acme.io", "app.acme.io")
        assert p["distinct_id"] == e["distinct_id"]
    paths = {e["properties"]["$pathname"] for e in pageviews}
    assert {"/", "/pricing", "/signup", "/app/dashboard", "/app/settings", "/app/billing"} <= paths
    assert any(p.startswith("/blog/") for p in paths)
    assert any(p.startswith("/docs/") for p in paths)
    assert sum(p.startswith("/app/projects/") and p[14:].isdigit() for p in paths) > 20
    # Landing pages carry the campaign parameters, and the URL has them too.
    utm = [e for e in pageviews if "utm_source" in e["properties"]]
    sources = Counter(e["properties"]["utm_source"] for e in utm)
    assert {"google", "newsletter", "twitter", "producthunt"} <= set(sources)
    assert all("utm_source=" in e["properties"]["$current_url"] for e in utm)
    cpc = [e for e in utm if e["properties"].get("utm_medium") == "cpc"]
    assert cpc and all("gclid" in e["properties"] for e in cpc)
    assert Counter(e["properties"]["$referring_domain"] for e in pageviews)["$direct"] > 0


def test_autocapture_and_pageleave(events):
    clicks = [e for e in events if e["event"] == "$autocapture"]
    leaves = [e for e in events if e["event"] == "$pageleave"]
    assert clicks and leaves
    for e in clicks[::37]:
        p = e["properties"]
        assert p["$event_type"] == "click"
        chain = p["$elements_chain"]
        assert isinstance(chain, str) and 'nth-child="' in chain and chain.endswith(
            'body:nth-child="2"nth-of-type="1"')
    assert all("$prev_pageview_pathname" in e["properties"] for e in leaves[::31])


def test_sessions_split_after_30_minutes_of_inactivity(events):
    last_seen: dict[str, tuple[datetime, datetime]] = {}
    for e in events:
        sid = e["properties"].get("$session_id")
        if sid is None or e["properties"].get("$lib") != "web":
            continue
        ts = e["timestamp"]
        if sid in last_seen:
            first, last = last_seen[sid]
            assert ts - last < timedelta(minutes=30), sid
            last_seen[sid] = (first, ts)
        else:
            last_seen[sid] = (ts, ts)
    # A person's consecutive sessions are more than 30 minutes apart.
    sessions_by_did: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    owner = {}
    for e in events:
        sid = e["properties"].get("$session_id")
        if sid and e["properties"].get("$lib") == "web":
            owner.setdefault(sid, e["properties"]["$device_id"])
    for sid, (first, last) in last_seen.items():
        sessions_by_did[owner[sid]].append((first, last))
    for spans in sessions_by_did.values():
        spans.sort()
        for (_, end_a), (start_b, _) in zip(spans, spans[1:]):
            assert start_b - end_a >= timedelta(minutes=30)


def test_identify_follows_posthog(events):
    seen = set()
    identifies = 0
    for e in events:
        if e["event"] == "$identify":
            identifies += 1
            p = e["properties"]
            anon = p["$anon_distinct_id"]
            assert anon in seen, "the anonymous id must have been used before"
            assert anon != e["distinct_id"]
            assert p["distinct_id"] == e["distinct_id"]
            assert e["distinct_id"].startswith("user_")
            assert isinstance(e.get("$set"), dict) and isinstance(e.get("$set_once"), dict)
        seen.add(e["distinct_id"])
    assert identifies > 500
    first = next(e for e in events if e["event"] == "$identify")
    person = first["$set"]
    assert {"email", "name", "plan", "company", "signup_source"} <= set(person)
    assert person["plan"] == "free"
    assert "$initial_referrer" in first["$set_once"]
    assert "$initial_referring_domain" in first["$set_once"]
    with_utm = [e for e in events if e["event"] == "$identify"
                and "$initial_utm_source" in e["$set_once"]]
    assert with_utm


def test_sign_up_identifies_right_before(events):
    identify_at = {}
    for e in events:
        if e["event"] == "$identify" and e["distinct_id"] not in identify_at:
            identify_at[e["distinct_id"]] = e["timestamp"]
        if e["event"] == "signed_up":
            uid = e["distinct_id"]
            assert uid in identify_at
            assert timedelta(0) <= e["timestamp"] - identify_at[uid] < timedelta(seconds=10)


def test_groups(events):
    group_events = [e for e in events if e["event"] == "$groupidentify"]
    assert group_events
    for e in group_events:
        p = e["properties"]
        assert p["$group_type"] == "company"
        assert p["$group_key"] and isinstance(p["$group_set"], dict)
    first = next(e for e in group_events if e["properties"].get("$lib") == "web")
    assert {"name", "industry", "employees", "plan"} <= set(first["properties"]["$group_set"])
    keys = {e["properties"]["$group_key"] for e in group_events}
    users = [e for e in events if e["distinct_id"].startswith("user_")
             and e["event"] not in ("$identify", "$groupidentify", "$set")]
    assert users
    assert all(e["properties"]["$groups"]["company"] in keys for e in users[::17])
    # Several users share a company (invited teammates).
    members = defaultdict(set)
    for e in users:
        members[e["properties"]["$groups"]["company"]].add(e["distinct_id"])
    assert sum(len(v) > 1 for v in members.values()) > 20


def test_backend_events_look_like_posthog_python(events):
    backend = [e for e in events if e["properties"].get("$lib") == "posthog-python"]
    names = Counter(e["event"] for e in backend)
    assert {"api_request", "invoice_paid", "upgraded_plan"} <= set(names)
    for e in backend:
        assert e["distinct_id"].startswith("user_")
    api = [e for e in backend if e["event"] == "api_request"]
    assert all(isinstance(e["properties"]["duration_ms"], float) and
               e["properties"]["endpoint"].startswith("/api/") for e in api[::7])
    sets = [e for e in backend if e["event"] == "$set"]
    assert sets and all(isinstance(e["$set"], dict) and "plan" in e["$set"] for e in sets)
    invoices = [e for e in backend if e["event"] == "invoice_paid"]
    assert all(e["properties"]["amount"] in PLAN_PRICES.values() for e in invoices)


def test_personless_events(events):
    personless = [e for e in events if e["properties"].get("$process_person_profile") is False]
    assert personless
    assert len(personless) < 0.1 * len(events)
    assert all(not e["distinct_id"].startswith("user_") for e in personless)


def test_devices_are_consistent(events):
    mobile_os = {"iOS", "Android"}
    devices = Counter()
    for e in events[::11]:
        p = e["properties"]
        if p.get("$lib") != "web":
            continue
        devices[p["$device_type"]] += 1
        if p["$device_type"] == "Desktop":
            assert p["$os"] not in mobile_os
        else:
            assert p["$os"] in mobile_os
        if p["$browser"] in ("Safari", "Mobile Safari"):
            assert p["$os"] in ("Mac OS X", "iOS")
    assert devices["Mobile"] > 0.1 * sum(devices.values())


def test_feature_flags(events):
    called = [e for e in events if e["event"] == "$feature_flag_called"]
    flags = Counter(e["properties"]["$feature_flag"] for e in called)
    assert {"new-checkout", "dark-mode"} <= set(flags)
    for e in called:
        p = e["properties"]
        if p["$feature_flag"] == "new-checkout":
            assert p["$feature_flag_response"] == checkout_variant(e["distinct_id"])
            assert p["$feature/new-checkout"] == p["$feature_flag_response"]
        else:
            assert isinstance(p["$feature_flag_response"], bool)
            assert p["$feature_flag_response"] == (flag_hash("dark-mode", e["distinct_id"]) <= 0.3)
    variants = Counter(p["properties"]["$feature_flag_response"] for p in called
                       if p["properties"]["$feature_flag"] == "new-checkout")
    assert 0.4 < variants["test"] / (variants["test"] + variants["control"]) < 0.6
    purchases = [e for e in events if e["event"] == "purchase"]
    assert purchases and all(
        e["properties"]["$feature/new-checkout"] == checkout_variant(e["distinct_id"])
        for e in purchases)


def test_checkout_variant_uses_posthog_hash():
    # spec §5.1: sha1("key.id" + salt) first 15 hex digits / 0xFFFFFFFFFFFFFFF.
    import hashlib

    h = int(hashlib.sha1(b"new-checkout.user_1variant").hexdigest()[:15], 16) / 0xFFFFFFFFFFFFFFF
    assert checkout_variant("user_1") == ("control" if h < 0.5 else "test")
    shares = Counter(checkout_variant(f"user_{i}") for i in range(4000))
    assert 0.46 < shares["test"] / 4000 < 0.54


# ---------------------------------------------------------------------------------------------
# Realism
# ---------------------------------------------------------------------------------------------


def _visitors(events: list[dict]) -> set[str]:
    """Anonymous devices that viewed a page (posthog-js anonymous distinct ids)."""
    return {e["distinct_id"] for e in events
            if e["event"] == "$pageview" and not e["distinct_id"].startswith("user_")}


def test_funnel_is_realistic(events):
    visitors = _visitors(events)
    users_by_event: dict[str, set[str]] = defaultdict(set)
    for e in events:
        users_by_event[e["event"]].add(e["distinct_id"])
    signed = users_by_event["signed_up"]
    activated = users_by_event["project_created"] & signed
    invited = users_by_event["invited_teammate"] & signed
    bought = users_by_event["purchase"] & signed
    assert len(visitors) > 3000
    assert len(visitors) > len(signed) > len(activated) > len(bought) > 0
    assert 0.05 < len(signed) / len(visitors) < 0.25
    assert 0.40 < len(activated) / len(signed) < 0.80
    assert 0.15 < len(invited) / len(signed) < 0.45
    assert 0.04 < len(bought) / len(signed) < 0.20
    # Amounts follow the plans.
    for e in events:
        if e["event"] == "purchase":
            p = e["properties"]
            assert p["amount"] == p["revenue"] == PLAN_PRICES[p["plan"]]


def test_conversion_differs_by_source_and_browser(events):
    """Breakdowns should be interesting: sign-up rate varies with source and device."""
    first_source: dict[str, str] = {}
    device: dict[str, str] = {}
    for e in events:
        p = e["properties"]
        if e["event"] == "$pageview" and e["distinct_id"] not in first_source \
                and not e["distinct_id"].startswith("user_"):
            first_source[e["distinct_id"]] = p["$referring_domain"]
            device[e["distinct_id"]] = p["$device_type"]
    signed_anon = {e["properties"]["$anon_distinct_id"] for e in events
                   if e["event"] == "$identify" and "signup_source" in e["$set"]}
    rate = {}
    for kind in ("Desktop", "Mobile"):
        ids = [d for d, t in device.items() if t == kind]
        rate[kind] = sum(d in signed_anon for d in ids) / len(ids)
    assert rate["Desktop"] > 1.3 * rate["Mobile"]
    by_source = defaultdict(list)
    for d, src in first_source.items():
        by_source[src].append(d in signed_anon)
    rates = {s: sum(v) / len(v) for s, v in by_source.items() if len(v) > 200}
    assert max(rates.values()) > 1.4 * min(rates.values())


def test_weekly_seasonality(events):
    per_day = Counter(e["timestamp"].date() for e in events if e["event"] == "$pageview")
    days = sorted(per_day)[1:-1]                      # drop the partial first and last day
    weekday = [per_day[d] for d in days if d.weekday() < 5]
    weekend = [per_day[d] for d in days if d.weekday() >= 5]
    assert sum(weekday) / len(weekday) > 1.3 * sum(weekend) / len(weekend)


def test_growth_trend(events):
    visitors_by_day: dict = defaultdict(set)
    for e in events:
        if e["event"] == "$pageview" and not e["distinct_id"].startswith("user_"):
            visitors_by_day[e["timestamp"].date()].add(e["distinct_id"])
    days = sorted(visitors_by_day)[1:-1]
    first = sum(len(visitors_by_day[d]) for d in days[:28])
    last = sum(len(visitors_by_day[d]) for d in days[-28:])
    assert 1.05 < last / first < 2.0


def test_hour_of_day_curve(events):
    hours = Counter()
    for e in events:
        p = e["properties"]
        if e["event"] == "$pageview" and p["$geoip_country_code"] == "US" \
                and p["$timezone"] == "America/New_York":
            hours[(e["timestamp"].hour - 5) % 24] += 1           # local time (EST)
    day = sum(hours[h] for h in range(9, 18))
    night = sum(hours[h] for h in range(0, 6))
    assert day > 4 * night


def test_retention_of_signed_up_users(events):
    signup_day = {}
    active_days = defaultdict(set)
    for e in events:
        did = e["distinct_id"]
        if e["event"] == "signed_up":
            signup_day[did] = e["timestamp"].date()
        if did.startswith("user_") and e["properties"].get("$lib") == "web":
            active_days[did].add(e["timestamp"].date())
    last_day = END.date()
    cohort = [u for u, d in signup_day.items() if (last_day - d).days > 8]
    assert len(cohort) > 500

    def retained(offset: int, users) -> float:
        return sum((signup_day[u] + timedelta(days=offset)) in active_days[u] for u in users) \
            / len(users)

    day1, day7 = retained(1, cohort), retained(7, cohort)
    assert 0.10 < day7 < 0.60
    assert day1 > day7
    # Weekly retention: high in week 1, then a plateau.
    old = [u for u, d in signup_day.items() if (last_day - d).days > 50]

    def week(k: int) -> float:
        return sum(any((signup_day[u] + timedelta(days=7 * k + i)) in active_days[u]
                       for i in range(7)) for u in old) / len(old)

    w1, w4, w6 = week(1), week(4), week(6)
    assert w1 > w4 >= 0.12
    assert 0.15 < w6 < 0.40
    assert w4 - w6 < w1 - w4                       # flattening
    # Activated users retain better.
    activated = {e["distinct_id"] for e in events if e["event"] == "project_created"}
    act = [u for u in cohort if u in activated]
    non = [u for u in cohort if u not in activated]
    assert retained(7, act) > retained(7, non)


def test_subscriptions(events):
    names = Counter(e["event"] for e in events)
    assert names["subscription_cancelled"] > 0
    assert names["invoice_paid"] >= names["purchase"]


def test_experiment_has_a_true_lift(events):
    exposed: dict[str, str] = {}
    bought = set()
    for e in events:
        p = e["properties"]
        if e["event"] == "$feature_flag_called" and p["$feature_flag"] == "new-checkout":
            exposed.setdefault(e["distinct_id"], p["$feature_flag_response"])
        if e["event"] == "purchase" and e["distinct_id"] in exposed:
            bought.add(e["distinct_id"])
    arms = {v: [u for u, x in exposed.items() if x == v] for v in ("control", "test")}
    rate = {v: sum(u in bought for u in users) / len(users) for v, users in arms.items()}
    assert min(len(a) for a in arms.values()) > 150
    assert rate["test"] > rate["control"]
    assert 0.15 < rate["control"] < 0.50


def test_variety(events):
    browsers = Counter(e["properties"].get("$browser") for e in events if e["event"] == "$pageview")
    countries = Counter(e["properties"].get("$geoip_country_code") for e in events
                        if e["event"] == "$pageview")
    assert len(browsers) >= 5 and len(countries) >= 5
    assert browsers.most_common(1)[0][0] == "Chrome"
    assert countries.most_common(1)[0][0] == "US"
    names = {e["event"] for e in events}
    assert {"$pageview", "$pageleave", "$autocapture", "$identify", "$groupidentify",
            "$feature_flag_called", "signed_up", "project_created", "invited_teammate",
            "purchase", "upgraded_plan", "subscription_cancelled", "invoice_paid",
            "api_request"} <= names
