"""CSV files and SQL tables staged into temporary engine tables, then checked there.

:func:`csv_events` parses CSV files with DuckDB the way pandas reads them (``,``
between fields, ``"`` quotes, a header, every field text so ids keep their zeros,
pandas' missing-value markers as nulls; the columns feeding ``event_time``, when ISO
8601, and ``value`` are converted by the reader). :func:`sql_events` copies a SQL
table into the engine in batches (a DuckDB file through DuckDB, PostgreSQL and SQLite
through a streaming SQLAlchemy cursor), never all of it in one frame. Either way the
rows are staged once in a temporary table; the contract's checks
(:mod:`features.event_checks`) then read memory, and a second table is written only
when a column needs rewriting. The engine cannot number the rows of these sources,
so anything it cannot read, or rows that break the contract, raise
:class:`EngineDeclined` with the staged table dropped: the caller reads the source
again with pandas, whose sentence names the file or table, line and rows.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import ibis

from features.column_checks import ContractError
from features.engine_mapping import map_table
from features.event_checks import (
    FILE_COLUMN,
    FILE_ROW_COLUMN,
    RowLocator,
    check_events,
    duplicate_count,
    duplicate_sample,
    normalise_events,
)
from features.event_table import EventTable, KnownDuplicates
from features.input_report import DUPLICATE_SAMPLE_ROWS
from features.mapping import InputMapping, column_pairs
from pipelines.databases import is_sql_url
from pipelines.source_files import CSV_SUFFIXES, PANDAS_MISSING

log = logging.getLogger(__name__)
#: Names of the temporary tables of staged events, one per table.
_staged_tables = itertools.count()
#: Rows per batch copied from a SQL table.
SQL_BATCH_ROWS = 200_000


class EngineDeclined(Exception):
    """The engine did not take the events (unreadable, or rows break the contract)."""


def csv_files(source: str) -> list[Path] | None:
    """The CSV files of a file/folder/glob source, or ``None`` for Parquet or SQL sources."""
    from pipelines.source_files import list_source_files

    if is_sql_url(source):
        return None
    files = list_source_files(source, "events")
    return files if files[0].name.lower().endswith(CSV_SUFFIXES) else None


def csv_events(
    source: str, files: list[Path], mapping: InputMapping | None, con: Any
) -> EventTable:
    """CSV events parsed, checked and normalised by the engine into a temporary table.

    Fields are read as text, as :func:`pipelines.source_files.read_files` reads ids,
    and pandas' missing-value markers (``NA``, ``null``, empty ...) are nulls; only the
    columns that feed ``event_time`` (ISO 8601, no ``timestamp_format``) and ``value``
    are converted while parsing, which costs a fraction of parsing their text
    afterwards.

    Raises:
        EngineDeclined: DuckDB cannot parse a file, or rows break the contract.
    """
    root = Path(source).expanduser()
    options = {
        "all_varchar": True, "delim": ",", "quote": '"', "escape": '"', "header": True,
        "nullstr": list(PANDAS_MISSING), "union_by_name": True,
    }  # fmt: skip
    paths = [str(f) for f in files]

    def stage(name: str) -> None:
        header = con.read_csv(paths, **options).columns
        typed = _typed_while_parsing(header, mapping)
        raw = con.read_csv(
            paths,
            **options,
            **({"types": typed} if typed else {}),
            hive_partitioning=root.is_dir(),
            hive_types_autocast=False,
        )
        mapped = map_table(raw, mapping, "events", source)
        con.raw_sql(f'CREATE TEMP TABLE "{name}" AS {ibis.to_sql(mapped, dialect="duckdb")}')

    events = _staged_and_checked(stage, con, source, mapping, map_columns=False)
    log.info("Events from %d CSV file(s) at %s: %d rows, parsed by the engine.",
             len(files), source, events.rows)  # fmt: skip
    return events


def sql_events(source: str, mapping: InputMapping | None, con: Any) -> EventTable:
    """A SQL table's events copied into the engine in batches, then checked there.

    Raises:
        EngineDeclined: The table cannot be read or copied, or rows break the contract.
    """
    from pipelines.databases import sql_batches

    raw = con.con  # the DuckDB connection under Ibis: Arrow batches go in directly

    def stage(name: str) -> None:
        batches = 0
        for batch in sql_batches(source, "events", SQL_BATCH_ROWS):
            raw.register("leadscore_sql_batch", batch)
            try:
                into = (f'INSERT INTO "{name}" BY NAME' if batches
                        else f'CREATE TEMP TABLE "{name}" AS')  # fmt: skip
                raw.execute(f"{into} SELECT * FROM leadscore_sql_batch")
            finally:
                raw.unregister("leadscore_sql_batch")
            batches += 1
        if not batches:
            raise EngineDeclined("the table is empty")  # pandas gives its columns' sentence

    events = _staged_and_checked(stage, con, source, mapping, map_columns=True)
    log.info("Events from the SQL table at %s: %d rows, copied into the engine.",
             source.partition("?")[0].rpartition("@")[2], events.rows)  # fmt: skip
    return events


def _staged_and_checked(
    stage: Any, con: Any, source: str, mapping: InputMapping | None, *, map_columns: bool
) -> EventTable:
    """Stage the rows (``stage(name)`` creates the temporary table), check and normalise.

    Any error of the engine or the contract drops what was staged and raises
    :class:`EngineDeclined`: pandas reads the source again and words the problem.
    """
    import duckdb

    name = f"leadscore_staged_events_{next(_staged_tables)}"
    made = [name]
    try:
        stage(name)
        staged = con.table(name)
        mapped = map_table(staged, mapping, "events", source) if map_columns else staged
        return _checked(mapped, made, con, source, mapping)
    except (duckdb.Error, ibis.common.exceptions.IbisError, ContractError, EngineDeclined,
            OSError, ValueError) as exc:  # fmt: skip
        for table in made:
            con.raw_sql(f'DROP TABLE IF EXISTS "{table}"')
        raise EngineDeclined(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc


def _checked(
    table: ibis.Table, made: list[str], con: Any, source: str, mapping: InputMapping | None
) -> EventTable:
    """The contract's checks and normalisation of staged events, and their duplicates.

    ``made`` names the temporary tables so far (the staged one first); a rewrite adds
    its own and drops the staged one.
    """
    unnumbered = table.mutate(
        **{FILE_COLUMN: ibis.null("string"), FILE_ROW_COLUMN: ibis.null("int64")}
    )  # the reader's columns, asked only on problems (then pandas numbers the rows)
    timestamp_format = mapping.timestamp_format if mapping else None
    rewrites = check_events(unnumbered, con, source, _rows_not_numbered, timestamp_format)
    parsed = normalise_events(
        unnumbered, con, source, _rows_not_numbered, timestamp_format, rewrites
    )
    if any(rewrites.get(column, False) for column in parsed.columns):
        made.append(f"leadscore_staged_events_{next(_staged_tables)}")
        sql = ibis.to_sql(parsed, dialect="duckdb")
        con.raw_sql(f'CREATE TEMP TABLE "{made[-1]}" AS {sql}')
        con.raw_sql(f'DROP TABLE "{made[0]}"')
        parsed = con.table(made[-1])
    count = duplicate_count(parsed, con)
    sample = duplicate_sample(parsed, con, DUPLICATE_SAMPLE_ROWS) if count else []
    return EventTable(parsed, con, KnownDuplicates(count, sample))


def _typed_while_parsing(header: list[str], mapping: InputMapping | None) -> dict[str, str]:
    """The CSV columns the reader converts itself, with their SQL types.

    The column feeding ``event_time`` (unless a ``timestamp_format`` or a value map
    applies to it) and the one feeding ``value`` (unless a value map does), each when
    it feeds nothing else.
    """
    mapping = mapping or InputMapping()
    feeds = {ours: user for user, ours in column_pairs(mapping.columns)}
    wanted = {"value": "DOUBLE"}
    if not mapping.timestamp_format:
        wanted["event_time"] = "TIMESTAMPTZ"
    typed = {}
    for ours, sql_type in wanted.items():
        user = feeds.get(ours, ours)
        shared = sum(1 for name in feeds.values() if name == user) > 1  # one column, two uses
        if user in header and ours not in mapping.values and not shared:
            typed[user] = sql_type
    return typed


def _rows_not_numbered() -> RowLocator:
    raise EngineDeclined("rows break the contract")
