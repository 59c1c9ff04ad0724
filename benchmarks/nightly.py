"""Benchmark the nightly run through the CLI, as a user runs it, against a scan floor.

Generates a history with ``leadscore generate`` (cached by size), writes a config
file, then runs ``leadscore nightly --config`` as a child process twice: a first
night (no champion yet: both models train) and the next day (champions fresh: no
training). For each run it prints the total wall time, the child's peak resident
memory (``os.wait4``) and each step's wall time and peak memory from the run's
``OUTPUT/timings/DATE.json`` (:mod:`pipelines.step_timing`). The floor is a plain
DuckDB ``SELECT entity_id, count(*) ... GROUP BY entity_id`` over the same event
Parquet (fastest of three), and each run is given as a ratio to it.

    .venv/bin/python benchmarks/nightly.py --leads 18000 --customers 12000 --months 12

The generator makes about 330 events per entity over 12 months (27 a month);
``--months`` sets the density (2 months: about 55 events per entity). Drift
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
from pathlib import Path

import duckdb
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

from features.synthetic import source_paths  # noqa: E402


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def generated(data_dir: Path, leads: int, customers: int, months: int, seed: int) -> Path:
    """The generated history for these sizes, made once and cached."""
    folder = data_dir / f"leads{leads}-customers{customers}-months{months}-seed{seed}"
    if not (folder / "DONE").exists():
        began = time.perf_counter()
        command = [str(BIN / "leadscore"), "generate", "--out", str(folder), "--leads",
                   str(leads), "--customers", str(customers), "--months", str(months),
                   "--seed", str(seed)]  # fmt: skip
        subprocess.run(command, check=True)
        (folder / "DONE").write_text(f"{time.perf_counter() - began:.1f} s\n")
    return folder


def write_config(folder: Path, data: Path, out: Path) -> Path:
    """A config file reading ``data`` and writing to ``out``."""
    config = folder / "leadscore.yaml"
    settings = {
        "sources": source_paths(data),
        "output": {"dir": str(out)},
        # The next day must not retrain on drift: it measures scoring alone.
        "schedule": {"psi_warn": 10, "psi_fail": 10},
    }
    config.write_text(yaml.safe_dump(settings))
    return config


def scan_floor(events: str) -> tuple[float, int, int]:
    """Fastest of three ``count(*) GROUP BY entity_id`` scans: seconds, events, entities."""
    pattern = f"{events}/**/*.parquet" if Path(events).is_dir() else events
    best, rows = float("inf"), []
    for _ in range(3):
        con = duckdb.connect()
        began = time.perf_counter()
        rows = con.execute(
            f"SELECT entity_id, count(*) FROM read_parquet('{pattern}') GROUP BY entity_id"
        ).fetchall()
        best = min(best, time.perf_counter() - began)
        con.close()
    return best, sum(n for _, n in rows), len(rows)


def run_nightly(config: Path, as_of: str, out: Path, log: Path) -> dict:
    """``leadscore nightly --as-of DAY --config FILE``: wall, peak RSS and step timings."""
    command = [str(BIN / "leadscore"), "nightly", "--as-of", as_of, "--config", str(config)]
    load = load_average()
    began = time.perf_counter()
    with log.open("w") as sink:
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    timings_file = out / "timings" / f"{as_of}.json"
    steps = json.loads(timings_file.read_text()) if timings_file.exists() else []
    return {
        "as_of": as_of, "exit": code, "wall": wall, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,
        "steps": steps, "load_before": load, "load_after": load_average(), "log": str(log),
    }  # fmt: skip


def report(name: str, run: dict, floor: float) -> list[str]:
    """Markdown lines for one run."""
    lines = [
        f"### {name} (as of {run['as_of']}, exit {run['exit']}; "
        f"load average {run['load_before']} before, {run['load_after']} after)",
        "",
        f"Total wall {run['wall']:.1f} s, peak RSS {run['peak_rss_gb']:.2f} GB, "
        f"{run['wall'] / floor:.0f}x the scan floor.",
        "",
        "| step | seconds | peak RSS so far (GB) |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {s['step']} | {s['seconds']:.1f} | {s['peak_rss_bytes'] / 1e9:.2f} |"
        for s in run["steps"]
    ]
    inside = sum(s["seconds"] for s in run["steps"])
    lines += [f"| (outside the steps: start-up, Prefect, flow) | {run['wall'] - inside:.1f} | |"]
    if run["exit"] != 0:
        lines += ["", f"The run failed; its output is in `{run['log']}`."]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=90_000)
    parser.add_argument("--customers", type=int, default=60_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--as-of", help="first night (default: a month before the end)")
    parser.add_argument(
        "--next-day-only", action="store_true", help="skip the first night (it must have run)"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/leadscore-nightly-bench"))
    parser.add_argument("--label", default="", help="what this measurement is (e.g. 'before')")
    parser.add_argument("--results", type=Path, help="append the Markdown to this file")
    options = parser.parse_args()

    data = generated(options.data_dir, options.leads, options.customers, options.months,
                     options.seed)  # fmt: skip
    first = options.as_of or str(
        (pd.Timestamp("2025-01-01") + pd.DateOffset(months=options.months - 1)).date()
    )
    next_day = str((pd.Timestamp(first) + pd.Timedelta(days=1)).date())
    work = data.parent / f"{data.name}-run"
    out = work / "output"
    work.mkdir(exist_ok=True)
    config = write_config(work, data, out)
    floor, n_events, n_entities = scan_floor(source_paths(data)["events"])
    lines = [
        f"## {options.label or 'nightly'}: {n_entities:,} entities with events, "
        f"{n_events:,} events ({options.leads:,} leads, {options.customers:,} customers, "
        f"{options.months} months)",
        "",
        f"Scan floor (DuckDB count(*) GROUP BY entity_id, fastest of 3): {floor:.2f} s. "
        f"Machine: {os.cpu_count()} cores; generation took "
        f"{(data / 'DONE').read_text().strip()}.",
        "",
    ]
    runs = []
    if not options.next_day_only:
        # A first night starts from nothing: no models, scores or store of an earlier run.
        shutil.rmtree(out, ignore_errors=True)
        runs.append(("First night (trains both models)", run_nightly(
            config, first, out, work / f"nightly-{first}.log")))  # fmt: skip
    runs.append(("Next day (no training)", run_nightly(
        config, next_day, out, work / f"nightly-{next_day}.log")))  # fmt: skip
    for name, run in runs:
        lines += report(name, run, floor)
    text = "\n".join(lines)
    print(text, flush=True)
    if options.results:
        with options.results.open("a") as sink:
            sink.write(text + "\n")


if __name__ == "__main__":
    main()
