"""Experiment definitions: validation, storage and the lifecycle draft → running → stopped.

An experiment is a JSON document (PostHog's shape: ``feature_flag_key``,
``parameters.feature_flag_variants``, ``start_date``, ``end_date``, ``metrics``,
``metrics_secondary``, ``stats_config``...) stored versioned and audited in the metadata store,
next to the feature flag that assigns the variants. The flag is managed through
:class:`~sightline.flags.service.FlagService`: creating an experiment creates the flag (inactive,
``control``/``test`` 50/50 unless other variants are given) or checks that an existing flag is
multivariate with the experiment's variants; launching switches it on; shipping rolls it out to
100% on the shipped variant.

Results (the event store) are in :mod:`sightline.experiments.results`; this module only needs the
metadata store, so the CLI can change definitions while ``sightline serve`` runs.
"""

from __future__ import annotations

import uuid as uuidlib
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from sightline.errors import InvalidInput, NotFound
from sightline.flags.service import Conflict, FlagService
from sightline.flags.validate import clean_key
from sightline.meta import MetaStore

UTC = timezone.utc
STATUSES = ("draft", "running", "stopped")
METRIC_TYPES = ("funnel", "count", "mean", "ratio")
WINDOW_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
METRIC_LISTS = {"metrics": "goal", "metrics_secondary": "secondary", "metrics_guardrails": "guardrail"}
MAX_METRICS = 20
MAX_VARIANTS = 10
DEFAULT_VARIANTS = [{"key": "control", "name": "Control", "rollout_percentage": 50},
                    {"key": "test", "name": "Test", "rollout_percentage": 50}]
DEFAULT_STATS = {"method": "bayesian", "confidence_level": 0.95, "sequential": False, "sequential_tuning": 5000,
                 "cuped": False, "cuped_pre_period_days": 14, "outlier_capping_percentile": None,
                 "multiple_comparisons": "holm", "minimum_exposures": 100}
EXPOSURE_EVENT = "$feature_flag_called"
EDITABLE = {"name", "description", "hypothesis", "feature_flag_key", "parameters", "start_date", "end_date",
            "exposure_criteria", "metrics", "metrics_secondary", "metrics_guardrails", "stats_config",
            "conclusion", "conclusion_comment", "archived", "version", "deleted"}
# fields PostHog's clients send that Sightline accepts and ignores
IGNORED = {"id", "type", "filters", "saved_metrics_ids", "holdout_id", "secondary_metrics", "created_at",
           "created_by", "updated_at", "feature_flag", "status", "shipped_variant", "project", "team_id",
           "stats_config_version", "primary_metrics_ordered_uuids", "secondary_metrics_ordered_uuids"}


def _bad(attr: str, detail: str, code: str = "invalid_input") -> InvalidInput:
    return InvalidInput(detail, code=code, attr=attr)


def _now() -> datetime:
    return datetime.now(UTC)


def parse_date(value: Any, attr: str) -> str | None:
    """An ISO-8601 date or datetime → a UTC ISO string (dates are midnight UTC); None stays None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _bad(attr, f"`{attr}` must be an ISO-8601 date-time such as 2025-01-31T12:00:00Z.")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise _bad(attr, f"`{attr}` {value!r} is not an ISO-8601 date-time.") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat()


def _text(data: dict, field: str, attr: str, *, max_len: int = 4000, required: bool = False) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            raise _bad(attr, f"`{attr}` is required.", "required")
        return None
    if not isinstance(value, str):
        raise _bad(attr, f"`{attr}` must be a string.")
    if required and not value.strip():
        raise _bad(attr, f"`{attr}` must not be empty.", "required")
    if len(value) > max_len:
        raise _bad(attr, f"`{attr}` is longer than {max_len} characters.")
    return value


def _number(value: Any, attr: str, lo: float, hi: float, *, integer: bool = False,
            lo_open: bool = False, hi_open: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(attr, f"`{attr}` must be a number.")
    if integer and not float(value).is_integer():
        raise _bad(attr, f"`{attr}` must be a whole number.")
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if below or above:
        lb, hb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise _bad(attr, f"`{attr}` must be in {lb}{lo:g}, {hi:g}{hb}, not {value!r}.")
    return int(value) if integer else value


# -- pieces of the definition --------------------------------------------------------------------

def _properties(value: Any, attr: str) -> list:
    from sightline.query.model import PropertyFilter

    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(attr, f"`{attr}` must be a list of property filters.")
    out = []
    for i, p in enumerate(value):
        try:
            PropertyFilter.model_validate(p)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ()))
            raise _bad(f"{attr}[{i}]", f"`{attr}[{i}]` is not a valid property filter: {where} "
                                       f"{first.get('msg')}.") from None
        out.append(p)
    return out


def _event_node(node: Any, attr: str, *, maths: tuple[str, ...] = ("total",)) -> dict:
    """``{"event": ..., "properties": [...], "math": ..., "math_property": ...}``."""
    if not isinstance(node, dict):
        raise _bad(attr, f"`{attr}` must be an object with an `event`.")
    event = node.get("event")
    if not isinstance(event, str) or not event.strip():
        raise _bad(f"{attr}.event", f"`{attr}.event` must be an event name.", "required")
    math = node.get("math") or maths[0]
    if math not in maths:
        raise _bad(f"{attr}.math", f"`{attr}.math` must be one of {', '.join(maths)}, not {math!r}.")
    out = {"kind": "EventsNode", "event": event, "properties": _properties(node.get("properties"),
                                                                           f"{attr}.properties"),
           "math": math}
    if node.get("name") is not None:
        out["name"] = str(node["name"])[:400]
    if math in ("sum", "avg"):
        prop = node.get("math_property")
        if not isinstance(prop, str) or not prop.strip():
            raise _bad(f"{attr}.math_property", f"`{attr}.math` {math!r} needs a `math_property` (a numeric "
                                                 f"event property).", "required")
        out["math_property"] = prop
    return out


def clean_metric(m: Any, attr: str) -> dict:
    """Validate one metric; returns the stored form (with a ``uuid``)."""
    if not isinstance(m, dict):
        raise _bad(attr, f"`{attr}` must be a metric object with a `metric_type`.")
    kind = m.get("metric_type")
    if kind not in METRIC_TYPES:
        raise _bad(f"{attr}.metric_type", f"`{attr}.metric_type` must be one of {', '.join(METRIC_TYPES)}, "
                                          f"not {kind!r}.")
    out: dict[str, Any] = {"kind": "ExperimentMetric", "metric_type": kind,
                           "uuid": str(m.get("uuid") or uuidlib.uuid4())}
    if not isinstance(out["uuid"], str) or len(out["uuid"]) > 100:
        raise _bad(f"{attr}.uuid", f"`{attr}.uuid` must be a short string.")
    goal = m.get("goal", "increase")
    if goal not in ("increase", "decrease"):
        raise _bad(f"{attr}.goal", f"`{attr}.goal` must be 'increase' or 'decrease'.")
    out["goal"] = goal
    if kind == "funnel":
        series = m.get("series")
        if not isinstance(series, list) or not 1 <= len(series) <= 10:
            raise _bad(f"{attr}.series", f"`{attr}.series` must list 1 to 10 steps (events) after exposure.")
        out["series"] = [_event_node(s, f"{attr}.series[{i}]") for i, s in enumerate(series)]
        default = " → ".join(s["event"] for s in out["series"])
    elif kind == "ratio":
        out["numerator"] = _event_node(m.get("numerator"), f"{attr}.numerator", maths=("total", "sum"))
        out["denominator"] = _event_node(m.get("denominator"), f"{attr}.denominator", maths=("total", "sum"))
        default = f"{_node_label(out['numerator'])} / {_node_label(out['denominator'])}"
    else:
        maths = ("total",) if kind == "count" else ("sum", "avg", "total")
        src = _event_node(m.get("source"), f"{attr}.source", maths=maths)
        if kind == "mean" and src["math"] == "total":  # PostHog's mean metric of a count
            kind = out["metric_type"] = "count"
        out["source"] = src
        default = _node_label(src) + (" per user" if src["math"] != "avg" else "")
    window = m.get("conversion_window")
    if window is not None:
        out["conversion_window"] = _number(window, f"{attr}.conversion_window", 0, 10_000, integer=True,
                                           lo_open=True)
        unit = m.get("conversion_window_unit") or "day"
        if unit not in WINDOW_UNITS:
            raise _bad(f"{attr}.conversion_window_unit", f"`{attr}.conversion_window_unit` must be one of "
                                                         f"{', '.join(WINDOW_UNITS)}.")
        out["conversion_window_unit"] = unit
    name = m.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 400):
        raise _bad(f"{attr}.name", f"`{attr}.name` must be a string of at most 400 characters.")
    out["name"] = name or default
    return out


def _node_label(node: dict) -> str:
    if node["math"] == "total":
        return f"count of {node['event']}"
    return f"{node['math']} of {node['event']}.{node['math_property']}"


def _metrics(value: Any, attr: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(attr, f"`{attr}` must be a list of metrics.")
    if len(value) > MAX_METRICS:
        raise _bad(attr, f"`{attr}` has more than {MAX_METRICS} metrics.")
    return [clean_metric(m, f"{attr}[{i}]") for i, m in enumerate(value)]


def clean_variants(value: Any, attr: str = "parameters.feature_flag_variants") -> list[dict]:
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_VARIANTS:
        raise _bad(attr, f"`{attr}` must list 2 to {MAX_VARIANTS} variants.")
    out, seen = [], set()
    for i, v in enumerate(value):
        a = f"{attr}[{i}]"
        if not isinstance(v, dict):
            raise _bad(a, f"`{a}` must be an object with `key` and `rollout_percentage`.")
        key = clean_key(v.get("key"), f"{a}.key")
        if key in seen:
            raise _bad(f"{a}.key", f"Variant {key!r} is listed twice.", "unique")
        seen.add(key)
        pct = _number(v.get("rollout_percentage"), f"{a}.rollout_percentage", 0, 100)
        out.append({"key": key, "name": str(v.get("name") or key.capitalize())[:400],
                    "rollout_percentage": pct})
    if "control" not in seen:
        raise _bad(attr, "One variant must be the `control` (the baseline every other variant is compared with).")
    if abs(sum(v["rollout_percentage"] for v in out) - 100) > 1e-9:
        raise _bad(attr, f"The variants' rollout percentages must add up to 100, not "
                         f"{sum(v['rollout_percentage'] for v in out):g}.")
    return out


def clean_stats_config(value: Any, base: dict | None = None) -> dict:
    attr = "stats_config"
    if value is None:
        return dict(base or DEFAULT_STATS)
    if not isinstance(value, dict):
        raise _bad(attr, "`stats_config` must be an object.")
    unknown = set(value) - set(DEFAULT_STATS)
    if unknown:
        raise _bad(f"{attr}.{sorted(unknown)[0]}", f"Unknown statistics settings: {', '.join(sorted(unknown))}; "
                                                   f"known: {', '.join(DEFAULT_STATS)}.")
    out = {**(base or DEFAULT_STATS), **value}
    if out["method"] not in ("bayesian", "frequentist"):
        raise _bad(f"{attr}.method", "`stats_config.method` must be 'bayesian' or 'frequentist'.")
    out["confidence_level"] = _number(out["confidence_level"], f"{attr}.confidence_level", 0.5, 1,
                                      lo_open=True, hi_open=True)
    for b in ("sequential", "cuped"):
        if not isinstance(out[b], bool):
            raise _bad(f"{attr}.{b}", f"`stats_config.{b}` must be true or false.")
    if out["sequential"] and out["method"] != "frequentist":
        raise _bad(f"{attr}.sequential", "Sequential testing is a frequentist method: set "
                                         "`stats_config.method` to 'frequentist' to use it.")
    out["sequential_tuning"] = _number(out["sequential_tuning"], f"{attr}.sequential_tuning", 1, 1e9)
    out["cuped_pre_period_days"] = _number(out["cuped_pre_period_days"], f"{attr}.cuped_pre_period_days",
                                           1, 365, integer=True)
    if out["outlier_capping_percentile"] is not None:
        out["outlier_capping_percentile"] = _number(out["outlier_capping_percentile"],
                                                    f"{attr}.outlier_capping_percentile", 0.5, 1,
                                                    hi_open=True)
    if out["multiple_comparisons"] not in ("holm", "bh", "none"):
        raise _bad(f"{attr}.multiple_comparisons", "`stats_config.multiple_comparisons` must be 'holm' "
                                                   "(Holm–Bonferroni), 'bh' (Benjamini–Hochberg) or 'none'.")
    out["minimum_exposures"] = _number(out["minimum_exposures"], f"{attr}.minimum_exposures", 2, 1e9,
                                       integer=True)
    return out


def clean_exposure(value: Any) -> dict:
    attr = "exposure_criteria"
    default = {"exposure_config": {"event": EXPOSURE_EVENT, "properties": []}, "filterTestAccounts": False,
               "multiple_variant_handling": "exclude"}
    if value is None:
        return default
    if not isinstance(value, dict):
        raise _bad(attr, "`exposure_criteria` must be an object.")
    unknown = set(value) - set(default)
    if unknown:
        raise _bad(f"{attr}.{sorted(unknown)[0]}", f"Unknown exposure settings: {', '.join(sorted(unknown))}.")
    cfg = value.get("exposure_config") or {}
    if not isinstance(cfg, dict):
        raise _bad(f"{attr}.exposure_config", "`exposure_criteria.exposure_config` must be an object.")
    event = cfg.get("event") or EXPOSURE_EVENT
    if not isinstance(event, str):
        raise _bad(f"{attr}.exposure_config.event", "The exposure event must be an event name.")
    handling = value.get("multiple_variant_handling") or "exclude"
    if handling not in ("exclude", "first_seen"):
        raise _bad(f"{attr}.multiple_variant_handling",
                   "`multiple_variant_handling` must be 'exclude' or 'first_seen'.")
    ta = value.get("filterTestAccounts", False)
    if not isinstance(ta, bool):
        raise _bad(f"{attr}.filterTestAccounts", "`filterTestAccounts` must be true or false.")
    return {"exposure_config": {"event": event, "properties": _properties(
        cfg.get("properties"), f"{attr}.exposure_config.properties")},
        "filterTestAccounts": ta, "multiple_variant_handling": handling}


def flag_variants(flag_row: dict) -> list[dict]:
    mv = (flag_row["data"].get("filters") or {}).get("multivariate") or {}
    return [{"key": v["key"], "name": v.get("name") or v["key"], "rollout_percentage": v["rollout_percentage"]}
            for v in (mv.get("variants") or [])]


# -- the service ------------------------------------------------------------------------------------

class ExperimentService:
    def __init__(self, meta: MetaStore, flags: FlagService) -> None:
        self.meta = meta
        self.flags = flags

    # -- shapes --------------------------------------------------------------------------------------
    def to_api(self, row: dict) -> dict:
        d = row["data"]
        flag = None
        try:
            frow = self.flags.row_by_key(row["project_id"], row["feature_flag_key"])
            flag = {"id": frow["id"], "key": frow["key"], "active": bool(frow["data"].get("active", True)),
                    "filters": frow["data"].get("filters")}
        except NotFound:
            pass
        return {"id": row["id"], "name": row["name"], "description": d.get("description"),
                "hypothesis": d.get("hypothesis"), "feature_flag_key": row["feature_flag_key"],
                "feature_flag": flag, "status": row["status"],
                "parameters": d.get("parameters") or {"feature_flag_variants": []},
                "start_date": d.get("start_date"), "end_date": d.get("end_date"),
                "exposure_criteria": d.get("exposure_criteria") or clean_exposure(None),
                "metrics": d.get("metrics") or [], "metrics_secondary": d.get("metrics_secondary") or [],
                "metrics_guardrails": d.get("metrics_guardrails") or [],
                "stats_config": {**DEFAULT_STATS, **(d.get("stats_config") or {})},
                "shipped_variant": d.get("shipped_variant"), "conclusion": d.get("conclusion"),
                "conclusion_comment": d.get("conclusion_comment"), "archived": bool(d.get("archived")),
                "deleted": row["deleted"], "version": row["version"], "type": "product",
                "created_at": row["created_at"], "created_by": row["created_by"],
                "updated_at": row["updated_at"], "last_modified_by": row["updated_by"]}

    def variants(self, exp: dict) -> list[dict]:
        return (exp.get("parameters") or {}).get("feature_flag_variants") or []

    # -- reading --------------------------------------------------------------------------------------
    def list_experiments(self, project_id: int) -> list[dict]:
        return [self.to_api(r) for r in self.meta.experiment_rows(project_id)]

    def _row(self, project_id: int, experiment_id: Any, *, allow_deleted: bool = False) -> dict:
        try:
            eid = int(experiment_id)
        except (TypeError, ValueError):
            eid = None
        row = self.meta.experiment_row(project_id, eid) if eid is not None else None
        if row is None or (row["deleted"] and not allow_deleted):
            raise NotFound(f"Experiment {experiment_id} does not exist.")
        return row

    def get(self, project_id: int, experiment_id: Any) -> dict:
        return self.to_api(self._row(project_id, experiment_id))

    def find(self, project_id: int, ref: str) -> dict:
        """An experiment by id, flag key or exact name (for the CLI)."""
        rows = self.meta.experiment_rows(project_id)
        for r in rows:
            if str(r["id"]) == str(ref) or r["feature_flag_key"] == ref:
                return self.to_api(r)
        named = [r for r in rows if r["name"] == ref]
        if len(named) == 1:
            return self.to_api(named[0])
        if named:
            raise InvalidInput(f"{len(named)} experiments are named {ref!r}; use the id.", attr="experiment")
        raise NotFound(f"No experiment has the id, flag key or name {ref!r}.")

    def activity(self, project_id: int, experiment_id: Any) -> list[dict]:
        row = self._row(project_id, experiment_id, allow_deleted=True)
        return [{"id": a["id"], "activity": a["action"], "version": a["version"], "user": {"label": a["actor"]},
                 "created_at": a["at"], "detail": {"before": a["before"], "after": a["after"]}}
                for a in self.meta.experiment_activity(project_id, row["id"])]

    # -- validation of a whole body --------------------------------------------------------------
    def _clean(self, data: Any, existing: dict | None) -> tuple[str, str, dict]:
        """(name, flag key, stored document) from a create body or a PATCH over ``existing``."""
        if not isinstance(data, dict):
            raise InvalidInput("The request body must be a JSON object.", code="invalid_payload")
        unknown = set(data) - EDITABLE - IGNORED
        if unknown:
            first = sorted(unknown)[0]
            raise _bad(first, f"Unknown experiment fields: {', '.join(sorted(unknown))}.")
        cur = dict(existing["data"]) if existing else {}
        name = existing["name"] if existing else None
        if "name" in data or existing is None:
            name = _text(data, "name", "name", max_len=400, required=True)
        key = existing["feature_flag_key"] if existing else None
        if "feature_flag_key" in data or existing is None:
            if data.get("feature_flag_key") is None:
                raise _bad("feature_flag_key", "`feature_flag_key` is required: the feature flag that assigns "
                                               "the variants (created if it does not exist).", "required")
            key = clean_key(data.get("feature_flag_key"), "feature_flag_key")
        doc = dict(cur)
        for field, limit in (("description", 4000), ("hypothesis", 4000), ("conclusion", 100),
                             ("conclusion_comment", 4000)):
            if field in data:
                doc[field] = _text(data, field, field, max_len=limit)
        if "archived" in data:
            if not isinstance(data["archived"], bool):
                raise _bad("archived", "`archived` must be true or false.")
            doc["archived"] = data["archived"]
        if "parameters" in data:
            params = data["parameters"]
            if not isinstance(params, dict):
                raise _bad("parameters", "`parameters` must be an object with `feature_flag_variants`.")
            out = {k: v for k, v in params.items() if k != "feature_flag_variants"}
            if params.get("feature_flag_variants") is not None:
                out["feature_flag_variants"] = clean_variants(params["feature_flag_variants"])
            elif (cur.get("parameters") or {}).get("feature_flag_variants"):
                out["feature_flag_variants"] = cur["parameters"]["feature_flag_variants"]
            doc["parameters"] = out
        for field in ("start_date", "end_date"):
            if field in data:
                doc[field] = parse_date(data[field], field)
        if "exposure_criteria" in data:
            doc["exposure_criteria"] = clean_exposure(data["exposure_criteria"])
        else:
            doc.setdefault("exposure_criteria", clean_exposure(None))
        for field in METRIC_LISTS:
            if field in data:
                doc[field] = _metrics(data[field], field)
            else:
                doc.setdefault(field, [])
        if "secondary_metrics" in data and "metrics_secondary" not in data and data["secondary_metrics"]:
            raise _bad("secondary_metrics", "Use `metrics_secondary` for secondary metrics.")
        uuids = [m["uuid"] for f in METRIC_LISTS for m in doc[f]]
        if len(set(uuids)) != len(uuids):
            raise _bad("metrics", "Two metrics share a `uuid`; each metric needs its own.", "unique")
        doc["stats_config"] = clean_stats_config(data.get("stats_config"), cur.get("stats_config")) \
            if "stats_config" in data or "stats_config" not in cur else cur["stats_config"]
        if doc.get("start_date") and doc.get("end_date") and doc["end_date"] <= doc["start_date"]:
            raise _bad("end_date", "`end_date` must be after `start_date`.")
        return name, key, doc

    def _check_flag(self, project_id: int, key: str, doc: dict, this_id: int | None) -> dict | None:
        """The existing flag row (validated against the experiment's variants) or None."""
        for r in self.meta.experiment_rows(project_id):
            if r["feature_flag_key"] == key and r["id"] != this_id:
                raise _bad("feature_flag_key", f"Flag {key!r} already belongs to experiment {r['id']} "
                                               f"({r['name']!r}); an experiment needs a flag of its own.",
                           "unique")
        try:
            row = self.flags.row_by_key(project_id, key)
        except NotFound:
            return None
        have = flag_variants(row)
        if not have:
            raise _bad("feature_flag_key", f"Flag {key!r} exists but is not multivariate; an experiment needs a "
                                           "flag with a `control` variant and at least one test variant.")
        keys = [v["key"] for v in have]
        if "control" not in keys:
            raise _bad("feature_flag_key", f"Flag {key!r} has no `control` variant (it has "
                                           f"{', '.join(keys)}).")
        want = (doc.get("parameters") or {}).get("feature_flag_variants")
        if want and sorted(v["key"] for v in want) != sorted(keys):
            raise _bad("parameters.feature_flag_variants",
                       f"Flag {key!r} has the variants {', '.join(keys)}, not "
                       f"{', '.join(v['key'] for v in want)}; change the flag first or leave out "
                       "`parameters.feature_flag_variants`.")
        return row

    # -- changes -----------------------------------------------------------------------------------
    def create(self, project_id: int, data: Any, actor: str | None) -> dict:
        name, key, doc = self._clean(data, None)
        if doc.get("start_date") or doc.get("end_date"):
            raise _bad("start_date", "A new experiment is a draft: launch it (`POST .../launch/`) to start it.")
        flag = self._check_flag(project_id, key, doc, None)
        params = dict(doc.get("parameters") or {})
        if flag is not None:
            params["feature_flag_variants"] = flag_variants(flag)
        else:
            params.setdefault("feature_flag_variants", [dict(v) for v in DEFAULT_VARIANTS])
        doc["parameters"] = params
        if flag is None:
            self.flags.create_flag(project_id, {
                "key": key, "name": f"Feature flag of experiment {name}", "active": False,
                "filters": {"groups": [{"properties": [], "rollout_percentage": 100}],
                            "multivariate": {"variants": params["feature_flag_variants"]}}}, actor)
        try:
            eid = self.meta.insert_experiment(project_id, name=name, feature_flag_key=key, status="draft",
                                              data=doc, actor=actor)
        except Exception as exc:  # the unique index, if another process won the race
            if "UNIQUE" in str(exc):
                raise _bad("feature_flag_key", f"Flag {key!r} already belongs to another experiment.",
                           "unique") from None
            raise
        return self.get(project_id, eid)

    def _write(self, row: dict, *, name: str, key: str, status: str, doc: dict, deleted: bool, action: str,
               actor: str | None) -> dict:
        before = {"name": row["name"], "feature_flag_key": row["feature_flag_key"], "status": row["status"],
                  "deleted": row["deleted"], **row["data"]}
        after = {"name": name, "feature_flag_key": key, "status": status, "deleted": deleted, **doc}
        version = self.meta.update_experiment(row["project_id"], row["id"], name=name, feature_flag_key=key,
                                              status=status, data=doc, deleted=deleted,
                                              expected_version=row["version"], action=action, actor=actor,
                                              before=before, after=after)
        if not version:
            raise Conflict(f"Experiment {row['id']} changed while it was being updated; reload and retry.")
        return self.to_api(self.meta.experiment_row(row["project_id"], row["id"]))

    def update(self, project_id: int, experiment_id: Any, data: Any, actor: str | None) -> dict:
        row = self._row(project_id, experiment_id)
        if isinstance(data, dict) and "version" in data and data["version"] != row["version"]:
            raise Conflict(f"Experiment {row['id']} is at version {row['version']}, not {data['version']}: "
                           "someone changed it meanwhile. Reload and retry.", attr="version")
        if isinstance(data, dict) and data.get("deleted") is True:
            return self.delete(project_id, row["id"], actor)
        name, key, doc = self._clean(data, row)
        status = row["status"]
        if status != "draft":
            for field in ("feature_flag_key", "parameters"):
                if field in data and (key != row["feature_flag_key"] if field == "feature_flag_key"
                                      else doc.get("parameters") != row["data"].get("parameters")):
                    raise Conflict(f"`{field}` cannot change once the experiment is {status}.", attr=field)
        if status == "draft" and (doc.get("start_date") or doc.get("end_date")):
            raise _bad("start_date", "Launch the experiment to start it (`POST .../launch/`).")
        if status == "running" and doc.get("end_date"):
            raise _bad("end_date", "Stop the experiment to end it (`POST .../stop/`).")
        if status != "draft" and not doc.get("start_date"):
            raise _bad("start_date", f"A {status} experiment keeps its `start_date`.")
        if status == "draft" and (key != row["feature_flag_key"] or "parameters" in data):
            flag = self._check_flag(project_id, key, doc, row["id"])
            params = dict(doc.get("parameters") or {})
            if flag is not None:
                params["feature_flag_variants"] = flag_variants(flag)
            else:
                params.setdefault("feature_flag_variants", [dict(v) for v in DEFAULT_VARIANTS])
                self.flags.create_flag(project_id, {
                    "key": key, "name": f"Feature flag of experiment {name}", "active": False,
                    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}],
                                "multivariate": {"variants": params["feature_flag_variants"]}}}, actor)
            doc["parameters"] = params
            if flag is not None and key == row["feature_flag_key"] and "parameters" in data:
                self._set_flag_variants(project_id, key, params["feature_flag_variants"], actor)
        return self._write(row, name=name, key=key, status=status, doc=doc, deleted=False, action="updated",
                           actor=actor)

    def _set_flag_variants(self, project_id: int, key: str, variants: list[dict], actor: str | None) -> None:
        frow = self.flags.row_by_key(project_id, key)
        filters = dict(frow["data"].get("filters") or {})
        filters["multivariate"] = {**(filters.get("multivariate") or {}),
                                   "variants": [{"key": v["key"], "name": v["name"],
                                                 "rollout_percentage": v["rollout_percentage"]} for v in variants]}
        self.flags.update_flag(project_id, frow["id"], {"filters": filters}, actor)

    def delete(self, project_id: int, experiment_id: Any, actor: str | None) -> dict:
        """Soft delete; the flag stays as it is (delete it separately if no longer needed)."""
        row = self._row(project_id, experiment_id)
        return self._write(row, name=row["name"], key=row["feature_flag_key"], status=row["status"],
                           doc=row["data"], deleted=True, action="deleted", actor=actor)

    def launch(self, project_id: int, experiment_id: Any, actor: str | None, *,
               start_date: Any = None) -> dict:
        """draft → running: the start date is now (or ``start_date``), the flag is switched on."""
        row = self._row(project_id, experiment_id)
        if row["status"] != "draft":
            raise Conflict(f"Experiment {row['id']} is already {row['status']}; only a draft can be launched.",
                           attr="status")
        doc = dict(row["data"])
        if not doc.get("metrics"):
            raise _bad("metrics", "Add at least one goal metric (`metrics`) before launching.", "required")
        flag = self._check_flag(project_id, row["feature_flag_key"], doc, row["id"])
        if flag is None:
            raise _bad("feature_flag_key", f"The experiment's flag {row['feature_flag_key']!r} was deleted; "
                                           "point the experiment at another flag.")
        doc["start_date"] = parse_date(start_date, "start_date") if start_date is not None else _now().isoformat()
        doc["end_date"] = None
        if not flag["data"].get("active", True):
            self.flags.update_flag(project_id, flag["id"], {"active": True}, actor)
        return self._write(row, name=row["name"], key=row["feature_flag_key"], status="running", doc=doc,
                           deleted=False, action="launched", actor=actor)

    def stop(self, project_id: int, experiment_id: Any, actor: str | None, *, shipped_variant: str | None = None,
             end_date: Any = None, conclusion: str | None = None, conclusion_comment: str | None = None) -> dict:
        """running → stopped (end date now or ``end_date``); with ``shipped_variant`` the flag is shipped."""
        row = self._row(project_id, experiment_id)
        if row["status"] != "running":
            raise Conflict(f"Experiment {row['id']} is {row['status']}; only a running experiment can be stopped.",
                           attr="status")
        if shipped_variant is not None:
            self._check_variant(row, shipped_variant)
        doc = dict(row["data"])
        end = parse_date(end_date, "end_date") if end_date is not None else _now().isoformat()
        if end <= doc["start_date"]:
            raise _bad("end_date", "`end_date` must be after the experiment's `start_date`.")
        doc["end_date"] = end
        for field, value, limit in (("conclusion", conclusion, 100), ("conclusion_comment", conclusion_comment, 4000)):
            if value is not None:
                doc[field] = _text({field: value}, field, field, max_len=limit)
        out = self._write(row, name=row["name"], key=row["feature_flag_key"], status="stopped", doc=doc,
                          deleted=False, action="stopped", actor=actor)
        if shipped_variant is not None:
            return self.ship(project_id, row["id"], shipped_variant, actor)
        return out

    def _check_variant(self, row: dict, variant: Any) -> str:
        keys = [v["key"] for v in (row["data"].get("parameters") or {}).get("feature_flag_variants") or []]
        if not isinstance(variant, str) or variant not in keys:
            raise _bad("shipped_variant", f"`shipped_variant` must be one of the experiment's variants "
                                          f"({', '.join(keys)}), not {variant!r}.")
        return variant

    def ship(self, project_id: int, experiment_id: Any, variant: Any, actor: str | None) -> dict:
        """Roll the flag out to 100% of its matching users, all on ``variant``; stops a running experiment."""
        row = self._row(project_id, experiment_id)
        if row["status"] == "draft":
            raise Conflict(f"Experiment {row['id']} has not been launched; there is nothing to ship.",
                           attr="status")
        variant = self._check_variant(row, variant)
        frow = self.flags.row_by_key(project_id, row["feature_flag_key"])
        filters = dict(frow["data"].get("filters") or {})
        variants = [{**v, "rollout_percentage": 100 if v["key"] == variant else 0}
                    for v in (filters.get("multivariate") or {}).get("variants") or []]
        if variant not in [v["key"] for v in variants]:
            raise _bad("shipped_variant", f"Flag {frow['key']!r} no longer has the variant {variant!r}.")
        filters["multivariate"] = {**(filters.get("multivariate") or {}), "variants": variants}
        filters["groups"] = [{**g, "rollout_percentage": 100, "variant": None}
                             for g in (filters.get("groups") or [{"properties": []}])]
        self.flags.update_flag(project_id, frow["id"], {"filters": filters, "active": True}, actor)
        row = self._row(project_id, row["id"])
        doc = dict(row["data"])
        doc["shipped_variant"] = variant
        if not doc.get("end_date"):
            doc["end_date"] = _now().isoformat()
        doc.setdefault("conclusion", "won" if variant != "control" else "lost")
        return self._write(row, name=row["name"], key=row["feature_flag_key"], status="stopped", doc=doc,
                           deleted=False, action="shipped", actor=actor)
