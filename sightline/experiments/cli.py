"""`sightline experiments list|create|show|launch|stop|ship|delete|results`.

Definitions live in the metadata store (SQLite), so these commands work while `sightline serve`
runs. `results` needs the event store: when a server holds the data directory it asks that server
(through the control channel, :mod:`sightline.ops.control`), otherwise it opens the store read-only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sightline.errors import InvalidInput, SightlineError
from sightline.flags.cli import DATA_DIR, PROJECT, _fail, parse_variants


def _open(data_dir: Path, project_id: int | None):
    from sightline.experiments.service import ExperimentService
    from sightline.flags.cli import _open as open_flags

    meta, flags, pid = open_flags(data_dir, project_id)
    return meta, ExperimentService(meta, flags), pid


def _run(data_dir: Path, project_id: int | None, fn) -> Any:
    meta, svc, pid = _open(data_dir, project_id)
    try:
        return fn(svc, pid)
    except SightlineError as exc:
        meta.close()
        _fail(exc)
    finally:
        try:
            meta.close()
        except Exception:  # noqa: BLE001 - already closed
            pass


def _summary(e: dict) -> str:
    variants = ",".join(f"{v['key']}:{v['rollout_percentage']:g}" for v in e["parameters"]["feature_flag_variants"])
    extra = f"  shipped {e['shipped_variant']}" if e.get("shipped_variant") else ""
    return (f"{e['id']:>5}  {e['status']:<8} {e['name']}  (flag {e['feature_flag_key']} [{variants}], "
            f"{len(e['metrics'])} goal / {len(e['metrics_secondary'])} secondary / "
            f"{len(e['metrics_guardrails'])} guardrail metrics){extra}")


def _actor() -> str:
    from sightline.flags.service import cli_actor

    return cli_actor()


@click.group("experiments")
def experiments_group() -> None:
    """A/B and multivariate experiments: define, launch, watch, decide, ship."""


@experiments_group.command("list")
@DATA_DIR
@PROJECT
@click.option("--json", "as_json", is_flag=True, help="Print the experiments as JSON.")
def list_cmd(data_dir: Path, project_id: int | None, as_json: bool) -> None:
    """List the project's experiments."""
    exps = _run(data_dir, project_id, lambda svc, pid: svc.list_experiments(pid))
    if as_json:
        click.echo(json.dumps(exps, indent=2))
    elif not exps:
        click.echo("No experiments yet. Create one with `sightline experiments create --name NAME --flag KEY "
                   "--conversion EVENT`.")
    for e in exps if not as_json else []:
        click.echo(_summary(e))


def _metric_options(conversion: tuple[str, ...], count: tuple[str, ...], window_days: int | None) -> list[dict]:
    metrics: list[dict] = []
    window = {"conversion_window": window_days, "conversion_window_unit": "day"} if window_days else {}
    if conversion:
        metrics.append({"metric_type": "funnel", "series": [{"event": e} for e in conversion], **window})
    for e in count:
        metrics.append({"metric_type": "count", "source": {"event": e}, **window})
    return metrics


@experiments_group.command("create")
@DATA_DIR
@PROJECT
@click.option("--name", required=False, help="The experiment's name.")
@click.option("--flag", "flag_key", required=False,
              help="Feature flag key (created with control/test variants if it does not exist).")
@click.option("--variants", default=None, help="KEY:PERCENT,... for a new flag (default control:50,test:50).")
@click.option("--hypothesis", default=None, help="What you expect and why.")
@click.option("--description", default=None)
@click.option("--conversion", multiple=True, metavar="EVENT",
              help="Goal metric: conversion to EVENT after exposure (repeat for a funnel of steps).")
@click.option("--count", multiple=True, metavar="EVENT", help="Goal metric: EVENT count per exposed user "
                                                               "(repeatable).")
@click.option("--window-days", type=click.IntRange(1), default=None,
              help="Conversion window after exposure, in days (default: until the experiment ends).")
@click.option("--method", type=click.Choice(["bayesian", "frequentist"]), default=None)
@click.option("--confidence", type=float, default=None, help="Confidence level, e.g. 0.95.")
@click.option("--sequential/--no-sequential", default=None, help="Always-valid (sequential) frequentist test.")
@click.option("--cuped/--no-cuped", default=None, help="Variance reduction with the pre-exposure period.")
@click.option("--from-json", "from_json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A JSON file with the whole definition (the API's body); options override it.")
def create_cmd(data_dir: Path, project_id: int | None, name, flag_key, variants, hypothesis, description,
               conversion, count, window_days, method, confidence, sequential, cuped, from_json) -> None:
    """Create a draft experiment (and its flag if needed)."""
    body: dict[str, Any] = {}
    try:
        if from_json is not None:
            try:
                body = json.loads(from_json.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InvalidInput(f"--from-json {from_json}: {exc}", attr="from_json") from None
            if not isinstance(body, dict):
                raise InvalidInput("--from-json must hold a JSON object.", attr="from_json")
        for k, v in (("name", name), ("feature_flag_key", flag_key), ("hypothesis", hypothesis),
                     ("description", description)):
            if v is not None:
                body[k] = v
        if variants:
            body.setdefault("parameters", {})["feature_flag_variants"] = parse_variants(variants)
        metrics = _metric_options(conversion, count, window_days)
        if metrics:
            body["metrics"] = metrics
        cfg = {k: v for k, v in (("method", method), ("confidence_level", confidence), ("sequential", sequential),
                                  ("cuped", cuped)) if v is not None}
        if cfg:
            body["stats_config"] = {**(body.get("stats_config") or {}), **cfg}
    except SightlineError as exc:
        _fail(exc)
    exp = _run(data_dir, project_id, lambda svc, pid: svc.create(pid, body, _actor()))
    click.echo("created " + _summary(exp))


@experiments_group.command("show")
@click.argument("ref")
@DATA_DIR
@PROJECT
def show_cmd(ref: str, data_dir: Path, project_id: int | None) -> None:
    """Print an experiment's definition (REF: id, flag key or name) as JSON."""
    exp = _run(data_dir, project_id, lambda svc, pid: svc.find(pid, ref))
    click.echo(json.dumps(exp, indent=2))


@experiments_group.command("launch")
@click.argument("ref")
@DATA_DIR
@PROJECT
@click.option("--start-date", default=None, help="ISO start (default: now); earlier exposures are ignored.")
def launch_cmd(ref: str, data_dir: Path, project_id: int | None, start_date: str | None) -> None:
    """Start a draft experiment: the flag is switched on and exposures count from now."""
    exp = _run(data_dir, project_id,
               lambda svc, pid: svc.launch(pid, svc.find(pid, ref)["id"], _actor(), start_date=start_date))
    click.echo("launched " + _summary(exp))


@experiments_group.command("stop")
@click.argument("ref")
@DATA_DIR
@PROJECT
@click.option("--ship", "variant", default=None, help="Also ship this variant (roll the flag out to it).")
@click.option("--conclusion", default=None, help="A short conclusion (e.g. won, lost, inconclusive).")
def stop_cmd(ref: str, data_dir: Path, project_id: int | None, variant: str | None, conclusion: str | None) -> None:
    """Stop a running experiment (results keep covering start to stop)."""
    exp = _run(data_dir, project_id, lambda svc, pid: svc.stop(pid, svc.find(pid, ref)["id"], _actor(),
                                                                shipped_variant=variant, conclusion=conclusion))
    click.echo("stopped " + _summary(exp))


@experiments_group.command("ship")
@click.argument("ref")
@click.argument("variant")
@DATA_DIR
@PROJECT
def ship_cmd(ref: str, variant: str, data_dir: Path, project_id: int | None) -> None:
    """Ship VARIANT: the flag gives it to 100% of its users, and the experiment stops."""
    exp = _run(data_dir, project_id, lambda svc, pid: svc.ship(pid, svc.find(pid, ref)["id"], variant, _actor()))
    click.echo("shipped " + _summary(exp))


@experiments_group.command("delete")
@click.argument("ref")
@DATA_DIR
@PROJECT
def delete_cmd(ref: str, data_dir: Path, project_id: int | None) -> None:
    """Delete an experiment (its flag stays)."""
    exp = _run(data_dir, project_id, lambda svc, pid: svc.delete(pid, svc.find(pid, ref)["id"], _actor()))
    click.echo(f"deleted experiment {exp['id']} ({exp['name']})")


@experiments_group.command("results")
@click.argument("ref")
@DATA_DIR
@PROJECT
@click.option("--json", "as_json", is_flag=True, help="Print the full results document as JSON.")
@click.option("--cumulative", is_flag=True, help="Include the day-by-day series (with --json).")
def results_cmd(ref: str, data_dir: Path, project_id: int | None, as_json: bool, cumulative: bool) -> None:
    """Results table: per metric and variant the value, lift, interval, chance to win or p-value,
    and the recommendation. Works whether or not the server runs."""
    from sightline.experiments import results as res
    from sightline.ops.control import running_server

    exp = _run(data_dir, project_id, lambda svc, pid: svc.find(pid, ref))
    try:
        handle = running_server(data_dir, wait_s=2)
        if handle is not None:
            out = handle.request("GET", f"/api/projects/{exp_project(data_dir, project_id)}/experiments/"
                                        f"{exp['id']}/results/", params={"cumulative": str(cumulative).lower()})
        else:
            from sightline.core import Sightline

            read_only = (data_dir / "events.duckdb").exists()
            core = Sightline(data_dir, read_only=read_only)
            try:
                project = core.resolve_project(project_id)
                out = res.compute(core, project, exp, cumulative=cumulative)
            finally:
                core.close()
    except SightlineError as exc:
        _fail(exc)
    click.echo(json.dumps(out, indent=2) if as_json else res.table(out))


def exp_project(data_dir: Path, project_id: int | None) -> int:
    meta, _svc, pid = _open(data_dir, project_id)
    meta.close()
    return pid
