"""Benchmark the nightly run through the CLI, as a user runs it, against a scan floor.

Generates a history into ``--data-dir`` (:func:`features.synthetic.generate` in a
child process, timed, with its peak memory), writes a config file beside it (in
``DATA-DIR-run/``), then runs ``leadscore nightly --config`` as a child process
twice: a first night (no champion yet: both models train) and the next day
(champions fresh: no training); ``--first-night-only`` and ``--next-day-only`` run
one of them, ``--no-nightly`` only the generation and the floor. For each run it
prints the total wall time, the child's peak resident memory (``os.wait4``) and
each step's wall time and peak memory from the run's ``OUTPUT/timings/DATE.json``
(:mod:`pipelines.step_timing`). The floor is a plain DuckDB
``SELECT entity_id, count(*) ... GROUP BY entity_id`` over the same event Parquet
(fastest of three), its rows fetched into Python (``fetchall``); each run is given as
a ratio to it and to the same query's engine time alone (its rows fetched as Arrow,
about a third less at 1M entities). The machines are noisy (the same run varies by a
tenth between runs, and the machine's speed drifts by more): ``--next-day-runs 3``
repeats the next day from the same state, names the median beside every run's
numbers, and gives each next-day run the ratio to a floor measured just before it.

    .venv/bin/python benchmarks/nightly.py --leads 18000 --customers 12000 --months 12

The generation's parameters, time and peak memory are kept in
``DATA-DIR/bench-data.json``; with ``--reuse-data`` a data folder generated with the
same parameters is used as it is (a folder with other parameters is refused, an
empty one is generated). 1M entities with about 53M events, reused after the first
time (generation: 66 s, 0.36 GB):

    .venv/bin/python benchmarks/nightly.py --leads 600000 --customers 400000 \\
        --months 6 --engagement-shift -1.5 --data-dir /work/bench/1m --reuse-data

``--events-as csv`` (or ``duckdb``) reads the same events from one CSV file (or a
DuckDB table) written once beside the data, with ``--csv-reader engine`` (default) or
``pandas`` (the reference path); the scan floor stays the Parquet one. ``--rollups``
runs both nights with ``features.incremental_rollups`` on: the first night builds the
roll-ups, the next day aggregates only its day's events (the run summary's
``events_read_for_features``).

The generator makes about 330 events per entity over 12 months (27 a month), and
about 170 over 6 months for 60% leads; 6 months is the shortest history on which
both models train with the default feature windows (90 days) and horizons (churn:
60 days) at the default first night, a month before the end. ``--engagement-shift``
lowers the density (-1.5: about 53 events per entity over 6 months). Drift
thresholds are set high so that the next day does not retrain on drift; Prefect
runs as the environment says (a temporary server per command without
``PREFECT_API_URL``). The machine's load average is printed beside each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.daily_feed import arrived, day_file, feed_folder  # noqa: E402
from benchmarks.nightly_runs import (  # noqa: E402
    prefect_server,
    report,
    run_nightly,
    scan_floor,
)
from features.synthetic import source_paths  # noqa: E402

#: Beside the generated inputs: the parameters they were generated with, and the cost.
RECORD = "bench-data.json"
START = "2025-01-01"
#: The generator, in a child process so that its peak memory is its own.
GENERATE = """
import json, sys
from features.synthetic import generate
p = json.loads(sys.argv[1])
data = generate(sys.argv[2], n_leads=p["leads"], n_customers=p["customers"],
                months=p["months"], start=p["start"], seed=p["seed"],
                engagement_shift=p["engagement_shift"])
print(json.dumps({"events": data.n_events, "conversions": data.n_conversions,
                  "churns": data.n_churns}))
"""


def existing_parameters(folder: Path) -> dict[str, Any] | None:
    """The parameters a complete generated folder was made with (None: none there)."""
    record, description = folder / RECORD, folder / "generator.json"
    if not (record.is_file() and description.is_file()):
        return None
    parameters = json.loads(record.read_text())["parameters"]
    written = json.loads(description.read_text())
    sizes = {"leads": written["n_leads"], "customers": written["n_customers"],
             "months": written["months"], "seed": written["seed"],
             "engagement_shift": written.get("engagement_shift", 0.0)}  # fmt: skip
    if any(parameters[name] != value for name, value in sizes.items()):
        raise SystemExit(
            f"{folder}: {RECORD} says {parameters} but generator.json says {sizes}: "
            "the folder was regenerated by hand; generate it again without --reuse-data."
        )
    return parameters


def generated(folder: Path, parameters: dict[str, Any], reuse: bool) -> dict[str, Any]:
    """Generate the history into ``folder`` (or reuse it); return its record.

    Args:
        folder: Where the generated inputs are (events/, entities.parquet, ...).
        parameters: leads, customers, months, start, seed and engagement_shift.
        reuse: Keep a folder already generated with the same parameters.

    Returns:
        The contents of ``folder/bench-data.json``: parameters, counts, generation
        seconds and peak RSS.
    """
    if reuse and (found := existing_parameters(folder)) is not None:
        if found != parameters:
            differ = {k: (found.get(k), v) for k, v in parameters.items() if found.get(k) != v}
            raise SystemExit(
                f"--reuse-data: {folder} holds data generated with other parameters "
                f"(name: (there, asked)): {differ}. Use another --data-dir, or run "
                "without --reuse-data to generate it again."
            )
        print(f"Reusing the data in {folder} ({RECORD}).", flush=True)
        return json.loads((folder / RECORD).read_text())
    (folder / RECORD).unlink(missing_ok=True)
    command = [sys.executable, "-c", GENERATE, json.dumps(parameters), str(folder)]
    began = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE)
    output = child.stdout.read() if child.stdout else b""
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"Generating {parameters} into {folder} failed.")
    record = {
        "parameters": parameters,
        **json.loads(output),
        "generation_seconds": round(time.perf_counter() - began, 1),
        "generation_peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2),
    }
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def events_as(data: Path, form: str) -> str:
    """The generated events as ``form`` (``parquet``, ``csv``, ``duckdb``): the source to read.

    The CSV file (``DATA-DIR/events.csv``) and the DuckDB table (``DATA-DIR/events.duckdb``,
    table ``events``) are written once from the Parquet events by DuckDB and reused.
    """
    parquet = source_paths(data)["events"]
    if form == "parquet":
        return parquet
    pattern = f"{parquet}/**/*.parquet" if Path(parquet).is_dir() else parquet
    if form == "csv":
        target = data / "events.csv"
        if not target.exists():
            duckdb.execute(f"COPY (SELECT * FROM read_parquet('{pattern}')) "
                           f"TO '{target}.part' (HEADER, DELIMITER ',')")  # fmt: skip
            Path(f"{target}.part").rename(target)
        return str(target)
    target = data / "events.duckdb"
    if not target.exists():
        Path(f"{target}.part").unlink(missing_ok=True)  # left by an interrupted run
        with duckdb.connect(f"{target}.part") as con:
            con.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{pattern}')")
        Path(f"{target}.part").rename(target)
    return f"duckdb:///{target}?table=events"


def write_config(
    folder: Path,
    data: Path,
    out: Path,
    events: str,
    csv_reader: str = "engine",
    rollups: bool = False,
) -> Path:
    """A config file reading ``data`` (its events from ``events``) and writing to ``out``."""
    config = folder / "leadscore.yaml"
    settings = {
        "sources": {**source_paths(data), "events": events, "csv_reader": csv_reader},
        "output": {"dir": str(out)},
        # The next day must not retrain on drift: it measures scoring alone.
        "schedule": {"psi_warn": 10, "psi_fail": 10},
    }
    if rollups:
        settings["features"] = {"incremental_rollups": True}
    config.write_text(yaml.safe_dump(settings))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=90_000)
    parser.add_argument("--customers", type=int, default=60_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--engagement-shift", type=float, default=0.0, help="lower: fewer events per entity"
    )
    parser.add_argument("--as-of", help="first night (default: a month before the end)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--next-day-only", action="store_true", help="skip the first night (it must have run)"
    )
    which.add_argument("--first-night-only", action="store_true", help="skip the next day")
    which.add_argument(
        "--no-nightly", action="store_true", help="only generate (or reuse) and time the floor"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/tmp/leadscore-nightly-bench/data"),
        help="the generated inputs (runs go to DATA-DIR-run beside it)",
    )
    parser.add_argument(
        "--reuse-data",
        action="store_true",
        help=f"keep DATA-DIR when its {RECORD} has the same parameters",
    )
    parser.add_argument(
        "--prefect-server",
        action="store_true",
        help="run against a prefect server started once on 127.0.0.1 (as a deployment does) "
        "instead of a temporary one per command",
    )
    parser.add_argument(
        "--events-as",
        choices=("parquet", "csv", "duckdb"),
        default="parquet",
        help="read the events as generated (Parquet), as one CSV file or as a DuckDB table "
        "(written once beside the data); runs go to DATA-DIR-run-csv (or -duckdb)",
    )
    parser.add_argument(
        "--csv-reader",
        choices=("engine", "pandas"),
        default="engine",
        help="sources.csv_reader for --events-as csv (pandas: the reference path; runs go "
        "to DATA-DIR-run-csv-pandas)",
    )
    parser.add_argument(
        "--rollups",
        action="store_true",
        help="features.incremental_rollups on: the first night builds the roll-ups, the next "
        "day reads only its day's events (runs go to DATA-DIR-run-rollups)",
    )
    parser.add_argument(
        "--daily-files",
        action="store_true",
        help="the events arrive as a feed that writes a file a day: the first night reads "
        "the generated files cut to the events before its date, each next day gets its "
        "day's events as one more file (benchmarks/daily_feed.py; runs go to "
        "DATA-DIR-run-daily)",
    )
    parser.add_argument(
        "--next-day-runs",
        type=int,
        default=1,
        help="run the next day this many times, each from the output the first night left "
        "(restored before each run); each is reported and the median named",
    )
    parser.add_argument("--label", default="", help="what this measurement is (e.g. 'before')")
    parser.add_argument("--results", type=Path, help="append the Markdown to this file")
    options = parser.parse_args()

    parameters = {"leads": options.leads, "customers": options.customers,
                  "months": options.months, "start": START, "seed": options.seed,
                  "engagement_shift": options.engagement_shift}  # fmt: skip
    data = options.data_dir.resolve()
    generation = generated(data, parameters, options.reuse_data)
    first = options.as_of or str(
        (pd.Timestamp(START) + pd.DateOffset(months=options.months - 1)).date()
    )
    next_day = str((pd.Timestamp(first) + pd.Timedelta(days=1)).date())
    suffix = "" if options.events_as == "parquet" else f"-{options.events_as}"
    suffix += "-pandas" if options.events_as == "csv" and options.csv_reader == "pandas" else ""
    suffix += "-rollups" if options.rollups else ""
    suffix += "-daily" if options.daily_files else ""
    work = data.parent / f"{data.name}-run{suffix}"
    out = work / "output"
    work.mkdir(exist_ok=True)
    if options.daily_files and options.events_as != "parquet":
        raise SystemExit("--daily-files delivers Parquet files: use it without --events-as.")
    began = time.perf_counter()
    events = events_as(data, options.events_as)
    arrival: Callable[[], AbstractContextManager[Any]] = nullcontext
    if options.daily_files:
        feed = feed_folder(data, events, first)
        day = day_file(data, events, first)  # the next day's new file: the first night's day
        events = str(feed)
        arrival = partial(arrived, feed, day)
    conversion = time.perf_counter() - began
    config = write_config(work, data, out, events, options.csv_reader, options.rollups)
    floor_of = events if options.daily_files else source_paths(data)["events"]
    with arrival():  # the events the next day reads
        floor = scan_floor(floor_of)
    n_events, n_entities = floor.events, floor.entities
    shift = options.engagement_shift
    lines = [
        f"## {options.label or 'nightly'}: {n_entities:,} entities with events, "
        f"{n_events:,} events ({options.leads:,} leads, {options.customers:,} customers, "
        f"{options.months} months{f', engagement shift {shift:g}' if shift else ''})",
        "",
        f"Scan floor (DuckDB count(*) GROUP BY entity_id, fastest of 3, a fresh connection "
        f"each time): {floor.seconds:.2f} s with its {n_entities:,} rows fetched into Python "
        f"(`fetchall`), the floor of the ratios below; {floor.arrow_seconds:.2f} s fetched as "
        "Arrow (the engine's time alone). Each next-day run also gets a floor measured just "
        "before it, so that a slower or faster spell of the machine moves both. "
        f"Machine: {os.cpu_count()} cores; generation took "
        f"{generation['generation_seconds']:.1f} s "
        f"(peak RSS {generation['generation_peak_rss_gb']:.2f} GB).",
        "",
    ]
    if options.rollups:
        lines += ["Incremental roll-ups on (`features.incremental_rollups: true`).", ""]
    if options.daily_files:
        lines += [f"Events as a daily feed: the first night reads the generated files cut to "
                  f"the events before {first}; the next day gets the events of {first} as one "
                  "more file, as a feed that writes a file a day delivers them (the floor "
                  "counts the files the next day reads).", ""]  # fmt: skip
    if options.events_as != "parquet":
        reader = (
            f", `sources.csv_reader: {options.csv_reader}`" if options.events_as == "csv" else ""
        )
        lines += [f"Events read from {events}{reader} (written from the Parquet in "
                  f"{conversion:.1f} s, or reused).", ""]  # fmt: skip
    runs = []
    with ExitStack() as stack:
        env = stack.enter_context(prefect_server(work)) if options.prefect_server else None
        if env is not None:
            lines += ["Prefect: a `prefect server` on 127.0.0.1, started before the runs.", ""]
        if not (options.next_day_only or options.no_nightly):
            # A first night starts from nothing: no models, scores or store of an earlier run.
            shutil.rmtree(out, ignore_errors=True)
            runs.append(("First night (trains both models)", run_nightly(
                config, first, out, work / f"nightly-{first}.log", env)))  # fmt: skip
        if not (options.first_night_only or options.no_nightly):
            repeats = max(options.next_day_runs, 1)
            kept = work / "output-before-next-day"
            if repeats > 1:
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(out, kept, symlinks=True)
            for number in range(1, repeats + 1):
                if number > 1:  # the same day again, from the same state
                    shutil.rmtree(out)
                    shutil.copytree(kept, out, symlinks=True)
                title = "Next day (no training)" + (f", run {number} of {repeats}"
                                                    if repeats > 1 else "")  # fmt: skip
                with arrival():
                    paired = scan_floor(floor_of)
                    run = run_nightly(config, next_day, out, work / f"nightly-{next_day}.log",
                                      env)  # fmt: skip
                runs.append((title, {**run, "floor": paired}))
            shutil.rmtree(kept, ignore_errors=True)
    for name, run in runs:
        lines += report(name, run, floor)
    next_days = sorted((run["wall"], name) for name, run in runs if name.startswith("Next day"))
    if len(next_days) > 1:
        walls = ", ".join(f"{wall:.1f} s" for wall in sorted(w for w, _ in next_days))
        median_wall, median_name = next_days[(len(next_days) - 1) // 2]
        paired = sorted(run["wall"] / run["floor"].seconds for name, run in runs
                        if name.startswith("Next day"))  # fmt: skip
        lines += [f"Next day, {len(next_days)} runs from the same state: {walls}; median "
                  f"{median_wall:.1f} s ({median_name.split(', ')[-1]}), "
                  f"{median_wall / floor.seconds:.0f}x the {floor.seconds:.2f} s scan floor "
                  f"({median_wall / floor.arrow_seconds:.0f}x its {floor.arrow_seconds:.2f} s "
                  "engine time); each run against the floor measured just before it: "
                  f"{', '.join(f'{ratio:.1f}x' for ratio in paired)}, median "
                  f"{paired[(len(paired) - 1) // 2]:.1f}x.", ""]  # fmt: skip
    text = "\n".join(lines)
    print(text, flush=True)
    if options.results:
        with options.results.open("a") as sink:
            sink.write(text + "\n")


if __name__ == "__main__":
    main()
