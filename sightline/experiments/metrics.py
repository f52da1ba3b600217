"""Exposures and metrics of an experiment as per-variant sufficient statistics, computed in SQL.

Definitions (see ``docs/experiments.md``):

* **Exposure.** An exposure event (``$feature_flag_called`` with ``$feature_flag`` = the flag key by
  default, the variant in ``$feature_flag_response``; a custom event carries the variant in
  ``$feature/<flag key>``) at or after ``start_date`` (and before ``end_date`` when stopped), whose
  variant is one of the experiment's. Units are *persons* (person merges applied, as in every
  query). A person's exposure time is their first exposure, their variant the variant of that
  first exposure. Persons exposed to more than one variant are counted and, by default, excluded
  (``multiple_variant_handling: "first_seen"`` keeps them in their first variant).
* **Metric values** are per person, from the person's events at or after their exposure time
  (within ``conversion_window`` of it when set, and before ``end_date``):
  ``funnel`` 1 if the steps happened in order (each step after the previous one), else 0;
  ``count`` the number of matching events; ``mean`` with ``math: "sum"`` the sum of a numeric
  property; ``mean`` with ``math: "avg"`` the average property value per event, analysed as the
  ratio Σ property / Σ events (delta method); ``ratio`` Σ numerator / Σ denominator, each a count or
  a sum of a property.
* **CUPED.** The covariate is the same per-person value measured over ``cuped_pre_period_days``
  before the person's exposure (for a funnel: whether they did the last step's event).
* **Outlier capping.** With ``outlier_capping_percentile`` = P, each per-person value (numerator,
  denominator and covariates alike) is capped at the P-quantile of that value over all included
  persons of all variants (winsorizing; funnels are 0/1 and never capped).

Every statistic is a sum over persons (n, Σx, Σx², Σy, Σy², Σxy, Σz, ...), computed per variant in
one query per metric (one more for the day-by-day cumulative series).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sightline.experiments.service import EXPOSURE_EVENT, WINDOW_UNITS
from sightline.experiments.stats.base import MetricStats
from sightline.query.context import QueryContext
from sightline.query.filters import PERSON_ID, Scope, properties_sql, test_account_filters
from sightline.query.model import PropertyFilter

UTC = timezone.utc
MAX_CUMULATIVE_DAYS = 370

# per-person columns, in the order of STAT_SQL: x = value (numerator), y = denominator,
# z = pre-exposure value, w = pre-exposure denominator
STAT_SQL = ("count(*), sum(x), sum(x*x), sum(y), sum(y*y), sum(x*y), sum(z), sum(z*z), sum(x*z), "
            "sum(w), sum(w*w), sum(x*w), sum(y*z), sum(y*w), sum(z*w)")


@dataclass
class Exposures:
    counts: dict[str, int]                      # included persons per variant
    multiple: int                               # persons exposed to more than one variant
    multiple_by_variant: dict[str, int] = field(default_factory=dict)  # ... by their first variant
    handling: str = "exclude"

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _filters(raw: list) -> list[PropertyFilter]:
    return [PropertyFilter.model_validate(p) for p in raw or []]


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def is_ratio(metric: dict) -> bool:
    return metric["metric_type"] == "ratio" or (metric["metric_type"] == "mean"
                                                and metric["source"]["math"] == "avg")


class ExperimentSQL:
    """SQL of one experiment: the exposure CTEs, then per metric the per-person values."""

    def __init__(self, ctx: QueryContext, exp: dict, *, now: datetime | None = None) -> None:
        self.ctx, self.exp = ctx, exp
        self.scope: Scope = ctx.scope()
        self.now = now or ctx.now
        self.start = _ts(exp.get("start_date"))
        self.end = _ts(exp.get("end_date"))
        self.variants = [v["key"] for v in exp["parameters"]["feature_flag_variants"]]
        self.stats = exp["stats_config"]
        self.tz = ctx.timezone or "UTC"

    # -- exposures ----------------------------------------------------------------------------
    def _time_bounds(self, lo: datetime) -> list[str]:
        p = self.scope.params
        out = [f"e.timestamp >= {p.add(lo, 'start')}"]
        if self.end is not None:
            out.append(f"e.timestamp < {p.add(self.end, 'end')}")
        return out

    def exposure_ctes(self) -> list[str]:
        s, p, d = self.scope, self.scope.params, self.scope.dialect
        crit = self.exp["exposure_criteria"]
        cfg = crit["exposure_config"]
        key = self.exp["feature_flag_key"]
        where = [f"e.project_id = {s.project}", f"e.event = {p.add(cfg['event'], 'event')}"]
        where += self._time_bounds(self.start)
        if cfg["event"] == EXPOSURE_EVENT:
            variant = d.event_property(p, "$feature_flag_response")
            where.append(f"{d.event_property(p, '$feature_flag')} = {p.add(key, 'flag')}")
        else:
            variant = d.event_property(p, f"$feature/{key}")
        where.append(f"list_contains({p.add(self.variants, 'variants')}, {variant})")
        where.append(properties_sql(_filters(cfg.get("properties")), s))
        if crit.get("filterTestAccounts"):
            where.append(properties_sql(test_account_filters(self.ctx.settings), s))
        self._exposure_where = (variant, [w for w in where if w != "true"])
        tzp = p.add(self.tz, "tz")
        keep = "true" if crit.get("multiple_variant_handling") == "first_seen" else "nv = 1"
        return [
            "exp_events AS (SELECT {pid} AS pid, e.timestamp AS ts, {v} AS variant FROM events e{{joins}} "
            "WHERE {w})".format(pid=PERSON_ID, v=variant, w=" AND ".join(self._exposure_where[1])),
            "exposed AS (SELECT pid, min(ts) AS exp_ts, arg_min(variant, ts) AS variant, "
            "count(DISTINCT variant) AS nv FROM exp_events GROUP BY pid)",
            f"units AS (SELECT pid, exp_ts, variant, CAST({d.local('exp_ts', tzp)} AS DATE) AS exp_day "
            f"FROM exposed WHERE {keep})",
        ]

    def _with(self, ctes: list[str]) -> str:
        # the joins (person overrides, person properties for filters) are known only now
        joins = self.scope.joins()
        return "WITH " + ", ".join(c.replace("{joins}", joins) for c in ctes)

    def exposures(self) -> Exposures:
        ctes = self.exposure_ctes()
        sql = (self._with(ctes) + " SELECT variant, count(*) FILTER (WHERE nv = 1), count(*) FILTER (WHERE nv > 1) "
               "FROM exposed GROUP BY variant")
        rows = self.ctx.execute(sql, self.scope.params.values)
        handling = self.exp["exposure_criteria"].get("multiple_variant_handling", "exclude")
        counts = {v: 0 for v in self.variants}
        multi: dict[str, int] = {}
        for variant, single, many in rows:
            counts[variant] = int(single) + (int(many) if handling == "first_seen" else 0)
            multi[variant] = int(many)
        return Exposures(counts, sum(multi.values()), multi, handling)

    # -- metrics --------------------------------------------------------------------------------
    def _node_cond(self, node: dict) -> str:
        s, p = self.scope, self.scope.params
        cond = f"e.event = {p.add(node['event'], 'event')}"
        props = properties_sql(_filters(node.get("properties")), s)
        return f"({cond} AND {props})" if props != "true" else f"({cond})"

    def _node_value(self, node: dict) -> str:
        """The per-event contribution of a node (1 for a count, the property for a sum)."""
        if node["math"] == "total":
            return "1.0"
        d = self.scope.dialect
        return d.to_number(d.event_property(self.scope.params, node["math_property"]))

    def metric_ctes(self, metric: dict) -> list[str]:
        """CTEs ``m_events`` (the metric's events), ``deltas`` (pid, d, num, den: what each local
        day adds to a person's value after exposure) and ``pre`` (pid, z, w: the pre-period value)."""
        s, p, d = self.scope, self.scope.params, self.scope.dialect
        kind = metric["metric_type"]
        cuped = bool(self.stats.get("cuped"))
        pre_secs = int(self.stats.get("cuped_pre_period_days") or 14) * 86400
        lo = self.start - timedelta(seconds=pre_secs) if cuped else self.start
        where = [f"e.project_id = {s.project}"] + self._time_bounds(lo)
        if self.exp["exposure_criteria"].get("filterTestAccounts"):
            ta = properties_sql(test_account_filters(self.ctx.settings), s)
            if ta != "true":
                where.append(ta)
        if kind == "funnel":
            conds = [self._node_cond(n) for n in metric["series"]]
            cols = [f"coalesce({c}, false) AS s{i}" for i, c in enumerate(conds, 1)]
            cols += ["NULL::DOUBLE AS num", "NULL::DOUBLE AS den"]
        elif kind == "ratio" or (kind == "mean" and metric["source"]["math"] == "avg"):
            if kind == "ratio":
                nn, dn = metric["numerator"], metric["denominator"]
                nc, dc = self._node_cond(nn), self._node_cond(dn)
                nv, dv = self._node_value(nn), self._node_value(dn)
            else:
                nn = metric["source"]
                nc = dc = self._node_cond(nn)
                nv = d.to_number(d.event_property(p, nn["math_property"]))
                dv = f"CASE WHEN {nv} IS NULL THEN 0.0 ELSE 1.0 END"
            conds = [nc, dc]
            cols = [f"CASE WHEN {nc} THEN coalesce({nv}, 0.0) ELSE 0.0 END AS num",
                    f"CASE WHEN {dc} THEN coalesce({dv}, 0.0) ELSE 0.0 END AS den"]
        else:
            src = metric["source"]
            conds = [self._node_cond(src)]
            cols = [f"coalesce({self._node_value(src)}, 0.0) AS num", "NULL::DOUBLE AS den"]
        where.append("(" + " OR ".join(conds) + ")")
        win = metric.get("conversion_window")
        window = ""
        if win:
            secs = p.add(int(win) * WINDOW_UNITS[metric.get("conversion_window_unit") or "day"], "win")
            window = f" AND epoch(m.ts) - epoch(u.exp_ts) <= {secs}"
        tzp = p.add(self.tz, "tz")
        day = f"CAST({d.local('{t}', tzp)} AS DATE)"
        ctes = [f"m_events AS (SELECT {PERSON_ID} AS pid, e.timestamp AS ts, {', '.join(cols)} "
                f"FROM events e{{joins}} WHERE {' AND '.join(where)})"]
        if kind == "funnel":
            n = len(metric["series"])
            ctes.append("f0 AS (SELECT pid, exp_ts, exp_ts AS t FROM units)")
            for k in range(1, n + 1):
                op = ">=" if k == 1 else ">"
                ctes.append(f"f{k} AS (SELECT u.pid, u.exp_ts, min(m.ts) AS t FROM f{k - 1} u JOIN m_events m "
                            f"ON m.pid = u.pid AND m.s{k} AND m.ts {op} u.t{window} GROUP BY u.pid, u.exp_ts)")
            ctes.append(f"deltas AS (SELECT pid, {day.format(t='t')} AS d, 1.0 AS num, 0.0 AS den FROM f{n})")
            pre_val, pre_den = f"max(CASE WHEN m.s{n} THEN 1.0 ELSE 0.0 END)", "0.0"
        else:
            ctes.append(f"deltas AS (SELECT u.pid, {day.format(t='m.ts')} AS d, sum(m.num) AS num, "
                        f"coalesce(sum(m.den), 0.0) AS den FROM units u JOIN m_events m ON m.pid = u.pid "
                        f"AND m.ts >= u.exp_ts{window} GROUP BY 1, 2)")
            pre_val, pre_den = "sum(m.num)", "coalesce(sum(m.den), 0.0)"
        if cuped:
            ps = p.add(pre_secs, "pre")
            ctes.append(f"pre AS (SELECT u.pid, {pre_val} AS z, {pre_den} AS w FROM units u JOIN m_events m "
                        f"ON m.pid = u.pid AND m.ts < u.exp_ts AND epoch(u.exp_ts) - epoch(m.ts) <= {ps} "
                        f"GROUP BY u.pid)")
        else:
            ctes.append("pre AS (SELECT pid, 0.0 AS z, 0.0 AS w FROM units WHERE false)")
        ctes.append("vals AS (SELECT u.pid, u.variant, u.exp_day, coalesce(t.x, 0.0) AS x, coalesce(t.y, 0.0) AS y, "
                    "coalesce(pre.z, 0.0) AS z, coalesce(pre.w, 0.0) AS w FROM units u "
                    "LEFT JOIN (SELECT pid, sum(num) AS x, sum(den) AS y FROM deltas GROUP BY pid) t ON t.pid = u.pid "
                    "LEFT JOIN pre ON pre.pid = u.pid)")
        q = self.stats.get("outlier_capping_percentile")
        if q is not None and kind != "funnel":
            qp = p.add(float(q), "cap")
            ctes.append("caps AS (SELECT " + ", ".join(f"quantile_cont({c}, {qp}) AS c{c}" for c in "xyzw")
                        + " FROM vals)")
        else:
            ctes.append("caps AS (SELECT NULL::DOUBLE AS cx, NULL::DOUBLE AS cy, NULL::DOUBLE AS cz, "
                        "NULL::DOUBLE AS cw)")
        self.capped = q is not None and kind != "funnel"
        return ctes

    @staticmethod
    def _cap(col: str) -> str:
        return f"CASE WHEN c{col} IS NULL THEN {col} ELSE least({col}, c{col}) END AS {col}"

    def metric_sql(self, metric: dict) -> str:
        ctes = self.exposure_ctes() + self.metric_ctes(metric)
        capped = ", ".join(self._cap(c) for c in "xyzw")
        return (self._with(ctes) + f" SELECT variant, {STAT_SQL} FROM (SELECT variant, {capped} "
                f"FROM vals CROSS JOIN caps) GROUP BY variant")

    def cumulative_sql(self, metric: dict, first: date, last: date) -> str:
        """Per local day D and variant: the statistics of persons exposed by the end of D, with their
        values as of the end of D (the final caps apply to every day)."""
        p = self.scope.params
        ctes = self.exposure_ctes() + self.metric_ctes(metric)
        ctes.append(f"days AS (SELECT CAST(unnest(generate_series(CAST({p.add(first.isoformat(), 'd0')} AS DATE), "
                    f"CAST({p.add(last.isoformat(), 'd1')} AS DATE), INTERVAL 1 DAY)) AS DATE) AS d)")
        ctes.append(f"dd AS (SELECT pid, greatest(d, CAST({p.add(first.isoformat(), 'd0')} AS DATE)) AS d, "
                    "sum(num) AS num, sum(den) AS den FROM deltas GROUP BY ALL)")
        ctes.append("grid AS (SELECT v.pid, v.variant, v.z, v.w, days.d FROM vals v JOIN days ON days.d >= v.exp_day)")
        ctes.append("cum AS (SELECT g.d, g.variant, g.z, g.w, sum(coalesce(dd.num, 0.0)) OVER win AS x, "
                    "sum(coalesce(dd.den, 0.0)) OVER win AS y FROM grid g LEFT JOIN dd ON dd.pid = g.pid "
                    "AND dd.d = g.d WINDOW win AS (PARTITION BY g.pid ORDER BY g.d))")
        capped = ", ".join(self._cap(c) for c in "xyzw")
        return (self._with(ctes) + f" SELECT d, variant, {STAT_SQL} FROM (SELECT d, variant, {capped} "
                f"FROM cum CROSS JOIN caps) GROUP BY d, variant ORDER BY d, variant")

    # -- results -------------------------------------------------------------------------------------
    def _to_stats(self, metric: dict, row: tuple) -> MetricStats:
        n = int(row[0])
        f = [float(v or 0.0) for v in row[1:]]
        sx, sxx, sy, syy, sxy, sz, szz, sxz, sw, sww, sxw, syz, syw, szw = f
        ratio = is_ratio(metric)
        cuped = bool(self.stats.get("cuped"))
        binomial = metric["metric_type"] == "funnel"
        kw: dict[str, Any] = {}
        if ratio:
            kw.update(den_sum=sy, den_sum_squares=syy, sum_product=sxy)
        if cuped:
            kw.update(pre_sum=sz, pre_sum_squares=szz, pre_sum_product=sxz)
            if ratio:
                kw.update(pre_den_sum=sw, pre_den_sum_squares=sww, main_pre_den_product=sxw,
                          den_pre_product=syz, den_pre_den_product=syw, pre_pre_den_product=szw)
        return MetricStats(n=n, sum=sx, sum_squares=sxx, binomial=binomial, **kw)

    def metric_stats(self, metric: dict) -> dict[str, MetricStats]:
        rows = self.ctx.execute(self.metric_sql(metric), self.scope.params.values)
        out = {v: self._to_stats(metric, (0,) + (0.0,) * 14) for v in self.variants}
        for row in rows:
            out[row[0]] = self._to_stats(metric, row[1:])
        return out

    def days(self) -> tuple[date, date] | None:
        if self.start is None:
            return None
        zone = ZoneInfo(self.tz)
        last_ts = min(self.end, self.now) if self.end else self.now
        first = self.start.astimezone(zone).date()
        last = max(first, last_ts.astimezone(zone).date())
        if (last - first).days >= MAX_CUMULATIVE_DAYS:
            first = last - timedelta(days=MAX_CUMULATIVE_DAYS - 1)
        return first, last

    def cumulative(self, metric: dict) -> list[tuple[date, dict[str, MetricStats]]]:
        span = self.days()
        if span is None:
            return []
        rows = self.ctx.execute(self.cumulative_sql(metric, *span), self.scope.params.values)
        by_day: dict[date, dict[str, MetricStats]] = {}
        for row in rows:
            by_day.setdefault(row[0], {})[row[1]] = self._to_stats(metric, row[2:])
        empty = self._to_stats(metric, (0,) + (0.0,) * 14)
        return [(day, {v: stats.get(v, empty) for v in self.variants}) for day, stats in sorted(by_day.items())]


def fresh(ctx: QueryContext, exp: dict, now: datetime | None = None) -> ExperimentSQL:
    """A new builder (each query gets its own parameters)."""
    return ExperimentSQL(ctx, exp, now=now)
