"""Benchmark the point-in-time feature build: DuckDB (via Ibis) against plain pandas.

Generates skewed random events to Parquet in chunks (cached by size and seed), then
builds the feature table for one cutoff with each engine in its own child process,
so that each engine's peak resident memory is measured on its own (``os.wait4``).

    .venv/bin/python benchmarks/features.py --events 10000000 50000000 --entities 1000000

The machine is a shared VM whose speed drifts by tens of percent over minutes, so
``--repeat N`` builds N times per engine and also prints the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CUTOFF = np.datetime64("2025-06-01T00:00:00", "us")
HISTORY_DAYS = 365
CHUNK_EVENTS = 2_000_000
DAY_US = 86_400 * 1_000_000

#: Event mix: common marketing and product events dominate, as in real exports;
#: two undeclared types exercise the generic path.
EVENT_MIX: dict[str, float] = {
    "page_view": 0.22, "email_delivered": 0.14, "email_opened": 0.08, "login": 0.09,
    "feature_use": 0.12, "session": 0.08, "email_clicked": 0.03, "email_bounced": 0.005,
    "email_unsubscribed": 0.002, "pricing_page_view": 0.02, "form_submit": 0.008,
    "form_error": 0.003, "content_download": 0.01, "webinar_registered": 0.004,
    "webinar_attended": 0.002, "demo_request": 0.002, "nps_answer": 0.003,
    "ticket_opened": 0.006, "ticket_resolved": 0.005, "purchase": 0.004,
    "chat_message": 0.05, "api_call": 0.118,
}  # fmt: skip
FEATURE_IDS = 40
PAGE_IDS = 500


def entity_ids(n_entities: int) -> pa.Array:
    return pa.array([f"ent_{i:07d}" for i in range(n_entities)], pa.string())


def generate_entities(path: Path, n_entities: int, seed: int) -> None:
    rng = np.random.default_rng([seed, 1])
    # Created over three years before the cutoff; a few after it (not yet in the table).
    age_days = rng.uniform(-10, 3 * 365, n_entities)
    created = CUTOFF - (age_days * DAY_US).astype("timedelta64[us]")
    industries = np.array(["software", "retail", "finance", "health", "manufacturing"])
    table = pa.table(
        {
            "entity_id": entity_ids(n_entities),
            "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
            "kind": pa.array(np.where(rng.random(n_entities) < 0.6, "lead", "customer")),
            "consent": pa.array(rng.random(n_entities) > 0.01),
            "industry": pa.array(industries[rng.integers(0, len(industries), n_entities)]),
            "employees": pa.array(np.round(rng.lognormal(4, 1.5, n_entities))),
        }
    )
    _write_atomically(table, path)


def generate_events(folder: Path, n_events: int, n_entities: int, seed: int) -> None:
    """Write ``n_events`` random events as Parquet parts, chunk by chunk."""
    rng = np.random.default_rng([seed, 2])
    ids = entity_ids(n_entities)
    # A heavy-tailed activity level per entity: most are quiet, a few very busy.
    activity = rng.lognormal(0.0, 1.3, n_entities)
    activity_cdf = np.cumsum(activity) / activity.sum()
    types = pa.array(list(EVENT_MIX), pa.string())
    type_cdf = np.cumsum(list(EVENT_MIX.values()))
    type_cdf /= type_cdf[-1]
    code = {name: i for i, name in enumerate(EVENT_MIX)}
    features = pa.array([f"feature_{i:02d}" for i in range(FEATURE_IDS)])
    pages = pa.array([f"/page/{i}" for i in range(PAGE_IDS)])
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    for part, start in enumerate(range(0, n_events, CHUNK_EVENTS)):
        n = min(CHUNK_EVENTS, n_events - start)
        who = np.searchsorted(activity_cdf, rng.random(n), side="right").clip(0, n_entities - 1)
        what = np.searchsorted(type_cdf, rng.random(n), side="right").clip(0, len(EVENT_MIX) - 1)
        # Recent history is denser; 2% of events fall after the cutoff (future events).
        age_us = ((1.0 - rng.power(1.6, n)) * HISTORY_DAYS * DAY_US).astype(np.int64)
        future = rng.random(n) < 0.02
        age_us[future] = -rng.integers(1, 30 * DAY_US, future.sum())
        event_time = CUTOFF - age_us.astype("timedelta64[us]")
        value = np.full(n, np.nan)
        session = what == code["session"]
        value[session] = np.round(rng.lognormal(2.5, 0.8, session.sum()), 1)
        nps = what == code["nps_answer"]
        value[nps] = rng.choice(11, nps.sum(), p=_nps_weights())
        purchase = what == code["purchase"]
        value[purchase] = np.round(rng.lognormal(6, 1, purchase.sum()), 2)
        item_index = np.where(
            what == code["feature_use"],
            np.minimum(rng.zipf(1.5, n) - 1, FEATURE_IDS - 1),
            np.minimum(rng.zipf(1.3, n) - 1, PAGE_IDS - 1),
        )
        item = pc.if_else(
            pa.array(what == code["feature_use"]),
            features.take(pa.array(np.minimum(item_index, FEATURE_IDS - 1))),
            pc.if_else(
                pa.array(what == code["page_view"]),
                pages.take(pa.array(item_index)),
                pa.nulls(n, pa.string()),
            ),
        )
        table = pa.table(
            {
                "entity_id": ids.take(pa.array(who)),
                "event_time": pa.array(event_time, pa.timestamp("us", tz="UTC")),
                "event_type": types.take(pa.array(what)),
                "value": pa.array(value, mask=np.isnan(value)),
                "item": item,
            }
        )
        pq.write_table(table, tmp / f"part-{part:05d}.parquet", row_group_size=500_000)
    os.replace(tmp, folder)


def _nps_weights() -> np.ndarray:
    weights = np.array([1, 1, 1, 1, 2, 3, 4, 8, 10, 9, 6], dtype=float)
    return weights / weights.sum()


def _write_atomically(table: pa.Table, path: Path) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".parquet.tmp")
    os.close(handle)
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def dataset(root: Path, n_events: int, n_entities: int, seed: int) -> tuple[Path, Path]:
    """The cached events folder and entities file for this size and seed."""
    folder = root / f"events-{n_events}-{n_entities}-seed{seed}"
    entities = root / f"entities-{n_entities}-seed{seed}.parquet"
    root.mkdir(parents=True, exist_ok=True)
    if not entities.exists():
        generate_entities(entities, n_entities, seed)
    if not folder.exists():
        started = time.perf_counter()
        generate_events(folder, n_events, n_entities, seed)
        print(f"generated {n_events:,} events in {time.perf_counter() - started:.1f} s")
    return folder, entities


# --- one engine in a child process ------------------------------------------------------


def run_engine(engine: str, events: Path, entities: Path, result: Path, args: dict) -> None:
    """Build the table with one engine and write the timing to ``result`` (child side)."""
    import pandas as pd

    from features.build import build_features
    from features.reference import build_features_pandas

    as_of = pd.Timestamp(CUTOFF, tz="UTC")
    started = time.perf_counter()
    entity_frame = pd.read_parquet(entities)
    if engine == "duckdb":
        import ibis

        limit = {"memory_limit": args["memory_limit"]} if args["memory_limit"] else {}
        con = ibis.duckdb.connect(threads=args["threads"], **limit)
        table = build_features(str(events / "*.parquet"), entity_frame, as_of, con=con)
    else:
        # Arrow-backed strings (the pandas 3 default) read fastest; the reference turns
        # ids into row numbers and types into categories itself.
        event_frame = pd.read_parquet(
            events, columns=["entity_id", "event_time", "event_type", "value", "item"]
        )
        table = build_features_pandas(event_frame, entity_frame, as_of)
    seconds = time.perf_counter() - started
    result.write_text(json.dumps({"seconds": seconds, "rows": len(table), "cols": table.shape[1]}))


def measure(engine: str, events: Path, entities: Path, options: argparse.Namespace) -> dict:
    """Run one engine in a child process; its own peak RSS comes from ``os.wait4``."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [
            sys.executable, __file__, "--child", engine, "--child-events", str(events),
            "--child-entities", str(entities), "--child-result", str(result),
            "--threads", str(options.threads), "--memory-limit", options.memory_limit,
        ]  # fmt: skip
        process = subprocess.Popen(command)
        _, status, usage = os.wait4(process.pid, 0)
        if status != 0:
            raise SystemExit(f"{engine} child failed with status {status}")
        measured = json.loads(result.read_text())
    measured["peak_rss_gb"] = usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[10_000_000, 50_000_000])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pandas", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=1, help="builds per engine and size")
    # DuckDB's own default (80% of RAM): a tight limit made it partition the aggregate,
    # which was slower *and* peaked higher (5.3 GB at 5GB against 3.7 GB without).
    parser.add_argument(
        "--memory-limit", default="", help="DuckDB memory_limit (default: DuckDB's)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "leadscore-bench"
    )
    parser.add_argument("--child", choices=["duckdb", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--child-events", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-entities", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.repeat < 1:
        parser.error("--repeat needs 1 or more builds per engine.")
    if options.child:
        child_args = {"threads": options.threads, "memory_limit": options.memory_limit}
        run_engine(options.child, options.child_events, options.child_entities,
                   options.child_result, child_args)  # fmt: skip
        return

    engines = ["duckdb", "pandas"] if options.pandas else ["duckdb"]
    print(f"cpus={os.cpu_count()} duckdb threads={options.threads} "
          f"memory_limit={options.memory_limit or 'DuckDB default'}")  # fmt: skip
    for n_events in options.events:
        events, entities = dataset(options.data_dir, n_events, options.entities, options.seed)
        runs: dict[str, list[dict]] = {engine: [] for engine in engines}
        # Each engine's builds run back to back, DuckDB's first: on this VM, memory a
        # process has just freed (pandas peaks at 13 GB) goes back to the host, and the
        # next process to touch memory pays for it (one DuckDB build took 25.5 s right
        # after a 13 GB process, against 16.1-16.8 s around it).
        for engine in engines:
            for _ in range(options.repeat):
                r = measure(engine, events, entities, options)
                runs[engine].append(r)
                _report(engine, n_events, options.entities, r)
        medians = {e: statistics.median(r["seconds"] for r in rs) for e, rs in runs.items()}
        if options.repeat > 1:
            for engine, rs in runs.items():
                seconds = sorted(r["seconds"] for r in rs)
                print(f"{engine:7s} median of {len(rs)}: wall={medians[engine]:7.2f} s  "
                      f"events/s={n_events / medians[engine] / 1e6:5.2f}M  "
                      f"(fastest {seconds[0]:.2f} s, slowest {seconds[-1]:.2f} s; "
                      f"peak_rss up to {max(r['peak_rss_gb'] for r in rs):.2f} GB)")  # fmt: skip
        if "pandas" in medians:
            ratio = medians["pandas"] / medians["duckdb"]
            print(f"duckdb is {ratio:.2f}x faster than pandas at {n_events:,} events")


def _report(engine: str, n_events: int, n_entities: int, r: dict) -> None:
    seconds = r["seconds"]
    print(
        f"{engine:7s} events={n_events:>12,} entities={n_entities:>10,} "
        f"wall={seconds:7.2f} s  events/s={n_events / seconds / 1e6:5.2f}M  "
        f"peak_rss={r['peak_rss_gb']:5.2f} GB  table={r['rows']:,}x{r['cols']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
