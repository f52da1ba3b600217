"""What every `sightline` subcommand shares: the --data-dir option and how errors end a command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sightline.core import DEFAULT_DATA_DIR
from sightline.errors import SightlineError

DATA_DIR = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=DEFAULT_DATA_DIR, envvar="SIGHTLINE_DATA_DIR", show_default=True,
                        show_envvar=True, help="Where Sightline keeps its data.")


def fail(exc: SightlineError) -> None:
    """Print the error (with the field it is about) and exit: 2 for bad input, 1 for server faults."""
    attr = f" [{exc.attr}]" if getattr(exc, "attr", None) else ""
    click.secho(f"Error{attr}: {exc.detail}", fg="red", err=True)
    sys.exit(2 if exc.status < 500 else 1)
