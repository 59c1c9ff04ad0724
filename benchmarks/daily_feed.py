"""The generated events as a daily feed, for ``benchmarks/nightly.py --daily-files``.

The generator writes every event of its months at once, so a next day run on its
folder reads the very files the first night read (the events after the run date are
"future" events there). A feed that delivers a file a day does not: the next day has
one more file, holding that day's events. This module makes, once, beside the data
(``DATA-DIR-daily/``):

* ``events/``: each generated file cut to the events before the first night's date,
  under the same name;
* ``days/DAY.parquet``: the events of one UTC day, for each next day asked for;

and :func:`arrived` puts a day's file into ``events/`` for the runs of that day (and
takes it out again, so each repeat starts from the same files).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

#: Records which first night the cut files were made for.
MADE_FOR = "made-for.json"


def feed_folder(data: Path, events: str, first: str) -> Path:
    """``DATA-DIR-daily/events``: the generated files cut to the events before ``first``."""
    root = _root(data)
    folder = root / "events"
    record = root / MADE_FOR
    wanted = {"first_night": first, "events": events}
    if record.is_file() and json.loads(record.read_text()) == wanted:
        return folder
    shutil.rmtree(root, ignore_errors=True)
    folder.mkdir(parents=True)
    cutoff = _utc(first)
    with duckdb.connect() as con:
        for source in sorted(Path(events).rglob("*.parquet")):
            target = folder / source.relative_to(events)
            target.parent.mkdir(parents=True, exist_ok=True)
            con.execute(f"COPY (SELECT * FROM read_parquet('{source}') "
                        f"WHERE event_time < TIMESTAMPTZ '{cutoff}') TO '{target}' "
                        "(FORMAT parquet)")  # fmt: skip
    record.write_text(json.dumps(wanted))
    return folder


def day_file(data: Path, events: str, day: str) -> Path:
    """``DATA-DIR-daily/days/DAY.parquet``: the generated events of the UTC day ``day``."""
    target = _root(data) / "days" / f"{day}.parquet"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        start, end = _utc(day), _utc(str((pd.Timestamp(day) + pd.Timedelta(days=1)).date()))
        part = target.with_suffix(".part")
        with duckdb.connect() as con:
            con.execute(f"COPY (SELECT * FROM read_parquet('{events}/**/*.parquet') "
                        f"WHERE event_time >= TIMESTAMPTZ '{start}' AND event_time < "
                        f"TIMESTAMPTZ '{end}') TO '{part}' (FORMAT parquet)")  # fmt: skip
        part.rename(target)
    return target


@contextmanager
def arrived(feed: Path, day: Path) -> Iterator[Path]:
    """``day``'s events as one more file of the feed, for as long as the block runs."""
    delivered = feed / f"day-{day.stem}.parquet"
    shutil.copyfile(day, delivered)
    try:
        yield delivered
    finally:
        delivered.unlink(missing_ok=True)


def _root(data: Path) -> Path:
    """``DATA-DIR-daily``, beside the generated data."""
    return data.parent / f"{data.name}-daily"


def _utc(day: str) -> str:
    return f"{pd.Timestamp(day).date()} 00:00:00+00"
