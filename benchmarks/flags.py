#!/usr/bin/env python
"""Feature-flag evaluation benchmark: ``POST /flags/?v=2`` for one person against ~50 flags.

Starts a real ``python -m sightline.cli serve`` on a free 127.0.0.1 port with a fresh data
directory, creates 50 flags through the management API (rollouts, multivariate flags with
payloads, person-property conditions with every kind of operator, a group flag, a cohort-free
flag dependency, a holdout), stores a person with properties, then:

1. **server time**: sequential requests; each response's ``Server-Timing: flags;dur=<ms>`` is the
   time spent in evaluation (person lookup + all 50 flags), reported as median / p95 / p99;
2. **throughput**: N keep-alive connections (one thread each, bodies prebuilt) for a few seconds,
   reported as requests/s, with the client-side latency.

Run from the repository root::

    .venv/bin/python benchmarks/flags.py            # 5 s throughput run, 8 connections
    .venv/bin/python benchmarks/flags.py --quick    # a smoke run

Exit code 0 when every response was 200 with all 50 flags, else 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "phc_bench_flags"
API_KEY = "phx_bench_flags_secret"
N_FLAGS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flag_definitions() -> list[dict]:
    ops = [("plan", "exact", ["pro", "enterprise"]), ("email", "icontains", "@acme.com"),
           ("email", "regex", r"^[a-z]+@"), ("sessions", "gt", 10), ("app_version", "semver_gte", "2.0.0"),
           ("signed_up_at", "is_date_after", "-90d"), ("country", "is_not", ["FR", "DE"]),
           ("beta", "exact", True), ("company_size", "lte", 500), ("referrer", "is_set", None)]
    out = []
    for i in range(N_FLAGS):
        kind = i % 5
        key = f"bench-flag-{i:02d}"
        if kind == 0:
            out.append({"key": key, "filters": {"groups": [{"properties": [], "rollout_percentage": 10 + i}]}})
        elif kind == 1:
            out.append({"key": key, "filters": {
                "groups": [{"properties": [], "rollout_percentage": 80}],
                "multivariate": {"variants": [{"key": "control", "rollout_percentage": 34},
                                              {"key": "a", "rollout_percentage": 33},
                                              {"key": "b", "rollout_percentage": 33}]},
                "payloads": {"control": {"v": 0}, "a": {"v": 1}, "b": {"v": 2, "copy": "x" * 40}}}})
        elif kind == 2:
            k1, o1, v1 = ops[i % len(ops)]
            k2, o2, v2 = ops[(i + 3) % len(ops)]
            out.append({"key": key, "filters": {"groups": [
                {"properties": [{"key": k1, "operator": o1, "value": v1, "type": "person"}], "rollout_percentage": 100},
                {"properties": [{"key": k2, "operator": o2, "value": v2, "type": "person"},
                                {"key": "plan", "operator": "icontains", "value": "PR"}], "rollout_percentage": 50}],
                "payloads": {"true": {"enabled_by": k1}}}})
        elif kind == 3:
            out.append({"key": key, "filters": {
                "groups": [{"properties": [{"key": "sessions", "operator": "gte", "value": i % 20}],
                            "rollout_percentage": 70, "variant": "test"}],
                "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50},
                                              {"key": "test", "rollout_percentage": 50}]},
                "holdout": {"id": i, "exclusion_percentage": 10}}})
        else:
            dep = f"bench-flag-{i - 4:02d}"
            out.append({"key": key, "filters": {"groups": [{"properties": [
                {"type": "flag", "key": dep, "operator": "flag_evaluates_to", "value": True}],
                "rollout_percentage": 90}]}})
    out[-1] = {"key": out[-1]["key"], "filters": {"aggregation_group_type_index": 0, "groups": [
        {"properties": [{"key": "tier", "value": "gold", "type": "group", "group_type_index": 0}],
         "rollout_percentage": 100}]}}
    return out


def request(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="throughput run length")
    ap.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections")
    ap.add_argument("--samples", type=int, default=2000, help="sequential requests for server time")
    ap.add_argument("--quick", action="store_true", help="1 s, 200 samples")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.samples = 1.0, 200

    tmp = Path(tempfile.mkdtemp(prefix="sightline-flags-bench-"))
    port = free_port()
    env = {**os.environ, "SIGHTLINE_PROJECT_TOKEN": TOKEN, "SIGHTLINE_API_KEY": API_KEY}
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sightline.cli", "serve", "--data-dir", str(tmp / "data"),
                             "--port", str(port), "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    ok = True
    try:
        deadline = time.time() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                if request(c, "GET", "/_health")[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                print((tmp / "server.log").read_text())
                return 1
            time.sleep(0.05)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        person = {"plan": "pro", "email": "ann@acme.com", "sessions": 14, "app_version": "2.3.1",
                  "signed_up_at": "2026-10-01T00:00:00Z", "country": "US", "beta": True,
                  "company_size": 120, "referrer": "google"}
        status, _, _ = request(c, "POST", "/batch/", {"api_key": TOKEN, "batch": [
            {"event": "$set", "distinct_id": "bench-user", "properties": {"$set": person}},
            {"event": "$groupidentify", "distinct_id": "bench-user",
             "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"tier": "gold"}}}]})
        assert status == 200
        for f in flag_definitions():
            status, _, body = request(c, "POST", "/api/projects/@current/feature_flags/", f, auth)
            assert status == 201, body
        # a typical server-SDK request: the person is stored; one override, one group
        flags_body = {"api_key": TOKEN, "distinct_id": "bench-user", "groups": {"company": "acme"},
                      "person_properties": {"$lib": "posthog-python"}, "group_properties": {}}
        payload = json.dumps(flags_body).encode()

        def check(status: int, body: bytes) -> bool:
            return status == 200 and len(json.loads(body)["flags"]) == N_FLAGS

        # 1. server time (sequential)
        durations = []
        enabled = 0
        for i in range(args.samples):
            status, headers, body = request(c, "POST", "/flags/?v=2", flags_body)
            ok &= check(status, body)
            timing = headers.get("Server-Timing") or headers.get("server-timing")
            durations.append(float(timing.split("dur=")[1]))
            if i == 0:
                enabled = sum(1 for f in json.loads(body)["flags"].values() if f["enabled"])
        durations.sort()
        q = lambda p: durations[min(len(durations) - 1, int(p * len(durations)))]  # noqa: E731

        # 2. throughput
        counts = [0] * args.connections
        latencies: list[list[float]] = [[] for _ in range(args.connections)]
        errors = [0] * args.connections
        stop = time.perf_counter() + args.seconds

        def worker(n: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = {"Content-Type": "application/json"}
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                conn.request("POST", "/flags/?v=2", body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                latencies[n].append((time.perf_counter() - t0) * 1000)
                if resp.status != 200 or len(data) < 100:
                    errors[n] += 1
                counts[n] += 1

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.connections)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        total = sum(counts)
        lat = sorted(x for xs in latencies for x in xs)
        ok &= sum(errors) == 0

        print(f"flags benchmark: {N_FLAGS} flags ({enabled} enabled for the person), stored person "
              f"+ group, /flags/?v=2")
        print(f"  server time per request (Server-Timing, {len(durations)} sequential requests): "
              f"median {statistics.median(durations):.3f} ms, p95 {q(0.95):.3f} ms, p99 {q(0.99):.3f} ms")
        print(f"  per flag: {statistics.median(durations) / N_FLAGS * 1000:.1f} µs")
        print(f"  throughput: {total / elapsed:,.0f} requests/s over {elapsed:.1f} s with "
              f"{args.connections} connections (client latency median {statistics.median(lat):.2f} ms, "
              f"p99 {lat[int(0.99 * len(lat))]:.2f} ms), errors {sum(errors)}")
        print("  OK" if ok else "  FAILED")
        return 0 if ok else 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
