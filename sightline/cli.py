"""The `sightline` command: argument parsing and formatting over the same core as the API."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from sightline.cli_common import DATA_DIR
from sightline.cli_common import fail as _fail
from sightline.core import Settings, Sightline
from sightline.errors import SightlineError


def _open(data_dir: Path, **kwargs) -> Sightline:
    try:
        return Sightline(data_dir, **kwargs)
    except SightlineError as exc:
        _fail(exc)
        raise  # unreachable


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record), "level": record.levelname.lower(),
               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _setup_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if json_logs else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sightline")
def main() -> None:
    """Sightline: product analytics, feature flags and experiments on your own machine.

    Point the unmodified PostHog SDKs (posthog-js, posthog-python, posthog-node) at a running
    `sightline serve` and your events land in an embedded DuckDB store.
    """
    import gc

    # fewer, cheaper collections: the write path allocates a lot of short-lived objects
    gc.set_threshold(100_000, 50, 100)


@main.command()
@DATA_DIR
@click.option("--host", default="127.0.0.1", show_default=True, envvar="SIGHTLINE_HOST",
              help="Interface to listen on (0.0.0.0 for all).")
@click.option("--port", default=8000, show_default=True, type=int, envvar="SIGHTLINE_PORT",
              help="TCP port to listen on.")
@click.option("--project-token", envvar="SIGHTLINE_PROJECT_TOKEN", show_envvar=True,
              help="Pin the default project's public token (what SDKs send).")
@click.option("--api-key", envvar="SIGHTLINE_API_KEY", show_envvar=True,
              help="Pin a secret personal API key (for reading data and configuration).")
@click.option("--max-body-mb", default=20, show_default=True, type=int,
              help="Largest request body accepted, compressed or not, in MB.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--json-logs", is_flag=True, envvar="SIGHTLINE_JSON_LOGS", help="Log one JSON object per line.")
@click.option("--store", envvar="SIGHTLINE_STORE", show_envvar=True, default=None,
              help="The event store: duckdb (default), chdb (in-process ClickHouse under the data directory) "
                   "or clickhouse://user:pass@host:8123/db. Metadata stays in the data directory.")
@click.option("--capture-workers", default=0, show_default=True, type=click.IntRange(0, 64),
              envvar="SIGHTLINE_CAPTURE_WORKERS", show_envvar=True,
              help="Helper processes that decode and validate capture requests beside the server "
                   "(0: in the server process). The server still logs, fsyncs and answers.")
def serve(data_dir: Path, host: str, port: int, project_token: str | None, api_key: str | None,
          max_body_mb: int, log_level: str, json_logs: bool, store: str | None, capture_workers: int) -> None:
    """Run the Sightline server (capture API, flags, query API) in one process."""
    import uvicorn

    from sightline.web.app import create_app

    _setup_logging(log_level, json_logs)
    settings = Settings(max_body_bytes=max_body_mb * 1024 * 1024,
                        max_decoded_bytes=max_body_mb * 1024 * 1024)
    core = _open(data_dir, project_token=project_token or os.environ.get("SIGHTLINE_PROJECT_TOKEN"),
                 api_key=api_key, settings=settings, store=store)
    info = core.bootstrap_info
    url = f"http://{host}:{port}"
    click.echo(f"Sightline is starting on {url}  (data: {data_dir.resolve()})")
    click.echo(f"  Project token (public, for SDKs): {info.project.api_token}")
    if info.new_api_key:
        click.echo(f"  Secret API key (shown once, keep it safe): {info.new_api_key}")
    elif api_key:
        click.echo("  Secret API key: pinned by SIGHTLINE_API_KEY / --api-key")
    else:
        click.echo("  Secret API key: created earlier (make a new one with `sightline keys create`)")
    click.echo(f"  posthog.init('{info.project.api_token}', {{api_host: '{url}'}})")
    app = create_app(core)
    if capture_workers:
        from sightline.ingest.capture_pool import CapturePool

        app.state.capture_pool = CapturePool(capture_workers)
        app.state.capture_pool.spawn()  # they import while the server starts
    if app.state.setup_code:
        click.echo(f"  Web app: open {url}/ to create the owner account (from this machine), or from elsewhere "
                   f"with the one-time setup code {app.state.setup_code}")
    else:
        click.echo(f"  Web app: {url}/")
    from sightline.ops import control

    # CLI commands reach this process through <data>/run (the DuckDB file is ours while we run)
    app.state.control_token = control.announce(data_dir, f"http://{_connect_host(host)}:{port}")
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=15, server_header=False,
                            log_config=None,
                            # X-Forwarded-For is honoured only from SIGHTLINE_TRUSTED_PROXIES (and, for
                            # captured $ip, a project's trusted_proxies: sightline.web.client_ip)
                            proxy_headers=bool(os.environ.get("SIGHTLINE_TRUSTED_PROXIES", "").strip()),
                            forwarded_allow_ips=os.environ.get("SIGHTLINE_TRUSTED_PROXIES", "").strip() or None)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM (the app's shutdown writes everything
    # queued and checkpoints), then re-raises the signal: make that a clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    try:
        uvicorn.Server(config).run()
    finally:
        control.retire(data_dir)
        if capture_workers:
            app.state.capture_pool.close()
    click.echo("Sightline stopped; all acknowledged events are on disk.")


def _connect_host(host: str) -> str:
    """Where a local client reaches a server listening on ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@main.group()
def keys() -> None:
    """Secret personal API keys."""


@keys.command("create")
@DATA_DIR
@click.option("--label", default="created with the CLI", show_default=True, help="What the key is for.")
def keys_create(data_dir: Path, label: str) -> None:
    """Create a secret API key and print it (it is shown only once)."""
    from sightline.meta import MetaStore

    data_dir.mkdir(parents=True, exist_ok=True)
    meta = MetaStore(data_dir / "meta.sqlite")
    click.echo(meta.create_api_key(label))
    meta.close()


@main.command("import")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DATA_DIR
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv", "parquet"]), default="auto",
              show_default=True, help="Input format (auto: from the file name).")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
def import_(files: tuple[Path, ...], data_dir: Path, fmt: str, no_progress: bool) -> None:
    """Bulk-load events from JSON lines, CSV or Parquet files.

    Each row is a PostHog-shaped event: `event`, `distinct_id`, `timestamp`, `properties`
    (a JSON object, a JSON string or a struct) and optionally `uuid`. Events already stored
    (same uuid) are skipped; invalid rows are counted and reported, never stored.
    """
    from sightline.ingest.bulk import import_files

    core = _open(data_dir)
    new_key = core.bootstrap_info.new_api_key
    try:
        summary = import_files(core, list(files), fmt=fmt, progress=not no_progress)
    except SightlineError as exc:
        core.close()
        _fail(exc)
    core.close()
    click.echo(summary.render())
    if new_key:
        click.echo(f"Secret API key for this new data directory (shown once): {new_key}")


@main.command()
@DATA_DIR
@click.option("--events", "n_events", default=500_000, show_default=True, type=click.IntRange(0),
              help="How many events to generate.")
@click.option("--seed", default=42, show_default=True, type=int, help="Random seed (same seed, same data).")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1),
              help="How many days of history, ending now.")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
def demo(data_dir: Path, n_events: int, seed: int, days: int, no_progress: bool) -> None:
    """Fill the data directory with a realistic SaaS product's usage (sign-ups, activation,
    purchases, churn, flags, an experiment), for trying Sightline out."""
    from sightline.demo import generate
    from sightline.ingest.bulk import import_events

    core = _open(data_dir)
    try:
        summary = import_events(core, generate(n_events, seed=seed, days=days), total=n_events,
                                progress=not no_progress, label="demo")
        from sightline.experiments.demo import create_demo_experiment

        create_demo_experiment(core, days)  # "New checkout", running on the flag new-checkout
    except SightlineError as exc:
        core.close()
        _fail(exc)
    token = core.project.api_token
    new_key = core.bootstrap_info.new_api_key
    core.close()
    click.echo(summary.render())
    if new_key:
        click.echo(f"Secret API key (shown once, keep it safe): {new_key}")
    click.echo(f"Demo data is in {data_dir}. Start the server with: sightline serve --data-dir {data_dir}")
    click.echo(f"Project token: {token}")


@main.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@DATA_DIR
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default=None,
              help="Output format (default: from OUT's extension, else parquet).")
@click.option("--event", "events", multiple=True, help="Only these events (repeatable).")
@click.option("--after", help="Only events at or after this moment: 2026-01-01, an ISO timestamp, "
              "or relative (-30d, -24h, -2w, -6m, -1y).")
@click.option("--before", help="Only events before this moment (same forms as --after).")
@click.option("--project", "project_id", type=int, default=None, help="Project id (default: the first project).")
def export(out: Path, data_dir: Path, fmt: str | None, events: tuple[str, ...], after: str | None,
           before: str | None, project_id: int | None) -> None:
    """Write your events to a Parquet or JSON-lines file (streamed in time order, in constant
    memory, any size). E.g. `sightline export last-week.jsonl --after -7d --event purchase`.

    Works while `sightline serve` runs on the data directory (the server streams the file),
    and with it stopped (the data directory is read directly)."""
    from sightline.ops.control import ServerHandle, open_or_connect
    from sightline.ops.export import download, export_events

    if fmt is None:
        fmt = "jsonl" if out.suffix in (".jsonl", ".ndjson", ".json") else "parquet"
    try:
        target = open_or_connect(data_dir)
    except SightlineError as exc:
        _fail(exc)
    if isinstance(target, ServerHandle):
        click.echo(f"Exporting through the running server at {target.url} (pid {target.pid}).", err=True)
        tty = sys.stderr.isatty()
        shown = [0.0]

        def progress(rows: int, expected: int, size: int) -> None:
            import time

            now = time.monotonic()
            if not tty or now - shown[0] < 0.2:
                return
            shown[0] = now
            done = f"{rows:,} of {expected:,} events, " if fmt == "jsonl" else f"{expected:,} events planned, "
            click.echo(f"\r  {done}{size / 1e6:,.1f} MB received", err=True, nl=False)

        try:
            n = download(target, out, fmt=fmt, events=list(events), after=after, before=before,
                         project_id=project_id, progress=progress)
        except SightlineError as exc:
            if tty and shown[0]:
                click.echo("", err=True)
            _fail(exc)
        if tty and shown[0]:
            click.echo("", err=True)
    else:
        core = target
        try:
            n = export_events(core, out, fmt=fmt, events=list(events), after=after, before=before,
                              project_id=project_id)
        except SightlineError as exc:
            core.close()
            _fail(exc)
        core.close()
    click.echo(f"Exported {n:,} events to {out} ({fmt}).")


@main.group()
def cohorts() -> None:
    """Groups of persons for filters and breakdowns (works while the server runs)."""


def _meta(data_dir: Path):
    from sightline.meta import MetaStore

    data_dir.mkdir(parents=True, exist_ok=True)
    return MetaStore(data_dir / "meta.sqlite")


@cohorts.command("list")
@DATA_DIR
def cohorts_list(data_dir: Path) -> None:
    """List the cohorts of the default project."""
    meta = _meta(data_dir)
    project = meta.default_project()
    for row in meta.cohort_rows(project.id if project else None):
        if not row["deleted"]:
            kind = "static" if row["is_static"] else "dynamic"
            click.echo(f"{row['id']:>5}  {kind:<8} {row['name']}")
    meta.close()


@cohorts.command("create")
@DATA_DIR
@click.option("--name", required=True, help="The cohort's name.")
@click.option("--csv", "csv_file", type=click.File("r"), help="A static cohort from a CSV of distinct ids "
              "(first column, header row skipped).")
@click.option("--filters-json", type=click.File("r"), help="A dynamic cohort: a JSON file with "
              '{"properties": {"type": "AND", "values": [...]}} (person properties, behaviour, cohorts).')
def cohorts_create(data_dir: Path, name: str, csv_file, filters_json) -> None:
    """Create a static or dynamic cohort and print its id."""
    from sightline.query import cohorts as service
    from sightline.query.runner import load_cohorts

    if bool(csv_file) == bool(filters_json):
        click.secho("Error: give either --csv (static) or --filters-json (dynamic).", fg="red", err=True)
        sys.exit(2)
    meta = _meta(data_dir)
    project = meta.default_project() or meta.create_project("Default project")
    try:
        if csv_file:
            cid = meta.create_cohort(project.id, name, None, is_static=True,
                                     members=service.parse_csv_members(csv_file.read()))
        else:
            try:
                filters = json.load(filters_json)
            except json.JSONDecodeError as exc:
                raise SightlineError(f"The filters file is not JSON: {exc}") from None
            service.validate_filters(filters, load_cohorts(meta, project.id))
            cid = meta.create_cohort(project.id, name, filters)
    except SightlineError as exc:
        meta.close()
        _fail(exc)
    meta.close()
    click.echo(cid)


@cohorts.command("delete")
@click.argument("cohort_id", type=int)
@DATA_DIR
def cohorts_delete(cohort_id: int, data_dir: Path) -> None:
    """Delete a cohort."""
    meta = _meta(data_dir)
    if not any(r["id"] == cohort_id and not r["deleted"] for r in meta.cohort_rows()):
        meta.close()
        click.secho(f"Error: cohort {cohort_id} does not exist.", fg="red", err=True)
        sys.exit(2)
    meta.update_cohort(cohort_id, deleted=True)
    meta.close()
    click.echo(f"Deleted cohort {cohort_id}.")


def _rows_of(result: dict) -> tuple[list[str], list[list]]:
    """A result as a table: SQL as it is; insights one row per (series, date)."""
    from sightline.query.result import QueryResult

    frame = QueryResult(result).to_pandas()
    frame = frame.dropna(axis=1, how="all")
    return [str(c) for c in frame.columns], frame.astype(object).where(frame.notna(), None).values.tolist()


@main.command()
@click.argument("source", type=click.File("r"), default="-")
@DATA_DIR
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def query(source, data_dir: Path, fmt: str) -> None:
    """Run a query (PostHog query JSON: TrendsQuery, FunnelsQuery, ..., HogQLQuery) from a file
    or standard input, e.g. `echo '{"kind": "TrendsQuery", "series": [{"event": "$pageview"}]}'
    | sightline query`."""
    try:
        payload = json.load(source)
    except json.JSONDecodeError as exc:
        click.secho(f"Error: the query is not JSON: {exc}", fg="red", err=True)
        sys.exit(2)
    if isinstance(payload, dict) and "query" in payload and "kind" not in payload:
        payload = payload["query"]
    _run_and_print(data_dir, payload, fmt)


@main.command()
@click.argument("statement")
@DATA_DIR
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def sql(statement: str, data_dir: Path, fmt: str) -> None:
    """Run read-only SQL over `events`, `persons` and `sessions` of the project, e.g.
    sightline sql "SELECT event, count() FROM events GROUP BY 1 ORDER BY 2 DESC"."""
    _run_and_print(data_dir, {"kind": "HogQLQuery", "query": statement}, fmt)


def _run_and_print(data_dir: Path, payload: dict, fmt: str) -> None:
    from sightline.query.runner import run_query

    core = _open(data_dir, read_only=True) if (data_dir / "events.duckdb").exists() else _open(data_dir)
    try:
        result = run_query(core, payload)
    except SightlineError as exc:
        core.close()
        _fail(exc)
    core.close()
    if fmt == "json":
        click.echo(json.dumps(result, indent=2, default=str))
        return
    columns, rows = _rows_of(result)
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    widths = [max([len(c)] + [len(_cell(r[i])) for r in rows]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    click.echo("  ".join("-" * w for w in widths))
    for r in rows:
        click.echo("  ".join(_cell(v).ljust(w) for v, w in zip(r, widths)))


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if not v.is_integer() else str(int(v))
    return str(v)


@main.group()
def users() -> None:
    """Accounts of the web app (works while the server runs)."""


@users.command("create")
@DATA_DIR
@click.option("--email", prompt=True, help="The account's email (its sign-in name).")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 8 characters (prompted, hidden, when not given).")
@click.option("--role", type=click.Choice(["owner", "admin", "member"]), default=None,
              help="Default: owner for the first account, member after that.")
def users_create(data_dir: Path, email: str, password: str, role: str | None) -> None:
    """Create a web app account (the first one is the owner)."""
    from sightline.web.ui.auth import create_user

    meta = _meta(data_dir)
    try:
        user_id = create_user(meta, email, password, role or ("owner" if meta.count_users() == 0 else "member"))
    except SightlineError as exc:
        meta.close()
        _fail(exc)
    role = next(u["role"] for u in meta.user_rows() if u["id"] == user_id)
    meta.close()
    click.echo(f"Created {role} {email} (id {user_id}).")


@users.command("list")
@DATA_DIR
def users_list(data_dir: Path) -> None:
    """List the web app's accounts."""
    meta = _meta(data_dir)
    for u in meta.user_rows():
        click.echo(f"{u['id']:>5}  {u['role']:<7} {u['email']}  last sign-in: {u['last_login_at'] or 'never'}")
    meta.close()


@users.command("set-password")
@DATA_DIR
@click.option("--email", prompt=True, help="The account's email.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="The new password.")
def users_set_password(data_dir: Path, email: str, password: str) -> None:
    """Change an account's password (signs its sessions out)."""
    from sightline.web.ui.auth import hash_password, validate_credentials

    meta = _meta(data_dir)
    user = meta.user_by_email(email)
    try:
        if user is None:
            raise SightlineError(f"No account with the email {email}.")
        validate_credentials(email, password)
    except SightlineError as exc:
        meta.close()
        _fail(exc)
    meta.set_user_password(user["id"], hash_password(password))
    meta.close()
    click.echo(f"Changed the password of {email}.")


from sightline.flags.cli import flags_group  # noqa: E402

main.add_command(flags_group)

from sightline.experiments.cli import experiments_group  # noqa: E402

main.add_command(experiments_group)

from sightline.ops.prune_cli import prune_command  # noqa: E402

main.add_command(prune_command)

from sightline.persons.cli import persons_group  # noqa: E402

main.add_command(persons_group)

from sightline.ops.cli import COMMANDS as ops_commands  # noqa: E402  (backup, restore, doctor)

for _command in ops_commands:
    main.add_command(_command)

from sightline.ops.migrate import migrate_command  # noqa: E402  (DuckDB → ClickHouse)

main.add_command(migrate_command)


if __name__ == "__main__":  # pragma: no cover
    main()
