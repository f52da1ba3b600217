"""The sessions relation: the spec's §8 vector, the bounce rule's edges, and a plain-Python
reference over random sessions with identity merges."""

import random
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

import sightline
from sightline.ingest.normalize import uuid7
from sightline.query.sessions import EVENT_COLUMNS, SESSION_COLUMNS, events_sql, sessions_sql

UTC = timezone.utc
T0 = datetime(2024, 3, 1, 10, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def ev(event, did, sid, t, url=None, **props):
    p = dict(props)
    if sid is not None:
        p["$session_id"] = sid
    if url is not None:
        p["$current_url"] = url
    return {"event": event, "distinct_id": did, "timestamp": iso(t), "properties": p}


def sessions(s, project_id=None, **kw):
    res = s.storage.execute(f"SELECT * FROM ({sessions_sql(**kw)}) ORDER BY session_id",
                            {"project": project_id or s.project.id})
    return [dict(zip(res.columns, r)) for r in res.rows]


def run(s, sql, **params):
    return s.storage.execute(sql, {"project": s.project.id, **params}).rows


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    """§8: s1 (u1) pv /a, pv /b +30s; s2 (u2) pv /a, pageleave +5s; s3 (u2) pv /c, autocapture +3s;
    s4 (u3) pv /a, pageleave +15s."""
    s = sightline.open(tmp_path_factory.mktemp("sess") / "d")
    u = "https://shop.example.com"
    s.ingest([
        ev("$pageview", "u1", "s1", T0, u + "/a"), ev("$pageview", "u1", "s1", T0 + timedelta(seconds=30), u + "/b"),
        ev("$pageview", "u2", "s2", T0 + timedelta(hours=1), u + "/a"),
        ev("$pageleave", "u2", "s2", T0 + timedelta(hours=1, seconds=5), u + "/a"),
        ev("$pageview", "u2", "s3", T0 + timedelta(hours=2), u + "/c"),
        ev("$autocapture", "u2", "s3", T0 + timedelta(hours=2, seconds=3), u + "/c"),
        ev("$pageview", "u3", "s4", T0 + timedelta(hours=3), u + "/a"),
        ev("$pageleave", "u3", "s4", T0 + timedelta(hours=3, seconds=15), u + "/a"),
    ])
    yield s
    s.close()


def test_spec_vector_web_overview(spec):
    [(visitors, views, n, avg_duration, bounce_rate)] = run(spec, f"""
        WITH sessions AS ({sessions_sql()})
        SELECT count(DISTINCT person_id), sum("$pageview_count" + "$screen_count"), count(*),
               avg("$session_duration"), avg(CAST("$is_bounce" AS INTEGER)) * 100
        FROM sessions""")
    assert (visitors, views, n) == (3, 5, 4)
    assert avg_duration == pytest.approx(13.25)
    assert bounce_rate == pytest.approx(25.0)


def test_spec_vector_rows(spec):
    rows = {r["session_id"]: r for r in sessions(spec)}
    assert [k for k in rows] == ["s1", "s2", "s3", "s4"]
    assert list(rows["s1"]) == list(SESSION_COLUMNS)
    assert (rows["s1"]["$entry_pathname"], rows["s1"]["$end_pathname"]) == ("/a", "/b")
    assert rows["s1"]["$entry_current_url"] == "https://shop.example.com/a"
    assert rows["s1"]["$end_current_url"] == "https://shop.example.com/b"
    assert {k: r["$is_bounce"] for k, r in rows.items()} == {"s1": False, "s2": True, "s3": False, "s4": False}
    assert {k: r["$session_duration"] for k, r in rows.items()} == {"s1": 30, "s2": 5, "s3": 3, "s4": 15}
    assert rows["s3"]["$autocapture_count"] == 1 and rows["s3"]["$pageview_count"] == 1
    assert rows["s2"]["distinct_id"] == rows["s3"]["distinct_id"] == "u2"
    assert rows["s2"]["person_id"] == rows["s3"]["person_id"] != rows["s1"]["person_id"]
    assert rows["s1"]["$start_timestamp"] == T0


def test_events_sql_resolves_persons_and_hides_project(spec):
    res = spec.storage.execute(events_sql(), {"project": spec.project.id})
    assert tuple(res.columns) == EVENT_COLUMNS
    assert "project_id" not in res.columns and len(res.rows) == 8
    res = spec.storage.execute(events_sql("$p", materialized=True), {"p": spec.project.id})
    assert "mat_current_url" in res.columns


@pytest.mark.parametrize("events, expected", [
    # (event kind, seconds after start)
    ([("$pageview", 0)], True),
    ([("$pageview", 0), ("$pageleave", 9.5)], True),           # 9 s < 10
    ([("$pageview", 0), ("$pageleave", 10)], False),            # 10 s >= 10
    ([("$screen", 0)], True),
    ([("$autocapture", 0)], True),
    ([("$pageview", 0), ("$autocapture", 1)], False),           # more than one interaction
    ([("$autocapture", 0), ("$autocapture", 1)], False),
    ([("$pageview", 0), ("$screen", 2)], False),
    ([("$pageleave", 0), ("signed_up", 30)], None),             # no pageview/screen/autocapture
    ([("signed_up", 0)], None),
])
def test_bounce_rule(tmp_path, events, expected):
    with sightline.open(tmp_path / "d") as s:
        s.ingest([ev(e, "u", "sx", T0 + timedelta(seconds=dt), "https://x.io/") for e, dt in events])
        [row] = sessions(s)
        assert row["$is_bounce"] is expected


def test_bounce_seconds_setting(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        s.ingest([ev("$pageview", "u", "sx", T0), ev("$pageleave", "u", "sx", T0 + timedelta(seconds=20))])
        assert sessions(s)[0]["$is_bounce"] is False
        assert sessions(s, bounce_seconds=30)[0]["$is_bounce"] is True


def test_entry_and_exit_prefer_pageviews(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        s.ingest([
            ev("$autocapture", "u", "sx", T0, "https://x.io/before?q=1"),       # earlier, not a pageview
            ev("$pageview", "u", "sx", T0 + timedelta(seconds=1), "https://x.io/landing?utm_source=g#top",
               utm_source="google", **{"$referring_domain": "www.google.com"}),
            ev("$pageview", "u", "sx", T0 + timedelta(seconds=2), "https://x.io/pricing", utm_source="other"),
            ev("$pageleave", "u", "sx", T0 + timedelta(seconds=3), "https://x.io/after"),  # later, not a pageview
            ev("$pageview", "u", "sy", T0, None),                                 # no URL at all
            ev("signed_up", "u", "sy", T0 + timedelta(seconds=1), "https://x.io"),  # only URL: not a pageview
        ])
        x, y = sessions(s)
        assert x["$entry_current_url"] == "https://x.io/landing?utm_source=g#top"
        assert x["$entry_pathname"] == "/landing"
        assert x["$end_current_url"] == "https://x.io/pricing"
        assert x["$end_pathname"] == "/pricing"
        assert x["$entry_utm_source"] == "google"
        assert x["$entry_referring_domain"] == "www.google.com"
        assert x["$pageview_count"] == 2 and x["$autocapture_count"] == 1
        assert y["$entry_current_url"] == y["$end_current_url"] == "https://x.io"
        assert y["$entry_pathname"] == "/"


def test_events_without_session_and_other_projects_are_left_out(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        other = s.meta.create_project("Other")
        s.ingest([ev("$pageview", "u", None, T0), ev("$pageview", "u", "", T0), ev("$pageview", "u", "s1", T0)])
        s.ingest([ev("$pageview", "v", "s1", T0), ev("$pageview", "v", "s1", T0 + timedelta(seconds=40))],
                 project_id=other.id)
        [mine] = sessions(s)
        [theirs] = sessions(s, project_id=other.id)
        assert mine["distinct_id"] == "u" and mine["$pageview_count"] == 1
        assert theirs["distinct_id"] == "v" and theirs["$session_duration"] == 40


def test_merged_person_owns_the_anonymous_session(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        s.ingest([ev("$pageview", "anon-1", "s1", T0)])
        s.ingest([ev("$pageview", "user@x", "s2", T0 + timedelta(minutes=1))])
        s.ingest([{"event": "$identify", "distinct_id": "user@x", "timestamp": iso(T0 + timedelta(minutes=2)),
                   "properties": {"$anon_distinct_id": "anon-1"}}])
        rows = sessions(s)
        assert [r["distinct_id"] for r in rows] == ["anon-1", "user@x"]
        assert rows[0]["person_id"] == rows[1]["person_id"]
        [(n,)] = run(s, f"SELECT count(DISTINCT person_id) FROM ({sessions_sql()})")
        assert n == 1


def test_time_range_and_uuid7_rule(tmp_path):
    with sightline.open(tmp_path / "d") as s:
        good = uuid7(int(T0.timestamp() * 1000) - 5)
        late = uuid7(int(T0.timestamp() * 1000) + 60_000)  # id minted after the session's first event
        s.ingest([ev("$pageview", "u", good, T0), ev("$pageview", "u", good, T0 + timedelta(seconds=5)),
                  ev("$pageview", "u", late, T0), ev("$pageview", "u", "custom-1", T0 + timedelta(days=2))])
        assert len(sessions(s)) == 3
        assert [r["session_id"] for r in sessions(s, require_uuid7=True)] == [good]
        sql = sessions_sql(start_param="$start", end_param="$end")
        rows = run(s, f"SELECT session_id FROM ({sql}) ORDER BY 1",
                   start=T0 + timedelta(days=1), end=T0 + timedelta(days=3))
        assert rows == [("custom-1",)]
        rows = run(s, f"SELECT count(*) FROM ({sql})", start=T0, end=T0 + timedelta(days=1))
        assert rows == [(2,)]


def _path(url):
    if url is None:
        return None
    parts = urlsplit(url)
    return (parts.path or "/") if parts.scheme else parts.path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_sessions_match_python_reference(tmp_path, seed):
    rnd = random.Random(seed)
    kinds = ["$pageview", "$pageview", "$autocapture", "$screen", "$pageleave", "signed_up"]
    urls = [None, "https://a.io/", "https://a.io/x?y=1", "https://a.io/p/q#h", "https://b.io", "/relative/path?z"]
    users = [f"anon-{i}" for i in range(8)] + [f"user-{i}" for i in range(4)]
    raw, used = [], set()
    for k in range(40):
        sid = f"s{k:02d}" if rnd.random() > 0.1 else rnd.choice(["", None])
        did = rnd.choice(users)
        start = T0 + timedelta(seconds=rnd.randrange(0, 86400))
        for _ in range(rnd.randint(1, 6)):
            while True:  # unique timestamps: "first" and "last" are then well defined
                t = start + timedelta(milliseconds=rnd.randrange(0, 40_000))
                if t not in used:
                    used.add(t)
                    break
            props = {}
            if rnd.random() < 0.3:
                props["utm_source"] = rnd.choice(["google", "news", ""])
            if rnd.random() < 0.3:
                props["$referring_domain"] = rnd.choice(["$direct", "t.co"])
            raw.append(ev(rnd.choice(kinds), did, sid, t, rnd.choice(urls), **props))
    with sightline.open(tmp_path / "d") as s:
        s.ingest(raw)
        s.ingest([{"event": "$identify", "distinct_id": f"user-{i % 4}", "timestamp": iso(T0 + timedelta(days=2)),
                   "properties": {"$anon_distinct_id": f"anon-{i}"}} for i in range(0, 8, 2)])
        person_of = dict(run(s, "SELECT distinct_id, person_id FROM person_distinct_ids WHERE project_id = $project"))
        got = {r["session_id"]: r for r in sessions(s)}

    by_session: dict[str, list] = {}
    for e in raw:
        sid = e["properties"].get("$session_id")
        if sid:
            by_session.setdefault(sid, []).append(e)
    assert set(got) == set(by_session)
    for sid, evs in by_session.items():
        evs = sorted(evs, key=lambda e: e["timestamp"])
        ts = [datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) for e in evs]
        is_pv = [e["event"] in ("$pageview", "$screen") for e in evs]

        def entry(key, last=False):
            cands = [(pv, t, e["properties"].get(key)) for e, t, pv in zip(evs, ts, is_pv)
                     if e["properties"].get(key) not in (None, "")]
            if not cands:
                return None
            if last:
                return max(cands, key=lambda c: (c[0], c[1]))[2]
            return min(cands, key=lambda c: (not c[0], c[1]))[2]

        counts = {k: sum(e["event"] == k for e in evs) for k in ("$pageview", "$autocapture", "$screen")}
        duration = int(ts[-1].timestamp() // 1) - int(ts[0].timestamp() // 1)
        n = sum(counts.values())
        bounce = None if n == 0 else (False if n > 1 or duration >= 10 else True)
        expected = {
            "distinct_id": evs[0]["distinct_id"], "person_id": person_of[evs[0]["distinct_id"]],
            "$start_timestamp": ts[0], "$end_timestamp": ts[-1], "$session_duration": duration,
            "$entry_current_url": entry("$current_url"), "$end_current_url": entry("$current_url", last=True),
            "$entry_pathname": _path(entry("$current_url")), "$end_pathname": _path(entry("$current_url", last=True)),
            "$entry_utm_source": entry("utm_source"), "$entry_referring_domain": entry("$referring_domain"),
            "$pageview_count": counts["$pageview"], "$autocapture_count": counts["$autocapture"],
            "$screen_count": counts["$screen"], "$is_bounce": bounce,
        }
        row = got[sid]
        assert {k: row[k] for k in expected} == expected, sid
