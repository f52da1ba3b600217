"""``sightline backup``, ``sightline restore`` and ``sightline doctor`` (registered on ``main``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sightline.cli_common import DATA_DIR
from sightline.cli_common import fail as _fail
from sightline.errors import SightlineError


@click.command("backup")
@click.argument("out", type=click.Path(path_type=Path))
@DATA_DIR
def backup_cmd(out: Path, data_dir: Path) -> None:
    """Write a consistent backup of the data directory to OUT (a .tar file).

    Works while `sightline serve` runs (the server takes the snapshot and keeps accepting
    events) and when it does not. The backup holds events, persons, flags, cohorts,
    experiments, settings and keys, with a manifest of checksums and row counts.
    """
    from sightline.ops.backup import backup

    try:
        result = backup(data_dir, out)
    except SightlineError as exc:
        _fail(exc)
    click.echo(result.summary())


@click.command("restore")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DATA_DIR
@click.option("--force", is_flag=True, help="Replace a non-empty data directory (its contents are moved "
              "to <data>/backups/replaced-<time>/).")
def restore_cmd(archive: Path, data_dir: Path, force: bool) -> None:
    """Bring back a backup made by `sightline backup` into the data directory.

    Checks the archive first (checksums, row counts, schema version). Refuses while a server
    runs on the directory, and refuses a non-empty directory unless --force.
    """
    from sightline.ops.backup import restore

    try:
        result = restore(archive, data_dir, force=force)
    except SightlineError as exc:
        _fail(exc)
    click.echo(result.summary())
    click.echo(f"Start it with: sightline serve --data-dir {data_dir}")


@click.command("doctor")
@DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor_cmd(data_dir: Path, as_json: bool) -> None:
    """Check the data directory, disk space, schema version, the running server's ingestion
    lag, keys and configuration, and say what to fix. Exits 1 when a check fails."""
    from sightline.ops import doctor

    checks = doctor.run(data_dir)
    if as_json:
        click.echo(json.dumps(doctor.to_json(checks), indent=2))
    else:
        click.echo(doctor.render(checks))
    if any(c.status == doctor.FAIL for c in checks):
        sys.exit(1)


COMMANDS = [backup_cmd, restore_cmd, doctor_cmd]
