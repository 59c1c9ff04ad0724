"""Writing outputs safely: atomic files and folders, SQL upserts and deletes, PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines import atomic_files
from pipelines.atomic_files import (
    atomic_path,
    replace_dir_atomic,
    restore_interrupted_dir,
    staging_dir,
    write_parquet_atomic,
    write_text_atomic,
)
from pipelines.database_writes import sql_delete, sql_upsert_tables
from pipelines.databases import SourceNotFoundError, compact_duckdb, sql_read
from pipelines.sources import read_source
from tests.pipelines.test_io import make_outcomes


def make_scores(scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": ["00001", "00002", "00003"],
            "as_of": pd.to_datetime(["2025-04-01"] * 3, utc=True),
            "score": scores,
            "band": pd.Categorical(["high", "low", "low"]),
        }
    )


# --- atomic files and folders --------------------------------------------------------


def test_failed_parquet_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "scores.parquet"
    write_parquet_atomic(make_scores([1.0, 2.0, 3.0]), path)
    unwritable = pd.DataFrame({"mixed": [1, "two", 3.0]})  # pyarrow cannot type this column

    with pytest.raises(Exception, match="mixed"):
        write_parquet_atomic(unwritable, path)

    assert pd.read_parquet(path)["score"].tolist() == [1.0, 2.0, 3.0]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]


def test_exception_mid_write_keeps_old_text(tmp_path):
    path = tmp_path / "board" / "index.html"
    write_text_atomic("<p>old</p>", path)
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as temp:
        temp.write_text("<p>half")
        raise RuntimeError("disk full")
    assert path.read_text() == "<p>old</p>"
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.html"]

    write_text_atomic("<p>new</p>", path)
    assert path.read_text() == "<p>new</p>"


def test_atomic_write_keeps_permissions(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("a\n")
    os.chmod(path, 0o640)
    write_text_atomic("b\n", path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_replace_dir_swaps_folders(tmp_path):
    final = tmp_path / "crm"
    final.mkdir()
    (final / "batch-0001.csv").write_text("old")
    (final / "batch-0002.csv").write_text("stale")
    staging = staging_dir(final)
    (staging / "batch-0001.csv").write_text("new")

    replace_dir_atomic(staging, final)

    assert sorted(p.name for p in final.iterdir()) == ["batch-0001.csv"]
    assert (final / "batch-0001.csv").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crm"]


def test_replace_dir_failure_puts_the_old_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "crm"
    final.mkdir()
    (final / "batch-0001.csv").write_text("old")
    staging = staging_dir(final)
    real_rename = os.rename

    def rename_failing_on_the_swap(src, dst):
        if Path(src) == staging:
            raise OSError("injected failure")
        real_rename(src, dst)

    monkeypatch.setattr(atomic_files.os, "rename", rename_failing_on_the_swap)
    with pytest.raises(OSError, match="injected failure"):
        replace_dir_atomic(staging, final)
    assert (final / "batch-0001.csv").read_text() == "old"


def test_a_crash_between_the_renames_is_undone(tmp_path):
    final = tmp_path / "crm"
    backup = tmp_path / ".crm.previous"  # what a run killed mid-swap leaves
    backup.mkdir()
    (backup / "batch-0001.csv").write_text("old")

    assert restore_interrupted_dir(final) is True
    assert (final / "batch-0001.csv").read_text() == "old"
    assert not backup.exists()
    assert restore_interrupted_dir(final) is False


def test_replace_dir_refuses_folders_that_are_not_siblings(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ValueError, match="same folder"):
        replace_dir_atomic(tmp_path / "elsewhere", tmp_path / "out" / "crm")


# --- SQL -----------------------------------------------------------------------------


@pytest.fixture(params=["duckdb", "sqlite"])
def database_url(request, tmp_path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'scores.duckdb'}"
    return f"sqlite:///{tmp_path / 'scores.db'}"


def sql_upsert(df: pd.DataFrame, url: str, table: str, key: str | list[str]) -> int:
    return sql_upsert_tables(url, [(df, table, key)])[0]


def check_upsert_replaces_rows(url: str) -> None:
    sql_upsert(make_scores([1.0, 2.0, 3.0]), url, "lead_scores", ["entity_id", "as_of"])
    sql_upsert(make_scores([4.0, 5.0, 6.0]), url, "lead_scores", ["entity_id", "as_of"])
    later = make_scores([7.0, 8.0, 9.0]).assign(as_of=pd.Timestamp("2025-04-02", tz="UTC"))
    sql_upsert(later.iloc[:1], url, "lead_scores", ["entity_id", "as_of"])

    table = sql_read(url, "lead_scores").sort_values(["as_of", "entity_id"])
    assert len(table) == 4
    assert table["score"].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert table["band"].tolist() == ["high", "low", "low", "high"]
    assert str(table["as_of"].dt.tz) == "UTC"

    assert sql_delete(url, "lead_scores", "entity_id", ["00001", "99999"]) == 2
    assert sorted(sql_read(url, "lead_scores")["entity_id"]) == ["00002", "00003"]


def test_sql_upsert_twice_gives_no_duplicates(database_url):
    check_upsert_replaces_rows(database_url)


def test_an_upsert_of_as_many_rows_keeps_a_stored_row_it_does_not_replace(database_url):
    """As many incoming rows as stored, one stored key not among them: that row stays.

    DuckDB drops every stored row at once only when all their keys come in again.
    """
    sql_upsert(make_scores([1.0, 2.0, 3.0]), database_url, "lead_scores", "entity_id")
    moved = make_scores([4.0, 5.0, 6.0]).assign(entity_id=["00002", "00003", "00004"])
    sql_upsert(moved, database_url, "lead_scores", "entity_id")
    table = sql_read(database_url, "lead_scores").sort_values("entity_id")
    assert table["entity_id"].tolist() == ["00001", "00002", "00003", "00004"]
    assert table["score"].tolist() == [1.0, 4.0, 5.0, 6.0]
    # Every stored key comes in again (and one more): all rows replaced, none doubled.
    again = make_scores([7.0, 8.0, 9.0]).assign(entity_id=["00001", "00002", "00003"])
    sql_upsert(pd.concat([again, moved.iloc[2:]], ignore_index=True), database_url,
               "lead_scores", "entity_id")  # fmt: skip
    table = sql_read(database_url, "lead_scores").sort_values("entity_id")
    assert table["score"].tolist() == [7.0, 8.0, 9.0, 6.0]


def test_one_table_upserted_twice_in_a_transaction_keeps_the_first_rows(database_url):
    """The second upsert's keys are every stored key: the first upsert's rows stay.

    (DuckDB checks, before the transaction, whether an upsert replaces every stored
    row; a table written twice is checked in the transaction instead.)
    """
    sql_upsert(make_scores([1.0, 2.0, 0.0]).iloc[:2], database_url, "lead_scores", "entity_id")
    new = make_scores([0.0, 0.0, 3.0]).iloc[2:]  # entity 00003
    again = make_scores([5.0, 6.0, 0.0]).iloc[:2]  # 00001, 00002: every key stored before
    sql_upsert_tables(
        database_url, [(new, "lead_scores", "entity_id"), (again, "lead_scores", "entity_id")]
    )
    table = sql_read(database_url, "lead_scores").sort_values("entity_id")
    assert table["entity_id"].tolist() == ["00001", "00002", "00003"]
    assert table["score"].tolist() == [5.0, 6.0, 3.0]


def test_sql_upsert_rejects_bad_keys_and_unknown_columns(database_url):
    rows = make_scores([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"2 rows have a repeated key \(entity_id\)"):
        sql_upsert(rows.assign(entity_id="00001").iloc[:2], database_url, "s", "entity_id")
    for dtype in ("str", "string", object):  # the text dtypes a frame can hold
        repeated = rows.assign(entity_id=pd.Series(["00001", "00002", "00001"], dtype=dtype))
        assert repeated["entity_id"].dtype == dtype
        with pytest.raises(ValueError, match=r"2 rows have a repeated key \(entity_id\)"):
            sql_upsert(repeated, database_url, "s", "entity_id")
    with pytest.raises(ValueError, match=r"1 rows have an empty key"):
        sql_upsert(rows.assign(entity_id=["a", None, "c"]), database_url, "s", "entity_id")
    sql_upsert(rows, database_url, "s", "entity_id")
    with pytest.raises(ValueError, match=r"exists without column\(s\) \['reason'\]"):
        sql_upsert(rows.assign(reason="x"), database_url, "s", "entity_id")
    assert sql_read(database_url, "s")["score"].tolist() == [1.0, 2.0, 3.0]


def test_sql_upsert_tables_changes_every_table_or_none(database_url):
    first, second = make_scores([1.0, 2.0, 3.0]), make_scores([4.0, 5.0, 6.0])
    sql_upsert_tables(
        database_url, [(first, "history", "entity_id"), (first, "current", "entity_id")]
    )
    # The second table cannot take a new column: the first one's write is rolled back too.
    with pytest.raises(ValueError, match=r"'current' exists without column\(s\) \['reason'\]"):
        sql_upsert_tables(
            database_url,
            [(second, "history", "entity_id"), (second.assign(reason="x"), "current", "entity_id")],
        )
    for table in ("history", "current"):
        assert sql_read(database_url, table)["score"].tolist() == [1.0, 2.0, 3.0]
    assert sql_upsert_tables(
        database_url, [(second, "history", "entity_id"), (second, "current", "entity_id")]
    ) == [3, 3]
    for table in ("history", "current"):
        assert sql_read(database_url, table)["score"].tolist() == [4.0, 5.0, 6.0]


def test_a_duckdb_upsert_of_many_rows_keeps_them_all_and_leaves_other_connections_alone(
    tmp_path,
):
    """Inserted unordered under a memory limit; another connection keeps its settings."""
    import duckdb

    path = tmp_path / "scores.duckdb"
    other = duckdb.connect(str(path))  # shares the write's database instance
    before = other.execute("SELECT current_setting('memory_limit')").fetchall()
    n = 300_000  # several row groups per thread
    rows = pd.DataFrame({"entity_id": [f"{i:07d}" for i in range(n)], "score": np.arange(n) % 97,
                         "reasons_text": [f"reason {i % 1000}" for i in range(n)]})  # fmt: skip
    sql_upsert(rows, f"duckdb:///{path}", "lead_scores", ["entity_id"])
    sql_upsert(rows.assign(score=1), f"duckdb:///{path}", "lead_scores", ["entity_id"])
    settings = "SELECT current_setting('memory_limit'), current_setting('preserve_insertion_order')"
    assert other.execute(settings).fetchall() == [(before[0][0], True)]
    table = other.execute("SELECT entity_id, score FROM lead_scores ORDER BY entity_id").df()
    assert table["entity_id"].tolist() == rows["entity_id"].tolist()
    assert (table["score"] == 1).all()
    other.close()


def test_sql_delete_on_a_missing_table_deletes_nothing(database_url):
    assert sql_delete(database_url, "lead_score_history", "entity_id", ["00001"]) == 0


def test_compacting_a_duckdb_file_under_a_folder_named_like_sql(tmp_path):
    path = tmp_path / "o'; DROP TABLE x; --" / "scores.duckdb"
    url = f"duckdb:///{path}"
    sql_upsert(make_scores([1.0, 2.0, 3.0]), url, "x", "entity_id")
    sql_delete(url, "x", "entity_id", ["00001"])
    compact_duckdb(path)
    assert sorted(sql_read(url, "x")["entity_id"]) == ["00002", "00003"]


# --- PostgreSQL ----------------------------------------------------------------------


@pytest.mark.service
def test_postgres_read_source_and_upsert(postgres_url):
    engine = sa.create_engine(postgres_url)
    make_outcomes().to_sql("crm_outcomes", engine, index=False)
    engine.dispose()
    plain_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")

    outcomes = read_source(f"{plain_url}?table=crm_outcomes", "outcomes")
    assert outcomes["occurred_at"].tolist() == make_outcomes()["occurred_at"].tolist()
    with pytest.raises(SourceNotFoundError, match="'crm_outcomes'"):
        read_source(f"{postgres_url}?table=events", "events")

    check_upsert_replaces_rows(postgres_url)
