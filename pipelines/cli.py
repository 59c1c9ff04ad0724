"""The ``leadscore`` command line (Typer).

Each command builds settings, calls one flow or pure step, shows progress for long
work and ends with a short summary of what it did and where the outputs are. Errors
from bad input are printed as sentences, not tracebacks (``--debug`` shows them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="leadscore",
    help="Predictive lead and customer scoring with reasons sales can read.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=False)
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML, TOML or JSON config file (see README).", exists=True
    ),
]
AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", help="Run date YYYY-MM-DD (default: today, configured time zone)."),
]
AllowFutureOption = Annotated[
    bool,
    typer.Option(
        "--allow-future",
        help="Run even when the run date is after the day following the latest event.",
    ),
]
TargetOption = Annotated[
    str, typer.Option("--target", "-t", help="What to predict: conversion or churn.")
]

_state = {"debug": False}


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Predictive lead and customer scoring with reasons sales can read."""
    _state["debug"] = debug
    from pipelines.runtime import (
        configure_terminal_logging,
        freeze_objects_at_exit,
        no_transparent_huge_pages,
        set_quiet_and_patient_defaults,
    )

    no_transparent_huge_pages()  # before the first large array (see its docstring)
    set_quiet_and_patient_defaults()
    configure_terminal_logging(verbose)
    freeze_objects_at_exit()


def _run(func, *args, **kwargs):  # noqa: ANN001, ANN202
    """Run a command body; turn expected errors into one readable sentence."""
    from pipelines.errors import user_facing_message

    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every failure ends as a sentence
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]Error:[/] {user_facing_message(exc)}")
        err_console.print("[dim]Run again with --debug for the full traceback.[/]")
        raise typer.Exit(code=1) from None


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the generated data to.")] = Path(
        "data"
    ),
    leads: Annotated[int, typer.Option(help="Number of B2B leads.")] = 12_000,
    customers: Annotated[int, typer.Option(help="Number of SaaS customers.")] = 9_000,
    months: Annotated[int, typer.Option(help="Months of history.")] = 12,
    start: Annotated[
        str, typer.Option(help="First day of the history, YYYY-MM-DD.")
    ] = "2025-01-01",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 0,
) -> None:
    """Generate a synthetic event history with known outcome probabilities."""
    from pipelines import commands

    _run(commands.generate, out, leads, customers, months, start, seed, console)


@app.command()
def features(
    as_of: AsOfOption = None,
    config: ConfigOption = None,
    out: Annotated[Path | None, typer.Option(help="Parquet file to write.")] = None,
    allow_future: AllowFutureOption = False,
) -> None:
    """Build the point-in-time feature table as of a date."""
    from pipelines import commands

    _run(commands.features, config, as_of, out, allow_future, console)


@app.command()
def recalibrate(
    rules: Annotated[str, typer.Option(help="Rule file: engagement, lead, purchase or a path.")] = (
        "engagement"
    ),
    target: TargetOption = "churn",
    config: ConfigOption = None,
    as_of: AsOfOption = None,
) -> None:
    """Learn new rule points and bands from real outcomes; write a side-by-side report."""
    from pipelines import commands

    _run(commands.recalibrate, config, rules, target, as_of, console)


@app.command()
def train(
    target: TargetOption = "conversion",
    config: ConfigOption = None,
    as_of: AsOfOption = None,
    allow_future: AllowFutureOption = False,
) -> None:
    """Train, calibrate, evaluate and register a model; promote it only if it wins."""
    from pipelines import commands

    _run(commands.train, config, target, as_of, allow_future, console)


@app.command()
def models(config: ConfigOption = None) -> None:
    """List registered model versions, their aliases and key metrics."""
    from pipelines import commands

    _run(commands.list_models, config, console)


@app.command()
def score(
    as_of: AsOfOption = None, config: ConfigOption = None, allow_future: AllowFutureOption = False
) -> None:
    """Score every entity with the champion models and write all outputs."""
    from pipelines import commands

    _run(commands.score, config, as_of, allow_future, console)


@app.command()
def nightly(
    as_of: AsOfOption = None, config: ConfigOption = None, allow_future: AllowFutureOption = False
) -> None:
    """Run the nightly flow once: validate, build features, retrain if due, score, publish."""
    from pipelines import commands

    _run(commands.nightly, config, as_of, console, allow_future)


@app.command()
def backfill(
    from_date: Annotated[str, typer.Option("--from", help="First date, YYYY-MM-DD.")],
    to_date: Annotated[str, typer.Option("--to", help="Last date, YYYY-MM-DD.")],
    every: Annotated[int, typer.Option(help="Days between runs.")] = 1,
    config: ConfigOption = None,
) -> None:
    """Run the nightly flow for past dates, in order."""
    from pipelines import commands

    _run(commands.backfill, config, from_date, to_date, every, console)


@app.command()
def serve(
    config: ConfigOption = None,
    register_only: Annotated[
        bool, typer.Option(help="Register the deployment and exit instead of serving it.")
    ] = False,
) -> None:
    """Register the nightly deployment on the Prefect API and serve it."""
    from pipelines import deploy

    _run(deploy.serve_nightly, config, register_only, console)


@app.command()
def forget(
    entity_ids: Annotated[list[str] | None, typer.Argument(help="Entity ids to erase.")] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file", help="File with one entity id per line.", exists=True, dir_okay=False
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Erase entities from every store the pipeline writes, and write a receipt."""
    from pipelines import commands

    ids = list(entity_ids or [])
    if from_file is not None:
        ids += [line.strip() for line in from_file.read_text().splitlines() if line.strip()]
    if not ids:
        err_console.print("[bold red]Error:[/] give entity ids or --from-file.")
        raise typer.Exit(code=2)
    _run(commands.forget, config, ids, console)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for data and outputs.")] = Path("."),
    as_of: Annotated[
        str, typer.Option(help="Run date inside the generated history.")
    ] = "2025-12-01",
) -> None:
    """Generate data and run the nightly flow end to end; print where everything is."""
    from pipelines import commands

    _run(commands.demo, out, as_of, console)


@app.command()
def init(
    out: Annotated[Path, typer.Option(help="Config file to write.")] = Path("leadscore.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config (sources, column and value maps, every section)."""
    from pipelines import commands

    _run(commands.init, out, force, console)


@app.command()
def check(
    config: ConfigOption = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Run date YYYY-MM-DD (default: the day after the data)."),
    ] = None,
) -> None:
    """Read the sources and report rows, dates, event types and labels; write nothing."""
    from pipelines import commands

    _run(commands.check, config, as_of, console)


@app.command()
def board(
    config: ConfigOption = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: board.port, 8765; 0 picks a free one).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address (default: 127.0.0.1).")] = None,
) -> None:
    """Serve the lead board from the score table, a page at a time, until Ctrl-C."""
    from pipelines import commands

    _run(commands.board, config, host, port, console)


def run() -> None:  # pragma: no cover - console entry
    """Entry point used by ``python -m pipelines.cli``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
