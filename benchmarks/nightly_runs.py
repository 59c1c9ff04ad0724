"""Run ``leadscore nightly`` through the CLI for :mod:`benchmarks.nightly`, and report it.

The scan floor, a ``prefect server`` for ``--prefect-server``, one nightly as a child
process (wall, CPU, peak memory, step timings, what its features read) and its
Markdown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import duckdb

BIN = Path(sys.executable).parent


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


@dataclass(frozen=True)
class Floor:
    """The scan floor: one ``SELECT entity_id, count(*) ... GROUP BY entity_id``.

    Attributes:
        seconds: Fastest of three, its rows fetched into Python (``fetchall``), as a
            plain query from Python gives them: the floor the ratios are given to.
        arrow_seconds: Fastest of three, its rows fetched as Arrow (the engine's time
            alone: at 1M entities ``fetchall`` adds about a third).
        events: Events counted.
        entities: Entities with events.
    """

    seconds: float
    arrow_seconds: float
    events: int
    entities: int


def scan_floor(events: str) -> Floor:
    """Fastest of three scans each way (see :class:`Floor`), a fresh connection each time."""
    pattern = f"{events}/**/*.parquet" if Path(events).is_dir() else events
    query = f"SELECT entity_id, count(*) FROM read_parquet('{pattern}') GROUP BY entity_id"
    best, best_arrow, rows = float("inf"), float("inf"), []
    for _ in range(3):
        for arrow in (False, True):
            con = duckdb.connect()
            began = time.perf_counter()
            if arrow:
                con.sql(query).to_arrow_table()
            else:
                rows = con.execute(query).fetchall()
            seconds = time.perf_counter() - began
            con.close()
            if arrow:
                best_arrow = min(best_arrow, seconds)
            else:
                best = min(best, seconds)
    return Floor(best, best_arrow, sum(n for _, n in rows), len(rows))


@contextmanager
def prefect_server(work: Path) -> Iterator[dict[str, str]]:
    """A ``prefect server`` on 127.0.0.1 for the runs (as a scheduled deployment has one).

    Yields the environment pointing at it; the server is stopped with its process group.
    """
    home = work / "prefect-home"
    home.mkdir(exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with (work / "prefect-server.log").open("w") as sink:
        server = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            with suppress(OSError), urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    break
            time.sleep(0.5)
        else:
            raise SystemExit(f"prefect server did not start; see {work / 'prefect-server.log'}")
        yield {**env, "PREFECT_API_URL": api_url}
    finally:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def run_nightly(
    config: Path, as_of: str, out: Path, log: Path, env: dict[str, str] | None = None
) -> dict:
    """``leadscore nightly --as-of DAY --config FILE``: wall, peak RSS and step timings."""
    command = [str(BIN / "leadscore"), "nightly", "--as-of", as_of, "--config", str(config)]
    load = load_average()
    began = time.perf_counter()
    with log.open("w") as sink:
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    timings_file = out / "timings" / f"{as_of}.json"
    steps = json.loads(timings_file.read_text()) if timings_file.exists() else []
    summary_file = out / "summaries" / f"{as_of}.json"
    inputs = json.loads(summary_file.read_text()).get("inputs", {}) if summary_file.exists() else {}
    return {
        "as_of": as_of, "exit": code, "wall": wall, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,
        "cpu": usage.ru_utime + usage.ru_stime, "steps": steps, "inputs": inputs,
        "load_before": load, "load_after": load_average(), "log": str(log),
    }  # fmt: skip


def _read_for_features(inputs: dict) -> list[str]:
    """The run summary's events read for the features, when it says (roll-ups or not)."""
    if "events_read_for_features" not in inputs:
        return []
    used = ("only the days since the roll-ups' end" if inputs.get("rollups_used")
            else "every event before the cutoff: no roll-ups, or roll-ups built")  # fmt: skip
    return [f"Events read for the features: {inputs['events_read_for_features']:,} ({used}).", ""]


def report(name: str, run: dict, floor: Floor) -> list[str]:
    """Markdown lines for one run (``run["floor"]``: the floor measured just before it)."""
    paired = run.get("floor")
    beside = (f" ({run['wall'] / paired.seconds:.0f}x the {paired.seconds:.2f} s floor "
              "measured just before it)" if paired is not None else "")  # fmt: skip
    lines = [
        f"### {name} (as of {run['as_of']}, exit {run['exit']}; "
        f"load average {run['load_before']} before, {run['load_after']} after)",
        "",
        f"Total wall {run['wall']:.1f} s, peak RSS {run['peak_rss_gb']:.2f} GB, "
        f"{run['wall'] / floor.seconds:.0f}x the scan floor{beside}, "
        f"{run['wall'] / floor.arrow_seconds:.0f}x its engine time; "
        f"CPU {run.get('cpu', 0.0):.1f} s "
        "(the run and the processes it waited for, Prefect's temporary server among them).",
        "",
        *_read_for_features(run.get("inputs", {})),
        "| step | seconds | CPU seconds | peak RSS so far (GB) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {s['step']} | {s['seconds']:.1f} | {s.get('cpu_seconds', 0.0):.1f} "
        f"| {s['peak_rss_bytes'] / 1e9:.2f} |"
        for s in run["steps"]
    ]
    inside = sum(s["seconds"] for s in run["steps"])
    lines += [f"| (outside the steps: start-up, Prefect, flow) | {run['wall'] - inside:.1f} | | |"]
    if run["exit"] != 0:
        lines += ["", f"The run failed; its output is in `{run['log']}`."]
    return lines + [""]
