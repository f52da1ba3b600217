"""One entry point for every query kind: validate the JSON, build SQL, run it, shape results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sightline.errors import InvalidInput
from sightline.metrics import timed_query
from sightline.query import funnels, lifecycle, paths, retention, stickiness, trends
from sightline.query.context import QueryContext
from sightline.query.model import QueryRequest

RUNNERS = {
    "TrendsQuery": trends.run,
    "FunnelsQuery": funnels.run,
    "RetentionQuery": retention.run,
    "LifecycleQuery": lifecycle.run,
    "StickinessQuery": stickiness.run,
    "PathsQuery": paths.run,
}


def validation_error(exc: ValidationError) -> InvalidInput:
    first = exc.errors()[0]
    # drop the envelope and the discriminator (the query kind) from the location
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "query" and not str(p).endswith("Query"))
    return InvalidInput(f"Invalid query: {where or 'query'}: {first.get('msg')}.", code="invalid_query",
                        attr=where or None)


def parse(query: dict) -> Any:
    if not isinstance(query, dict):
        raise InvalidInput("`query` must be a JSON object with a `kind`.", code="invalid_query")
    try:
        return QueryRequest.model_validate({"query": query}).query
    except ValidationError as exc:
        raise validation_error(exc) from None


def load_cohorts(meta, project_id: int) -> dict:
    """The project's cohorts by id; static ones carry their members (distinct ids)."""
    if not hasattr(meta, "cohort_rows"):
        return {}
    cohorts = {row["id"]: dict(row) for row in meta.cohort_rows(project_id)}
    if any(c["is_static"] for c in cohorts.values()):
        for distinct_id, ids in meta.static_cohort_members(project_id).items():
            for cid in ids:
                cohorts[cid].setdefault("members", []).append(distinct_id)
    return cohorts


@timed_query
def run_query(core, query: dict, *, project_id: int | None = None, now: datetime | None = None) -> dict:
    """Run one query (PostHog query JSON) for a project of ``core`` and return the result JSON."""
    project = core.resolve_project(project_id)
    if hasattr(core, "sync"):
        core.sync()  # queries see every acknowledged event
    ctx = QueryContext(core.storage, project.id, timezone=project.timezone, settings=project.settings,
                       cohorts=load_cohorts(core.meta, project.id),
                       timeout_s=float(project.settings.get("query_timeout_seconds") or 60))
    if now is not None:
        ctx.now = now
    if isinstance(query, dict) and query.get("kind") == "InsightActorsQuery":
        from sightline.query import actors

        try:
            a = actors.InsightActorsQuery.model_validate(query)
        except ValidationError as exc:
            raise validation_error(exc) from None
        return actors.run(ctx, a)
    q = parse(query)
    if q.kind == "HogQLQuery":
        from sightline.query.sql import run_sql

        result = run_sql(core.storage, project.id, q.query, timezone=project.timezone)
        return {**result.to_json(), "kind": "HogQLQuery"}
    runner = RUNNERS.get(q.kind)
    if runner is None:
        raise InvalidInput(f"{q.kind} is not available yet.", code="not_supported")
    return runner(ctx, q)
