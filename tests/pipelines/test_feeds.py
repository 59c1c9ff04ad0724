"""Feeds at the reading edge: cut CSV rows, truncated files, shrunken feeds, full disks.

Also the SQL side of a run's failure: the withdrawn-history delete and the upserts
are one transaction, and a failed DuckDB commit surfaces its own cause rather than
"cannot rollback - no transaction is active".
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from features.column_checks import ContractError
from features.feed_checks import FeedError
from pipelines.database_writes import sql_upsert_tables
from pipelines.databases import sql_read
from pipelines.errors import disk_error_message, user_facing_message
from pipelines.feeds import check_feeds
from pipelines.row_deletes import rows_matching
from pipelines.settings import load_settings
from pipelines.sources import read_source

HEADER = "entity_id,event_time,event_type,value\n"
ROWS = "".join(f"e{i},2025-01-0{1 + i % 9}T10:00:00Z,page_view,\n" for i in range(40))


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``folder``; skips the test where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# --- reading -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("e99,2025-01-09T10:00:00Z,page_vi", r"line 42 \(the header is line 1\) has 3 fields"),
        ('e99,2025-01-09T10:00:00Z,"page_view,3\n', r"has 3 fields.*\(a quote is left open\)"),
        ("e99,2025-01-09T10:00:00Z,page_view,3,4\n", r"line 42 .* has 5 fields where the header"),
    ],
)
def test_a_csv_cut_inside_a_value_is_stopped_naming_file_line_and_row(tmp_path, tail, expected):
    path = tmp_path / "events.csv"
    path.write_text(HEADER + ROWS + tail)
    with pytest.raises(ContractError, match=expected) as caught:
        read_source(str(tmp_path), "events")
    assert str(path) in str(caught.value) and "e99,2025-01-09T10:00:00Z" in str(caught.value)


def test_a_csv_with_quoted_commas_and_newlines_passes(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(HEADER + ROWS + 'e99,2025-01-09T10:00:00Z,"page,\nview",3\n')
    assert read_source(str(path), "events")["event_type"].iloc[-1] == "page,\nview"


def test_a_truncated_csv_gz_names_the_file_and_says_it_ends_early(tmp_path):
    path = tmp_path / "events" / "part-1.csv.gz"
    path.parent.mkdir()
    data = gzip.compress((HEADER + ROWS * 50).encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="ends early") as caught:
        read_source(str(path.parent), "events")
    assert f"The events file {path} ends early (truncated or still being written)" in str(
        caught.value
    )


# --- feed size against the previous run ----------------------------------------------


def feed(days: int, start: str = "2025-01-01") -> pd.DataFrame:
    times = pd.date_range(start, periods=days, freq="D", tz="UTC")
    return pd.DataFrame(
        {"entity_id": "e1", "event_time": times, "event_type": "page_view", "value": np.nan}
    )


def write_previous_summary(out: Path, as_of: str, **data: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"as_of": as_of, **data}))


def test_first_run_passes_and_records_the_events_before_its_date(tmp_path):
    settings = load_settings(None, output={"dir": tmp_path})
    kept, report = check_feeds(settings, feed(100), 100, pd.Timestamp("2025-02-01", tz="UTC"))
    assert len(kept) == 100 and report.events_before_as_of == 31 and report.forced == []


def test_an_empty_feed_stops_the_run_naming_source_counts_and_setting(tmp_path):
    settings = load_settings(None, output={"dir": tmp_path}, sources={"events": "/data/ev"})
    write_previous_summary(tmp_path, "2025-02-01", feeds={"events_before_as_of": 31})
    with pytest.raises(FeedError) as caught:
        check_feeds(settings, feed(0), 0, pd.Timestamp("2025-02-08", tz="UTC"))
    assert str(caught.value) == (
        "The events feed /data/ev has no events before 2025-02-01 (the previous run had 31 "
        "before 2025-02-01). Nothing was written. If the source really lost these rows, run "
        "once with sources.force_feed: true (or LEADSCORE_SOURCES__FORCE_FEED=true)."
    )


def test_the_shrink_is_measured_in_the_previous_runs_window(tmp_path):
    settings = load_settings(None, output={"dir": tmp_path})
    write_previous_summary(tmp_path, "2025-02-01", feeds={"events_before_as_of": 31})
    # Later events do not hide missing earlier ones: 10 of 31 days left, 60 days later on.
    late = pd.concat([feed(10), feed(60, "2025-02-01")], ignore_index=True)
    with pytest.raises(FeedError, match=r"shrank from 31 to 10 events before 2025-02-01 \(68%"):
        check_feeds(settings, late, len(late), pd.Timestamp("2025-04-01", tz="UTC"))
    # A run of an earlier date on the same full history compares the same window.
    kept, _ = check_feeds(settings, feed(100), 100, pd.Timestamp("2025-01-15", tz="UTC"))
    assert len(kept) == 100


def test_a_summary_without_the_window_count_is_compared_in_total(tmp_path):
    settings = load_settings(None, output={"dir": tmp_path}, sources={"max_feed_shrink": 0.2})
    write_previous_summary(tmp_path, "2025-02-01", inputs={"events": 100})
    with pytest.raises(FeedError, match=r"shrank from 100 to 70 events in all .*= 0.2\)"):
        check_feeds(settings, feed(70), 70, pd.Timestamp("2025-02-08", tz="UTC"))


def test_force_feed_runs_on_and_says_so(tmp_path):
    settings = load_settings(None, output={"dir": tmp_path}, sources={"force_feed": True})
    write_previous_summary(tmp_path, "2025-02-01", feeds={"events_before_as_of": 31})
    kept, report = check_feeds(settings, feed(5), 5, pd.Timestamp("2025-02-08", tz="UTC"))
    assert len(kept) == 5
    assert report.forced[0].endswith("The run went on because sources.force_feed is true.")
    assert report.warnings()[0] == report.forced[0]


def test_an_unreadable_previous_summary_is_no_comparison(tmp_path):
    settings = load_settings(None, output={"dir": tmp_path})
    (tmp_path / "summary.json").write_text("{not json")
    kept, _ = check_feeds(settings, feed(3), 3, pd.Timestamp("2025-02-08", tz="UTC"))
    assert len(kept) == 3


# --- disk full, permissions ----------------------------------------------------------


def test_a_full_disk_names_the_path_the_library_left_out(tmp_path, monkeypatch):
    target = tmp_path / "out" / "summary.json"

    def full(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")  # as Path.write_text raises

    monkeypatch.setattr(Path, "write_text", full)
    from pipelines.atomic_files import write_text_atomic

    with pytest.raises(OSError) as caught:
        write_text_atomic("{}", target)
    wrapped = RuntimeError("Step 'publish summary' failed: [Errno 28] No space left on device")
    wrapped.__cause__ = caught.value
    message = user_facing_message(wrapped)
    assert message.startswith(
        f"Step 'publish summary' failed: No space left on device while writing {target.parent}/."
    )
    assert message.endswith(
        ": free space or point output.dir elsewhere, then run again; every write is atomic, "
        "so the previous outputs are intact."
    )
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []


def test_permission_and_read_only_errors_name_the_path():
    denied = PermissionError(errno.EACCES, "Permission denied", "/srv/out/scores")
    assert user_facing_message(denied).startswith(
        "Permission denied on /srv/out/scores: give the user running leadscore access to it"
    )
    read_only = OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x.parquet")
    assert "Read-only file system while writing /mnt/ro/x.parquet: point output.dir" in (
        user_facing_message(read_only)
    )
    assert disk_error_message(ValueError("a contract sentence")) is None


def test_a_database_drivers_disk_error_text_names_its_file():
    error = RuntimeError(
        'TransactionContext Error: Failed to commit: Could not write file "/o/x.duckdb.wal": '
        "No space left on device"
    )
    assert user_facing_message(error).startswith(
        "No space left on device while writing /o/x.duckdb.wal: free space"
    )


def test_a_failed_duckdb_commit_on_a_full_disk_surfaces_its_cause(tmp_path):
    rows = pd.DataFrame({"entity_id": [f"e{i:06d}" for i in range(50_000)], "s": "x" * 30})
    with small_disk(tmp_path / "disk", "300k") as disk:
        url = f"duckdb:///{disk / 'scores.duckdb'}"
        with pytest.raises(Exception) as caught:
            sql_upsert_tables(url, [(rows, "a", "entity_id"), (rows, "b", "entity_id")])
        assert "cannot rollback" not in str(caught.value)
        assert "No space left on device" in str(caught.value)
        assert user_facing_message(caught.value).startswith(
            f"No space left on device while writing {disk / 'scores.duckdb'}"
        )


# --- one transaction -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_the_withdrawn_history_delete_is_undone_when_the_upsert_fails(tmp_path, kind):
    url = f"duckdb:///{tmp_path / 's.duckdb'}" if kind == "duckdb" else f"sqlite:///{tmp_path}/s.db"
    history = pd.DataFrame({"entity_id": ["a", "b"], "score": [1.0, 2.0]})
    sql_upsert_tables(url, [(history, "history", "entity_id"), (history, "current", "entity_id")])
    withdrawn = rows_matching("history", "entity_id", ["a"])
    with pytest.raises(ValueError, match="exists without column"):
        sql_upsert_tables(
            url, [(history.assign(extra=1), "current", "entity_id")], deletes=[withdrawn]
        )
    assert sorted(sql_read(url, "history")["entity_id"]) == ["a", "b"]
    sql_upsert_tables(url, [(history.iloc[1:], "current", "entity_id")], deletes=[withdrawn])
    assert sorted(sql_read(url, "history")["entity_id"]) == ["b"]


def test_a_full_sqlite_store_names_its_database_file(tmp_path):
    with small_disk(tmp_path / "disk", "64k") as disk:
        engine = sa.create_engine(f"sqlite:///{disk / 'mlflow.db'}")
        with pytest.raises(sa.exc.OperationalError) as caught, engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (x BLOB)"))
            connection.execute(sa.text("INSERT INTO t VALUES (:x)"), {"x": b"0" * 200_000})
        engine.dispose()
        assert user_facing_message(caught.value).startswith(
            f"No space left on device while writing {disk / 'mlflow.db'}: free space"
        )
