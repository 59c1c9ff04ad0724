"""Databases: URLs, connections, quoting, reading a table, DuckDB tables and files.

URLs name a database and, for sources, a table: ``duckdb:///path/file.duckdb?table=events``
(a relative path; four slashes for an absolute one, as in SQLAlchemy),
``postgresql://user@host:port/db?table=events`` (also ``postgresql+psycopg://``) or
``sqlite:///file.db?table=events``. DuckDB goes through its own Python API, the
others through SQLAlchemy 2 (psycopg 3 for PostgreSQL). Every timestamp read
comes back in UTC. Identifiers are always quoted (:func:`quote`) and values bound
as parameters: no SQL text is built from a path or a configured value.
Row writes (upserts, deletes) are in :mod:`pipelines.database_writes`; the two
DuckDB file operations it and erasure share are here: creating a table
(:func:`create_duckdb_table`, long texts in zstd) and compacting the file
(:func:`compact_duckdb`).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

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
    (frame,) = sql_batches(url, table, rows=None)  # runs the generator to its end: closed
    return frame


def sql_batches(url: str, table: str | None, rows: int | None) -> Iterator[pd.DataFrame]:
    """A table's rows in frames of about ``rows`` (``None``: one frame), UTC times.

    DuckDB files are read through DuckDB (in whole vectors of 2,048 rows); other
    databases through SQLAlchemy with a streaming cursor, so memory holds one batch at
    a time. Raises as :func:`sql_read`.
    """
    target = parse_sql_url(url, table)
    schema, name = target.schema_and_name
    if target.duckdb_path is not None:
        with duckdb_connection(target.duckdb_path, read_only=True) as connection:
            if not duckdb_table_exists(connection, target):
                tables = [row[0] for row in connection.execute("SHOW TABLES").fetchall()]
                raise _missing_table(target, tables)
            result = connection.execute(f"SELECT * FROM {target.qualified}")
            if rows is None:
                yield _utc_columns(_quietly(result.df))
                return
            vectors = max(1, rows // 2048)  # DuckDB hands over whole vectors of 2,048 rows
            while len(batch := _quietly(lambda: result.fetch_df_chunk(vectors))):
                yield _utc_columns(batch)
        return
    database = make_url(target.url).database or ":memory:"
    on_disk = target.url.startswith("sqlite") and database != ":memory:"
    if on_disk and not Path(database).exists():  # connecting would create it
        raise SourceNotFoundError(f"SQLite database {database} does not exist.")
    with sql_engine(target) as engine, engine.connect() as connection:
        inspector = sa.inspect(connection)
        if not inspector.has_table(name, schema=schema):
            raise _missing_table(target, inspector.get_table_names(schema=schema))
        table_obj = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=connection)
        if rows is None:
            yield _utc_columns(pd.read_sql_query(sa.select(table_obj), connection))
            return
        streaming = connection.execution_options(stream_results=True, max_row_buffer=rows)
        for batch in pd.read_sql_query(sa.select(table_obj), streaming, chunksize=rows):
            yield _utc_columns(batch)


def shown_url(url: str) -> str:
    """A database URL as it may be logged: no password, no query but ``?table=``."""
    target = parse_sql_url(url)
    if target.duckdb_path is not None:
        where = str(target.duckdb_path)
    else:
        where = make_url(target.url).set(query={}).render_as_string(hide_password=True)
    return f"{where}?table={target.table}" if target.table else where


def _quietly(fetch: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """``fetch()`` without DuckDB 2.0's pandas conversion tripping a pandas 3.1 warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The inplace keyword")
        return fetch()


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


def create_duckdb_table(
    connection: duckdb.DuckDBPyConnection,
    target: SqlTarget,
    incoming: str,
    zstd_columns: Collection[str],
) -> None:
    """Create ``target`` with the columns of ``incoming``, ``zstd_columns`` compressed by zstd.

    ``incoming`` is a quoted relation name. DuckDB's own choice for long texts costs
    more to write and takes twice the room: a million score rows with their reason texts
    took 4.3 s to insert and checkpoint and 380 MB of file, with zstd 3.1 s and 195 MB.
    A file whose storage version predates zstd for text (DuckDB 1.2) gets DuckDB's choice.
    """
    described = connection.execute(f"DESCRIBE SELECT * FROM {incoming}").fetchall()
    zstd = {name for name, kind, *_ in described if name in zstd_columns and kind == "VARCHAR"}
    if not zstd or not _stores_text_with_zstd(connection):
        connection.execute(f"CREATE TABLE {target.qualified} AS FROM {incoming} LIMIT 0")
        return
    columns = ", ".join(
        f"{quote(name)} {sql_type}" + (" USING COMPRESSION zstd" if name in zstd else "")
        for name, sql_type, *_ in described
    )
    connection.execute(f"CREATE TABLE {target.qualified} ({columns})")


def _stores_text_with_zstd(connection: duckdb.DuckDBPyConnection) -> bool:
    """Whether the database's storage version (``v1.2.0+`` and later) has zstd for text."""
    row = connection.execute(
        "SELECT tags['storage_version'] FROM duckdb_databases() "
        "WHERE database_name = current_database()"
    ).fetchone()
    found = re.match(r"v?(\d+)\.(\d+)", str(row[0]) if row and row[0] else "")
    return found is not None and (int(found[1]), int(found[2])) >= (1, 2)


def compact_duckdb(path: Path) -> None:
    """Rewrite a DuckDB file with only its live rows, then swap it in atomically.

    A DELETE only marks rows; their bytes stay in the file's blocks until they happen
    to be reused. Copying the database into a fresh file leaves nothing behind. Both
    file paths are bound as parameters, never spliced into the SQL text.
    """
    fresh = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.compact")
    try:
        with duckdb.connect() as connection:
            connection.execute("ATTACH ? AS old_db (READ_ONLY)", [str(path)])
            connection.execute("ATTACH ? AS new_db", [str(fresh)])
            connection.execute("COPY FROM DATABASE old_db TO new_db")
            connection.execute("DETACH old_db")
            connection.execute("DETACH new_db")
        os.replace(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)
        fresh.with_name(fresh.name + ".wal").unlink(missing_ok=True)
    log.info("Compacted %s so deleted rows leave no trace in the file.", path)
