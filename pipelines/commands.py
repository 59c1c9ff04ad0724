"""Bodies of the CLI commands: build the run context, call a flow or a step, summarise.

Commands that run a flow (``nightly``, ``score``, ``train``, ``recalibrate``,
``backfill``) hand the flow the user's config file and run date as given; the flow
builds its run context from them. Before that, the command builds the context once
itself, so that a config or date mistake is a sentence within a second instead of a
failed flow run after Prefect has started (:mod:`pipelines.flow_runs`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.flow_runs import config_arg, context_with_prefect, scoring_run

if TYPE_CHECKING:
    from rich.console import Console

    from pipelines.context import RunContext
    from pipelines.summary import RunSummary


def generate(
    out: Path, leads: int, customers: int, months: int, start: str, seed: int, console: Console
) -> None:
    """Generate synthetic data with a progress bar."""
    from rich.progress import Progress

    from features.synthetic import generate as run

    began = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("Generating entities", total=leads + customers)
        data = run(
            out,
            n_leads=leads,
            n_customers=customers,
            months=months,
            start=start,
            seed=seed,
            progress=lambda done, total: progress.update(bar, completed=done),
        )
    console.print(
        f"Generated {data.n_leads:,} leads, {data.n_customers:,} customers, "
        f"{data.n_events:,} events, {data.n_conversions:,} conversions and "
        f"{data.n_churns:,} churns in {time.perf_counter() - began:.1f} s -> {out}/"
    )


def features(
    config: Path | None, as_of: str | None, out: Path | None, allow_future: bool, console: Console
) -> None:
    """Build and save the feature table; print a short description of it."""
    from pipelines import steps
    from pipelines.context import build_context

    ctx = build_context(config, as_of, allow_future=allow_future)
    began = time.perf_counter()
    with console.status("Reading inputs and building features"):
        inputs = steps.load_inputs(ctx)
        table = steps.build_features(ctx.settings.feature_spec(), inputs, ctx.as_of)
        if out is not None:
            from pipelines.atomic_files import write_parquet_atomic

            path = write_parquet_atomic(table.frame, out)
        else:
            path = steps.save_features(ctx.output_dir, table.frame, ctx.as_of)
    from features.table import describe_table

    console.print(describe_table(table.frame, ctx.as_of, time.perf_counter() - began))
    console.print(f"Input report: {inputs.report}")
    console.print(f"Feature table written to {path}")


def nightly(
    config: Path | None, as_of: str | None, console: Console, allow_future: bool = False
) -> RunSummary:
    """Run the nightly flow once and print its summary."""
    summary = scoring_run(config, as_of, allow_future, retrain=True)
    print_run(summary, console)
    return summary


def score(config: Path | None, as_of: str | None, allow_future: bool, console: Console) -> None:
    """Score with the champions, no retraining."""
    print_run(scoring_run(config, as_of, allow_future, retrain=False), console)


def backfill(config: Path | None, start: str, end: str, every: int, console: Console) -> None:
    """Run the nightly flow for each date from ``start`` to ``end``, oldest first.

    Each date is a full nightly run (retraining when due as of that date), so the
    score history and band moves build up as if the job had run on those nights.
    It stops at the first failing date; the dates before it are complete.

    Raises:
        ValueError: If a date is not YYYY-MM-DD, ``start`` is after ``end`` or
            ``every`` < 1.
        RuntimeError: If a date's run fails; the message names the date and the step.
    """
    import pandas as pd

    from pipelines.context import build_context, parse_as_of

    first, last = parse_as_of(start), parse_as_of(end)
    if first > last:
        raise ValueError(f"Backfill --from {start} is after --to {end}.")
    if every < 1:
        raise ValueError(f"Backfill --every must be at least 1 day, got {every}.")
    ctx = build_context(config, start)
    days = [str(day.date()) for day in pd.date_range(first, last, freq=f"{every}D")]
    for number, day in enumerate(days, start=1):
        console.rule(f"{day} ({number}/{len(days)})")
        try:
            nightly(config, day, console)
        except Exception as exc:
            done = f"{number - 1} earlier date(s) are complete" if number > 1 else "none done"
            raise RuntimeError(
                f"Backfill stopped at {day}: {exc} ({done}; run again with --from {day})."
            ) from exc
    console.print(
        f"Backfilled {len(days)} date(s) from {days[0]} to {days[-1]}; score partitions under "
        f"{ctx.output_dir / 'scores'}."
    )


def train(
    config: Path | None, target: str, as_of: str | None, allow_future: bool, console: Console
) -> None:
    """Train one target through the train flow."""
    from features.targets import target as target_named

    target_named(target)  # an unknown target is a sentence before Prefect starts
    ctx = context_with_prefect(config, as_of)
    from models.evaluate import describe_auc
    from pipelines.flows import train_flow

    with console.status(f"Training the {target} model"):
        result = train_flow(
            target=target,
            as_of=str(ctx.as_of.date()),
            config_path=config_arg(config),
            allow_future=allow_future,
        )
    metrics = result.metrics
    console.print(result.decision)
    console.print(
        f"Validation {describe_auc(metrics)}, ECE {metrics['ece']:.4f}; "
        f"MLflow run {result.run_id} (list versions with `leadscore models`)."
    )


def list_models(config: Path | None, console: Console) -> None:
    """Print registered versions, aliases and key metrics as a table (mlflow only if need be)."""
    from rich.table import Table

    from models import tracking_index
    from pipelines.settings import load_settings

    uri = load_settings(config).tracking_uri
    store = tracking_index.sqlite_path(uri)
    if store is not None and not store.exists():
        console.print(f"No model is registered yet (no MLflow store at {store}).")
        return
    versions = tracking_index.list_versions(uri)
    if versions is None:  # a store only mlflow reads (another database, certificates...)
        from models import tracking, tracking_registry

        tracking.configure(uri)
        versions = list(tracking_registry.list_models().itertuples(index=False))
    if not versions:
        console.print(
            "No model is registered yet: `leadscore nightly` or `leadscore train` makes one."
        )
        return
    table = Table(title="Registered models (newest first)")
    for column in ("model", "version", "aliases", "created", "AUC", "rule AUC", "ECE", "split"):
        table.add_column(column)
    for row in versions:
        table.add_row(
            row.model,
            str(row.version),
            row.aliases or "-",
            row.created.strftime("%Y-%m-%d %H:%M"),
            f"{row.roc_auc:.3f}",
            f"{row.rule_roc_auc:.3f}",
            f"{row.ece:.4f}",
            "out-of-time" if str(row.out_of_time).lower() == "true" else "not out-of-time",
        )
    console.print(table)


def recalibrate(
    config: Path | None, rules: str, target: str, as_of: str | None, console: Console
) -> None:
    """Recalibrate a rule file from outcomes, write the report and log it to MLflow."""
    from features.targets import target as target_named
    from pipelines import steps, training
    from pipelines.context import build_context

    ctx = build_context(config, as_of)
    with console.status("Building labelled snapshots and recalibrating"):
        inputs = steps.load_inputs(ctx)
        result = training.recalibrate(ctx, inputs, rules, target_named(target))
    table = result.table[["signal", "old_points", "new_points", "ci_low", "ci_high"]]
    console.print(table.to_string(index=False))
    metrics = result.metrics
    console.print(
        f"Holdout ROC AUC: old rules {metrics['old_rules_roc_auc']:.3f}, "
        f"recalibrated {metrics['recalibrated_rules_roc_auc']:.3f}"
    )
    console.print(f"Report: {result.paths['report']}")
    console.print(f"Recalibrated rule file: {result.paths['rules']}")
    console.print(f"Logged to MLflow run {result.run_id}")


def forget(config: Path | None, ids: list[str], console: Console) -> None:
    """Erase entities from every store, run MLflow's garbage collection, print the receipt."""
    from pipelines.erasure import forget as erase
    from pipelines.settings import load_settings

    settings = load_settings(config)
    began = time.perf_counter()
    with console.status(f"Erasing {len(ids):,} entities from every store"):
        receipt, path = erase(settings, ids)
    for store in receipt["stores"]:
        console.print(
            f"  {store['store']}: {store['rows_deleted']:,} rows deleted, "
            f"{store['files_rewritten']:,} files rewritten"
        )
    mlflow_part = receipt["mlflow"]
    deleted = len(mlflow_part.get("runs_deleted", [])) + len(
        mlflow_part.get("logged_models_deleted", [])
    )
    console.print(
        f"  MLflow: {deleted} runs/models deleted, "
        f"{len(mlflow_part.get('models_with_levels_replaced', []))} models scrubbed"
        + ("; garbage collected" if mlflow_part.get("garbage_collected") else "")
    )
    trained = mlflow_part.get("models_trained_with_data", [])
    if trained:
        names = ", ".join(f"{m['model']} v{m['version']}" for m in trained)
        console.print(f"  Trained with their data (retrained at the next retrain): {names}")
    console.print(f"  Blocked from re-import: {receipt['entities']['reimport_blocked']}")
    console.print(
        f"Forgot {receipt['entities']['count']:,} entities in "
        f"{time.perf_counter() - began:.1f} s. Receipt: {path}"
    )


def demo(out: Path, as_of: str, console: Console) -> None:
    """Generate data if missing, run the nightly flow, print where everything is."""
    import os

    from features.synthetic import source_paths
    from pipelines import steps
    from pipelines.context import build_context

    data = out / "data"
    sources = source_paths(data)
    if not Path(sources["entities"]).exists():
        generate(data, 12_000, 9_000, 12, "2025-01-01", 0, console)
    for name, path in sources.items():
        os.environ.setdefault(f"LEADSCORE_SOURCES__{name.upper()}", path)
    os.environ.setdefault("LEADSCORE_OUTPUT__DIR", str(out / "output"))
    ctx = build_context(None, as_of)
    began = time.perf_counter()
    with console.status("Reading inputs and building features"):
        inputs = steps.load_inputs(ctx)
        table = steps.build_features(ctx.settings.feature_spec(), inputs, ctx.as_of)
    from features.table import describe_table

    console.print(describe_table(table.frame, ctx.as_of, time.perf_counter() - began))
    try:
        nightly(None, as_of, console)
    except RuntimeError as exc:
        if "drift check" not in str(exc):
            raise
        console.print(f"[yellow]Warning:[/] {exc}")
    _print_where(ctx, console)


def _print_where(ctx: RunContext, console: Console) -> None:
    board = ctx.output_dir / "board" / "index.html"
    console.print(f"Lead board: {board.resolve()}")
    console.print(f"Score table: {ctx.settings.database_url} (table lead_scores)")
    console.print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {ctx.settings.tracking_uri}")


def print_run(summary: RunSummary, console: Console) -> None:
    """The end-of-run summary as tables: counts, bands, decisions and outputs."""
    from rich.table import Table

    head = Table(title=f"leadscore run {summary.as_of}", show_header=False, box=None)
    head.add_row("Entities in / rows out", f"{summary.entities_in:,} / {summary.rows_out:,}")
    head.add_row("Scored", f"{summary.scored:,}")
    for why, count in summary.not_scored.items():
        head.add_row(why.capitalize(), f"{count:,}")
    for band in ("high", "medium", "at-risk"):
        head.add_row(f"Band {band}", f"{summary.bands.get(band, 0):,}")
    for target, version in summary.champions.items():
        head.add_row(f"{target.capitalize()} model", version)
    for target, missing in summary.positives_needed.items():
        head.add_row(f"{target.capitalize()} positives needed", f"{missing:,} more")
    console.print(head)
    for target, why in summary.retrain.items():
        console.print(f"  {target}: {why}")
    for warning in summary.warnings:
        console.print(f"  [yellow]Warning:[/] {warning}")
    for name, path in summary.outputs.items():
        console.print(f"  {name}: {path}")
    if summary.timings:
        steps = Table(title="Steps", box=None)
        for column in ("step", "seconds", "peak memory (GB)"):
            steps.add_column(column, justify="left" if column == "step" else "right")
        for timing in summary.timings:
            steps.add_row(
                timing.step, f"{timing.seconds:.1f}", f"{timing.peak_rss_bytes / 1e9:.2f}"
            )
        console.print(steps)


def init(out: Path, force: bool, console: Console) -> None:
    """Write the commented starter config and say what to do next."""
    from pipelines.starter_config import write_starter_config

    path = write_starter_config(out, force=force)
    console.print(
        f"Starter config written to {path}. Point sources at your exports, map your "
        f"column names and values, then run `leadscore check -c {path}`."
    )


def check(config: Path | None, as_of: str | None, console: Console) -> None:
    """Read the sources and report what a run would see; write nothing."""
    from pipelines.check import print_check, run_check
    from pipelines.context import parse_as_of
    from pipelines.settings import load_settings

    settings = load_settings(config)
    day = parse_as_of(as_of, settings.schedule.timezone) if as_of else None
    with console.status("Reading and checking the sources"):
        report = run_check(settings, day)
    print_check(report, console)


def board(config: Path | None, host: str | None, port: int | None, console: Console) -> None:
    """Serve the lead board from the score table until interrupted."""
    from pipelines.board_server import board_server
    from pipelines.settings import load_settings

    settings = load_settings(config)
    with console.status("Reading the score table"):
        server = board_server(
            settings.database_url,
            settings.output.dir / "board",
            host if host is not None else settings.board.host,
            port if port is not None else settings.board.port,
        )
    address, bound = server.server_address[:2]
    console.print(f"Lead board on http://{address}:{bound}/ (Ctrl-C stops it).", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("Lead board stopped.")
    finally:
        server.server_close()
        server.RequestHandlerClass.store.close()  # type: ignore[attr-defined]
