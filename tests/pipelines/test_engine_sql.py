"""SQL event tables are copied into the engine in batches and give the rows pandas gives.

:func:`pipelines.engine_events.read_checked_events` copies a DuckDB, SQLite or
PostgreSQL table batch by batch into Parquet staged for the engine (never one frame
of every event) and checks it there; :func:`pipelines.sources.read_source` (pandas, the
reference path) reads the same table whole. Ids written as text with leading zeros,
integer items, UTC and naive times, missing values: the same rows. A missing table or
rows that break the contract still get pandas' sentence.
"""

from __future__ import annotations

import logging
import os
import tempfile

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from features.column_checks import ContractError
from pipelines import databases, engine_sources
from pipelines.databases import SourceNotFoundError
from pipelines.engine_events import _through_pandas, engine_connection, read_checked_events


def _events(rows: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "entity_id": [f"{i:05d}" for i in rng.integers(1, 9, rows)],
            "event_time": pd.Timestamp("2025-03-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 900, rows), unit="h"),
            "event_type": rng.choice(["login", "page_view", "purchase"], rows),
            "value": np.where(rng.random(rows) < 0.3, np.nan, rng.uniform(0, 50, rows).round(2)),
            "item": rng.integers(1, 4, rows),
        }
    )


def staged_sets() -> list[str]:
    """The event sets staged by this process so far (removed ones excepted)."""
    return sorted(path.name for path in engine_sources._staging_root().glob("events-*"))


def _both(url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The events read by the engine and by pandas, in one order; asserts the engine copied them."""
    before = staged_sets()
    engine, _ = read_checked_events(url, None, engine_connection(1.0))
    assert len(staged_sets()) == len(before) + 1, "not in the engine"
    reference = _through_pandas(url, None, engine_connection(1.0))

    def rows(events) -> pd.DataFrame:  # noqa: ANN001
        frame = events.to_pandas(sorted(events.table.columns))
        return frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True)

    return rows(engine), rows(reference)


@pytest.fixture
def small_batches(monkeypatch) -> list[int]:
    """Seven rows per batch; the rows of each batch copied, in order.

    SQLAlchemy sources copy 50 events in eight batches; a DuckDB file hands over whole
    vectors of 2,048 rows.
    """
    monkeypatch.setattr(engine_sources, "SQL_BATCH_ROWS", 7)
    sizes: list[int] = []
    real = databases.sql_batches

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        for batch in real(*args, **kwargs):
            sizes.append(len(batch))
            yield batch

    monkeypatch.setattr(databases, "sql_batches", counted)
    return sizes


def _duckdb_table(tmp_path, frame: pd.DataFrame, naive: bool = False) -> str:
    path = tmp_path / "crm.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.register("frame", frame)
        time = "event_time::TIMESTAMP" if naive else "event_time"
        connection.execute(f"CREATE TABLE activity AS SELECT * REPLACE ({time} AS event_time) "
                           "FROM frame")  # fmt: skip
    return f"duckdb:///{path}?table=activity"


@pytest.mark.parametrize("naive", [False, True])
def test_a_duckdb_table_in_batches_gives_the_reference_rows(tmp_path, small_batches, naive):
    engine, reference = _both(_duckdb_table(tmp_path, _events(), naive))

    pd.testing.assert_frame_equal(engine, reference)
    assert len(engine) == 50 and engine["entity_id"].str.len().eq(5).all()
    assert set(engine["item"]) == {"1", "2", "3"}


def test_a_sqlite_table_in_batches_gives_the_reference_rows(tmp_path, small_batches):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    _events().to_sql("activity", engine, index=False)
    engine.dispose()

    engine_rows, reference = _both(f"{url}?table=activity")

    pd.testing.assert_frame_equal(engine_rows, reference)
    assert engine_rows["event_time"].dt.tz is not None and len(engine_rows) == 50
    assert small_batches == [7] * 7 + [1, 50]  # the engine's batches, then pandas' read


def test_a_missing_table_and_broken_rows_are_worded_as_before(tmp_path):
    url = _duckdb_table(tmp_path, _events().assign(event_type=["login"] * 49 + [""]))
    missing = url.replace("activity", "nowhere")

    with pytest.raises(SourceNotFoundError, match="'activity'"):
        read_checked_events(missing, None, engine_connection(1.0))
    con, before = engine_connection(1.0), staged_sets()
    with pytest.raises(ContractError) as engine:
        read_checked_events(url, None, con)
    with pytest.raises(ContractError) as reference:
        _through_pandas(url, None, engine_connection(1.0))

    assert str(engine.value) == str(reference.value) and "event_type" in str(engine.value)
    assert staged_sets() == before, "the declined events' staged files were not removed"


@pytest.mark.service
def test_a_postgres_table_streams_in_batches_to_the_reference_rows(postgres_url, small_batches):
    engine = sa.create_engine(postgres_url)
    _events().to_sql("web_activity", engine, index=False, if_exists="replace")
    engine.dispose()
    plain_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")

    engine_rows, reference = _both(f"{plain_url}?table=web_activity")

    pd.testing.assert_frame_equal(engine_rows, reference)
    assert len(engine_rows) == 50 and engine_rows["entity_id"].str.startswith("0000").all()
    assert small_batches == [7] * 7 + [1, 50]  # the engine's batches, then pandas' read


def test_the_log_names_the_table_without_the_password():
    shown = databases.shown_url("postgresql://crm:s3cret@db.internal:5432/crm?table=activity")

    assert "s3cret" not in shown
    assert shown.endswith("db.internal:5432/crm?table=activity")


def test_a_failed_copy_is_logged_without_the_password(caplog):
    url = "postgresql://crm:s3cret@127.0.0.1:1/crm?table=activity"  # nothing listens on port 1

    with (
        caplog.at_level(logging.INFO, logger="pipelines.engine_events"),
        pytest.raises(Exception),  # noqa: B017 - pandas' own error; the log is the point
    ):
        read_checked_events(url, None, engine_connection(1.0))

    assert "reading them with pandas" in caplog.text and "s3cret" not in caplog.text


def test_staging_folders_of_killed_runs_are_swept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{engine_sources.STAGING_PREFIX}4194303-abc"  # above Linux's pid_max
    alive = tmp_path / f"{engine_sources.STAGING_PREFIX}{os.getpid()}-abc"
    for folder in (dead, alive):
        (folder / "events-0" / "staged").mkdir(parents=True)

    engine_sources._sweep_dead_stagings()

    assert not dead.exists() and alive.exists()
