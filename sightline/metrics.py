"""In-process counters, exposed at ``GET /metrics`` in Prometheus text format."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Iterable

from sightline.ingest.normalize import Rejection


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.rejected_by_reason: Counter[str] = Counter()
        self.errors_by_code: Counter[str] = Counter()

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

    def render(self, extra: dict[str, float] | None = None) -> str:
        lines: list[str] = []
        with self._lock:
            for name, value in sorted(self.counters.items()):
                lines += [f"# TYPE sightline_{name} counter", f"sightline_{name} {value}"]
            lines.append("# TYPE sightline_events_rejected_total counter")
            for reason, value in sorted(self.rejected_by_reason.items()):
                lines.append(f'sightline_events_rejected_total{{reason="{reason}"}} {value}')
            lines.append("# TYPE sightline_capture_errors_total counter")
            for code, value in sorted(self.errors_by_code.items()):
                lines.append(f'sightline_capture_errors_total{{code="{code}"}} {value}')
        for name, value in sorted((extra or {}).items()):
            lines += [f"# TYPE sightline_{name} gauge", f"sightline_{name} {value}"]
        return "\n".join(lines) + "\n"
