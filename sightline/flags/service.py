"""Feature flags of every project: definitions (hot, in memory), changes (versioned, audited) and
the evaluation of SDK requests.

Definitions are stored in the metadata SQLite (:class:`~sightline.meta.MetaStore`) and cached in
memory per project. Every change, by this process or another one (``sightline flags create`` while
the server runs), bumps a counter in the same transaction; :meth:`FlagService.sync` compares it
on each request (one indexed SELECT) and reloads when it moved.
"""

from __future__ import annotations

import getpass
import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from sightline.errors import InvalidInput, NotFound, SightlineError
from sightline.flags.cohorts import cohort_property_group, referenced_cohort_ids
from sightline.flags.evaluate import EvalContext, FlagResult, evaluate_all
from sightline.flags.validate import FilterContext, clean_flag
from sightline.meta import MetaStore

UTC = timezone.utc
MAX_DISTINCT_ID = 200


class Conflict(SightlineError):
    status = 409
    type = "invalid_request"
    code = "conflict"


def cli_actor() -> str:
    try:
        return f"cli ({getpass.getuser()})"
    except Exception:  # noqa: BLE001
        return "cli"


@dataclass
class ProjectFlags:
    """One project's definitions, as evaluation and the SDK payload need them."""

    rows: list[dict] = field(default_factory=list)            # stored rows, not deleted, by id
    flags: list[dict] = field(default_factory=list)           # definitions (PostHog shape), by id
    by_key: dict[str, dict] = field(default_factory=dict)
    cohorts: dict[int, dict] = field(default_factory=dict)
    static_members: dict[str, set[int]] = field(default_factory=dict)
    has_active: bool = False
    has_eec: bool = False
    definitions_cache: dict = field(default_factory=dict)


@dataclass
class FlagsRequest:
    """A ``/flags`` or ``/decide`` body with PostHog's aliases resolved (spec §2.3)."""

    token: str | None
    distinct_id: str
    person_properties: dict[str, Any]
    groups: dict[str, Any]
    group_properties: dict[str, dict[str, Any]]
    anon_distinct_id: str | None = None
    device_id: str | None = None
    flag_keys: list[str] | None = None
    disable_flags: bool = False


def _first(body: dict, *names: str) -> Any:
    for n in names:
        if n in body and body[n] is not None:
            return body[n]
    return None


def _dict_field(body: dict, attr: str, *names: str) -> dict:
    value = _first(body, *names)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"`{attr}` must be an object.", code="invalid_payload", attr=attr)
    return value


def _id_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)[:MAX_DISTINCT_ID]


def parse_flags_request(body: Any, query_token: str | None = None) -> FlagsRequest:
    if not isinstance(body, dict):
        raise InvalidInput("The flags request body must be a JSON object.", code="invalid_payload")
    token = _first(body, "token", "$token", "api_key") or query_token
    distinct_id = _id_string(_first(body, "distinct_id", "$distinct_id"))
    if distinct_id is None:
        raise InvalidInput("The flags request needs a `distinct_id`.", code="missing_distinct_id",
                           attr="distinct_id")
    group_props = _dict_field(body, "group_properties", "group_properties", "$group_properties")
    keys = _first(body, "flag_keys_to_evaluate", "flag_keys")
    if keys is not None and (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)):
        raise InvalidInput("`flag_keys_to_evaluate` must be a list of flag keys.", code="invalid_payload",
                           attr="flag_keys_to_evaluate")
    return FlagsRequest(
        token=token if isinstance(token, str) else None,
        distinct_id=distinct_id,
        person_properties=_dict_field(body, "person_properties", "person_properties", "$properties"),
        groups=_dict_field(body, "groups", "groups", "$groups"),
        group_properties={k: v for k, v in group_props.items() if isinstance(v, dict)},
        anon_distinct_id=_id_string(_first(body, "$anon_distinct_id", "anon_distinct_id")) or None,
        device_id=_id_string(_first(body, "$device_id", "device_id")) or None,
        flag_keys=keys,
        disable_flags=body.get("disable_flags") is True)


def _populate_initial(props: dict) -> None:
    """The server fills a missing ``$initial_X`` from ``X``."""
    for k in [k for k in props if k.startswith("$") and not k.startswith("$initial_")]:
        props.setdefault("$initial_" + k[1:], props[k])


class FlagService:
    def __init__(self, meta: MetaStore, identity: Callable[[], Any] | None = None,
                 behavioral_members: Callable[[int, list[int]], dict[str, set[int]]] | None = None,
                 behavioral_ttl: float = 60.0) -> None:
        self.meta = meta
        self._identity = identity or (lambda: None)
        # distinct id → behavioural cohorts it is in, computed over events by the query engine
        self._behavioral_members = behavioral_members
        self.behavioral_ttl = behavioral_ttl
        self._behavioral_cache: dict[int, tuple[float, int, dict[str, set[int]]]] = {}
        self._version = -1
        self._projects: dict[int, ProjectFlags] = {}
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self.check_interval = 0.0  # seconds between version checks (0: every request)

    # -- the in-memory cache ------------------------------------------------------------------
    def sync(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_interval:
            return
        self._checked_at = now
        version = self.meta.flags_version()
        if version != self._version or force:
            with self._lock:
                self._load(version)

    def _load(self, version: int) -> None:
        projects: dict[int, ProjectFlags] = {}
        for row in self.meta.flag_rows(None):
            pf = projects.setdefault(row["project_id"], ProjectFlags())
            pf.rows.append(row)
            flag = self.definition(row)
            pf.flags.append(flag)
            pf.by_key[flag["key"]] = flag
            pf.has_active |= flag["active"]
            pf.has_eec |= bool(flag["active"] and flag["ensure_experience_continuity"]
                               and flag["filters"].get("aggregation_group_type_index") is None)
        for cohort in self.meta.cohort_rows(None):
            pf = projects.setdefault(cohort["project_id"], ProjectFlags())
            pf.cohorts[cohort["id"]] = cohort
        for pid, pf in projects.items():
            if any(c["is_static"] for c in pf.cohorts.values()):
                pf.static_members = self.meta.static_cohort_members(pid)
        self._projects = projects
        self._version = version

    def project(self, project_id: int) -> ProjectFlags:
        self.sync()
        return self._projects.get(project_id) or ProjectFlags()

    def has_active_flags(self, project_id: int) -> bool:
        return self.project(project_id).has_active

    # -- shapes -------------------------------------------------------------------------------
    @staticmethod
    def definition(row: dict) -> dict:
        """The flag as the SDKs' local evaluation and :func:`evaluate_flag` read it."""
        d = row["data"]
        out = {"id": row["id"], "team_id": row["project_id"], "name": d.get("name") or "",
               "key": row["key"], "active": bool(d.get("active", True)), "deleted": row["deleted"],
               "ensure_experience_continuity": bool(d.get("ensure_experience_continuity")),
               "version": row["version"], "filters": d.get("filters") or {"groups": []},
               "evaluation_runtime": d.get("evaluation_runtime") or "all",
               "has_encrypted_payloads": False}
        if d.get("bucketing_identifier"):
            out["bucketing_identifier"] = d["bucketing_identifier"]
        return out

    @staticmethod
    def to_api(row: dict) -> dict:
        """The management API's representation of a flag."""
        d = row["data"]
        filters = d.get("filters") or {}
        groups = filters.get("groups") or []
        simple = (len(groups) == 1 and not groups[0].get("properties")
                  and filters.get("aggregation_group_type_index") is None)
        return {"id": row["id"], "team_id": row["project_id"], "key": row["key"],
                "name": d.get("name") or "", "description": d.get("description"),
                "filters": filters, "active": bool(d.get("active", True)), "deleted": row["deleted"],
                "ensure_experience_continuity": bool(d.get("ensure_experience_continuity")),
                "version": row["version"], "tags": d.get("tags") or [],
                "evaluation_runtime": d.get("evaluation_runtime") or "all",
                "bucketing_identifier": d.get("bucketing_identifier"),
                "is_simple_flag": simple,
                "rollout_percentage": groups[0].get("rollout_percentage") if simple else None,
                "created_at": row["created_at"], "created_by": row["created_by"],
                "updated_at": row["updated_at"], "last_modified_by": row["updated_by"]}

    # -- management -----------------------------------------------------------------------------
    def list_flags(self, project_id: int) -> list[dict]:
        return [self.to_api(r) for r in self.meta.flag_rows(project_id)]

    def _row(self, project_id: int, flag_id: Any) -> dict:
        try:
            fid = int(flag_id)
        except (TypeError, ValueError):
            fid = None
        row = self.meta.flag_row(project_id, fid) if fid is not None else None
        if row is None:
            raise NotFound(f"Feature flag {flag_id} does not exist.")
        return row

    def get_flag(self, project_id: int, flag_id: Any) -> dict:
        return self.to_api(self._row(project_id, flag_id))

    def row_by_key(self, project_id: int, key: str) -> dict:
        for row in self.meta.flag_rows(project_id):
            if row["key"] == key:
                return row
        raise NotFound(f"No feature flag has the key {key!r}.")

    def _filter_context(self, project_id: int, rows: list[dict], this_id: int | None) -> FilterContext:
        by_key = {r["key"]: r for r in rows if r["id"] != this_id}
        by_id = {r["id"]: r for r in rows if r["id"] != this_id}
        cohorts = {c["id"] for c in self.meta.cohort_rows(project_id) if not c["deleted"]}

        def flag_key_of(ref: Any) -> str | None:
            if isinstance(ref, str) and ref in by_key:
                return ref
            try:
                row = by_id.get(int(ref))
            except (TypeError, ValueError):
                row = None
            return row["key"] if row else None

        return FilterContext(flag_key_of, lambda cid: cid in cohorts)

    @staticmethod
    def _check_cycles(key: str, doc: dict, rows: list[dict], this_id: int | None) -> None:
        deps = {r["key"]: _flag_dependencies(r["data"].get("filters") or {}) for r in rows
                if r["id"] != this_id}
        deps[key] = _flag_dependencies(doc.get("filters") or {})
        if _dependency_chain(key, deps) == [] and deps[key]:
            raise InvalidInput(f"Flag {key!r} would depend on itself through its flag dependencies.",
                               code="circular_dependency", attr="filters")

    def _api_snapshot(self, key: str, doc: dict, row: dict | None) -> dict:
        base = {"key": key, "name": doc.get("name"), "active": doc.get("active"),
                "filters": doc.get("filters"),
                "ensure_experience_continuity": doc.get("ensure_experience_continuity")}
        if row is not None:
            base["deleted"] = row["deleted"]
        return base

    def create_flag(self, project_id: int, data: Any, actor: str | None) -> dict:
        rows = self.meta.flag_rows(project_id)
        key, doc = clean_flag(data, existing=None, ctx=self._filter_context(project_id, rows, None))
        if any(r["key"] == key for r in rows):
            raise InvalidInput(f"There is already a feature flag with the key {key!r}.", code="unique",
                               attr="key")
        self._check_cycles(key, doc, rows, None)
        try:
            flag_id = self.meta.insert_flag(project_id, key, doc, actor,
                                            {**self._api_snapshot(key, doc, None), "deleted": False})
        except Exception as exc:  # the unique index, if another process won the race
            if "UNIQUE" in str(exc):
                raise InvalidInput(f"There is already a feature flag with the key {key!r}.",
                                   code="unique", attr="key") from None
            raise
        self.sync(force=True)
        return self.get_flag(project_id, flag_id)

    def update_flag(self, project_id: int, flag_id: Any, data: Any, actor: str | None) -> dict:
        row = self._row(project_id, flag_id)
        if row["deleted"] and not (isinstance(data, dict) and data.get("deleted") is False):
            raise NotFound(f"Feature flag {flag_id} was deleted.")
        if isinstance(data, dict) and "version" in data and data["version"] != row["version"]:
            raise Conflict(f"Feature flag {row['id']} is at version {row['version']}, not "
                           f"{data['version']}: someone changed it meanwhile. Reload and retry.",
                           attr="version")
        deleted = row["deleted"]
        if isinstance(data, dict) and "deleted" in data:
            if not isinstance(data["deleted"], bool):
                raise InvalidInput("`deleted` must be true or false.", attr="deleted")
            deleted = data["deleted"]
        rows = self.meta.flag_rows(project_id)
        key, doc = clean_flag(data, existing=row, ctx=self._filter_context(project_id, rows, row["id"]))
        if not deleted and any(r["key"] == key and r["id"] != row["id"] for r in rows):
            raise InvalidInput(f"There is already a feature flag with the key {key!r}.", code="unique",
                               attr="key")
        if not deleted:
            self._check_cycles(key, doc, rows, row["id"])
        action = ("deleted" if deleted and not row["deleted"] else
                  "restored" if row["deleted"] and not deleted else "updated")
        before = self._api_snapshot(row["key"], row["data"], row)
        after = {**self._api_snapshot(key, doc, row), "deleted": deleted}
        version = self.meta.update_flag(project_id, row["id"], key=key, data=doc, deleted=deleted,
                                        expected_version=row["version"], action=action, actor=actor,
                                        before=before, after=after)
        if not version:
            raise Conflict(f"Feature flag {row['id']} changed while it was being updated; retry.")
        self.sync(force=True)
        return self.get_flag(project_id, row["id"])

    def delete_flag(self, project_id: int, flag_id: Any, actor: str | None) -> dict:
        return self.update_flag(project_id, flag_id, {"deleted": True}, actor)

    def activity(self, project_id: int, flag_id: Any) -> list[dict]:
        row = self._row(project_id, flag_id)
        out = []
        for a in self.meta.flag_activity(project_id, row["id"]):
            before, after = a["before"] or {}, a["after"] or {}
            changes = [{"field": k, "before": before.get(k), "after": after.get(k)}
                       for k in ("key", "name", "active", "filters", "ensure_experience_continuity", "deleted")
                       if before.get(k) != after.get(k) and (a["before"] is not None)]
            out.append({"id": a["id"], "activity": a["action"], "version": a["version"],
                        "user": {"label": a["actor"]}, "created_at": a["at"],
                        "detail": {"before": a["before"], "after": a["after"], "changes": changes}})
        return out

    # -- cohorts (minimal; the query engine extends them) ------------------------------------
    def create_cohort(self, project_id: int, name: str, filters: dict | None = None, *,
                      is_static: bool = False, members: list[str] | None = None) -> int:
        cid = self.meta.create_cohort(project_id, name, filters, is_static=is_static, members=members)
        self.sync(force=True)
        return cid

    # -- evaluation -----------------------------------------------------------------------------
    def context(self, project_id: int, req: FlagsRequest, pf: ProjectFlags | None = None,
                now: datetime | None = None) -> EvalContext:
        pf = pf or self.project(project_id)
        identity = self._identity()
        stored: dict = {}
        distinct_ids = [req.distinct_id]
        mapping: dict[str, int] = {}
        if identity is not None:
            person = identity.person_for(project_id, req.distinct_id)
            if person is not None:
                stored = dict(person.properties)
                distinct_ids = list(dict.fromkeys([req.distinct_id, *list(person.distinct_ids)]))
            mapping = dict(identity.group_types.get(project_id) or {})
        props = {**stored, **req.person_properties}
        _populate_initial(props)
        group_props: dict[str, dict] = {}
        for name, key in req.groups.items():
            gstored: dict = {}
            idx = mapping.get(name)
            if identity is not None and idx is not None and key is not None:
                group = identity.groups.get((project_id, idx, _id_string(key)))
                if group is not None:
                    gstored = dict(group.properties)
            group_props[name] = {**gstored, **(req.group_properties.get(name) or {})}
        static: set[int] = set()
        if pf.static_members:
            for d in distinct_ids:
                static |= pf.static_members.get(d, set())
        computed = self.computed_members(project_id, pf)
        if computed:
            for d in distinct_ids:
                static |= computed.get(d, set())
        overrides: dict[str, str] = {}
        if pf.has_eec:
            overrides = self._hash_key_overrides(project_id, pf, req, distinct_ids)
        return EvalContext(
            distinct_id=req.distinct_id, person_properties=props, groups=req.groups,
            group_properties=group_props, group_type_mapping={i: n for n, i in mapping.items()},
            cohorts=pf.cohorts, static_cohorts=frozenset(static), flags_by_key=pf.by_key,
            device_id=req.device_id, anon_distinct_id=req.anon_distinct_id,
            hash_key_overrides=overrides, now=now or datetime.now(UTC))

    def computed_members(self, project_id: int, pf: ProjectFlags) -> dict[str, set[int]]:
        """Membership of the project's behavioural cohorts, recomputed at most every ``behavioral_ttl`` s."""
        from sightline.flags.cohorts import has_behavioral

        if self._behavioral_members is None:
            return {}
        ids = sorted(cid for cid, c in pf.cohorts.items() if not c.get("deleted") and not c.get("is_static")
                     and has_behavioral(c))
        if not ids:
            return {}
        cached = self._behavioral_cache.get(project_id)
        now = time.monotonic()
        if cached and cached[1] == self._version and now - cached[0] < self.behavioral_ttl:
            return cached[2]
        try:
            members = self._behavioral_members(project_id, ids)
        except Exception:  # a failing query must not break flag evaluation: no one matches
            members = {}
        self._behavioral_cache[project_id] = (now, self._version, members)
        return members

    def _hash_key_overrides(self, project_id: int, pf: ProjectFlags, req: FlagsRequest,
                            distinct_ids: list[str]) -> dict[str, str]:
        lookup = list(distinct_ids)
        if req.anon_distinct_id and req.anon_distinct_id not in lookup:
            lookup.append(req.anon_distinct_id)
        overrides = self.meta.hash_key_overrides(project_id, lookup)
        anon = req.anon_distinct_id
        if anon and anon != req.distinct_id:
            missing = {f["key"]: anon for f in pf.flags
                       if f["active"] and f["ensure_experience_continuity"]
                       and f["filters"].get("aggregation_group_type_index") is None
                       and f["key"] not in overrides}
            if missing:
                self.meta.set_hash_key_overrides(project_id, [req.distinct_id, anon], missing)
                overrides.update(missing)
        return overrides

    def evaluate(self, project_id: int, req: FlagsRequest,
                 now: datetime | None = None) -> tuple[dict[str, FlagResult], bool]:
        """Every flag (or ``req.flag_keys``) for one request → (results by key, errors?)."""
        pf = self.project(project_id)
        if req.disable_flags or not pf.flags:
            return {}, False
        ctx = self.context(project_id, req, pf, now)
        keys = set(req.flag_keys) if req.flag_keys is not None else None
        return evaluate_all(pf.flags, ctx, keys)

    # -- the SDKs' local-evaluation payload ------------------------------------------------------
    def definitions(self, project_id: int, send_cohorts: bool) -> tuple[bytes, str]:
        """(JSON body, ETag) of ``/flags/definitions`` (spec §5.4)."""
        pf = self.project(project_id)
        identity = self._identity()
        mapping = dict(identity.group_types.get(project_id) or {}) if identity is not None else {}
        cache_key = (send_cohorts, tuple(sorted(mapping.items())))
        cached = pf.definitions_cache.get(cache_key)
        if cached is not None:
            return cached
        deps = {f["key"]: _flag_dependencies(f["filters"]) for f in pf.flags}
        flags = []
        for flag in pf.flags:
            flag = _with_dependency_chains(flag, deps)
            if not send_cohorts:
                flag = _inline_cohorts(flag, pf.cohorts)
            flags.append(flag)
        body: dict[str, Any] = {"flags": flags,
                                "group_type_mapping": {str(i): n for n, i in mapping.items()},
                                "cohorts": {}}
        if send_cohorts:
            body["cohorts"] = {str(cid): cohort_property_group(pf.cohorts[cid].get("filters"))
                               for cid in sorted(_dynamic_cohorts(pf.flags, pf.cohorts))}
        raw = orjson.dumps(body)
        etag = '"' + hashlib.sha1(raw).hexdigest() + '"'
        pf.definitions_cache[cache_key] = (raw, etag)
        return raw, etag

    def remote_config_payload(self, project_id: int, key: str) -> Any:
        pf = self.project(project_id)
        flag = pf.by_key.get(key)
        if flag is None:
            raise NotFound(f"No feature flag has the key {key!r}.")
        if not flag["active"]:
            return None
        return (flag["filters"].get("payloads") or {}).get("true")


# -- helpers for the definitions payload ---------------------------------------------------------

def _flag_dependencies(filters: dict) -> list[str]:
    out = []
    for cond in (filters.get("groups") or []):
        for p in (cond.get("properties") or []) if isinstance(cond, dict) else []:
            if isinstance(p, dict) and p.get("type") == "flag" and p.get("key") is not None:
                out.append(str(p["key"]))
    return out


def _dependency_chain(key: str, deps: dict[str, list[str]]) -> list[str]:
    """Flags to evaluate before ``key`` (dependencies first, ``key`` last); [] if circular."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(k: str) -> bool:
        if state.get(k) == 2:
            return True
        if state.get(k) == 1:
            return False
        state[k] = 1
        for d in deps.get(k, []):
            if not visit(d):
                return False
        state[k] = 2
        order.append(k)
        return True

    return order if visit(key) else []


def _with_dependency_chains(flag: dict, deps: dict[str, list[str]]) -> dict:
    if not deps.get(flag["key"]):
        return flag
    groups = []
    for cond in flag["filters"].get("groups") or []:
        props = []
        for p in cond.get("properties") or []:
            if isinstance(p, dict) and p.get("type") == "flag":
                p = {**p, "dependency_chain": _dependency_chain(str(p.get("key")), deps)}
            props.append(p)
        groups.append({**cond, "properties": props})
    return {**flag, "filters": {**flag["filters"], "groups": groups}}


def _dynamic_cohorts(flags: list[dict], cohorts: dict[int, dict]) -> set[int]:
    todo = set()
    for f in flags:
        for cond in f["filters"].get("groups") or []:
            todo |= referenced_cohort_ids(cond.get("properties") or [])
    seen: set[int] = set()
    while todo:
        cid = todo.pop()
        if cid in seen:
            continue
        seen.add(cid)
        c = cohorts.get(cid)
        if c is not None and not c["is_static"] and not c["deleted"]:
            todo |= referenced_cohort_ids(cohort_property_group(c.get("filters")))
    return {cid for cid in seen if cid in cohorts and not cohorts[cid]["is_static"]
            and not cohorts[cid]["deleted"]}


def _inline_cohorts(flag: dict, cohorts: dict[int, dict]) -> dict:
    """Without ``send_cohorts``: a cohort filter whose cohort is one AND group of person property
    filters is replaced by those filters (older SDKs cannot read cohorts)."""
    changed = False
    groups = []
    for cond in flag["filters"].get("groups") or []:
        props = []
        for p in cond.get("properties") or []:
            if isinstance(p, dict) and p.get("type") == "cohort" and (p.get("operator") or "in") != "not_in":
                leaves = _flat_cohort(cohorts.get(_int(p.get("value"))))
                if leaves is not None:
                    props.extend(leaves)
                    changed = True
                    continue
            props.append(p)
        groups.append({**cond, "properties": props})
    return {**flag, "filters": {**flag["filters"], "groups": groups}} if changed else flag


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _flat_cohort(cohort: dict | None) -> list[dict] | None:
    if cohort is None or cohort["is_static"] or cohort["deleted"]:
        return None
    group = cohort_property_group(cohort.get("filters"))
    values = group.get("values") or []
    if group.get("type") == "OR" and len(values) == 1 and isinstance(values[0], dict) \
            and values[0].get("type") in ("AND", "OR") and "values" in values[0]:
        group = values[0]
        values = group.get("values") or []
    if group.get("type") != "AND" and len(values) > 1:
        return None
    if not values or not all(isinstance(v, dict) and (v.get("type") or "person") == "person"
                             and "values" not in v and not v.get("negation") for v in values):
        return None
    return values
