"""CSV files and SQL tables staged as Parquet in a temporary folder, then checked there.

:func:`csv_events` parses CSV files with DuckDB the way pandas reads them (``,``
between fields, ``"`` quotes, a header, every field text so ids keep their zeros,
pandas' missing-value markers as nulls; the columns feeding ``event_time``, when ISO
8601, and ``value`` are converted by the reader). :func:`sql_events` copies a SQL
table in batches (a DuckDB file through DuckDB, PostgreSQL and SQLite through a
streaming SQLAlchemy cursor), never all of it in one frame. Either way DuckDB streams
the rows once into Parquet in this process's temporary folder (removed at exit), so
memory holds a few row groups and every later query scans compressed columns, as it
does for a Parquet source; a second file is written only when a column needs
rewriting. The engine cannot number the rows of these sources, so anything it cannot
read, or rows that break the contract, raise :class:`EngineDeclined` with the staged
files removed: the caller reads the source again with pandas, whose sentence names
the file or table, line and rows.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
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
from pipelines.source_files import PANDAS_MISSING

log = logging.getLogger(__name__)
#: The staging folders' names: this prefix, the process id, a random part.
STAGING_PREFIX = "leadscore-staged-"
#: Numbers the staged event sets of this process.
_staged_sets = itertools.count()
#: Rows per batch copied from a SQL table.
SQL_BATCH_ROWS = 200_000


class EngineDeclined(Exception):
    """The engine did not take the events (unreadable, or rows break the contract)."""


def csv_events(
    source: str,
    files: list[Path],
    mapping: InputMapping | None,
    con: Any,
    known: tuple[dict[str, bool], KnownDuplicates] | None = None,
) -> tuple[EventTable, dict[str, bool]]:
    """CSV events parsed, checked and normalised by the engine, staged as Parquet.

    Fields are read as text, as :func:`pipelines.source_files.read_files` reads ids,
    and pandas' missing-value markers (``NA``, ``null``, empty ...) are nulls; only the
    columns that feed ``event_time`` (ISO 8601, no ``timestamp_format``) and ``value``
    are converted while parsing, which costs a fraction of parsing their text
    afterwards.

    Args:
        source: The file, folder or glob, as given.
        files: Its CSV files.
        mapping: The user's column names, values and timestamp format.
        con: The run's Ibis connection.
        known: The rewrites and duplicates remembered for these very files (their
            checks are not run again), or ``None``.

    Returns:
        The events and the columns that needed rewriting (to remember).

    Raises:
        EngineDeclined: DuckDB cannot parse a file, or rows break the contract.
    """
    root = Path(source).expanduser()
    options = {
        "all_varchar": True, "delim": ",", "quote": '"', "escape": '"', "header": True,
        "nullstr": list(PANDAS_MISSING), "union_by_name": True,
    }  # fmt: skip
    paths = [str(f) for f in files]

    def stage(folder: Path) -> None:
        header = con.read_csv(paths, **options).columns
        typed = _typed_while_parsing(header, mapping)
        raw = con.read_csv(
            paths,
            **options,
            **({"types": typed} if typed else {}),
            hive_partitioning=root.is_dir(),
            hive_types_autocast=False,
        )
        _copy(con, raw, folder / "part-0.parquet")

    events, rewrites = _staged_and_checked(stage, con, source, mapping, known)
    log.info("Events from %d CSV file(s) at %s: %d rows, parsed by the engine%s.",
             len(files), source, events.rows,
             " (checks remembered: files unchanged)" if known else "")  # fmt: skip
    return events, rewrites


def sql_events(source: str, mapping: InputMapping | None, con: Any) -> EventTable:
    """A SQL table's events copied into the engine in batches, then checked there.

    Raises:
        EngineDeclined: The table cannot be read or copied, or rows break the contract.
    """
    from pipelines.databases import shown_url, sql_batches

    raw = con.con  # the DuckDB connection under Ibis, to register each batch with

    def stage(folder: Path) -> None:
        folder.mkdir(parents=True)
        batches = 0
        for batch in sql_batches(source, "events", SQL_BATCH_ROWS):
            raw.register("leadscore_sql_batch", batch)
            try:
                part = _quoted(folder / f"part-{batches}.parquet")
                raw.execute(f"COPY (SELECT * FROM leadscore_sql_batch) TO {part} (FORMAT parquet)")
            finally:
                raw.unregister("leadscore_sql_batch")
            batches += 1
        if not batches:
            raise EngineDeclined("the table is empty")  # pandas gives its columns' sentence

    events, _ = _staged_and_checked(stage, con, source, mapping)
    log.info("Events from the SQL table at %s: %d rows, copied into the engine.",
             shown_url(source), events.rows)  # fmt: skip
    return events


def _staged_and_checked(
    stage: Callable[[Path], None],
    con: Any,
    source: str,
    mapping: InputMapping | None,
    known: tuple[dict[str, bool], KnownDuplicates] | None = None,
) -> tuple[EventTable, dict[str, bool]]:
    """Stage the rows (``stage(folder)`` writes Parquet parts there), map, check, normalise.

    ``known``: the rewrites and duplicates remembered for these very rows (not checked
    again). Returns the events and the rewrites.

    Any error of the engine or the contract removes what was staged and raises
    :class:`EngineDeclined`: pandas reads the source again and words the problem.
    """
    import duckdb
    import sqlalchemy as sa

    folder = None
    try:
        folder = _staging_root() / f"events-{next(_staged_sets)}"
        folder.mkdir()
        stage(folder / "staged")
        staged = con.read_parquet(str(folder / "staged" / "*.parquet"), union_by_name=True)
        return _checked(map_table(staged, mapping, "events", source), folder, con, source,
                        mapping, known)  # fmt: skip
    except (duckdb.Error, ibis.common.exceptions.IbisError, ContractError, EngineDeclined,
            OSError, ValueError, sa.exc.SQLAlchemyError) as exc:  # fmt: skip
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise EngineDeclined(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc


def _checked(
    table: ibis.Table,
    folder: Path,
    con: Any,
    source: str,
    mapping: InputMapping | None,
    known: tuple[dict[str, bool], KnownDuplicates] | None,
) -> tuple[EventTable, dict[str, bool]]:
    """The contract's checks and normalisation of staged events, and their duplicates.

    A column that needs rewriting writes the normalised events beside the staged ones
    (``folder/normalised``), which are then removed.
    """
    unnumbered = table.mutate(
        **{FILE_COLUMN: ibis.null("string"), FILE_ROW_COLUMN: ibis.null("int64")}
    )  # the reader's columns, asked only on problems (then pandas numbers the rows)
    timestamp_format = mapping.timestamp_format if mapping else None
    if known is None:
        rewrites = check_events(unnumbered, con, source, _rows_not_numbered, timestamp_format)
    else:
        rewrites = known[0]
    parsed = normalise_events(
        unnumbered, con, source, _rows_not_numbered, timestamp_format, rewrites
    )
    if any(rewrites.get(column, False) for column in parsed.columns):
        _copy(con, parsed, folder / "normalised" / "part-0.parquet")
        parsed = con.read_parquet(str(folder / "normalised" / "part-0.parquet"))
        shutil.rmtree(folder / "staged", ignore_errors=True)
    if known is not None:
        return EventTable(parsed, con, known[1]), rewrites
    count = duplicate_count(parsed, con)
    sample = duplicate_sample(parsed, con, DUPLICATE_SAMPLE_ROWS) if count else []
    return EventTable(parsed, con, KnownDuplicates(count, sample)), rewrites


def _copy(con: Any, table: ibis.Table, path: Path) -> None:
    """Write ``table`` to one Parquet file (DuckDB streams it: memory holds a few row groups)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sql = ibis.to_sql(table, dialect="duckdb")
    con.raw_sql(f"COPY ({sql}) TO {_quoted(path)} (FORMAT parquet)")


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _staging_root() -> Path:
    """This process's folder for staged events, in the system's temporary folder.

    Made on first use and removed when the process exits.
    """
    if _staging["root"] is None:
        _sweep_dead_stagings()
        root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _staging["root"] = root
    return _staging["root"]


def _sweep_dead_stagings() -> None:
    """Remove the staging folders of processes that no longer run (killed runs)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*-*"):
        pid = folder.name[len(STAGING_PREFIX) :].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


_staging: dict[str, Path | None] = {"root": None}


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
