"""Writes to the score database: deletes and upserts in one transaction, and compaction.

:func:`sql_upsert_tables` runs a run's deletes (:mod:`pipelines.row_deletes`: the
withdrawn history, the rows past retention) and its upserts in a single transaction: either
all of them change the store or none does. A failed DuckDB commit (a full disk)
ends its transaction itself; the rollback that follows must not hide that cause.

Identifiers are quoted (:func:`pipelines.databases.quote`) and values, file paths
included, are bound as parameters: no SQL text is built from a path or a setting.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from pipelines.databases import (
    SqlTarget,
    create_duckdb_table,
    duckdb_connection,
    duckdb_table_exists,
    parse_sql_url,
    qualified_name,
    quote,
    sql_engine,
)
from pipelines.row_deletes import RowDelete, duckdb_delete, rows_matching, sqlalchemy_delete

log = logging.getLogger(__name__)

#: DuckDB's memory limit while a write inserts (reset when the write ends).
WRITE_MEMORY_LIMIT = "1GB"


def sql_upsert_tables(
    url: str,
    writes: Sequence[tuple[pd.DataFrame, str, str | Sequence[str]]],
    *,
    deletes: Sequence[RowDelete] = (),
    before_commit: Callable[[], None] | None = None,
    zstd_columns: Collection[str] = (),
) -> list[int]:
    """Delete rows, then replace the rows whose key is in each frame, in one transaction.

    Each table is created from its frame's dtypes when missing (with an index on the
    key). Matching rows are deleted and the frame inserted, so rerunning a write replaces
    instead of duplicating; every delete and upsert happen or none. DuckDB, PostgreSQL, SQLite.

    Args:
        url: Database URL (a ``?table=`` in it is ignored).
        writes: ``(rows, table, key)`` per table, written in this order: rows
            (categorical columns are stored as text), table name (``schema.table``
            allowed), and the column or columns identifying a row.
        deletes: Rows to delete first, in the same transaction (none from a missing table).
        before_commit: Called just before the commit; what it raises rolls back.
        zstd_columns: Text columns a new DuckDB table compresses with zstd (long texts).

    Returns:
        The number of rows written per table.

    Raises:
        ValueError: Before anything is written: a key column is missing, empty or
            repeated; or an existing table lacks some of its columns.
    """
    prepared = []
    ready: dict[int, pd.DataFrame] = {}  # one frame written to two tables is prepared once
    unique: dict[tuple[int, str], bool] = {}
    for df, table, key in writes:
        keys = [key] if isinstance(key, str) else list(key)
        target = parse_sql_url(url, table, override=True)
        frame = ready[id(df)] = ready[id(df)] if id(df) in ready else _sql_frame(df)
        _check_keys(frame, keys, table, unique)
        prepared.append((frame, target, keys))
    if not prepared:
        return []
    _write(url, deletes, prepared, before_commit, zstd_columns)
    for frame, target, keys in prepared:
        log.info("Upserted %d rows into %s by %s.", len(frame), target.table, ", ".join(keys))
    return [len(frame) for frame, _, _ in prepared]


def sql_delete_rows(url: str, deletes: Sequence[RowDelete]) -> list[int]:
    """Delete rows in one transaction; rows deleted per :class:`RowDelete` (0: no table)."""
    return _write(url, deletes, [])


def _write(
    url: str,
    deletes: Sequence[RowDelete],
    upserts: Sequence[tuple[pd.DataFrame, SqlTarget, list[str]]],
    before_commit: Callable[[], None] | None = None,
    zstd_columns: Collection[str] = (),
) -> list[int]:
    """Run ``deletes`` then ``upserts`` in one transaction; rows deleted per delete."""
    if not deletes and not upserts:
        return []
    table = deletes[0].table if deletes else upserts[0][1].table
    first = parse_sql_url(url, table, override=True)
    if first.duckdb_path is not None:
        if not upserts and not first.duckdb_path.exists():
            return [0] * len(deletes)
        frames = {id(f): f for f, _, _ in upserts}  # one frame, two tables: converted once
        sources = {key: _duckdb_source(frame) for key, frame in frames.items()}
        with duckdb_connection(first.duckdb_path, read_only=False) as connection:
            # Rows keep no order in a table. Kept in insertion order, a parallel insert
            # leaves partial row groups that the checkpoint at close rewrites: for a
            # million score rows with their reason texts, 3.6 s and 6 s of CPU more.
            # Unordered, each thread buffers its own row groups: the limit has them
            # written out as they fill (0.7 GB less peak memory for that million).
            connection.execute("SET SESSION preserve_insertion_order = false")
            connection.execute(f"SET memory_limit = '{WRITE_MEMORY_LIMIT}'")
            checks = ThreadPoolExecutor(1, thread_name_prefix="replace-check")
            try:
                replaced = _replace_checks(connection, upserts, sources, checks)
                connection.begin()
                try:
                    deleted = [duckdb_delete(connection, url, delete) for delete in deletes]
                    for frame, target, keys in upserts:
                        source = sources[id(frame)]
                        _duckdb_upsert(connection, frame, source, target, keys, zstd_columns,
                                       replaced.get(id(target)))  # fmt: skip
                    if before_commit is not None:
                        before_commit()
                    connection.commit()
                except BaseException:
                    _rollback_quietly(connection)
                    raise
            finally:  # no check outlives the connection; reset for another connection
                checks.shutdown(wait=True, cancel_futures=True)
                with contextlib.suppress(duckdb.Error):
                    connection.execute("RESET memory_limit")
    else:
        with sql_engine(first) as engine, engine.begin() as connection:
            dialect = engine.dialect.name
            deleted = [sqlalchemy_delete(connection, dialect, url, d) for d in deletes]
            for frame, target, keys in upserts:
                _sqlalchemy_upsert(connection, dialect, frame, target, keys)
            if before_commit is not None:
                before_commit()  # what it raises leaves engine.begin() rolled back
    for delete, n in zip(deletes, deleted, strict=True):
        log.info("Deleted %d rows from %s %s.", n, delete.table, delete.description)
    return deleted


def _rollback_quietly(connection: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failure without hiding it (a failed COMMIT ended the transaction)."""
    try:
        connection.rollback()
    except duckdb.Error as exc:
        log.debug("Nothing to roll back after the failed write (%s).", exc)


def _sql_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The rows as written: a fresh index, categorical columns as their categories' type."""
    frame = df.reset_index(drop=True)
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(frame[column].cat.categories.dtype)
    return frame


def _check_keys(
    frame: pd.DataFrame, keys: list[str], table: str, unique: dict[tuple[int, str], bool]
) -> None:
    """Raise unless every row of ``frame`` (:func:`_sql_frame`) has its key and none repeats.

    ``unique`` records, per frame and column, whether it holds no repeated value: one
    unique key column makes the key unique, so a frame written twice is checked once.
    """
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise ValueError(f"Cannot upsert into {table}: the rows have no key column(s) {missing}.")
    null_keys = frame[keys].isna().any(axis=1)
    if null_keys.any():
        repeated = pd.Series(False, index=frame.index)  # reported after the empty keys
    else:
        for key in keys:
            if (id(frame), key) not in unique:
                unique[(id(frame), key)] = bool(frame[key].is_unique)
        if any(unique[(id(frame), key)] for key in keys):
            return
        repeated = frame.duplicated(subset=keys, keep=False)
    for bad, what in ((null_keys, "an empty key"), (repeated, "a repeated key")):
        if bad.any():
            sample = frame.loc[bad, keys].head(5).to_dict("records")
            raise ValueError(
                f"Cannot upsert into {table}: {int(bad.sum())} rows have {what} "
                f"({', '.join(keys)}), e.g. {sample}."
            )


def _check_columns(existing: Sequence[str], frame: pd.DataFrame, target: SqlTarget) -> None:
    extra = [c for c in frame.columns if c not in set(existing)]
    if extra:
        raise ValueError(
            f"Table '{target.table}' exists without column(s) {extra} that the rows have; "
            f"its columns are {list(existing)}. Migrate or drop the table."
        )


def _duckdb_source(frame: pd.DataFrame) -> pd.DataFrame | pa.Table:
    """What DuckDB reads the rows from: an Arrow table when the columns are typed.

    Converted once for every statement (deletes, inserts), with the same SQL types;
    a frame with an ``object`` column is read as it is (DuckDB infers that type).
    """
    if any(pd.api.types.is_object_dtype(dtype) for dtype in frame.dtypes):
        return frame
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        return frame


def _duckdb_upsert(
    connection: Any,
    frame: pd.DataFrame,
    source: Any,
    target: SqlTarget,
    keys: list[str],
    zstd_columns: Collection[str],
    replaces_every_row: Future[bool] | None = None,
) -> None:
    """Delete the matching rows and insert ``frame`` (read from ``source``), in one transaction.

    ``replaces_every_row``: :func:`_replaces_every_row` of the table as it was before
    the transaction, when :func:`_replace_checks` started it.
    """
    view = f"leadscore_incoming_{uuid.uuid4().hex}"
    match = _same_keys(keys)
    connection.register(view, source)
    incoming = quote(view)
    if not duckdb_table_exists(connection, target):
        create_duckdb_table(connection, target, incoming, zstd_columns)
    described = connection.execute(f"DESCRIBE {target.qualified}").fetchall()
    _check_columns([row[0] for row in described], frame, target)
    # Key ranges let DuckDB skip row groups by min/max; no row in them (a new date in
    # the history): no join to build. In the DELETE, subqueries are faster than parameters.
    ranges = ", ".join(f"min({quote(k)}), max({quote(k)})" for k in keys)
    bounds = list(connection.execute(f"SELECT {ranges} FROM {incoming}").fetchall()[0])
    found = " AND ".join(f"{quote(k)} BETWEEN ? AND ?" for k in keys)
    every = (
        replaces_every_row.result()
        if replaces_every_row is not None
        else _replaces_every_row(connection, target, incoming, match, len(frame))
    )
    if every:
        # Every stored row is replaced (the scores of everyone): dropping them all spares
        # matching a million keys row by row (0.6 s of a million-row nightly).
        connection.execute(f"DELETE FROM {target.qualified}")
    elif connection.execute(
        f"SELECT 1 FROM {target.qualified} WHERE {found} LIMIT 1", bounds
    ).fetchall():
        match += "".join(
            f" AND t.{quote(k)} BETWEEN (SELECT min({quote(k)}) FROM {incoming}) "
            f"AND (SELECT max({quote(k)}) FROM {incoming})"
            for k in keys
        )
        connection.execute(f"DELETE FROM {target.qualified} t USING {incoming} s WHERE {match}")
    connection.execute(f"INSERT INTO {target.qualified} BY NAME FROM {incoming}")
    connection.unregister(view)


def _same_keys(keys: list[str]) -> str:
    """The join condition of stored rows ``t`` and incoming rows ``s`` on ``keys``."""
    return " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)


def _replace_checks(
    connection: duckdb.DuckDBPyConnection,
    upserts: Sequence[tuple[pd.DataFrame, SqlTarget, list[str]]],
    sources: dict[int, Any],
    pool: ThreadPoolExecutor,
) -> dict[int, Future[bool]]:
    """Start :func:`_replaces_every_row` of each existing table, on a cursor in ``pool``.

    Called before the write transaction begins: the checks read the tables as they
    were, beside the first inserts (a million score rows: the anti-join of the
    ``lead_scores`` check took 0.4-0.6 s off the writes' critical path). Valid in the
    transaction: nothing else writes the file (this process holds it), and the
    transaction's deletes only remove rows, so the stored keys stay among the incoming.
    """
    checks: dict[int, Future[bool]] = {}
    tables = [target.qualified for _, target, _ in upserts]
    for frame, target, keys in upserts:
        # A table written twice in one transaction is checked when its turn comes.
        if tables.count(target.qualified) > 1 or not duckdb_table_exists(connection, target):
            continue
        checks[id(target)] = pool.submit(_check_on_cursor, connection.cursor(),
                                         sources[id(frame)], target, _same_keys(keys),
                                         len(frame))  # fmt: skip
    return checks


def _check_on_cursor(
    cursor: duckdb.DuckDBPyConnection, source: Any, target: SqlTarget, match: str, rows: int
) -> bool:
    """:func:`_replaces_every_row` on its own cursor (with the rows registered on it)."""
    view = f"leadscore_check_{uuid.uuid4().hex}"
    try:
        cursor.register(view, source)
        return _replaces_every_row(cursor, target, quote(view), match, rows)
    finally:
        cursor.close()


def _replaces_every_row(
    connection: Any, target: SqlTarget, incoming: str, match: str, rows: int
) -> bool:
    """Whether the table holds rows (at most ``rows``) whose keys are all among the incoming."""
    stored = connection.execute(f"SELECT count(*) FROM {target.qualified}").fetchone()[0]
    if not 0 < stored <= rows:
        return False
    # SELECT 1, not the stored rows: the scan then reads the keys only (a million rows'
    # reason texts decompressed for nothing took 0.75 s of CPU).
    outside = f"SELECT 1 FROM {target.qualified} t ANTI JOIN {incoming} s ON {match} LIMIT 1"
    return not connection.execute(outside).fetchall()


def _sqlalchemy_upsert(
    connection: sa.Connection,
    dialect: str,
    frame: pd.DataFrame,
    target: SqlTarget,
    keys: list[str],
) -> None:
    """Delete the matching rows and insert ``frame``, in the caller's transaction."""
    schema, name = target.schema_and_name
    # Keys go through a staging table written by the same pandas code as the rows,
    # so values compare equal in the database (SQLite stores timestamps as text).
    stage = f"leadscore_stage_{uuid.uuid4().hex[:16]}"
    columns = ", ".join(quote(k) for k in keys)
    inspector = sa.inspect(connection)
    if inspector.has_table(name, schema=schema):
        existing = [c["name"] for c in inspector.get_columns(name, schema=schema)]
        _check_columns(existing, frame, target)
    else:
        frame.head(0).to_sql(name, connection, schema=schema, index=False)
        index = quote(f"ix_{name}_{'_'.join(keys)}"[:60])
        connection.execute(sa.text(f"CREATE INDEX {index} ON {target.qualified} ({columns})"))
    # COPY is ~3x faster than batched INSERTs on PostgreSQL, with the same NULLs.
    method = _postgres_copy if dialect == "postgresql" else None
    frame[keys].to_sql(stage, connection, schema=schema, index=False, method=method)
    staged = qualified_name(schema, stage)
    # Row-value IN, not a correlated EXISTS: SQLite hashes the subquery once
    # instead of scanning the stage for every row (minutes at 100k rows).
    connection.execute(
        sa.text(
            f"DELETE FROM {target.qualified} WHERE ({columns}) IN (SELECT {columns} FROM {staged})"
        )
    )
    connection.execute(sa.text(f"DROP TABLE {staged}"))
    frame.to_sql(name, connection, schema=schema, index=False, if_exists="append", method=method)


def _postgres_copy(table: Any, connection: sa.Connection, keys: list[str], rows: Any) -> None:
    """A ``DataFrame.to_sql`` method writing through psycopg's ``COPY FROM STDIN``."""
    columns = ", ".join(quote(k) for k in keys)
    with (
        connection.connection.driver_connection.cursor() as cursor,
        cursor.copy(
            f"COPY {qualified_name(table.schema, table.name)} ({columns}) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def sql_delete(url: str, table: str, where_column: str, values: Sequence[object]) -> int:
    """Delete the rows whose ``where_column`` is in ``values``; rows deleted (0: no table)."""
    return sql_delete_rows(url, [rows_matching(table, where_column, values)])[0]
