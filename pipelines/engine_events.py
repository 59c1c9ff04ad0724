"""Reading the events into the engine: Parquet files as a DuckDB relation, never a frame.

:func:`read_events` opens an events source for the run's engine connection. Parquet
files, folders and globs are read by DuckDB where they lie (columns united by name,
``key=value`` folders as text columns, each row's file and position kept for error
messages); the column map and the contract's checks run as engine queries
(:mod:`features.engine_mapping`, :mod:`features.event_checks`). CSV files and SQL
tables are staged as Parquet in a temporary folder by :mod:`pipelines.engine_sources`.
Any source the engine cannot read, or whose CSV or SQL rows break the contract, is
read with pandas (:func:`pipelines.source_files.read_source`, the reference path,
which words the errors with the file or table, line and rows) and handed to the
engine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ibis
import pyarrow.parquet as pq

from features.engine_mapping import map_table
from features.event_checks import (
    FILE_COLUMN,
    SOURCE_COLUMNS,
    RowLocator,
    check_events,
    duplicate_count,
    duplicate_sample,
    normalise_events,
    rows_that_could_repeat,
)
from features.event_table import EventTable, KnownDuplicates
from features.input_report import DUPLICATE_SAMPLE_ROWS
from features.mapping import InputMapping
from pipelines.checks_memo import (
    ChecksMemo,
    checked_files,
    file_rows,
    file_stamp,
    files_fingerprint,
    reading,
    remember_checks,
    remembered_checks,
    remembered_files,
)
from pipelines.databases import is_sql_url, shown_url
from pipelines.event_days_memo import FileDays, days_file

log = logging.getLogger(__name__)


def engine_connection(memory_gb: float | None = None, spill_dir: Path | None = None) -> Any:
    """The run's engine connection: an in-memory DuckDB.

    Args:
        memory_gb: The most memory DuckDB may hold (``features.engine_memory_gb``);
            ``None``: DuckDB's default (80% of the machine).
        spill_dir: Where big groupings spill beyond that; DuckDB makes it when it
            needs it and removes its files.
    """
    con = ibis.duckdb.connect()
    if memory_gb is not None:
        con.raw_sql(f"SET memory_limit = '{float(memory_gb):g}GB'")
        # Row order of a scan is not needed anywhere: let DuckDB stream with less memory.
        con.raw_sql("SET preserve_insertion_order = false")
    if spill_dir is not None:
        con.raw_sql(f"SET temp_directory = '{str(spill_dir).replace(chr(39), chr(39) * 2)}'")
    return con


def event_files(source: str) -> tuple[str, list[Path]] | None:
    """``(kind, files)`` of a file/folder/glob source (``parquet`` or ``csv``), ``None`` for SQL."""
    from pipelines.source_files import file_kind, list_source_files

    if is_sql_url(source):
        return None
    files = list_source_files(source, "events")  # one format, or it raises
    return file_kind(files[0]) or "", files


def read_events(
    source: str,
    mapping: InputMapping | None,
    con: Any,
    checks_file: Path | None = None,
    csv_reader: str = "engine",
) -> EventTable:
    """:func:`read_checked_events`, remembering the checks at once (for one-off reads)."""
    events, memo = read_checked_events(source, mapping, con, checks_file, csv_reader)
    remember_checks(memo)
    return events


def read_checked_events(
    source: str,
    mapping: InputMapping | None,
    con: Any,
    checks_file: Path | None = None,
    csv_reader: str = "engine",
) -> tuple[EventTable, ChecksMemo | None]:
    """The validated events of a source, held by the engine.

    Args:
        source: A Parquet/CSV file, folder or glob, or a SQL URL with ``?table=``.
        mapping: The user's column names, values and timestamp format.
        con: The run's Ibis connection (:func:`engine_connection`).
        checks_file: Where the checks of Parquet and CSV files are remembered: when the same
            files (paths, sizes, modification times) are read with the same mapping
            again, their contract checks and duplicate count are not run again.
        csv_reader: ``sources.csv_reader``: ``engine`` parses CSV files with DuckDB,
            ``pandas`` with the reference path.

    Returns:
        The events, and the checks to remember (:func:`remember_checks`) once the run
        has written its outputs (``None``: nothing new to remember). A run that fails
        later writes nothing, this file included.

    Raises:
        SourceNotFoundError: The source does not exist.
        features.column_checks.ContractError: The events break the contract.
        ValueError: A file cannot be read; the message names it.
    """
    import duckdb

    from pipelines.engine_sources import EngineDeclined, sql_events

    kind, files = event_files(source) or ("sql", [])
    if kind != "parquet":
        try:
            if kind == "csv" and csv_reader == "engine":
                return _from_csv(source, files, mapping, con, checks_file)
            if kind == "sql":
                return sql_events(source, mapping, con), None
        except EngineDeclined as exc:
            # pandas reads it again to word the problem: file, line, rows. A SQL URL may
            # hold a password, and so may the engine's message: neither is logged.
            shown, why = (shown_url(source), "") if kind == "sql" else (source, f" ({exc})")
            log.info("The engine did not take the events at %s%s; reading them with pandas.",
                     shown, why)  # fmt: skip
        return _through_pandas(source, mapping, con), None

    try:
        return _from_parquet(source, files, mapping, con, checks_file)
    except (duckdb.Error, ibis.common.exceptions.IbisError) as exc:
        # The engine could not read a file: the pandas reader names the file and why.
        log.info("The engine could not read %s (%s); reading it with pandas.", source, exc)
        return _through_pandas(source, mapping, con), None


def _from_csv(
    source: str,
    files: list[Path],
    mapping: InputMapping | None,
    con: Any,
    checks_file: Path | None,
) -> tuple[EventTable, ChecksMemo | None]:
    """:func:`pipelines.engine_sources.csv_events`, with the checks remembered as for Parquet."""
    from pipelines.engine_sources import csv_events

    fingerprint = files_fingerprint(files, mapping, source, reader="csv")
    known = remembered_checks(checks_file, fingerprint)
    events, rewrites = csv_events(source, files, mapping, con, known)
    memo = None
    if known is None and checks_file is not None and events.duplicates is not None:
        memo = ChecksMemo(checks_file, fingerprint, rewrites, events.duplicates)
    return events, memo


def _through_pandas(source: str, mapping: InputMapping | None, con: Any) -> EventTable:
    from pipelines.source_files import read_source

    return EventTable.from_frame(read_source(source, "events", mapping), con)


def _from_parquet(
    source: str,
    files: list[Path],
    mapping: InputMapping | None,
    con: Any,
    checks_file: Path | None,
) -> tuple[EventTable, ChecksMemo | None]:
    root = Path(source).expanduser()
    raw = con.read_parquet(
        [str(f) for f in files],
        union_by_name=True,
        filename=FILE_COLUMN,
        file_row_number=True,
        hive_partitioning=root.is_dir(),
        hive_types_autocast=False,
    )
    mapped = map_table(raw, mapping, "events", source, hidden=SOURCE_COLUMNS)

    def locate() -> RowLocator:
        offsets, total = {}, 0
        for file in files:
            offsets[str(file)] = total
            total += pq.ParquetFile(file).metadata.num_rows
        return RowLocator(offsets)

    timestamp_format = mapping.timestamp_format if mapping else None
    stamps = {str(file): file_stamp(file) for file in files}
    how = reading(mapping, source, "parquet")
    fingerprint = files_fingerprint(files, mapping, source, stamps=list(stamps.values()))
    checked = checked_files(repr(mapped.schema()), stamps, how)
    known = remembered_checks(checks_file, fingerprint)
    new = None if known is not None else remembered_files(checks_file, checked)
    only = None if new is None else mapped.filter(mapped[FILE_COLUMN].isin(new.paths))
    if new is not None and only is not None and _rows(only, con) != file_rows(new.paths):
        new = only = None  # the engine names the files otherwise: check them all
    every_row = True  # whether the duplicates are looked for among all the rows
    if known is None and new is None:
        rewrites = check_events(mapped, con, source, locate, timestamp_format)
    elif new is not None and only is not None:
        log.info("%d of the events' files are unchanged since their last check: only the %d "
                 "new one(s) checked.", len(files) - len(new.paths), len(new.paths))  # fmt: skip
        # Rows are checked one by one: the files checked before hold the same rows.
        fresh = check_events(only, con, source, locate, timestamp_format)
        rewrites = {name: need or new.rewrites.get(name, False) for name, need in fresh.items()}
        # A column now rewritten changes old rows too: they may newly repeat each other.
        every_row = rewrites != new.rewrites
    else:
        rewrites, duplicates = known
        log.info("The events' %d files are unchanged since their last check: not checked again.",
                 len(files))  # fmt: skip
    # Normalised once; the day counts (pipelines.event_days_memo) keep each row's file.
    by_file = normalise_events(
        mapped, con, source, locate, timestamp_format, rewrites, keep=(FILE_COLUMN,)
    )
    table = by_file.drop(FILE_COLUMN)
    if known is None:
        # The files checked before hold no duplicate (else nothing was remembered): any
        # duplicate now involves a new file's row.
        rows = (
            table
            if new is None or every_row
            else rows_that_could_repeat(by_file, new.paths, con).drop(FILE_COLUMN)
        )
        count = duplicate_count(rows, con)
        sample = duplicate_sample(rows, con, DUPLICATE_SAMPLE_ROWS) if count else []
        duplicates = KnownDuplicates(count, sample)
    memo_file = days_file(checks_file) if checks_file else None
    days = FileDays(con, by_file, stamps, memo_file, how)
    memo = None
    if checks_file is not None:
        memo = ChecksMemo(checks_file, fingerprint, rewrites, duplicates, known is not None, days,
                          checked)  # fmt: skip
    events = EventTable(table, con, duplicates, day_counts=days)
    log.info("Events from %d Parquet file(s) at %s: %d rows, read by the engine.",
             len(files), source, events.rows)  # fmt: skip
    return events, memo


def _rows(table: Any, con: Any) -> int:
    return int(con.execute(table.count()))


def materialise(events: EventTable, name: str) -> EventTable:
    """The events computed once into a temporary engine table (DuckDB), for reuse by every query."""
    con = events.con
    if con.name != "duckdb":
        return events
    sql = ibis.to_sql(events.table, dialect="duckdb")
    con.raw_sql(f'CREATE OR REPLACE TEMP TABLE "{name}" AS {sql}')
    return EventTable(con.table(name), con)
