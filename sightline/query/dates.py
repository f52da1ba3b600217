"""Date ranges and interval buckets in the project's time zone (spec analytics §0).

``-7d`` means from the start of the day 7 days ago to the end of today: 8 calendar days.
Buckets run from the bucket of ``date_from`` to the bucket of ``date_to`` inclusive, and empty
buckets are filled with zeros by the builders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sightline.errors import InvalidInput

UTC = timezone.utc
RELATIVE = re.compile(r"^-?(\d+)([hdwmyq])$")
MAX_BUCKETS = 5000


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"Unknown time zone {name!r}.", attr="timezone") from None


def add_months(d: datetime, months: int) -> datetime:
    m = d.month - 1 + months
    y = d.year + m // 12
    m = m % 12 + 1
    day = min(d.day, [31, 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28,
                      31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1])
    return d.replace(year=y, month=m, day=day)


def trunc(local: datetime, unit: str, week_start_monday: bool = False) -> datetime:
    """Start of the bucket containing the naive local time ``local``."""
    if unit == "minute":
        return local.replace(second=0, microsecond=0)
    if unit == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return day
    if unit == "week":
        # Python: Monday=0 … Sunday=6
        back = day.weekday() if week_start_monday else (day.weekday() + 1) % 7
        return day - timedelta(days=back)
    if unit == "month":
        return day.replace(day=1)
    raise ValueError(unit)


def step(local: datetime, unit: str, n: int = 1) -> datetime:
    if unit == "minute":
        return local + timedelta(minutes=n)
    if unit == "hour":
        return local + timedelta(hours=n)
    if unit == "day":
        return local + timedelta(days=n)
    if unit == "week":
        return local + timedelta(weeks=n)
    if unit == "month":
        return add_months(local, n)
    raise ValueError(unit)


@dataclass
class Range:
    """A resolved date range: naive local wall times (inclusive ends) plus UTC instants."""

    tz: ZoneInfo
    local_from: datetime
    local_to: datetime
    interval: str
    week_start_monday: bool = False

    @property
    def start(self) -> datetime:
        return self.local_from.replace(tzinfo=self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return self.local_to.replace(tzinfo=self.tz).astimezone(UTC)

    def buckets(self) -> list[datetime]:
        first = trunc(self.local_from, self.interval, self.week_start_monday)
        last = trunc(self.local_to, self.interval, self.week_start_monday)
        out = []
        cur = first
        while cur <= last:
            out.append(cur)
            if len(out) > MAX_BUCKETS:
                raise InvalidInput(f"The date range has more than {MAX_BUCKETS} {self.interval}s; "
                                   "use a larger interval or a shorter range.", attr="interval")
            cur = step(cur, self.interval)
        return out

    def label(self, bucket: datetime) -> str:
        if self.interval in ("hour", "minute"):
            return bucket.strftime("%Y-%m-%d %H:%M:%S")
        return bucket.strftime("%Y-%m-%d")

    def pretty(self, bucket: datetime) -> str:
        if self.interval in ("hour", "minute"):
            return bucket.strftime("%-d-%b %H:%M")
        return bucket.strftime("%-d-%b-%Y")


def _parse_point(value: str, *, now_local: datetime, is_end: bool, interval: str,
                 explicit: bool) -> datetime:
    text = value.strip()
    m = RELATIVE.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        if unit == "h":
            base = now_local - timedelta(hours=n)
            return base.replace(minute=59, second=59, microsecond=999999) if is_end else \
                base.replace(minute=0, second=0, microsecond=0)
        if unit == "d":
            base = now_local - timedelta(days=n)
        elif unit == "w":
            base = now_local - timedelta(weeks=n)
        elif unit == "m":
            base = add_months(now_local, -n)
        elif unit == "q":
            base = add_months(now_local, -3 * n)
        else:
            base = add_months(now_local, -12 * n)
        day = base.replace(hour=0, minute=0, second=0, microsecond=0)
        return day.replace(hour=23, minute=59, second=59, microsecond=999999) if is_end else day
    starts = {"dStart": trunc(now_local, "day"), "mStart": trunc(now_local, "month"),
              "yStart": trunc(now_local, "day").replace(month=1, day=1),
              "wStart": trunc(now_local, "week")}
    if text in starts:
        return starts[text]
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime.combine(d, time(23, 59, 59, 999999) if is_end and not explicit else time())
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"Cannot read the date {value!r}: use e.g. -7d, -24h, mStart, 2024-01-31 or "
                           "an ISO timestamp.", attr="dateRange") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(now_local.tzinfo).replace(tzinfo=None) if now_local.tzinfo else parsed
    return parsed


def resolve(date_from: str | None, date_to: str | None, *, interval: str, tz: str | ZoneInfo,
            now: datetime | None = None, earliest: datetime | None = None,
            explicit: bool = False, week_start_monday: bool = False) -> Range:
    """Resolve a PostHog date range; ``earliest`` (UTC) is needed for ``date_from="all"``."""
    zi = tz if isinstance(tz, ZoneInfo) else zone(tz)
    now = now or datetime.now(UTC)
    now_local = now.astimezone(zi).replace(tzinfo=None)
    aware_now = now.astimezone(zi)
    if date_to in (None, ""):
        if interval in ("hour", "minute"):
            local_to = now_local.replace(minute=59, second=59, microsecond=999999)
        else:
            local_to = now_local.replace(hour=23, minute=59, second=59, microsecond=999999)
    else:
        local_to = _parse_point(date_to, now_local=aware_now, is_end=True, interval=interval,
                                explicit=explicit).replace(tzinfo=None)
    if date_from in (None, ""):
        date_from = "-7d"
    if date_from == "all":
        first = earliest.astimezone(zi).replace(tzinfo=None) if earliest else now_local
        local_from = trunc(first, "day")
    else:
        local_from = _parse_point(date_from, now_local=aware_now, is_end=False, interval=interval,
                                  explicit=explicit).replace(tzinfo=None)
    if local_from > local_to:
        raise InvalidInput("`date_from` is after `date_to`.", attr="dateRange")
    return Range(zi, local_from, local_to, interval, week_start_monday)
