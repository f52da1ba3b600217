"""The ``sessions`` relation: one row per ``$session_id`` of a project, derived from its events.

Field semantics follow PostHog's sessions table (v3; see the analytics spec §8):

* ``$start_timestamp`` / ``$end_timestamp``: first and last event of the session (any event);
  ``$session_duration`` is the number of whole-second boundaries between them (ClickHouse's
  ``dateDiff('second', start, end)``, DuckDB's ``date_diff``).
* ``$entry_current_url`` / ``$end_current_url``: the ``$current_url`` of the first / last event
  that has one, ``$pageview`` and ``$screen`` events taking precedence over every other event
  (PostHog shifts the other events' timestamps by a year for this ordering; so do we). The
  ``*_pathname`` columns are the path of those URLs (no query string or fragment; ``/`` for a
  bare host).
* ``$entry_referring_domain`` and ``$entry_utm_*``, ``$entry_gclid``, ``$entry_fbclid``: the
  first non-empty value, with the same pageview/screen precedence.
* ``$pageview_count``, ``$autocapture_count``, ``$screen_count``: events of each kind.
* ``$is_bounce`` (v3 rule): NULL when the session has no pageview, screen or autocapture event
  (such sessions are left out of a bounce rate); false when it has more than one of them, or
  lasted at least ``bounce_seconds`` (10 s by default); otherwise true.
* ``distinct_id`` and ``person_id`` are those of the session's first event, the person resolved
  through the merge overrides (so a session that started anonymously belongs to the person the
  visitor was later identified as). PostHog takes the *last* distinct_id; with overrides applied
  both ends normally resolve to the same person.

Events without a ``$session_id`` (or with an empty one) belong to no session. PostHog also drops
custom session ids that are not UUIDv7s consistent with the session's time span; that rule is
available as ``require_uuid7=True`` and off by default, because server-side SDK users often send
their own ids.

Both builders return a plain ``SELECT`` (no trailing semicolon) that reads ``main.*`` relations and
binds the project id as the named parameter given (``$project`` by default), so it can be used as
a CTE, a subquery, or on its own::

    storage.execute(f"WITH sessions AS ({sessions_sql()}) SELECT avg(\\"$session_duration\\") "
                    "FROM sessions", {"project": 1})
"""

from __future__ import annotations

import re

from sightline.storage.schema import GROUP_COLUMNS, HOT_PROPERTIES

# Columns of the project-scoped events relation, in order (person_id is the current person).
EVENT_COLUMNS: tuple[str, ...] = (
    "uuid", "event", "distinct_id", "person_id", "timestamp", "created_at", "session_id",
    "window_id", "properties", "elements_chain", *GROUP_COLUMNS)

SESSION_COLUMNS: tuple[str, ...] = (
    "session_id", "distinct_id", "person_id", "$start_timestamp", "$end_timestamp",
    "$session_duration", "$entry_current_url", "$end_current_url", "$entry_pathname",
    "$end_pathname", "$entry_referring_domain", "$entry_utm_source", "$entry_utm_medium",
    "$entry_utm_campaign", "$entry_utm_term", "$entry_utm_content", "$entry_gclid",
    "$entry_fbclid", "$pageview_count", "$autocapture_count", "$screen_count", "$is_bounce")

DEFAULT_BOUNCE_SECONDS = 10
MAX_SESSION_HOURS = 24  # a session never spans more than this (the SDKs rotate the id)

_PARAM_RE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")


def _param(name: str) -> str:
    """Only ``$name`` placeholders go into SQL text (the values are bound)."""
    if not _PARAM_RE.fullmatch(name):
        raise ValueError(f"not a named parameter: {name!r}")
    return name


def _prop_of(key: str, alias: str = "e", dialect=None) -> str:
    """Text of a top-level event property (materialized column when there is one).
    ``key`` is one of this module's constants, never user input."""
    col = HOT_PROPERTIES.get(key)
    if col is not None:
        return f"{alias}.{col}"
    assert re.fullmatch(r"[$A-Za-z0-9_]+", key), key
    if dialect is not None and dialect.name != "duckdb":
        return f"JSONExtract({alias}.properties, '{key}', 'Nullable(String)')"
    return f"json_extract_string({alias}.properties, '/{key}')"


_prop = _prop_of


def _dialect(dialect):
    from sightline.query.dialect import DUCKDB

    return dialect or DUCKDB


def events_sql(project_param: str = "$project", *, materialized: bool = False, dialect=None) -> str:
    """Events of one project, ``person_id`` resolved through the merge overrides.

    Columns: :data:`EVENT_COLUMNS` (``project_id`` is not one); with ``materialized=True`` the
    materialized property columns (``mat_*``) follow, for builders that filter on them.
    """
    p = _param(project_param)
    cols = []
    for c in EVENT_COLUMNS:
        cols.append("coalesce(o.override_person_id, e.person_id) AS person_id" if c == "person_id"
                    else f"e.{c}")
    if materialized:
        cols += [f"e.{c}" for c in HOT_PROPERTIES.values()]
    schema = "main." if _dialect(dialect).name == "duckdb" else ""
    return (f"SELECT {', '.join(cols)} FROM {schema}events e "
            f"LEFT JOIN {schema}person_overrides o "
            f"ON o.project_id = e.project_id AND o.old_person_id = e.person_id "
            f"WHERE e.project_id = {p}")


def pathname_sql(url: str, dialect=None) -> str:
    """The path of a URL expression (ClickHouse ``path()``, but ``/`` for a bare host)."""
    d = _dialect(dialect)
    scheme = d.regexp_matches(url, "'^[A-Za-z][A-Za-z0-9+.-]*://'")
    after_host = d.regexp_extract(url, "'^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^?#]*)'", 1)
    before_query = d.regexp_extract(url, "'^([^?#]*)'", 1)
    return (f"CASE WHEN {url} IS NULL THEN NULL "
            f"WHEN {scheme} "
            f"THEN coalesce(nullif({after_host}, ''), '/') "
            f"ELSE {before_query} END")


def sessions_sql(project_param: str = "$project", *, bounce_seconds: int = DEFAULT_BOUNCE_SECONDS,
                 start_param: str | None = None, end_param: str | None = None,
                 require_uuid7: bool = False, dialect=None) -> str:
    """One row per session of the project: the columns of :data:`SESSION_COLUMNS`.

    ``start_param`` / ``end_param`` (optional, named parameters holding TIMESTAMPTZ values) keep
    only sessions that *start* in ``[start, end)`` and read only the events that can belong to
    them (sessions last at most 24 h), which is much cheaper than deriving every session.
    """
    d = _dialect(dialect)
    bounce = int(bounce_seconds)
    ev_where = ["e.session_id IS NOT NULL", "e.session_id <> ''"]
    having = []
    if start_param is not None:
        s = d.cast_instant(_param(start_param))
        ev_where.append(f"e.timestamp >= {s}")  # a session starting at/after start has no earlier event
        having.append(f"min(timestamp) >= {s}")
    if end_param is not None:
        t = d.cast_instant(_param(end_param))
        ev_where.append(f"e.timestamp < {t} + INTERVAL {MAX_SESSION_HOURS} HOUR")
        having.append(f"min(timestamp) < {t}")
    if require_uuid7:
        if d.name != "duckdb":
            raise ValueError("require_uuid7 is only implemented for DuckDB")
        sid = "TRY_CAST(session_id AS UUID)"
        having.append(f"{sid} IS NOT NULL AND uuid_extract_version({sid}) = 7 "
                      f"AND uuid_extract_timestamp({sid}) <= min(timestamp) "
                      f"AND uuid_extract_timestamp({sid}) + INTERVAL {MAX_SESSION_HOURS} HOUR > max(timestamp)")

    def _prop(key: str) -> str:
        return _prop_of(key, "e", d)

    url = f"nullif({_prop('$current_url')}, '')"
    per_event = (
        f"SELECT e.session_id, e.distinct_id, e.person_id, e.timestamp, e.event, "
        f"{url} AS _url, "
        f"nullif({_prop('$referring_domain')}, '') AS _referring_domain, "
        f"nullif({_prop('utm_source')}, '') AS _utm_source, "
        f"nullif({_prop('utm_medium')}, '') AS _utm_medium, "
        f"nullif({_prop('utm_campaign')}, '') AS _utm_campaign, "
        f"nullif({_prop('utm_term')}, '') AS _utm_term, "
        f"nullif({_prop('utm_content')}, '') AS _utm_content, "
        f"nullif({_prop('gclid')}, '') AS _gclid, "
        f"nullif({_prop('fbclid')}, '') AS _fbclid, "
        # pageviews and screens first: other events sort a year later (first) or earlier (last)
        f"CASE WHEN e.event IN ('$pageview', '$screen') THEN e.timestamp "
        f"ELSE e.timestamp + INTERVAL 1 YEAR END AS _prio_min, "
        f"CASE WHEN e.event IN ('$pageview', '$screen') THEN e.timestamp "
        f"ELSE e.timestamp - INTERVAL 1 YEAR END AS _prio_max "
        f"FROM ({events_sql(project_param, materialized=True, dialect=d)}) e "
        f"WHERE {' AND '.join(ev_where)}")

    def entry(col: str) -> str:
        return f"{d.arg_min(col, '_prio_min')} FILTER (WHERE {col} IS NOT NULL)"

    agg = (
        "SELECT session_id, "
        f"{d.arg_min('distinct_id', 'timestamp')} AS distinct_id, "
        f"{d.arg_min('person_id', 'timestamp')} AS person_id, "
        "min(timestamp) AS _start, max(timestamp) AS _end, "
        f"{entry('_url')} AS _entry_url, "
        f"{d.arg_max('_url', '_prio_max')} FILTER (WHERE _url IS NOT NULL) AS _end_url, "
        f"{entry('_referring_domain')} AS _referring_domain, "
        f"{entry('_utm_source')} AS _utm_source, {entry('_utm_medium')} AS _utm_medium, "
        f"{entry('_utm_campaign')} AS _utm_campaign, {entry('_utm_term')} AS _utm_term, "
        f"{entry('_utm_content')} AS _utm_content, {entry('_gclid')} AS _gclid, "
        f"{entry('_fbclid')} AS _fbclid, "
        "count(*) FILTER (WHERE event = '$pageview') AS _pageviews, "
        "count(*) FILTER (WHERE event = '$autocapture') AS _autocaptures, "
        "count(*) FILTER (WHERE event = '$screen') AS _screens "
        f"FROM ({per_event}) "
        "GROUP BY session_id"
        + (f" HAVING {' AND '.join(having)}" if having else ""))

    duration = d.seconds_between("_start", "_end")
    interactions = "(_pageviews + _autocaptures + _screens)"
    return (
        "SELECT session_id, distinct_id, person_id, "
        '_start AS "$start_timestamp", _end AS "$end_timestamp", '
        f'{duration} AS "$session_duration", '
        '_entry_url AS "$entry_current_url", _end_url AS "$end_current_url", '
        f'{pathname_sql("_entry_url", d)} AS "$entry_pathname", '
        f'{pathname_sql("_end_url", d)} AS "$end_pathname", '
        '_referring_domain AS "$entry_referring_domain", '
        '_utm_source AS "$entry_utm_source", _utm_medium AS "$entry_utm_medium", '
        '_utm_campaign AS "$entry_utm_campaign", _utm_term AS "$entry_utm_term", '
        '_utm_content AS "$entry_utm_content", _gclid AS "$entry_gclid", _fbclid AS "$entry_fbclid", '
        '_pageviews AS "$pageview_count", _autocaptures AS "$autocapture_count", '
        '_screens AS "$screen_count", '
        f"CASE WHEN {interactions} = 0 THEN NULL "
        f"WHEN {interactions} > 1 THEN false "
        f"WHEN {duration} >= {bounce} THEN false "
        'ELSE true END AS "$is_bounce" '
        f"FROM ({agg})")
