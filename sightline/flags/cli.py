"""`sightline flags list|create|update|delete`: manage feature flags from the shell.

The commands open only the data directory's metadata store (SQLite), so they work while
`sightline serve` runs; the server picks the change up on its next request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sightline.cli_common import DATA_DIR
from sightline.cli_common import fail as _fail
from sightline.errors import InvalidInput, SightlineError

PROJECT = click.option("--project", "project_id", type=int, default=None,
                       help="Project id (default: the first project).")


def _open(data_dir: Path, project_id: int | None):
    from sightline.flags.service import FlagService
    from sightline.meta import MetaStore

    path = data_dir / "meta.sqlite"
    if not path.exists():
        _fail(InvalidInput(f"{data_dir} is not a Sightline data directory (no meta.sqlite); "
                           "run `sightline serve` once to create it."))
    meta = MetaStore(path)
    project = meta.project(project_id) if project_id is not None else meta.default_project()
    if project is None:
        meta.close()
        _fail(InvalidInput(f"Project {project_id} does not exist." if project_id else
                           "This data directory has no project yet."))
    return meta, FlagService(meta), project.id


def parse_variants(text: str) -> list[dict]:
    """``control:50,test:50`` → multivariate variants."""
    out = []
    for i, part in enumerate(p for p in text.split(",") if p.strip()):
        key, sep, pct = part.strip().rpartition(":")
        if not sep or not key:
            raise InvalidInput(f"--variants: {part!r} is not KEY:PERCENT (e.g. control:50,test:50).",
                               attr="variants")
        try:
            value: Any = float(pct)
        except ValueError:
            raise InvalidInput(f"--variants: {pct!r} is not a number.", attr="variants") from None
        out.append({"key": key, "name": key, "rollout_percentage": int(value) if value.is_integer() else value})
    if not out:
        raise InvalidInput("--variants needs at least one KEY:PERCENT.", attr="variants")
    return out


def _parse_payloads(values: tuple[str, ...], variant_keys: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in values:
        name, sep, rest = raw.partition("=")
        if sep and name in variant_keys | {"true"}:
            target, text = name, rest
        else:
            target, text = "true", raw
        try:
            out[target] = json.loads(text)
        except json.JSONDecodeError:
            out[target] = text  # a plain string payload
    return out


def _build(existing: dict | None, *, name: str | None, rollout: float | None, variants: str | None,
           payloads: tuple[str, ...], filters_json: Path | None, active: bool | None,
           eec: bool | None) -> dict:
    data: dict[str, Any] = {}
    filters = dict((existing or {}).get("filters") or {}) if existing else None
    if filters_json is not None:
        try:
            loaded = json.loads(filters_json.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"--filters-json {filters_json}: {exc}", attr="filters") from None
        filters = loaded.get("filters", loaded) if isinstance(loaded, dict) else loaded
    if rollout is not None:
        rollout = int(rollout) if float(rollout).is_integer() else rollout
        if filters is None or not filters.get("groups"):
            filters = {**(filters or {}), "groups": [{"properties": [], "rollout_percentage": rollout}]}
        else:
            filters = {**filters, "groups": [{**g, "rollout_percentage": rollout} for g in filters["groups"]]}
    if variants is not None:
        filters = {**(filters or {"groups": [{"properties": [], "rollout_percentage": 100}]}),
                   "multivariate": {"variants": parse_variants(variants)} if variants.strip() else None}
    if payloads:
        base = filters if filters is not None else {"groups": [{"properties": [], "rollout_percentage": 100}]}
        keys = {v["key"] for v in ((base.get("multivariate") or {}).get("variants") or [])}
        filters = {**base, "payloads": {**(base.get("payloads") or {}), **_parse_payloads(payloads, keys)}}
    if filters is not None:
        data["filters"] = filters
    if name is not None:
        data["name"] = name
    if active is not None:
        data["active"] = active
    if eec is not None:
        data["ensure_experience_continuity"] = eec
    return data


def _summary(flag: dict) -> str:
    f = flag["filters"]
    variants = (f.get("multivariate") or {}).get("variants") or []
    groups = f.get("groups") or []
    rollout = ", ".join("all" if g.get("rollout_percentage") is None else f"{g['rollout_percentage']:g}%"
                        + (" if " + str(len(g.get("properties") or [])) + " filters" if g.get("properties") else "")
                        for g in groups) or "no conditions"
    v = " variants " + ",".join(f"{x['key']}:{x['rollout_percentage']:g}" for x in variants) if variants else ""
    state = "on " if flag["active"] else "off"
    return f"{flag['id']:>5}  {state}  v{flag['version']:<3} {flag['key']}  [{rollout}]{v}"


FLAG_OPTIONS = [
    click.option("--name", default=None, help="Human name / description."),
    click.option("--rollout", type=click.FloatRange(0, 100), default=None,
                 help="Rollout percentage (of everyone, or of every condition group)."),
    click.option("--variants", default=None, help="Multivariate: KEY:PERCENT,... summing to 100 "
                                                  "(e.g. control:50,test:50; '' removes them)."),
    click.option("--payload", "payloads", multiple=True,
                 help="JSON payload for `true`, or VARIANT=JSON for a variant (repeatable)."),
    click.option("--filters-json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 default=None, help="A file with the flag's `filters` (PostHog shape)."),
    click.option("--active/--inactive", default=None, help="Switch the flag on or off."),
    click.option("--experience-continuity/--no-experience-continuity", "eec", default=None,
                 help="Keep the same value when an anonymous user identifies."),
]


def _flag_options(fn):
    for opt in reversed(FLAG_OPTIONS):
        fn = opt(fn)
    return fn


@click.group("flags")
def flags_group() -> None:
    """Feature flags: list, create, update and delete (works while the server runs)."""


@flags_group.command("list")
@DATA_DIR
@PROJECT
@click.option("--json", "as_json", is_flag=True, help="Print the flags as JSON.")
def list_cmd(data_dir: Path, project_id: int | None, as_json: bool) -> None:
    """List the project's flags."""
    meta, svc, pid = _open(data_dir, project_id)
    flags = svc.list_flags(pid)
    meta.close()
    if as_json:
        click.echo(json.dumps(flags, indent=2))
        return
    if not flags:
        click.echo("No feature flags yet. Create one with `sightline flags create --key KEY --rollout 50`.")
    for f in flags:
        click.echo(_summary(f))


@flags_group.command("create")
@DATA_DIR
@PROJECT
@click.option("--key", required=True, help="The flag key the SDKs ask for.")
@_flag_options
def create_cmd(data_dir: Path, project_id: int | None, key: str, name, rollout, variants, payloads,
               filters_json, active, eec) -> None:
    """Create a flag (default: nobody gets it until you give a --rollout or filters)."""
    from sightline.flags.service import cli_actor

    meta, svc, pid = _open(data_dir, project_id)
    try:
        data = _build(None, name=name, rollout=rollout, variants=variants, payloads=payloads,
                      filters_json=filters_json, active=active, eec=eec)
        flag = svc.create_flag(pid, {"key": key, **data}, cli_actor())
    except SightlineError as exc:
        meta.close()
        _fail(exc)
    meta.close()
    click.echo("created " + _summary(flag))


@flags_group.command("update")
@DATA_DIR
@PROJECT
@click.option("--key", required=True, help="The key of the flag to change.")
@click.option("--new-key", default=None, help="Rename the flag.")
@_flag_options
def update_cmd(data_dir: Path, project_id: int | None, key: str, new_key: str | None, name, rollout,
               variants, payloads, filters_json, active, eec) -> None:
    """Change a flag; only the options given change."""
    from sightline.flags.service import cli_actor

    meta, svc, pid = _open(data_dir, project_id)
    try:
        row = svc.row_by_key(pid, key)
        data = _build(row["data"], name=name, rollout=rollout, variants=variants, payloads=payloads,
                      filters_json=filters_json, active=active, eec=eec)
        if new_key:
            data["key"] = new_key
        if not data:
            raise InvalidInput("Nothing to change: give at least one option (see --help).")
        flag = svc.update_flag(pid, row["id"], data, cli_actor())
    except SightlineError as exc:
        meta.close()
        _fail(exc)
    meta.close()
    click.echo("updated " + _summary(flag))


@flags_group.command("delete")
@DATA_DIR
@PROJECT
@click.option("--key", required=True, help="The key of the flag to delete.")
def delete_cmd(data_dir: Path, project_id: int | None, key: str) -> None:
    """Delete a flag (soft delete: its history stays in the activity log)."""
    from sightline.flags.service import cli_actor

    meta, svc, pid = _open(data_dir, project_id)
    try:
        row = svc.row_by_key(pid, key)
        svc.delete_flag(pid, row["id"], cli_actor())
    except SightlineError as exc:
        meta.close()
        _fail(exc)
    meta.close()
    click.echo(f"deleted {key}")
