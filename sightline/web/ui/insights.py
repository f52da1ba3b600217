"""Saved insights and dashboards: ``/api/projects/<id>/insights/`` and ``/dashboards/`` (PostHog-shaped).

An insight is a name and a query (any kind ``POST /query/`` accepts; PostHog's ``InsightVizNode`` /
``DataTableNode`` wrappers are unwrapped). ``dashboards`` on an insight lists the dashboards it is a
tile of: PATCH it to add or remove tiles. A dashboard has a name, shared ``filters``
(``date_from``/``date_to`` applied to its tiles) and ``tiles`` (each with its insight).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sightline.errors import InvalidInput, NotFound, SightlineError
from sightline.web.http import error_response, json_response, read_json_object, require_api_key

log = logging.getLogger("sightline.web.ui")
BODY_LIMIT = 1024 * 1024
WRAPPERS = ("InsightVizNode", "DataTableNode", "DataVisualizationNode")


def _actor(request: Request) -> str | None:
    from sightline.web.http import bearer_token
    from sightline.web.ui.auth import session_from_request

    session = session_from_request(request)
    if session is not None:
        return session.email
    token = bearer_token(request)
    return request.app.state.core.meta.api_key_label(token) if token else None


def clean_query(query: Any) -> dict:
    """The runnable query inside ``query`` (wrappers removed), validated like ``POST /query/``."""
    from sightline.query.runner import parse

    if isinstance(query, dict) and query.get("kind") in WRAPPERS:
        query = query.get("source")
    if not isinstance(query, dict):
        raise InvalidInput("query must be a JSON object with a kind (TrendsQuery, FunnelsQuery, ...).",
                           attr="query")
    try:
        parse(query)
    except InvalidInput as exc:
        raise InvalidInput(f"Invalid query: {exc.detail}", code="invalid_query", attr="query") from None
    return query


def _text(payload: dict, key: str, required: bool = False, max_len: int = 400) -> str | None:
    value = payload.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"{key} is required.", attr=key)
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_len:
        raise InvalidInput(f"{key} is a text of 1 to {max_len} characters." if required
                           else f"{key} is a text of at most {max_len} characters.", attr=key)
    return value.strip() if key == "name" else value


def _dashboard_ids(meta, project_id: int, value: Any) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidInput("dashboards is a list of dashboard ids.", attr="dashboards")
    for did in value:
        if meta.dashboard_row(project_id, did) is None:
            raise InvalidInput(f"Dashboard {did} does not exist.", attr="dashboards")
    return list(dict.fromkeys(value))


def _insight_id(request: Request) -> int:
    return int(request.path_params["insight_id"])


async def insight_collection(request: Request) -> Response:
    try:
        require_api_key(request)
        core = request.app.state.core
        meta = core.meta
        project = core.resolve_project(request.path_params["project_id"])
        if request.method == "GET":
            q = request.query_params
            limit, offset = q.get("limit", "100"), q.get("offset", "0")
            if not limit.isdigit() or not 1 <= int(limit) <= 1000:
                raise InvalidInput("limit is a whole number from 1 to 1000.", attr="limit")
            if not offset.isdigit():
                raise InvalidInput("offset is a whole number.", attr="offset")
            rows, total = meta.insight_rows(project.id, search=q.get("search"), limit=int(limit),
                                            offset=int(offset))
            return json_response({"count": total, "results": rows})
        payload = await read_json_object(request, BODY_LIMIT)
        unknown = set(payload) - {"name", "description", "query", "dashboards", "derived_name", "saved"}
        if unknown:
            raise InvalidInput(f"Unknown insight fields: {', '.join(sorted(unknown))}.", attr=sorted(unknown)[0])
        query = clean_query(payload.get("query"))
        name = _text(payload, "name") or _text(payload, "derived_name") or "Untitled insight"
        if not name.strip():
            raise InvalidInput("name must not be empty.", attr="name")
        description = _text(payload, "description", max_len=4000) or ""
        dashboards = _dashboard_ids(meta, project.id, payload.get("dashboards", []))
        iid = meta.create_insight(project.id, name, query, description=description, created_by=_actor(request))
        if dashboards:
            meta.set_insight_dashboards(iid, dashboards)
        return json_response(meta.insight_row(project.id, iid), status=201)
    except SightlineError as exc:
        return error_response(exc)


async def insight_item(request: Request) -> Response:
    try:
        require_api_key(request)
        core = request.app.state.core
        meta = core.meta
        project = core.resolve_project(request.path_params["project_id"])
        iid = _insight_id(request)
        row = meta.insight_row(project.id, iid)
        if row is None:
            raise NotFound(f"Insight {iid} does not exist.")
        if request.method == "GET":
            return json_response(row)
        if request.method == "DELETE":
            meta.update_insight(iid, deleted=True)
            return Response(status_code=204)
        payload = await read_json_object(request, BODY_LIMIT)
        unknown = set(payload) - {"name", "description", "query", "dashboards", "deleted", "derived_name", "saved"}
        if unknown:
            raise InvalidInput(f"Unknown insight fields: {', '.join(sorted(unknown))}.", attr=sorted(unknown)[0])
        query = clean_query(payload["query"]) if "query" in payload else None
        name = _text(payload, "name", required="name" in payload)
        description = _text(payload, "description", max_len=4000)
        deleted = payload.get("deleted")
        if deleted is not None and not isinstance(deleted, bool):
            raise InvalidInput("deleted is true or false.", attr="deleted")
        dashboards = (_dashboard_ids(meta, project.id, payload["dashboards"]) if "dashboards" in payload
                      else None)
        meta.update_insight(iid, name=name, description=description, query=query, deleted=deleted)
        if dashboards is not None:
            meta.set_insight_dashboards(iid, dashboards)
        if deleted:
            return json_response({**row, "deleted": True})
        return json_response(meta.insight_row(project.id, iid))
    except SightlineError as exc:
        return error_response(exc)


# -- dashboards ---------------------------------------------------------------------------------
def _filters(value: Any) -> dict:
    from sightline.query.model import DateRange

    if not isinstance(value, dict):
        raise InvalidInput("filters is an object like {\"date_from\": \"-30d\"}.", attr="filters")
    unknown = set(value) - {"date_from", "date_to", "properties"}
    if unknown:
        raise InvalidInput(f"Unknown dashboard filters: {', '.join(sorted(unknown))}.", attr="filters")
    for key in ("date_from", "date_to"):
        v = value.get(key)
        if v is not None and (not isinstance(v, str) or len(v) > 64):
            raise InvalidInput(f"filters.{key} is a date or a relative date like -30d.", attr="filters")
    try:
        DateRange.model_validate({k: value.get(k) for k in ("date_from", "date_to")})
    except Exception as exc:  # pydantic's ValidationError
        raise InvalidInput(f"Invalid filters: {exc}", attr="filters") from None
    return {k: v for k, v in value.items() if v is not None}


def dashboard_json(meta, row: dict, with_tiles: bool = True) -> dict:
    out = dict(row)
    tiles = meta.dashboard_tiles(row["id"])
    out["tile_count"] = len(tiles)
    if with_tiles:
        out["tiles"] = tiles
    return out


async def dashboard_collection(request: Request) -> Response:
    try:
        require_api_key(request)
        core = request.app.state.core
        meta = core.meta
        project = core.resolve_project(request.path_params["project_id"])
        if request.method == "GET":
            rows = [dashboard_json(meta, r, with_tiles=False) for r in meta.dashboard_rows(project.id)]
            return json_response({"count": len(rows), "results": rows})
        payload = await read_json_object(request, BODY_LIMIT)
        unknown = set(payload) - {"name", "description", "filters", "pinned"}
        if unknown:
            raise InvalidInput(f"Unknown dashboard fields: {', '.join(sorted(unknown))}.", attr=sorted(unknown)[0])
        name = _text(payload, "name", required=True)
        description = _text(payload, "description", max_len=4000) or ""
        filters = _filters(payload.get("filters", {}))
        pinned = payload.get("pinned", False)
        if not isinstance(pinned, bool):
            raise InvalidInput("pinned is true or false.", attr="pinned")
        did = meta.create_dashboard(project.id, name, description=description, filters=filters, pinned=pinned,
                                    created_by=_actor(request))
        return json_response(dashboard_json(meta, meta.dashboard_row(project.id, did)), status=201)
    except SightlineError as exc:
        return error_response(exc)


async def dashboard_item(request: Request) -> Response:
    try:
        require_api_key(request)
        core = request.app.state.core
        meta = core.meta
        project = core.resolve_project(request.path_params["project_id"])
        did = int(request.path_params["dashboard_id"])
        row = meta.dashboard_row(project.id, did)
        if row is None:
            raise NotFound(f"Dashboard {did} does not exist.")
        if request.method == "GET":
            return json_response(dashboard_json(meta, row))
        if request.method == "DELETE":
            meta.update_dashboard(did, deleted=True)
            return Response(status_code=204)
        payload = await read_json_object(request, BODY_LIMIT)
        unknown = set(payload) - {"name", "description", "filters", "pinned", "tiles", "deleted"}
        if unknown:
            raise InvalidInput(f"Unknown dashboard fields: {', '.join(sorted(unknown))}.", attr=sorted(unknown)[0])
        name = _text(payload, "name", required="name" in payload)
        description = _text(payload, "description", max_len=4000)
        filters = _filters(payload["filters"]) if "filters" in payload else None
        for key in ("pinned", "deleted"):
            if key in payload and not isinstance(payload[key], bool):
                raise InvalidInput(f"{key} is true or false.", attr=key)
        tiles = payload.get("tiles")
        if tiles is not None:
            if not isinstance(tiles, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tiles):
                raise InvalidInput("tiles is the list of insight ids on the dashboard, in order.", attr="tiles")
            for iid in tiles:
                if meta.insight_row(project.id, iid) is None:
                    raise InvalidInput(f"Insight {iid} does not exist.", attr="tiles")
        meta.update_dashboard(did, name=name, description=description, filters=filters,
                              pinned=payload.get("pinned"), deleted=payload.get("deleted"))
        if tiles is not None:
            current = {t["insight"]["id"] for t in meta.dashboard_tiles(did)}
            for iid in current - set(tiles):
                meta.remove_dashboard_tile(did, iid)
            for iid in tiles:
                if iid not in current:
                    meta.set_insight_dashboards(iid, sorted(set(meta.insight_row(project.id, iid)["dashboards"]) | {did}))
            meta.reorder_dashboard_tiles(did, list(dict.fromkeys(tiles)))
        if payload.get("deleted"):
            return json_response({**row, "deleted": True})
        return json_response(dashboard_json(meta, meta.dashboard_row(project.id, did)))
    except SightlineError as exc:
        return error_response(exc)


# -- the default dashboard -----------------------------------------------------------------------
DEFAULT_DASHBOARD = "Product overview"


def default_insights() -> list[tuple[str, str, dict]]:
    """(name, description, query) of the "Product overview" tiles (events of the demo product,
    and of most products: $pageview, signed_up, purchase, the new-checkout experiment)."""
    pageview = {"kind": "EventsNode", "event": "$pageview", "name": "$pageview"}
    return [
        ("Daily active users", "Unique persons with a pageview each day.",
         {"kind": "TrendsQuery", "series": [{**pageview, "math": "dau"}], "interval": "day",
          "dateRange": {"date_from": "-30d"}, "trendsFilter": {"display": "ActionsLineGraph"}}),
        ("Sign-ups last 7 days", "How many signed up in the last 7 days.",
         {"kind": "TrendsQuery", "series": [{"kind": "EventsNode", "event": "signed_up", "name": "signed_up"}],
          "interval": "day", "dateRange": {"date_from": "-7d"}, "trendsFilter": {"display": "BoldNumber"}}),
        ("Sign-up funnel", "Visitors who signed up, and then bought.",
         {"kind": "FunnelsQuery", "series": [pageview,
                                             {"kind": "EventsNode", "event": "signed_up", "name": "signed_up"},
                                             {"kind": "EventsNode", "event": "purchase", "name": "purchase"}],
          "dateRange": {"date_from": "-30d"},
          "funnelsFilter": {"funnelWindowInterval": 14, "funnelWindowIntervalUnit": "day"}}),
        ("Retention after sign-up", "Of those who signed up each week, how many came back.",
         {"kind": "RetentionQuery",
          "retentionFilter": {"targetEntity": {"id": "signed_up", "name": "signed_up", "type": "events"},
                              "returningEntity": {"id": "$pageview", "name": "$pageview", "type": "events"},
                              "period": "Week", "totalIntervals": 8,
                              "retentionType": "retention_first_time"}}),
        ("Top pages", "Pageviews by path over the last 7 days.",
         {"kind": "TrendsQuery", "series": [pageview], "interval": "day", "dateRange": {"date_from": "-7d"},
          "breakdownFilter": {"breakdown_type": "event", "breakdown": "$pathname", "breakdown_limit": 10,
                              "breakdown_hide_other_aggregation": True},
          "trendsFilter": {"display": "ActionsBarValue"}}),
        ("New checkout: purchase conversion by variant",
         "Users who saw the billing page (new-checkout flag) and then purchased, per variant.",
         {"kind": "FunnelsQuery",
          "series": [{"kind": "EventsNode", "event": "$feature_flag_called", "name": "$feature_flag_called",
                      "properties": [{"key": "$feature_flag", "value": "new-checkout", "operator": "exact",
                                      "type": "event"}]},
                     {"kind": "EventsNode", "event": "purchase", "name": "purchase"}],
          "dateRange": {"date_from": "-90d"},
          "breakdownFilter": {"breakdown_type": "event", "breakdown": "$feature_flag_response"},
          "funnelsFilter": {"funnelWindowInterval": 30, "funnelWindowIntervalUnit": "day"}}),
    ]


def ensure_default_dashboard(core) -> int | None:
    """Create "Product overview" the first time a project is served (never again once any
    dashboard existed, so deleting it sticks)."""
    project = core.project
    if project is None or core.meta.dashboards_ever_created(project.id):
        return None
    meta = core.meta
    did = meta.create_dashboard(project.id, DEFAULT_DASHBOARD, pinned=True,
                                description="Created by Sightline on first start: edit or delete it freely.",
                                filters={}, created_by="sightline")
    for name, description, query in default_insights():
        iid = meta.create_insight(project.id, name, query, description=description, created_by="sightline")
        meta.set_insight_dashboards(iid, [did])
    log.info("created the default dashboard %r", DEFAULT_DASHBOARD)
    return did
