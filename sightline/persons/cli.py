"""`sightline persons ...`: look up, delete (GDPR), unmerge and split persons.

Works with the server running (the command asks it over the control channel, see
:mod:`sightline.ops.control`) and with it stopped (the command opens the data directory and
calls :mod:`sightline.persons.admin` itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from sightline.cli_common import DATA_DIR
from sightline.cli_common import fail as _fail
from sightline.errors import NotFound, SightlineError

PROJECT = click.option("--project", "project", default="@current", show_default=True,
                       help="Project id (the default project when omitted).")


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _run(data_dir: Path, remote: Callable, local: Callable) -> Any:
    """``remote(handle)`` when a server holds the data directory, else ``local(core)``."""
    from sightline.ops.control import ServerHandle, open_or_connect

    try:
        target = open_or_connect(data_dir)
        if isinstance(target, ServerHandle):
            return remote(target)
        with target as core:
            return local(core)
    except SightlineError as exc:
        _fail(exc)


def _api(project: str) -> str:
    return f"/api/projects/{project}"


def _remote_person(handle, project: str, distinct_id: str) -> dict:
    found = handle.request("GET", _api(project) + "/persons/", params={"distinct_id": distinct_id})["results"]
    if not found:
        raise NotFound(f"No person has the distinct id {distinct_id!r}.")
    return found[0]


def _local_person(core, project: str, distinct_id: str) -> dict:
    from sightline.query.records import list_persons

    core.sync()
    page = list_persons(core.storage, core.resolve_project(project).id, distinct_id=distinct_id, limit=1)
    if not page.results:
        raise NotFound(f"No person has the distinct id {distinct_id!r}.")
    return page.results[0]


@click.group("persons")
def persons_group() -> None:
    """Persons: look up, delete (GDPR), undo merges, split."""


@persons_group.command("show")
@click.argument("distinct_id")
@DATA_DIR
@PROJECT
def show(distinct_id: str, data_dir: Path, project: str) -> None:
    """Show the person that DISTINCT_ID belongs to (JSON)."""
    _emit(_run(data_dir, lambda h: _remote_person(h, project, distinct_id),
               lambda core: _local_person(core, project, distinct_id)))


@persons_group.command("delete")
@click.argument("distinct_id")
@click.option("--with-events", is_flag=True, help="Delete the person's events too (GDPR erasure).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@DATA_DIR
@PROJECT
def delete(distinct_id: str, with_events: bool, yes: bool, data_dir: Path, project: str) -> None:
    """Delete the person DISTINCT_ID belongs to: the person, all of its distinct ids and
    properties (and with --with-events every event of those ids), physically removed from the
    data directory. The audit log records the deletion without personal data."""
    if not yes:
        what = "the person, its distinct ids, properties" + (" and events" if with_events else "")
        click.confirm(f"Delete {what} of {distinct_id!r}? This cannot be undone", abort=True)

    def remote(handle) -> dict:
        person = _remote_person(handle, project, distinct_id)
        return handle.request("DELETE", _api(project) + f"/persons/{person['id']}/",
                              params={"delete_events": "true" if with_events else "false"})

    def local(core) -> dict:
        from sightline.persons import admin

        return admin.delete_person(core, core.resolve_project(project).id, distinct_id=distinct_id,
                                   with_events=with_events, actor="cli")

    _emit(_run(data_dir, remote, local))


@persons_group.command("unmerge")
@click.argument("distinct_id")
@click.option("--merge-id", type=int, default=None,
              help="The merge to undo (see `sightline persons merges`). Default: the latest merge that "
                   "brought DISTINCT_ID into its person.")
@DATA_DIR
@PROJECT
def unmerge(distinct_id: str, merge_id: int | None, data_dir: Path, project: str) -> None:
    """Undo a merge: the person that was merged in is recreated with its distinct ids and
    properties, and its events count for it again."""

    def remote(handle) -> dict:
        person = _remote_person(handle, project, distinct_id)
        body = {"merge_id": merge_id} if merge_id is not None else {"distinct_id": distinct_id}
        return handle.request("POST", _api(project) + f"/persons/{person['id']}/unmerge/", json_body=body)

    def local(core) -> dict:
        from sightline.persons import admin

        pid = core.resolve_project(project).id
        if merge_id is not None:
            return admin.unmerge(core, pid, merge_id=merge_id,
                                 person_id=_local_person(core, project, distinct_id)["id"], actor="cli")
        return admin.unmerge(core, pid, distinct_id=distinct_id, actor="cli")

    _emit(_run(data_dir, remote, local))


@persons_group.command("split")
@click.argument("distinct_id")
@click.option("--main", "main_distinct_id", default=None,
              help="The distinct id that keeps the person and its properties (default: the one it "
                   "was created for).")
@DATA_DIR
@PROJECT
def split(distinct_id: str, main_distinct_id: str | None, data_dir: Path, project: str) -> None:
    """Split the person of DISTINCT_ID: each of its distinct ids becomes a person of its own."""

    def remote(handle) -> dict:
        person = _remote_person(handle, project, distinct_id)
        body = {"main_distinct_id": main_distinct_id} if main_distinct_id else {}
        return handle.request("POST", _api(project) + f"/persons/{person['id']}/split/", json_body=body)

    def local(core) -> dict:
        from sightline.persons import admin

        return admin.split(core, core.resolve_project(project).id, distinct_id=distinct_id,
                           main_distinct_id=main_distinct_id, actor="cli")

    _emit(_run(data_dir, remote, local))


@persons_group.command("merges")
@click.argument("distinct_id")
@DATA_DIR
@PROJECT
def merges(distinct_id: str, data_dir: Path, project: str) -> None:
    """The merge log of the person DISTINCT_ID belongs to (newest first)."""

    def remote(handle) -> list:
        person = _remote_person(handle, project, distinct_id)
        return handle.request("GET", _api(project) + f"/persons/{person['id']}/merges/")["results"]

    def local(core) -> list:
        from sightline.persons import admin

        person = _local_person(core, project, distinct_id)
        return admin.merges(core, core.resolve_project(project).id, person_id=person["id"])

    _emit(_run(data_dir, remote, local))


@persons_group.command("audit")
@click.option("--action", default=None, help="Only this action (person_deleted, person_unmerged...).")
@click.option("--person-id", default=None, help="Only entries about this person id (matched by its hash).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@DATA_DIR
@PROJECT
def audit(action: str | None, person_id: str | None, limit: int, data_dir: Path, project: str) -> None:
    """The audit log of deletions, unmerges and splits (no personal data: persons are hashed)."""
    params = {k: v for k, v in {"action": action, "person_id": person_id, "limit": limit}.items() if v}

    def remote(handle) -> list:
        return handle.request("GET", _api(project) + "/audit_log/", params=params)["results"]

    def local(core) -> list:
        from sightline.persons import admin

        return admin.audit_log(core, core.resolve_project(project).id, action=action, person_id=person_id,
                               limit=limit)

    _emit(_run(data_dir, remote, local))
