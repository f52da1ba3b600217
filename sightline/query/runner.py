"""One entry point for every query kind: validate the JSON, build SQL, run it, shape results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sightline.errors import InvalidInput
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
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query",))
    return InvalidInput(f"Invalid query: {where or 'query'}: {first.get('msg')}.", code="invalid_query",
                        attr=where or None)


def parse(query: dict) -> Any:
    if not isinstance(query, dict):
        raise InvalidInput("`query` must be a JSON object with a `kind`.", code="invalid_query")
    try:
        return QueryRequest.model_validate({"query": query}).query
    except ValidationError as exc:
        raise validation_error(exc) from None


def run_query(core, query: dict, *, project_id: int | None = None, now: datetime | None = None) -> dict:
    """Run one query (PostHog query JSON) for a project of ``core`` and return the result JSON."""
    project = core.resolve_project(project_id)
    ctx = QueryContext(core.storage, project.id, timezone=project.timezone, settings=project.settings)
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
    runner = RUNNERS.get(q.kind)
    if runner is None:
        raise InvalidInput(f"{q.kind} is not available yet.", code="not_supported")
    return runner(ctx, q)
