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

Every statistic is a sum over persons (n, Σx, Σx², Σy, Σy², Σxy, Σz, ...), computed per variant.

**One statement, one scan.** The exposures, every metric and the day-by-day cumulative series are
computed by a single SQL statement: one scan of ``events`` (project, the experiment's time range
and ``event IN`` the exposure and metric events, all pushed into the storage scan) evaluates, per
row, the exposure condition and every metric's step conditions and values into the ``ev`` CTE;
exposures (``exp_events`` → ``exposed`` → ``units``) and each metric's CTEs (prefixed ``m<i>_``)
read only ``ev``. Reading the JSON ``properties`` column dominates the cost, so one scan instead of
one per metric (and one more per exposure computation) is what makes results fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sightline.experiments.service import EXPOSURE_EVENT, WINDOW_UNITS
from sightline.experiments.stats.base import MetricStats
from sightline.query.context import QueryContext
from sightline.query.filters import (
    PERSON_ID,
    Scope,
    properties_sql,
    test_account_filters,
)
from sightline.query.model import PropertyFilter

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


@dataclass
class Batch:
    """Everything one statement computed: exposures, per metric the per-variant statistics and,
    for the metrics asked, the cumulative series (local day → variant → statistics)."""

    exposures: Exposures
    stats: list[dict[str, MetricStats]]
    cumulative: dict[int, list[tuple[date, dict[str, MetricStats]]]]


def _filters(raw: list) -> list[PropertyFilter]:
    return [PropertyFilter.model_validate(p) for p in raw or []]


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def is_ratio(metric: dict) -> bool:
    return metric["metric_type"] == "ratio" or (metric["metric_type"] == "mean"
                                                and metric["source"]["math"] == "avg")


class ExperimentSQL:
    """SQL of one experiment: the shared scan ``ev``, the exposure CTEs, then per metric the
    per-person values, all in one statement (see the module docstring)."""

    def __init__(self, ctx: QueryContext, exp: dict, *, now: datetime | None = None) -> None:
        self.ctx, self.exp = ctx, exp
        self.scope: Scope = ctx.scope()
        self.now = now or ctx.now
        self.start = _ts(exp.get("start_date"))
        self.end = _ts(exp.get("end_date"))
        self.variants = [v["key"] for v in exp["parameters"]["feature_flag_variants"]]
        self.stats = exp["stats_config"]
        self.tz = ctx.timezone or "UTC"
        self.cuped = bool(self.stats.get("cuped"))
        self.pre_secs = int(self.stats.get("cuped_pre_period_days") or 14) * 86400
        # metric events count from `lo` (the CUPED pre-period reaches back before the start)
        self.lo = self.start - timedelta(seconds=self.pre_secs) if self.cuped and self.start else self.start
        self._tzp: str | None = None

    @property
    def tzp(self) -> str:
        if self._tzp is None:
            self._tzp = self.scope.params.add(self.tz, "tz")
        return self._tzp

    # -- the shared scan ------------------------------------------------------------------------
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

    @staticmethod
    def _events_of(metric: dict) -> list[str]:
        if metric["metric_type"] == "funnel":
            return [n["event"] for n in metric["series"]]
        if metric["metric_type"] == "ratio":
            return [metric["numerator"]["event"], metric["denominator"]["event"]]
        return [metric["source"]["event"]]

    def _exposure_cols(self) -> list[str]:
        """``x_exp`` (the row is an exposure) and ``variant``."""
        s, p, d = self.scope, self.scope.params, self.scope.dialect
        crit = self.exp["exposure_criteria"]
        cfg = crit["exposure_config"]
        key = self.exp["feature_flag_key"]
        cond = [f"e.event = {p.add(cfg['event'], 'event')}", f"e.timestamp >= {p.add(self.start, 'start')}"]
        if cfg["event"] == EXPOSURE_EVENT:
            variant = d.event_property(p, "$feature_flag_response")
            cond.append(f"{d.event_property(p, '$feature_flag')} = {p.add(key, 'flag')}")
        else:
            variant = d.event_property(p, f"$feature/{key}")
        cond.append(d.has(p.add(self.variants, "variants"), variant))
        cond.append(properties_sql(_filters(cfg.get("properties")), s))
        if crit.get("filterTestAccounts"):
            cond.append(properties_sql(test_account_filters(self.ctx.settings), s))
        cond = [c for c in cond if c != "true"]
        return [f"({' AND '.join(cond)}) AS x_exp", f"{variant} AS variant"]

    def _metric_cols(self, i: int, metric: dict) -> list[str]:
        """Per metric ``m<i>_in`` (the row counts for the metric), ``m<i>_s<k>`` (funnel steps),
        ``m<i>_num`` and ``m<i>_den`` (what the row adds to the value and the denominator)."""
        s, p, d = self.scope, self.scope.params, self.scope.dialect
        kind = metric["metric_type"]
        base = [f"e.timestamp >= {p.add(self.lo, 'lo')}"]
        if self.exp["exposure_criteria"].get("filterTestAccounts"):
            ta = properties_sql(test_account_filters(self.ctx.settings), s)
            if ta != "true":
                base.append(ta)
        if kind == "funnel":
            conds = [self._node_cond(n) for n in metric["series"]]
            cols = [f"coalesce({c}, false) AS m{i}_s{k}" for k, c in enumerate(conds, 1)]
        elif is_ratio(metric):
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
            cols = [f"CASE WHEN {nc} THEN coalesce({nv}, 0.0) ELSE 0.0 END AS m{i}_num",
                    f"CASE WHEN {dc} THEN coalesce({dv}, 0.0) ELSE 0.0 END AS m{i}_den"]
        else:
            src = metric["source"]
            conds = [self._node_cond(src)]
            cols = [f"coalesce({self._node_value(src)}, 0.0) AS m{i}_num"]
        base.append("(" + " OR ".join(conds) + ")")
        return [f"({' AND '.join(base)}) AS m{i}_in"] + cols

    def scan_cte(self, metrics: list[dict]) -> str:
        """``ev``: one row per event any part of the computation needs, with every condition and
        value evaluated once. The outer filters are plain column comparisons the storage scan
        applies itself (project, time range, ``event IN``); the rest run on the few rows left."""
        s, p = self.scope, self.scope.params
        events = [self.exp["exposure_criteria"]["exposure_config"]["event"]]
        for m in metrics:
            events += self._events_of(m)
        names = list(dict.fromkeys(events))
        cols = self._exposure_cols()
        keep = ["x_exp"]
        for i, m in enumerate(metrics):
            cols += self._metric_cols(i, m)
            keep.append(f"m{i}_in")
        lo = min(self.start, self.lo)
        where = [f"e.project_id = {s.project}", f"e.timestamp >= {p.add(lo, 'scan_lo')}"]
        if self.end is not None:
            where.append(f"e.timestamp < {p.add(self.end, 'end')}")
        where.append(f"e.event IN ({', '.join(p.add(n, 'ev') for n in names)})")
        return (f"ev AS (SELECT * FROM (SELECT {PERSON_ID} AS pid, e.timestamp AS ts, {', '.join(cols)} "
                f"FROM events e{{joins}} WHERE {' AND '.join(where)}) WHERE {' OR '.join(keep)})")

    # -- exposures ------------------------------------------------------------------------------
    def exposure_ctes(self) -> list[str]:
        d = self.scope.dialect
        crit = self.exp["exposure_criteria"]
        keep = "true" if crit.get("multiple_variant_handling") == "first_seen" else "nv = 1"
        return [
            "exp_events AS (SELECT pid, ts, variant AS v FROM ev WHERE x_exp)",
            f"exposed AS (SELECT pid, min(ts) AS exp_ts, {d.arg_min('v', 'ts')} AS variant, "
            f"{d.count_distinct('v')} AS nv FROM exp_events GROUP BY pid)",
            f"units AS (SELECT pid, exp_ts, variant, CAST({d.local('exp_ts', self.tzp)} AS DATE) AS exp_day "
            f"FROM exposed WHERE {keep})",
        ]

    def _with(self, ctes: list[str]) -> str:
        # the joins (person overrides, person properties for filters) are known only now
        joins = self.scope.joins()
        return "WITH " + ", ".join(c.replace("{joins}", joins) for c in ctes)

    # -- metrics --------------------------------------------------------------------------------
    def metric_ctes(self, i: int, metric: dict) -> list[str]:
        """CTEs ``m<i>_ev`` (the metric's events), ``m<i>_deltas`` (pid, d, num, den: what each
        local day adds to a person's value after exposure), ``m<i>_pre`` (pid, z, w: the
        pre-period value), ``m<i>_vals`` (per person) and ``m<i>_caps``."""
        p, d = self.scope.params, self.scope.dialect
        kind = metric["metric_type"]
        m = f"m{i}_"
        if kind == "funnel":
            n = len(metric["series"])
            cols = ", ".join(f"{m}s{k} AS s{k}" for k in range(1, n + 1))
        elif is_ratio(metric):
            cols = f"{m}num AS num, {m}den AS den"
        else:
            cols = f"{m}num AS num, 0.0 AS den"
        ctes = [f"{m}ev AS (SELECT pid, ts, {cols} FROM ev WHERE {m}in)"]
        win = metric.get("conversion_window")
        window = ""
        if win:
            secs = p.add(int(win) * WINDOW_UNITS[metric.get("conversion_window_unit") or "day"], "win")
            window = f" AND {d.epoch('m.ts')} - {d.epoch('u.exp_ts')} <= {secs}"
        day = f"CAST({d.local('{t}', self.tzp)} AS DATE)"
        if kind == "funnel":
            ctes.append(f"{m}f0 AS (SELECT pid, exp_ts, exp_ts AS t FROM units)")
            for k in range(1, n + 1):
                op = ">=" if k == 1 else ">"
                ctes.append(f"{m}f{k} AS (SELECT u.pid, u.exp_ts, min(m.ts) AS t FROM {m}f{k - 1} u "
                            f"JOIN {m}ev m ON m.pid = u.pid AND m.s{k} AND m.ts {op} u.t{window} "
                            f"GROUP BY u.pid, u.exp_ts)")
            ctes.append(f"{m}deltas AS (SELECT pid, {day.format(t='t')} AS d, 1.0 AS num, 0.0 AS den FROM {m}f{n})")
            pre_val, pre_den = f"max(CASE WHEN m.s{n} THEN 1.0 ELSE 0.0 END)", "0.0"
        else:
            ctes.append(f"{m}deltas AS (SELECT u.pid, {day.format(t='m.ts')} AS d, sum(m.num) AS num, "
                        f"coalesce(sum(m.den), 0.0) AS den FROM units u JOIN {m}ev m ON m.pid = u.pid "
                        f"AND m.ts >= u.exp_ts{window} GROUP BY 1, 2)")
            pre_val, pre_den = "sum(m.num)", "coalesce(sum(m.den), 0.0)"
        if self.cuped:
            ps = p.add(self.pre_secs, "pre")
            ctes.append(f"{m}pre AS (SELECT u.pid, {pre_val} AS z, {pre_den} AS w FROM units u JOIN {m}ev m "
                        f"ON m.pid = u.pid AND m.ts < u.exp_ts AND {d.epoch('u.exp_ts')} - {d.epoch('m.ts')} "
                        f"<= {ps} GROUP BY u.pid)")
            pre_join = f" LEFT JOIN {m}pre pre ON pre.pid = u.pid"
            zw = "coalesce(pre.z, 0.0) AS z, coalesce(pre.w, 0.0) AS w"
        else:
            pre_join, zw = "", "0.0 AS z, 0.0 AS w"
        ctes.append(f"{m}vals AS (SELECT u.pid, u.variant, u.exp_day, coalesce(t.x, 0.0) AS x, "
                    f"coalesce(t.y, 0.0) AS y, {zw} FROM units u LEFT JOIN (SELECT pid, sum(num) AS x, "
                    f"sum(den) AS y FROM {m}deltas GROUP BY pid) t ON t.pid = u.pid{pre_join})")
        q = self.stats.get("outlier_capping_percentile")
        if q is not None and kind != "funnel":
            ctes.append(f"{m}caps AS (SELECT " + ", ".join(f"{d.quantile(c, float(q))} AS c{c}" for c in "xyzw")
                        + f" FROM {m}vals)")
        return ctes

    def _capped(self, metric: dict, src: str, keys: str) -> str:
        """``SELECT keys, x, y, z, w`` from ``src`` with the caps applied (when capping)."""
        q = self.stats.get("outlier_capping_percentile")
        if q is None or metric["metric_type"] == "funnel":
            return f"SELECT {keys}, x, y, z, w FROM {src}"
        i = src.split("_", 1)[0]
        capped = ", ".join(f"CASE WHEN c{c} IS NULL THEN {c} ELSE least({c}, c{c}) END AS {c}" for c in "xyzw")
        return f"SELECT {keys}, {capped} FROM {src} CROSS JOIN {i}_caps"

    def cumulative_ctes(self, i: int, metric: dict, first_param: str) -> list[str]:
        """Per local day D and variant: the persons exposed by the end of D, with their values as of
        the end of D (the final caps apply to every day)."""
        m = f"m{i}_"
        return [
            f"{m}dd AS (SELECT dl.pid AS pid, greatest(dl.d, CAST({first_param} AS DATE)) AS d, sum(dl.num) AS num, "
            f"sum(dl.den) AS den FROM {m}deltas dl GROUP BY 1, 2)",
            f"{m}grid AS (SELECT v.pid, v.variant, v.z, v.w, days.d FROM {m}vals v JOIN days "
            f"ON days.d >= v.exp_day)",
            f"{m}cum AS (SELECT g.d, g.variant, g.z, g.w, sum(coalesce(dd.num, 0.0)) OVER win AS x, "
            f"sum(coalesce(dd.den, 0.0)) OVER win AS y FROM {m}grid g LEFT JOIN {m}dd dd ON dd.pid = g.pid "
            f"AND dd.d = g.d WINDOW win AS (PARTITION BY g.pid ORDER BY g.d))",
        ]

    def batch_sql(self, metrics: list[dict], cumulative: list[int] = (), span: tuple[date, date] | None = None) -> str:
        """The one statement: rows (part, i, d, variant, n, Σ...) where part is ``e`` (exposures:
        n = persons with one variant, the next column those with several), ``m`` (metric ``i``) or
        ``c`` (metric ``i`` on local day ``d``)."""
        p, d = self.scope.params, self.scope.dialect
        ctes = [self.scan_cte(metrics)] + self.exposure_ctes()
        nulls = ", ".join(["NULL::DOUBLE"] * 13)
        selects = [f"SELECT 'e' AS part, -1 AS i, CAST(NULL AS DATE) AS d, variant, count(*) FILTER (WHERE nv = 1) "
                   f"AS n, CAST(count(*) FILTER (WHERE nv > 1) AS DOUBLE) AS s1, {nulls} FROM exposed GROUP BY variant"]
        for i, metric in enumerate(metrics):
            ctes += self.metric_ctes(i, metric)
            selects.append(f"SELECT 'm', {i}, CAST(NULL AS DATE), variant, {STAT_SQL} FROM "
                           f"({self._capped(metric, f'm{i}_vals', 'variant')}) s GROUP BY variant")
        if cumulative and span is not None:
            first, last = span
            d0 = p.add(first.isoformat(), "d0")
            days = [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]
            ctes.append(f"days AS (SELECT CAST({d.unnest(p.add(days, 'days'))} AS DATE) AS d)")
            for i in cumulative:
                ctes += self.cumulative_ctes(i, metrics[i], d0)
                selects.append(f"SELECT 'c', {i}, d, variant, {STAT_SQL} FROM "
                               f"({self._capped(metrics[i], f'm{i}_cum', 'd, variant')}) s GROUP BY d, variant")
        return self._with(ctes) + " " + " UNION ALL ".join(selects)

    # -- results -------------------------------------------------------------------------------------
    def _to_stats(self, metric: dict, row: tuple) -> MetricStats:
        n = int(row[0])
        f = [float(v or 0.0) for v in row[1:]]
        sx, sxx, sy, syy, sxy, sz, szz, sxz, sw, sww, sxw, syz, syw, szw = f
        ratio = is_ratio(metric)
        binomial = metric["metric_type"] == "funnel"
        kw: dict[str, Any] = {}
        if ratio:
            kw.update(den_sum=sy, den_sum_squares=syy, sum_product=sxy)
        if self.cuped:
            kw.update(pre_sum=sz, pre_sum_squares=szz, pre_sum_product=sxz)
            if ratio:
                kw.update(pre_den_sum=sw, pre_den_sum_squares=sww, main_pre_den_product=sxw,
                          den_pre_product=syz, den_pre_den_product=syw, pre_pre_den_product=szw)
        return MetricStats(n=n, sum=sx, sum_squares=sxx, binomial=binomial, **kw)

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

    def compute(self, metrics: list[dict], cumulative: list[int] = ()) -> Batch:
        """Exposures, every metric's statistics and the cumulative series of the metrics at the
        indices ``cumulative``: one statement, one scan of the events."""
        span = self.days() if cumulative else None
        sql = self.batch_sql(metrics, list(cumulative), span)
        rows = self.ctx.execute(sql, self.scope.params.values)
        handling = self.exp["exposure_criteria"].get("multiple_variant_handling", "exclude")
        counts = {v: 0 for v in self.variants}
        multi: dict[str, int] = {}
        empty = (0,) + (0.0,) * 14
        stats = [{v: self._to_stats(m, empty) for v in self.variants} for m in metrics]
        by_day: dict[int, dict[date, dict[str, MetricStats]]] = {i: {} for i in cumulative}
        for part, i, day, variant, *vals in rows:
            if part == "e":
                single, many = int(vals[0]), int(vals[1] or 0)
                counts[variant] = single + (many if handling == "first_seen" else 0)
                multi[variant] = many
            elif part == "m":
                stats[i][variant] = self._to_stats(metrics[i], vals)
            else:
                by_day[i].setdefault(day, {})[variant] = self._to_stats(metrics[i], vals)
        series = {}
        for i, days in by_day.items():
            zero = self._to_stats(metrics[i], empty)
            series[i] = [(day, {v: st.get(v, zero) for v in self.variants}) for day, st in sorted(days.items())]
        return Batch(Exposures(counts, sum(multi.values()), multi, handling), stats, series)

    # single-purpose views of :meth:`compute` (each is one statement of its own)
    def exposures(self) -> Exposures:
        return self.compute([]).exposures

    def metric_stats(self, metric: dict) -> dict[str, MetricStats]:
        return self.compute([metric]).stats[0]

    def cumulative(self, metric: dict) -> list[tuple[date, dict[str, MetricStats]]]:
        if self.start is None:
            return []
        return self.compute([metric], [0]).cumulative[0]


def fresh(ctx: QueryContext, exp: dict, now: datetime | None = None) -> ExperimentSQL:
    """A new builder (each query gets its own parameters)."""
    return ExperimentSQL(ctx, exp, now=now)
