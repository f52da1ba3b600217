"""`sightline prune`: apply retention now (registered on the main command group)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sightline.cli_common import DATA_DIR
from sightline.errors import SightlineError


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def render(report: dict) -> str:
    verb = "Would delete" if report["dry_run"] else "Deleted"
    lines = [f"{verb} {report['events']:,} events of project {report['project_id']} before {report['before']}",
             (f"  hot table: {report['hot_events']:,}   parts: {report['part_events']:,} "
              f"({report['files_deleted']} files deleted, {report['files_rewritten']} rewritten)")]
    if report["dry_run"]:
        lines.append(f"  Parquet data to remove: about {_mb(report['part_bytes'])} "
                     f"(event store now {_mb(report['disk_bytes_before'])})")
    else:
        lines.append(f"  event store on disk: {_mb(report['disk_bytes_before'])} -> "
                     f"{_mb(report['disk_bytes_after'])} ({_mb(report['bytes_freed'])} freed)")
    return "\n".join(lines)


@click.command("prune")
@DATA_DIR
@click.option("--dry-run", is_flag=True, help="Count what would be deleted (events, files, bytes); delete nothing.")
@click.option("--project", "project_id", type=int, default=None, help="Project id (default: the first project).")
@click.option("--before", default=None,
              help="Delete events before this moment: 2026-01-31, an ISO timestamp, or relative (-90d, -6m). "
                   "Default: the project's retention_days setting.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def prune_command(data_dir: Path, dry_run: bool, project_id: int | None, before: str | None, as_json: bool) -> None:
    """Delete events older than the project's retention (or --before), and return the space.

    Works on a stopped data directory and through the running server of the same directory
    (which also applies retention daily by itself). Set the retention with
    PATCH /api/projects/@current/ {"retention_days": 365}.
    """
    from sightline.ops import control
    from sightline.ops.prune import prune

    try:
        target = control.open_or_connect(data_dir)
        if isinstance(target, control.ServerHandle):
            params = {"dry_run": "true" if dry_run else "false"}
            if before:
                params["before"] = before
            report = target.request("POST", f"/api/projects/{project_id or '@current'}/prune/", params=params)
        else:
            with target as core:
                report = prune(core, project_id=project_id, before=before, dry_run=dry_run)
    except SightlineError as exc:
        click.secho(f"Error: {exc.detail}", fg="red", err=True)
        sys.exit(2 if exc.status < 500 else 1)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
