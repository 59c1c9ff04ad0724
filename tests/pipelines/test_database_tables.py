"""New DuckDB score tables store their long texts with zstd, where the file allows it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from pipelines.database_writes import sql_upsert_tables
from pipelines.databases import compact_duckdb


def _rows(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": [f"L{i:05d}" for i in range(n)],
            "score": range(n),
            "reasons_text": [f"Up: [fit] +{i % 7} pts: Job level: VP. " * 4 for i in range(n)],
            "band": ["medium"] * n,
        }
    )


def _write(path: Path, rows: pd.DataFrame) -> None:
    url = f"duckdb:///{path}"
    sql_upsert_tables(url, [(rows, "t", "entity_id")], zstd_columns={"reasons_text"})


def _compression(path: Path, table: str) -> dict[str, set[str]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        found = connection.execute(
            "SELECT column_name, compression FROM pragma_storage_info(?) "
            "WHERE segment_type = 'VARCHAR'",
            [table],
        ).fetchall()
    out: dict[str, set[str]] = {}
    for column, compression in found:
        out.setdefault(column, set()).add(compression)
    return out


def _table(path: Path, table: str) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(f"SELECT * FROM {table} ORDER BY entity_id").df()


def test_zstd_columns_of_a_new_table_are_stored_with_zstd(tmp_path: Path) -> None:
    path = tmp_path / "scores.duckdb"
    rows = _rows(5000)
    for _ in range(2):  # created, then upserted
        _write(path, rows)

    stored = _compression(path, "t")
    assert stored["reasons_text"] == {"ZSTD"}
    assert "ZSTD" not in stored["band"]  # the other texts: DuckDB's own choice
    pd.testing.assert_frame_equal(_table(path, "t"), rows, check_dtype=False)


def test_a_file_of_an_older_storage_version_gets_duckdb_s_choice(tmp_path: Path) -> None:
    """DuckDB before 1.2 had no zstd for text: such a file still takes the rows."""
    path = tmp_path / "old.duckdb"
    duckdb.connect(str(path), config={"storage_compatibility_version": "v1.0.0"}).close()
    rows = _rows(3000)

    _write(path, rows)

    assert "ZSTD" not in _compression(path, "t")["reasons_text"]
    pd.testing.assert_frame_equal(_table(path, "t"), rows, check_dtype=False)


def test_compacting_the_file_keeps_zstd(tmp_path: Path) -> None:
    """``leadscore forget`` compacts the file; the tables keep their compression."""
    path = tmp_path / "scores.duckdb"
    rows = _rows(4000)
    _write(path, rows)

    compact_duckdb(path)

    assert _compression(path, "t")["reasons_text"] == {"ZSTD"}
    pd.testing.assert_frame_equal(_table(path, "t"), rows, check_dtype=False)
