"""Databases: where SQL sources are read from and score tables written to.

URLs name a database and, for sources, a table: ``duckdb:///path/file.duckdb?table=events``
(a relative path; four slashes for an absolute one, as in SQLAlchemy),
``postgresql://user@host:port/db?table=events`` (also ``postgresql+psycopg://``) or
``sqlite:///file.db?table=events``. DuckDB goes through its own Python API, the
others through SQLAlchemy 2 (psycopg 3 for PostgreSQL). Every timestamp read
comes back in UTC; every write is one transaction.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from features.timeutil import as_utc

log = logging.getLogger(__name__)

SQL_SCHEMES = ("duckdb", "postgresql", "postgres", "postgresql+psycopg", "sqlite")


class SourceNotFoundError(FileNotFoundError):
    """A file, folder, glob, database or table named as a source does not exist."""


@dataclass(frozen=True)
class SqlTarget:
    """A database and, optionally, a table in it.

    Attributes:
        url: The database URL as given (``?table=`` removed).
        table: Table name, possibly ``schema.table``; ``None`` when not given.
        duckdb_path: The database file for DuckDB URLs, else ``None``.
    """

    url: str
    table: str | None
    duckdb_path: Path | None

    @property
    def schema_and_name(self) -> tuple[str | None, str]:
        """``(schema, name)`` of :attr:`table`."""
        if not self.table:
            raise ValueError(f"No table given for {self.url}; add ?table=NAME to the URL.")
        schema, _, name = self.table.rpartition(".")
        return (schema or None), name

    @property
    def qualified(self) -> str:
        """The quoted ``schema.table`` (or ``table``) for SQL text."""
        return qualified_name(*self.schema_and_name)


def is_sql_url(source: str) -> bool:
    """Whether ``source`` is a database URL rather than a path or glob."""
    scheme, sep, _ = str(source).partition("://")
    return bool(sep) and scheme.lower() in SQL_SCHEMES


def parse_sql_url(url: str, table: str | None = None, *, override: bool = False) -> SqlTarget:
    """Split a database URL into the database and the table.

    Args:
        url: ``duckdb:///...``, ``postgresql://...``, ``sqlite:///...``, optionally
            with ``?table=NAME``.
        table: Table to use when the URL names none.
        override: Use ``table`` even when the URL names one (writers).

    Returns:
        The parsed target.
    """
    scheme = url.partition("://")[0].lower()
    if scheme == "duckdb":
        rest, _, query = url.partition("://")[2].partition("?")
        params = dict(part.partition("=")[::2] for part in query.split("&") if part)
        # As in SQLAlchemy: three slashes then a relative path, four for an absolute one.
        path = rest[1:] if rest.startswith("/") else rest
        url_table = params.get("table")
        chosen = table if override or not url_table else url_table
        return SqlTarget(url.partition("?")[0], chosen, Path(path))
    parsed = make_url(url)
    query_table = parsed.query.get("table")
    if isinstance(query_table, tuple):
        query_table = query_table[0]
    parsed = parsed.difference_update_query(["table"])
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    chosen = table if override or not query_table else query_table
    return SqlTarget(parsed.render_as_string(hide_password=False), chosen, None)


@contextmanager
def duckdb_connection(path: Path, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection whose timestamps come back in UTC, closed on exit."""
    if read_only and not path.exists():
        raise SourceNotFoundError(f"DuckDB database {path} does not exist.")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect(str(path), read_only=read_only)
    try:
        connection.execute("SET TimeZone = 'UTC'")
        yield connection
    finally:
        connection.close()


@contextmanager
def sql_engine(target: SqlTarget) -> Iterator[sa.Engine]:
    """A SQLAlchemy engine without a pool (no connection outlives the call)."""
    engine = sa.create_engine(target.url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def quote(identifier: str) -> str:
    """A SQL identifier in double quotes (DuckDB, PostgreSQL and SQLite agree)."""
    return '"' + identifier.replace('"', '""') + '"'


def duckdb_table_exists(connection: duckdb.DuckDBPyConnection, target: SqlTarget) -> bool:
    """Whether the target's table exists in the DuckDB database."""
    schema, name = target.schema_and_name
    found = connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
        "AND table_schema = coalesce(?, current_schema())",
        [name, schema],
    ).fetchall()  # fetch everything: DuckDB 2 refuses new work while a result is open
    return bool(found[0][0])


def qualified_name(schema: str | None, name: str) -> str:
    """A quoted, optionally schema-qualified table name."""
    return f"{quote(schema)}.{quote(name)}" if schema else quote(name)


def sql_read(url: str, table: str | None = None) -> pd.DataFrame:
    """Read a whole table; timestamps with a time zone come back in UTC.

    Args:
        url: Database URL (see the module docstring), may carry ``?table=``.
        table: Table name (``schema.table`` allowed) when the URL has none.

    Returns:
        The table's rows.

    Raises:
        SourceNotFoundError: The database file or the table does not exist; the
            message lists the tables that do.
    """
    target = parse_sql_url(url, table)
    schema, name = target.schema_and_name
    if target.duckdb_path is not None:
        with duckdb_connection(target.duckdb_path, read_only=True) as connection:
            if not duckdb_table_exists(connection, target):
                tables = [row[0] for row in connection.execute("SHOW TABLES").fetchall()]
                raise _missing_table(target, tables)
            with warnings.catch_warnings():
                # DuckDB 2.0's pandas conversion trips a pandas 3.1 deprecation of its own.
                warnings.filterwarnings("ignore", message="The inplace keyword")
                frame = connection.execute(f"SELECT * FROM {target.qualified}").df()
    else:
        database = make_url(target.url).database or ":memory:"
        on_disk = target.url.startswith("sqlite") and database != ":memory:"
        if on_disk and not Path(database).exists():  # connecting would create it
            raise SourceNotFoundError(f"SQLite database {database} does not exist.")
        with sql_engine(target) as engine, engine.connect() as connection:
            inspector = sa.inspect(connection)
            if not inspector.has_table(name, schema=schema):
                raise _missing_table(target, inspector.get_table_names(schema=schema))
            table_obj = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=connection)
            frame = pd.read_sql_query(sa.select(table_obj), connection)
    return _utc_columns(frame)


def _missing_table(target: SqlTarget, tables: list[str]) -> SourceNotFoundError:
    listed = ", ".join(repr(t) for t in sorted(tables)) or "none"
    where = target.duckdb_path or make_url(target.url).render_as_string(hide_password=True)
    return SourceNotFoundError(
        f"Table '{target.table}' does not exist in {where}; the tables there are {listed}."
    )


def _utc_columns(frame: pd.DataFrame) -> pd.DataFrame:
    # SQLite keeps no time zone: everything this project writes is UTC.
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            frame[column] = frame[column].dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(frame[column].dtype):
            frame[column] = frame[column].dt.tz_localize("UTC")
    return frame


def sql_upsert(df: pd.DataFrame, url: str, table: str, key: str | Sequence[str]) -> int:
    """Replace the rows of ``table`` whose key is in ``df`` by ``df``'s rows, atomically.

    The table is created from the frame's dtypes when missing (with an index on
    the key). Matching rows are deleted and ``df`` inserted in one transaction, so
    rerunning a write replaces instead of duplicating. DuckDB files, PostgreSQL and
    SQLite. ``sql_upsert(url, table, df, key=...)`` is accepted too.

    Args:
        df: Rows to write; categorical columns are stored as text.
        url: Database URL (a ``?table=`` in it is ignored).
        table: Table name, ``schema.table`` allowed.
        key: Column or columns identifying a row.

    Returns:
        The number of rows written.

    Raises:
        ValueError: A key column is missing, empty or repeated in ``df``, or the
            existing table lacks some of ``df``'s columns.
    """
    if isinstance(df, str) and isinstance(table, pd.DataFrame):
        df, url, table = table, df, url
    return sql_upsert_tables(url, [(df, table, key)])[0]


def sql_upsert_tables(
    url: str, writes: Sequence[tuple[pd.DataFrame, str, str | Sequence[str]]]
) -> list[int]:
    """:func:`sql_upsert` of several tables of one database, all in one transaction.

    Either every table gets its rows or none changes.

    Args:
        url: Database URL (a ``?table=`` in it is ignored).
        writes: ``(rows, table, key)`` per table, written in this order.

    Returns:
        The number of rows written per table.

    Raises:
        ValueError: As :func:`sql_upsert`, before anything is written.
    """
    prepared = []
    for df, table, key in writes:
        keys = [key] if isinstance(key, str) else list(key)
        target = parse_sql_url(url, table, override=True)
        prepared.append((_sql_ready(df, keys, table), target, keys))
    if not prepared:
        return []
    first = prepared[0][1]
    if first.duckdb_path is not None:
        with duckdb_connection(first.duckdb_path, read_only=False) as connection:
            connection.begin()
            try:
                for frame, target, keys in prepared:
                    _duckdb_upsert(connection, frame, target, keys)
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
    else:
        with sql_engine(first) as engine, engine.begin() as connection:
            for frame, target, keys in prepared:
                _sqlalchemy_upsert(connection, engine.dialect.name, frame, target, keys)
    for frame, target, keys in prepared:
        log.info("Upserted %d rows into %s by %s.", len(frame), target.table, ", ".join(keys))
    return [len(frame) for frame, _, _ in prepared]


def _sql_ready(df: pd.DataFrame, keys: list[str], table: str) -> pd.DataFrame:
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise ValueError(f"Cannot upsert into {table}: the rows have no key column(s) {missing}.")
    frame = df.reset_index(drop=True)
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(frame[column].cat.categories.dtype)
    null_keys = frame[keys].isna().any(axis=1)
    repeated = frame.duplicated(subset=keys, keep=False)
    for bad, what in ((null_keys, "an empty key"), (repeated, "a repeated key")):
        if bad.any():
            sample = frame.loc[bad, keys].head(5).to_dict("records")
            raise ValueError(
                f"Cannot upsert into {table}: {int(bad.sum())} rows have {what} "
                f"({', '.join(keys)}), e.g. {sample}."
            )
    return frame


def _check_columns(existing: Sequence[str], frame: pd.DataFrame, target: SqlTarget) -> None:
    extra = [c for c in frame.columns if c not in set(existing)]
    if extra:
        raise ValueError(
            f"Table '{target.table}' exists without column(s) {extra} that the rows have; "
            f"its columns are {list(existing)}. Migrate or drop the table."
        )


def _duckdb_upsert(
    connection: Any, frame: pd.DataFrame, target: SqlTarget, keys: list[str]
) -> None:
    """Delete the matching rows and insert ``frame``, in the caller's transaction."""
    view = f"leadscore_incoming_{uuid.uuid4().hex}"
    match = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)
    connection.register(view, frame)
    if not duckdb_table_exists(connection, target):
        connection.execute(f"CREATE TABLE {target.qualified} AS FROM {view} LIMIT 0")
    described = connection.execute(f"DESCRIBE {target.qualified}").fetchall()
    _check_columns([row[0] for row in described], frame, target)
    connection.execute(f"DELETE FROM {target.qualified} t USING {view} s WHERE {match}")
    connection.execute(f"INSERT INTO {target.qualified} BY NAME FROM {view}")
    connection.unregister(view)


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
    """Delete the rows whose ``where_column`` is one of ``values``, in one transaction.

    Args:
        url: Database URL (a ``?table=`` in it is ignored).
        table: Table name, ``schema.table`` allowed.
        where_column: Column to match.
        values: Values to delete (e.g. the ids of people who withdrew consent).

    Returns:
        The number of rows deleted (0 when the database or table does not exist).
    """
    values = list(dict.fromkeys(v.item() if hasattr(v, "item") else v for v in values))
    if not values:
        return 0

    def chunks(table_obj: sa.Table, dialect: str) -> list[Any]:
        column = table_obj.c[where_column]
        # SQLite caps bound parameters.
        return [column.in_(values[start : start + 500]) for start in range(0, len(values), 500)]

    deleted = _delete_rows(
        parse_sql_url(url, table, override=True),
        f"{quote(where_column)} IN (SELECT unnest(?))",
        [values],
        chunks,
    )
    log.info("Deleted %d rows from %s where %s matched.", deleted, table, where_column)
    return deleted


def sql_delete_before(url: str, table: str, time_column: str, before: pd.Timestamp) -> int:
    """Delete the rows whose ``time_column`` is strictly before ``before``, atomically.

    Args:
        url: Database URL (a ``?table=`` in it is ignored).
        table: Table name, ``schema.table`` allowed.
        time_column: A timestamp column (UTC).
        before: The cutoff (naive values are UTC).

    Returns:
        The number of rows deleted (0 when the database or table does not exist).
    """
    cutoff = as_utc(before)

    def older(table_obj: sa.Table, dialect: str) -> list[Any]:
        if dialect == "sqlite":
            # pandas writes SQLite timestamps as text: compare in the same format.
            bound: object = cutoff.tz_convert(None).strftime("%Y-%m-%d %H:%M:%S.%f")
        else:
            bound = cutoff.to_pydatetime()
        return [table_obj.c[time_column] < bound]

    deleted = _delete_rows(
        parse_sql_url(url, table, override=True),
        f"{quote(time_column)} < ?",
        [cutoff.to_pydatetime()],
        older,
    )
    log.info("Deleted %d rows of %s older than %s.", deleted, table, cutoff.isoformat())
    return deleted


def _delete_rows(
    target: SqlTarget,
    duckdb_condition: str,
    duckdb_parameters: list[Any],
    conditions: Callable[[sa.Table, str], list[Any]],
) -> int:
    """``DELETE ... WHERE`` in one transaction; 0 when the database or table is missing.

    Args:
        target: The parsed SQL URL.
        duckdb_condition: The condition as DuckDB SQL, with ``?`` parameters.
        duckdb_parameters: Its parameters.
        conditions: For SQLAlchemy databases, the WHERE clauses (one statement each)
            given the reflected table and the dialect name.
    """
    if target.duckdb_path is not None:
        if not target.duckdb_path.exists():
            return 0
        with duckdb_connection(target.duckdb_path, read_only=False) as connection:
            if not duckdb_table_exists(connection, target):
                return 0
            rows = connection.execute(
                f"DELETE FROM {target.qualified} WHERE {duckdb_condition}", duckdb_parameters
            ).fetchall()
            return int(rows[0][0]) if rows else 0
    schema, name = target.schema_and_name
    with sql_engine(target) as engine, engine.begin() as connection:
        if not sa.inspect(connection).has_table(name, schema=schema):
            return 0
        table_obj = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=connection)
        return sum(
            connection.execute(table_obj.delete().where(condition)).rowcount
            for condition in conditions(table_obj, engine.dialect.name)
        )
