"""`sightline import` / `export` / `--help`: files in, files out, counts checked independently."""

import csv
import json
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

import sightline
from sightline.cli import main

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def rows(n, start=0):
    out = []
    for i in range(start, start + n):
        out.append({"event": ["$pageview", "signed_up", "purchase"][i % 3], "distinct_id": f"u{i % 17}",
                    "timestamp": (T0 + timedelta(minutes=i)).isoformat(), "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, str(i))),
                    "properties": {"$browser": ["Chrome", "Firefox"][i % 2], "amount": i}})
    return out


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def stored(data_dir):
    with sightline.open(data_dir) as s:
        return s.storage.execute("SELECT CAST(uuid AS VARCHAR), event, distinct_id, mat_browser, "
                                 "properties FROM events").rows


def test_import_jsonl_with_bad_rows_and_dedup(tmp_path):
    good = rows(500)
    path = tmp_path / "events.jsonl"
    with open(path, "w") as fh:
        for r in good:
            fh.write(json.dumps(r) + "\n")
        fh.write("{broken json\n")
        fh.write(json.dumps({"event": "no id"}) + "\n")
        fh.write(json.dumps({"distinct_id": "no name"}) + "\n")
        fh.write(json.dumps({**good[0], "uuid": "not-a-uuid"}) + "\n")
    result = run("import", path, "--data-dir", tmp_path / "d", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "loaded:     500" in result.output
    assert "invalid_json: 1" in result.output and "missing_distinct_id: 1" in result.output
    assert "missing_event_name: 1" in result.output and "invalid_uuid: 1" in result.output
    got = stored(tmp_path / "d")
    assert len(got) == 500
    assert Counter(r[1] for r in got) == Counter(r["event"] for r in good)
    assert Counter(r[3] for r in got) == Counter(r["properties"]["$browser"] for r in good)
    # importing the same file again stores nothing new
    result = run("import", path, "--data-dir", tmp_path / "d", "--no-progress")
    assert "duplicates: 500" in result.output
    assert len(stored(tmp_path / "d")) == 500


def test_import_csv_and_parquet_struct_properties(tmp_path):
    data = rows(300)
    csv_path = tmp_path / "a.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["event", "distinct_id", "timestamp", "properties", "uuid"])
        w.writeheader()
        for r in data[:150]:
            w.writerow({**r, "properties": json.dumps(r["properties"])})
    pq_path = tmp_path / "b.parquet"
    rest = data[150:]
    pq.write_table(pa.table({
        "event": [r["event"] for r in rest], "distinct_id": [r["distinct_id"] for r in rest],
        "timestamp": pa.array([datetime.fromisoformat(r["timestamp"]) for r in rest], pa.timestamp("us", tz="UTC")),
        "properties": pa.array([r["properties"] for r in rest]),  # a struct column
    }), pq_path)
    result = run("import", csv_path, pq_path, "--data-dir", tmp_path / "d", "--no-progress")
    assert result.exit_code == 0, result.output
    got = stored(tmp_path / "d")
    assert len(got) == 300
    assert sum(json.loads(r[4])["amount"] for r in got) == sum(range(300))
    with sightline.open(tmp_path / "d") as s:
        persons = s.storage.execute("SELECT count(*) FROM persons").rows[0][0]
        assert persons == 17


def test_import_applies_identity_rules(tmp_path):
    path = tmp_path / "id.jsonl"
    lines = [
        {"event": "$pageview", "distinct_id": "anon", "timestamp": "2024-01-01T00:00:00Z"},
        {"event": "$identify", "distinct_id": "user@x", "timestamp": "2024-01-01T00:01:00Z",
         "properties": {"$anon_distinct_id": "anon", "$set": {"plan": "pro"}}},
        {"event": "$pageview", "distinct_id": "user@x", "timestamp": "2024-01-01T00:02:00Z",
         "properties": {"$groups": {"company": "acme"}}},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    assert run("import", path, "--data-dir", tmp_path / "d", "--no-progress").exit_code == 0
    with sightline.open(tmp_path / "d") as s:
        people = s.storage.execute("SELECT properties FROM persons").rows
        assert people == [('{"plan":"pro"}',)]
        ids = s.storage.execute(
            "SELECT count(DISTINCT coalesce(o.override_person_id, e.person_id)), max(group_0) FROM events e "
            "LEFT JOIN person_overrides o ON o.old_person_id = e.person_id").rows
        assert ids == [(1, "acme")]


def test_export_round_trip(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows(120)))
    run("import", path, "--data-dir", tmp_path / "d", "--no-progress")
    assert run("export", tmp_path / "out.parquet", "--data-dir", tmp_path / "d").exit_code == 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 120
    assert sorted(table.column("uuid").to_pylist()) == sorted(r["uuid"] for r in rows(120))
    result = run("export", tmp_path / "out.jsonl", "--data-dir", tmp_path / "d", "--event", "purchase",
                 "--after", "2024-01-01T01:00:00Z")
    assert result.exit_code == 0
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = [r for r in rows(120) if r["event"] == "purchase" and r["timestamp"] >= "2024-01-01T01:00:00+00:00"]
    assert sorted(o["uuid"] for o in out) == sorted(r["uuid"] for r in expected)
    assert all(o["properties"]["amount"] == int(o["properties"]["amount"]) for o in out)


def test_help_lists_every_command():
    result = run("--help")
    for cmd in ("serve", "import", "demo", "export", "keys"):
        assert cmd in result.output
    for cmd in ("serve", "import", "demo", "export"):
        sub = run(cmd, "--help")
        assert sub.exit_code == 0 and "--data-dir" in sub.output


def test_data_dir_in_use_is_a_clear_error(tmp_path):
    with sightline.open(tmp_path / "d"):
        proc = subprocess.run([sys.executable, "-m", "sightline.cli", "export", str(tmp_path / "x.parquet"),
                               "--data-dir", str(tmp_path / "d")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "in use by another Sightline process" in proc.stderr


def test_cohorts_cli(tmp_path):
    d = tmp_path / "d"
    (tmp_path / "ids.csv").write_text("distinct_id\nu1\nu2\n")
    r = run("cohorts", "create", "--name", "beta", "--csv", tmp_path / "ids.csv", "--data-dir", d)
    assert r.exit_code == 0, r.output
    cid = int(r.output.strip())
    (tmp_path / "f.json").write_text(json.dumps({"properties": {"type": "AND", "values": [
        {"type": "behavioral", "key": "purchase", "value": "performed_event", "time_value": 30, "time_interval": "day"}]}}))
    assert run("cohorts", "create", "--name", "buyers", "--filters-json", tmp_path / "f.json", "--data-dir", d).exit_code == 0
    (tmp_path / "bad.json").write_text(json.dumps({"properties": {"type": "AND", "values": [{"key": "x", "operator": "zz"}]}}))
    assert run("cohorts", "create", "--name", "bad", "--filters-json", tmp_path / "bad.json", "--data-dir", d).exit_code == 2
    listing = run("cohorts", "list", "--data-dir", d).output
    assert "beta" in listing and "buyers" in listing and "bad" not in listing
    assert run("cohorts", "delete", str(cid), "--data-dir", d).exit_code == 0
    assert "beta" not in run("cohorts", "list", "--data-dir", d).output
    with sightline.open(d) as s:
        s.ingest([{"event": "pv", "distinct_id": "u1"}, {"event": "pv", "distinct_id": "u3"}])
