#!/usr/bin/env python
"""Ingestion throughput benchmark: ``POST /batch/`` with gzip batches, as the server SDKs send.

Two runs over the same pre-built request bodies and the same client:

1. **sightline**: a real ``python -m sightline.cli serve`` on a free 127.0.0.1 port with a
   fresh data directory. Every event is decoded, validated, resolved to a person and
   committed to DuckDB before the request is answered. Afterwards the server is stopped
   gracefully and the stored rows are counted straight from the data directory.
2. **baseline**: a minimal Starlette + uvicorn app (same uvicorn settings as
   ``sightline serve``) whose ``/batch/`` handler does exactly Sightline's request parsing
   (read body, ``decode_capture``, ``request_token``, ``normalize_batch``) and answers
   ``{"status": 1}`` without storing anything. The ratio sightline / baseline says how much
   of the HTTP + parsing ceiling the write path keeps.

Run from the repository root::

    .venv/bin/python benchmarks/ingest.py            # 500,000 events, 8 connections
    .venv/bin/python benchmarks/ingest.py --quick    # 50,000 events, a smoke run
    .venv/bin/python benchmarks/ingest.py --help

The client is deliberately cheap (one thread per keep-alive ``http.client`` connection,
bodies built before the clock starts) because the server needs the machine's cores.
Exit code: 0 when every response was 200 ``{"status": 1}`` and stored == sent, else 1.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid as _uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sightline.ingest.normalize import uuid7  # noqa: E402
TOKEN = "phc_benchmark_project_token"
API_KEY = "phx_benchmark_secret_key"
UTC = timezone.utc
HOST = "127.0.0.1"
MAX_BODY = 20 * 1024 * 1024  # sightline serve's default --max-body-mb 20

# --------------------------------------------------------------------------------------
# request bodies
# --------------------------------------------------------------------------------------

BROWSERS = [("Chrome", "124.0.6367.91", 0.62), ("Safari", "17.4.1", 0.2), ("Firefox", "125.0", 0.08),
            ("Microsoft Edge", "124.0.2478.67", 0.07), ("Samsung Internet", "24.0", 0.03)]
OSES = [("Windows", "10.0", "Desktop", 0.38), ("Mac OS X", "14.4.1", "Desktop", 0.22),
        ("iOS", "17.4.1", "Mobile", 0.2), ("Android", "14", "Mobile", 0.16),
        ("Linux", "", "Desktop", 0.04)]
SCREENS = {"Desktop": [(1920, 1080), (1536, 864), (2560, 1440), (1440, 900)],
           "Mobile": [(390, 844), (393, 873), (412, 915), (375, 667)]}
PATHS = ["/", "/pricing", "/docs", "/docs/getting-started", "/docs/api", "/blog",
         "/blog/launch-week", "/signup", "/login", "/app/dashboard", "/app/insights",
         "/app/settings", "/app/projects/42", "/features", "/changelog"]
REFERRERS = [("$direct", "$direct", 0.45), ("https://www.google.com/", "www.google.com", 0.3),
             ("https://news.ycombinator.com/", "news.ycombinator.com", 0.08),
             ("https://twitter.com/", "twitter.com", 0.07),
             ("https://www.bing.com/", "www.bing.com", 0.05),
             ("https://github.com/", "github.com", 0.05)]
LIBS = [("web", "1.130.2", 0.7), ("posthog-node", "4.17.1", 0.15), ("posthog-python", "6.7.0", 0.15)]
CUSTOM = {
    "button_clicked": lambda r: {"button": r.choice(["get_started", "upgrade", "save", "share"]),
                                 "location": r.choice(["header", "hero", "sidebar"])},
    "signed_up": lambda r: {"plan": r.choice(["free", "pro", "team"]),
                            "referral": r.random() < 0.2},
    "search_performed": lambda r: {"query_length": r.randint(1, 40),
                                   "results": r.randint(0, 200)},
    "purchase_completed": lambda r: {"plan": r.choice(["pro", "team", "enterprise"]),
                                     "amount": round(r.uniform(9, 999), 2), "currency": "USD",
                                     "seats": r.randint(1, 50)},
    "feature_used": lambda r: {"feature": r.choice(["insights", "funnels", "flags", "export"]),
                               "duration_ms": r.randint(50, 90_000)},
}
CUSTOM_NAMES = list(CUSTOM)


def _weighted(r: random.Random, items: list[tuple]) -> tuple:
    x = r.random()
    for item in items:
        x -= item[-1]
        if x <= 0:
            return item
    return items[-1]


def uuid7_str(ms: int, rand: int) -> str:
    """A repeatable UUIDv7, made the way Sightline and the SDKs make them."""
    return uuid7(ms, rand)


SPAN_MS = 600_000  # the events' timestamps cover the ten minutes before sent_at


@dataclass
class _User:
    distinct_id: str
    browser: tuple
    os: tuple
    screen: tuple[int, int]
    lib: tuple
    session_id: str = ""
    window_id: str = ""
    session_left: int = 0


def build_bodies(n_events: int, batch_size: int, users: int, seed: int, level: int,
                 timestamps: str = "ordered") -> tuple[list[bytes], int]:
    """Gzipped ``{"api_key", "batch", "sent_at"}`` bodies with ``n_events`` events in total.

    Returns (bodies, raw JSON bytes). Every event has a unique UUIDv7. Timestamps cover the
    ten minutes before ``sent_at``: ``ordered`` rises with the send order (up to 1 s of
    jitter), as live traffic does; ``random`` scatters every event over the ten minutes, so
    a user's events arrive out of order (each one older than the person's first event
    moves the person's ``created_at`` back, i.e. is a person update).
    """
    r = random.Random(seed)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    pool: list[_User] = []
    for i in range(users):
        os_ = _weighted(r, OSES)
        did = f"user_{i:06d}" if r.random() < 0.4 else str(_uuid.UUID(int=r.getrandbits(128), version=4))
        pool.append(_User(did, _weighted(r, BROWSERS), os_, r.choice(SCREENS[os_[2]]), _weighted(r, LIBS)))
    seen_uuids: set[str] = set()
    bodies: list[bytes] = []
    raw_bytes = 0
    made = 0
    while made < n_events:
        size = min(batch_size, n_events - made)
        batch = []
        for _ in range(size):
            u = pool[r.randrange(users)]
            if timestamps == "random":
                ms = now_ms - r.randrange(SPAN_MS)
            else:
                ms = now_ms - SPAN_MS + (made + len(batch)) * SPAN_MS // n_events - r.randrange(1000)
            if u.session_left <= 0:
                u.session_id = uuid7_str(ms, r.getrandbits(74))
                u.window_id = uuid7_str(ms, r.getrandbits(74))
                u.session_left = r.randint(3, 40)
            u.session_left -= 1
            path = r.choice(PATHS)
            ref = _weighted(r, REFERRERS)
            props = {
                "$current_url": f"https://example.com{path}",
                "$host": "example.com",
                "$pathname": path,
                "$browser": u.browser[0],
                "$browser_version": u.browser[1],
                "$os": u.os[0],
                "$os_version": u.os[1],
                "$device_type": u.os[2],
                "$screen_width": u.screen[0],
                "$screen_height": u.screen[1],
                "$referrer": ref[0],
                "$referring_domain": ref[1],
                "$session_id": u.session_id,
                "$window_id": u.window_id,
                "$lib": u.lib[0],
                "$lib_version": u.lib[1],
            }
            x = r.random()
            if x < 0.55:
                name = "$pageview"
            elif x < 0.65:
                name = "$pageleave"
            else:
                name = r.choice(CUSTOM_NAMES)
                props.update(CUSTOM[name](r))
            if r.random() < 0.1:
                props["utm_source"] = r.choice(["newsletter", "google", "twitter"])
                props["utm_medium"] = r.choice(["email", "cpc", "social"])
            uid = uuid7_str(ms, r.getrandbits(74))
            if uid in seen_uuids:  # 74 random bits: never in practice, but the run depends on it
                continue
            seen_uuids.add(uid)
            ts = datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
            batch.append({"event": name, "distinct_id": u.distinct_id, "properties": props,
                          "timestamp": ts.replace("+00:00", "Z"), "uuid": uid})
        body = orjson.dumps({"api_key": TOKEN, "batch": batch, "sent_at": now.isoformat()})
        raw_bytes += len(body)
        bodies.append(gzip.compress(body, compresslevel=level))
        made += len(batch)
    return bodies, raw_bytes


# --------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------

HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip",
           "User-Agent": "posthog-python/6.7.0"}
EXPECTED = {"status": 1}


@dataclass
class ClientResult:
    requests: int = 0
    events: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    client_cpu: float = 0.0


def send_all(port: int, bodies: list[bytes], events_per_body: list[int], concurrency: int,
             path: str = "/batch/") -> ClientResult:
    """Send every body once over ``concurrency`` keep-alive connections (one thread each).

    Connections are opened (and warmed with ``GET /_health``) before the clock starts; the
    time is from the first send to the last response.
    """
    counter = itertools.count()
    n = len(bodies)
    barrier = threading.Barrier(concurrency + 1)
    lock = threading.Lock()
    result = ClientResult()
    starts: list[float] = []
    ends: list[float] = []

    def worker() -> None:
        lat: list[float] = []
        fails: list[str] = []
        done = 0
        events = 0
        first = last = None
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        try:
            conn.request("GET", "/_health")
            conn.getresponse().read()
        except Exception as exc:  # pragma: no cover - reported below
            fails.append(f"warm-up failed: {exc!r}")
        barrier.wait()
        perf = time.perf_counter
        while not fails or len(fails) < 20:
            i = next(counter)
            if i >= n:
                break
            t0 = perf()
            if first is None:
                first = t0
            try:
                conn.request("POST", path, body=bodies[i], headers=HEADERS)
                resp = conn.getresponse()
                data = resp.read()
            except Exception as exc:
                fails.append(f"request {i}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=120)
                continue
            t1 = perf()
            last = t1
            lat.append(t1 - t0)
            done += 1
            if resp.status != 200:
                fails.append(f"request {i}: HTTP {resp.status} {data[:300]!r}")
                continue
            try:
                ok = orjson.loads(data) == EXPECTED
            except orjson.JSONDecodeError:
                ok = False
            if not ok:
                fails.append(f"request {i}: unexpected body {data[:300]!r}")
                continue
            events += events_per_body[i]
        conn.close()
        with lock:
            result.requests += done
            result.events += events
            result.latencies += lat
            result.failures += fails
            if first is not None:
                starts.append(first)
                ends.append(last if last is not None else first)

    threads = [threading.Thread(target=worker, name=f"client-{k}", daemon=True)
               for k in range(concurrency)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    barrier.wait()
    for t in threads:
        t.join()
    result.client_cpu = time.process_time() - cpu0
    if starts:
        result.seconds = max(ends) - min(starts)
    return result


# --------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _get(port: int, path: str, headers: dict | None = None, timeout: float = 2) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, all threads (Linux /proc), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def tree_cpu_seconds(pid: int) -> float | None:
    """:func:`proc_cpu_seconds` of ``pid`` plus its live child processes (capture workers)."""
    total = proc_cpu_seconds(pid)
    if total is None:
        return None
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        children = []
    for child in children:
        total += tree_cpu_seconds(child) or 0.0
    return total


def system_busy_seconds() -> float | None:
    """CPU seconds all processes spent busy since boot, summed over CPUs (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
        values = [int(v) for v in parts[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class ServerProc:
    def __init__(self, cmd: list[str], env: dict, log_path: Path, port: int, name: str) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if _get(self.port, "/_health", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} server did not become healthy:\n{self.log()}")

    def stop(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@dataclass
class RunResult:
    name: str
    client: ClientResult
    server_cpu: float | None = None
    other_cpu: float | None = None  # CPU used by unrelated processes during the run
    stored: int | None = None
    notes: list[str] = field(default_factory=list)


def _metrics(port: int) -> dict[str, float]:
    try:
        status, body = _get(port, "/metrics", {"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    except OSError:
        return {}
    out: dict[str, float] = {}
    if status == 200:
        for line in body.decode(errors="replace").splitlines():
            if line and not line.startswith("#") and "{" not in line:
                key, _, value = line.partition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
    return out


def run_sightline(bodies: list[bytes], per_body: list[int], concurrency: int, work: Path,
                  extra_server_args: list[str]) -> RunResult:
    data_dir = work / "sightline-data"
    port = free_port()
    env = {**os.environ, "SIGHTLINE_PROJECT_TOKEN": TOKEN, "SIGHTLINE_API_KEY": API_KEY}
    cmd = [sys.executable, "-m", "sightline.cli", "serve", "--data-dir", str(data_dir),
           "--port", str(port), "--host", HOST, "--log-level", "warning", *extra_server_args]
    srv = ServerProc(cmd, env, work / "sightline-server.log", port, "sightline")
    try:
        srv.wait_healthy()
        cpu0, sys0 = tree_cpu_seconds(srv.proc.pid), system_busy_seconds()
        client = send_all(port, bodies, per_body, concurrency)
        cpu1, sys1 = tree_cpu_seconds(srv.proc.pid), system_busy_seconds()
        metrics = _metrics(port)
    except BaseException:
        srv.stop()
        raise
    stop_started = time.perf_counter()
    rc = srv.stop()
    res = RunResult("sightline", client, *_cpu_split(cpu0, cpu1, sys0, sys1, client))
    # uvicorn re-raises the SIGTERM it caught once its graceful shutdown is done: -15 is normal
    res.notes.append(f"graceful stop took {time.perf_counter() - stop_started:.1f}s (exit code {rc})")
    batches = metrics.get("sightline_writer_batches_total")
    if batches:
        res.notes.append(f"writer commits: {int(batches):,} "
                         f"(avg {metrics.get('sightline_writer_events_stored_total', 0) / batches:,.0f} "
                         f"events/commit, last commit {metrics.get('sightline_writer_last_commit_seconds', 0) * 1000:.1f} ms)")
    if rc not in (0, -signal.SIGTERM, None):
        res.notes.append(f"server exited with {rc}; log tail:\n{srv.log()}")
    import sightline

    core = sightline.open(data_dir)
    try:
        res.stored = core.storage.execute("select count(*) from events").rows[0][0]
    finally:
        core.close()
    size = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
    res.notes.append(f"data dir after stop: {size / 1e6:,.1f} MB")
    return res


def run_baseline(bodies: list[bytes], per_body: list[int], concurrency: int, work: Path) -> RunResult:
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-server", str(port)]
    srv = ServerProc(cmd, dict(os.environ), work / "baseline-server.log", port, "baseline")
    try:
        srv.wait_healthy()
        cpu0, sys0 = proc_cpu_seconds(srv.proc.pid), system_busy_seconds()
        client = send_all(port, bodies, per_body, concurrency)
        cpu1, sys1 = proc_cpu_seconds(srv.proc.pid), system_busy_seconds()
    finally:
        srv.stop()
    return RunResult("baseline", client, *_cpu_split(cpu0, cpu1, sys0, sys1, client))


def _cpu_split(cpu0, cpu1, sys0, sys1, client: ClientResult) -> tuple[float | None, float | None]:
    """(server CPU seconds, CPU seconds of every other process) during a run."""
    server = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    other = None
    if server is not None and sys0 is not None and sys1 is not None:
        other = max(0.0, (sys1 - sys0) - server - client.client_cpu)
    return server, other


def serve_baseline(port: int) -> None:
    """The parse-and-discard server (runs in its own process)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from sightline.errors import AuthenticationFailed, SightlineError
    from sightline.ingest.decode import decode_capture
    from sightline.ingest.normalize import normalize_batch, request_token
    from sightline.web.capture import sent_at_of
    from sightline.web.http import error_response, json_response, read_body

    legacy_paths = frozenset({"/e", "/capture", "/track", "/engage", "/i/v0/e"})

    async def batch(request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        query = dict(request.query_params)
        try:
            body = b"" if query.get("data") else await read_body(request, MAX_BODY)
            headers = request.headers
            req = decode_capture(body, query=query, content_type=headers.get("content-type"),
                                 content_encoding=headers.get("content-encoding"),
                                 legacy=path in legacy_paths, max_bytes=MAX_BODY)
            token = request_token(req.token or query.get("token") or query.get("api_key"), req.events)
            if token != TOKEN:
                raise AuthenticationFailed("Project token is not valid.", code="invalid_token")
            result = normalize_batch(req.events, now=datetime.now(UTC), sent_at=sent_at_of(req))
        except SightlineError as exc:
            return error_response(exc)
        payload: dict = {"status": 1}
        if result.rejected:
            payload["rejected"] = [r.to_json() for r in result.rejected[:100]]
        return json_response(payload)

    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    app = Starlette(routes=[Route("/batch", batch, methods=["GET", "POST"]),
                            Route("/batch/", batch, methods=["GET", "POST"]),
                            Route("/_health", health, methods=["GET"])])
    # The uvicorn settings of `sightline serve` (loop/http "auto": uvloop + httptools if installed).
    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=15, server_header=False, log_config=None)
    uvicorn.Server(config).run()


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def report(runs: list[RunResult], args, build_seconds: float, body_bytes: int, raw_bytes: int,
           n_bodies: int) -> None:
    try:
        import uvicorn
        uv = uvicorn.__version__
    except Exception:  # pragma: no cover
        uv = "?"
    loop = "uvloop" if _has("uvloop") else "asyncio"
    http_impl = "httptools" if _has("httptools") else "h11"
    print()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()} {platform.release()}), "
          f"Python {platform.python_version()}, uvicorn {uv} ({loop}, {http_impl})"
          + (f", load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}" if load else ""))
    print(f"workload: {args.events:,} events in {n_bodies:,} "
          f"POST /batch/ bodies of {args.batch_size} events, gzip level {args.gzip_level} "
          f"(avg {body_bytes / max(n_bodies, 1) / 1024:.1f} KiB gzipped, "
          f"{raw_bytes / max(n_bodies, 1) / 1024:.1f} KiB JSON), {args.users:,} distinct ids, "
          f"{args.timestamps} timestamps, "
          f"concurrency {args.concurrency}; bodies built in {build_seconds:.1f}s (not timed)")
    print()
    cols = ["run", "events", "requests", "seconds", "events/s", "requests/s", "p50 ms", "p99 ms",
            "server CPU", "CPU us/event", "client CPU", "other CPU", "failures"]
    rows = []
    for r in runs:
        c = r.client
        eps = c.events / c.seconds if c.seconds else 0.0
        rps = c.requests / c.seconds if c.seconds else 0.0
        scpu = f"{r.server_cpu / c.seconds * 100:.0f}%" if r.server_cpu is not None and c.seconds else "?"
        ccpu = f"{c.client_cpu / c.seconds * 100:.0f}%" if c.seconds else "?"
        ocpu = f"{r.other_cpu / c.seconds * 100:.0f}%" if r.other_cpu is not None and c.seconds else "?"
        upe = f"{r.server_cpu / c.events * 1e6:.1f}" if r.server_cpu is not None and c.events else "?"
        rows.append([r.name, f"{c.events:,}", f"{c.requests:,}", f"{c.seconds:.2f}", f"{eps:,.0f}",
                     f"{rps:,.0f}", f"{_pct(c.latencies, 0.5) * 1000:.1f}",
                     f"{_pct(c.latencies, 0.99) * 1000:.1f}", scpu, upe, ccpu, ocpu, str(len(c.failures))])
    widths = [max(len(cols[i]), *(len(row[i]) for row in rows)) for i in range(len(cols))]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(cols, widths)))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
    print(f"(CPU columns: CPU time / wall time, 100% = one core busy, {os.cpu_count()} cores in all; "
          f"'CPU us/event': the server's CPU time per event, every thread; "
          f"'other' is every unrelated process on the machine: a busy machine skews the figures)")
    by = {r.name: r for r in runs}
    if "sightline" in by and "baseline" in by:
        s, b = by["sightline"].client, by["baseline"].client
        if s.seconds and b.seconds and b.events:
            ratio = (s.events / s.seconds) / (b.events / b.seconds)
            print(f"\nsightline / baseline (events/s): {ratio:.2f}")
            sc, bc = by["sightline"].server_cpu, by["baseline"].server_cpu
            if sc and bc and s.events and b.events:
                # CPU per event moves less with the machine's load than events/s does
                print(f"baseline / sightline (server CPU per event): {(bc / b.events) / (sc / s.events):.2f} "
                      f"({bc / b.events * 1e6:.1f} vs {sc / s.events * 1e6:.1f} us)")
    if "sightline" in by:
        s = by["sightline"]
        eps = s.client.events / s.client.seconds if s.client.seconds else 0
        print(f"target >= {args.target:,} events/s: {'met' if eps >= args.target else 'NOT met'} "
              f"({eps:,.0f})")
        if s.stored is not None:
            print(f"stored (count(*) from events after a graceful stop): {s.stored:,} "
                  f"== sent {s.client.events:,}: {s.stored == s.client.events}")
        for note in s.notes:
            print(f"sightline: {note}")
    for r in runs:
        for f in r.client.failures[:5]:
            print(f"{r.name} failure: {f}")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Measure Sightline's ingestion throughput through POST /batch/ (gzip batches, "
                    "as posthog-python / posthog-node send them) against a parse-and-discard "
                    "baseline server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--events", type=int, default=500_000, help="events to send in each run")
    p.add_argument("--quick", action="store_true", help="smoke run: 50,000 events")
    p.add_argument("--batch-size", type=int, default=100, help="events per request")
    p.add_argument("--concurrency", type=int, default=8, help="keep-alive connections (client threads)")
    p.add_argument("--users", type=int, default=20_000, help="size of the distinct_id pool")
    p.add_argument("--seed", type=int, default=42, help="random seed for the events")
    p.add_argument("--gzip-level", type=int, default=6, choices=range(1, 10), metavar="1-9",
                   help="gzip level of the bodies (zlib's default, as posthog-node)")
    p.add_argument("--timestamps", choices=["ordered", "random"], default="ordered",
                   help="event timestamps rise with the send order (live traffic), or are scattered "
                        "over ten minutes (out-of-order events: many person created_at updates)")
    p.add_argument("--runs", default="sightline,baseline",
                   help="comma-separated runs to do: sightline, baseline")
    p.add_argument("--target", type=int, default=50_000, help="events/s target reported for sightline")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (data dir, logs)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `sightline serve` (repeatable)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.baseline_server:
        serve_baseline(args.baseline_server)
        return 0
    if args.quick:
        args.events = 50_000
    runs_wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs_wanted) - {"sightline", "baseline"}
    if unknown or not runs_wanted:
        p.error(f"--runs: unknown run(s) {sorted(unknown)}")
    if args.events < 1 or args.batch_size < 1 or args.concurrency < 1 or args.users < 1:
        p.error("--events, --batch-size, --concurrency and --users must be positive")

    t0 = time.perf_counter()
    print(f"building {args.events:,} events in batches of {args.batch_size} ...", flush=True)
    bodies, raw_bytes = build_bodies(args.events, args.batch_size, args.users, args.seed, args.gzip_level,
                                     args.timestamps)
    per_body = [args.batch_size] * len(bodies)
    per_body[-1] = args.events - args.batch_size * (len(bodies) - 1)
    build_seconds = time.perf_counter() - t0
    body_bytes = sum(len(b) for b in bodies)

    work = Path(tempfile.mkdtemp(prefix="sightline-bench-"))
    results: list[RunResult] = []
    try:
        for name in runs_wanted:
            print(f"run: {name} ...", flush=True)
            if name == "sightline":
                results.append(run_sightline(bodies, per_body, args.concurrency, work, args.server_arg))
            else:
                results.append(run_baseline(bodies, per_body, args.concurrency, work))
            c = results[-1].client
            print(f"  {c.events:,} events in {c.seconds:.2f}s", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report(results, args, build_seconds, body_bytes, raw_bytes, len(bodies))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "events": args.events, "batch_size": args.batch_size, "concurrency": args.concurrency,
            "runs": [{"name": r.name, "events": r.client.events, "requests": r.client.requests,
                      "seconds": r.client.seconds,
                      "events_per_second": r.client.events / r.client.seconds if r.client.seconds else 0,
                      "p50_ms": _pct(r.client.latencies, 0.5) * 1000,
                      "p99_ms": _pct(r.client.latencies, 0.99) * 1000,
                      "server_cpu_seconds": r.server_cpu, "other_cpu_seconds": r.other_cpu,
                      "stored": r.stored,
                      "failures": len(r.client.failures)} for r in results]}, indent=2))

    ok = all(not r.client.failures and r.client.events == args.events for r in results)
    ok = ok and all(r.stored is None or r.stored == r.client.events for r in results)
    if not ok:
        print("\nFAILED: some requests failed or not every event was stored", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
