"""In-process metrics, exposed at ``GET /metrics`` in Prometheus text format (version 0.0.4).

One :class:`Metrics` per :class:`~sightline.core.Sightline`. The code paths feed it with one
call each (capture: :meth:`Metrics.capture_request`; the writer: :meth:`Metrics.observe_write_batch`;
queries: :func:`timed_query`; flags: :meth:`Metrics.flag_evaluations`); gauges that describe the
writer's state (lag, backlog) are read when the page is rendered.

Names (all prefixed ``sightline_``): ``events_received_total``, ``events_accepted_total``,
``events_rejected_total{reason}``, ``capture_requests_total``, ``capture_errors_total{code}``,
``ingestion_lag_seconds``, ``write_batch_events`` (histogram), ``query_duration_seconds{kind}``
(histogram), ``queries_failed_total{kind}``, ``flag_requests_total``, ``flag_evaluations_total``.
"""

from __future__ import annotations

import bisect
import functools
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sightline.ingest.normalize import Rejection

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_KIND_RE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
MAX_QUERY_KINDS = 64  # label cardinality guard: further kinds are counted as "other"


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket (not cumulative); last = +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: dict[str, str] | None = None) -> list[str]:
        out = []
        running = 0
        for bound, n in zip([*self.buckets, float("inf")], self.counts):
            running += n
            le = "+Inf" if bound == float("inf") else _num(bound)
            out.append(f"{name}_bucket{_labels({**(labels or {}), 'le': le})} {running}")
        out.append(f"{name}_sum{_labels(labels)} {_num(self.total)}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


def _num(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v)) if isinstance(v, float) else str(v)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str] | None) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.rejected_by_reason: Counter[str] = Counter()
        self.errors_by_code: Counter[str] = Counter()
        self.write_batch = Histogram(BATCH_BUCKETS)
        self.query_duration: dict[str, Histogram] = {}
        self.queries_failed: Counter[str] = Counter()

    # -- feeding -----------------------------------------------------------------------------
    def capture_request(self, *, received: int, stored: int, rejected: Iterable[Rejection]) -> None:
        with self._lock:
            self.counters["capture_requests_total"] += 1
            self.counters["events_received_total"] += received
            self.counters["events_accepted_total"] += stored
            for r in rejected:
                self.rejected_by_reason[r.code] += 1

    def capture_error(self, code: str) -> None:
        with self._lock:
            self.counters["capture_requests_total"] += 1
            self.errors_by_code[code] += 1

    def observe_write_batch(self, events: int) -> None:
        """One group commit of the writer stored ``events`` events."""
        with self._lock:
            self.write_batch.observe(events)

    def observe_query(self, kind: Any, seconds: float, *, ok: bool = True) -> None:
        label = kind if isinstance(kind, str) and _KIND_RE.fullmatch(kind) else "other"
        with self._lock:
            if label not in self.query_duration and len(self.query_duration) >= MAX_QUERY_KINDS:
                label = "other"
            hist = self.query_duration.get(label)
            if hist is None:
                hist = self.query_duration[label] = Histogram(LATENCY_BUCKETS)
            hist.observe(seconds)
            if not ok:
                self.queries_failed[label] += 1

    def flag_evaluations(self, flags: int) -> None:
        """One /flags or /decide request evaluated ``flags`` flags."""
        with self._lock:
            self.counters["flag_requests_total"] += 1
            self.counters["flag_evaluations_total"] += flags

    # -- rendering ---------------------------------------------------------------------------
    _HELP = {
        "capture_requests_total": "Capture requests answered (any outcome).",
        "events_received_total": "Events received in capture requests.",
        "events_accepted_total": "Events acknowledged as durably stored (duplicates included).",
        "flag_requests_total": "Flag requests (/flags, /decide) that evaluated flags.",
        "flag_evaluations_total": "Feature flag values computed for SDK requests.",
    }

    def render(self, gauges: dict[str, float] | None = None, counters: dict[str, float] | None = None) -> str:
        """The Prometheus text page; ``gauges``/``counters`` are values read at scrape time
        (names without the ``sightline_`` prefix)."""
        lines: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            lines.append(f"# HELP sightline_{name} {help_}")
            lines.append(f"# TYPE sightline_{name} {kind}")

        with self._lock:
            counts = dict(self.counters)
            for name in self._HELP:
                counts.setdefault(name, 0)
            for name, value in sorted(counts.items()):
                family(name, "counter", self._HELP.get(name, name.replace("_", " ") + "."))
                lines.append(f"sightline_{name} {value}")
            family("events_rejected_total", "counter", "Events rejected by validation, by reason.")
            for reason, value in sorted(self.rejected_by_reason.items()):
                lines.append(f"sightline_events_rejected_total{_labels({'reason': reason})} {value}")
            family("capture_errors_total", "counter", "Capture requests refused as a whole, by error code.")
            for code, value in sorted(self.errors_by_code.items()):
                lines.append(f"sightline_capture_errors_total{_labels({'code': code})} {value}")
            family("write_batch_events", "histogram", "Events per group commit of the writer.")
            lines += self.write_batch.lines("sightline_write_batch_events")
            family("query_duration_seconds", "histogram", "Query run time, by query kind.")
            for kind, hist in sorted(self.query_duration.items()):
                lines += hist.lines("sightline_query_duration_seconds", {"kind": kind})
            family("queries_failed_total", "counter", "Queries that ended in an error, by query kind.")
            for kind, value in sorted(self.queries_failed.items()):
                lines.append(f"sightline_queries_failed_total{_labels({'kind': kind})} {value}")
        for name, value in sorted((counters or {}).items()):
            family(name, "counter", name.replace("_", " ") + ".")
            lines.append(f"sightline_{name} {_num(value)}")
        for name, value in sorted((gauges or {}).items()):
            family(name, "gauge", GAUGE_HELP.get(name, name.replace("_", " ") + "."))
            lines.append(f"sightline_{name} {_num(value)}")
        return "\n".join(lines) + "\n"


GAUGE_HELP = {
    "ingestion_lag_seconds": "How long the oldest acknowledged event has waited to reach the store.",
    "ingestion_pending_events": "Events queued for the writer, not yet acknowledged.",
    "ingestion_unflushed_events": "Events acknowledged (in the ingestion log) but not yet in the store.",
    "ingestion_log_bytes": "Size of the ingestion log segments on disk.",
    "writer_last_commit_seconds": "Duration of the writer's last group commit.",
    "writer_last_flush_seconds": "Duration of the last flush of the ingestion log into the store.",
}


def timed_query(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``run_query(core, query, ...)``: its duration goes to ``core.metrics`` by kind."""

    @functools.wraps(fn)
    def wrapper(core: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            result = fn(core, query, *args, **kwargs)
            ok = True
            return result
        finally:
            metrics = getattr(core, "metrics", None)
            if isinstance(metrics, Metrics):
                kind = query.get("kind") if isinstance(query, dict) else None
                metrics.observe_query(kind, time.perf_counter() - started, ok=ok)

    return wrapper
