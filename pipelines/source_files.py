"""Reading one input from files or a SQL table: the column map and the data contract.

:func:`list_source_files` says which Parquet/CSV files a file, folder or glob stands
for; :func:`read_files` stacks them into a pandas frame; :func:`read_source` reads one
input (files or a SQL table), maps its columns and values and checks it against
:mod:`features.schemas`. Events from Parquet go to the engine instead
(:mod:`pipelines.engine_events`); this is the reference path for everything else.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa

from features.column_checks import ContractError
from features.mapping import InputMapping, apply_mapping, column_pairs
from features.schemas import VALIDATORS
from pipelines.databases import SourceNotFoundError, is_sql_url, sql_read
from pipelines.feeds import check_csv_rows, ends_early

log = logging.getLogger(__name__)

TableName = Literal["events", "entities", "outcomes"]

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
#: The texts ``pandas.read_csv`` reads as missing by default (its ``na_values``); the
#: engine's CSV reader (:mod:`pipelines.engine_events`) reads them as nulls too.
PANDAS_MISSING = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                  "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                  "nan", "null")  # fmt: skip
#: Contract columns read from CSV as text, so ids like ``00123`` keep their zeros.
ID_COLUMNS = ("entity_id", "crm_id")


def list_source_files(source: str, table: str = "input") -> list[Path]:
    """The Parquet/CSV files a file, folder (recursive) or glob stands for, sorted.

    Names starting with ``.`` or ``_`` inside a folder (``_SUCCESS``) are skipped.

    Raises:
        SourceNotFoundError: Nothing, or no Parquet/CSV file, exists there.
        ValueError: A file of another format, or a folder mixing Parquet and CSV.
    """
    path = Path(source).expanduser()
    if any(char in str(source) for char in "*?["):
        files = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
        files = [f for f in files if f.is_file() and file_kind(f)]
        if not files:
            raise SourceNotFoundError(f"The {table} glob {source} matches no Parquet or CSV file.")
    elif path.is_file():
        if not file_kind(path):
            raise ValueError(
                f"The {table} source {source} is neither Parquet ({', '.join(PARQUET_SUFFIXES)}) "
                f"nor CSV ({', '.join(CSV_SUFFIXES)})."
            )
        return [path]
    elif path.is_dir():
        files = sorted(
            f
            for f in path.rglob("*")
            if f.is_file()
            and file_kind(f)
            and not any(part.startswith((".", "_")) for part in f.relative_to(path).parts)
        )
        if not files:
            raise SourceNotFoundError(f"The {table} folder {source} holds no Parquet or CSV file.")
    else:
        raise SourceNotFoundError(
            f"The {table} source {source} does not exist (no file or folder at {path.resolve()})."
        )
    kinds = {file_kind(f) for f in files}
    if len(kinds) > 1:
        raise ValueError(
            f"The {table} source {source} mixes Parquet and CSV files; keep one format."
        )
    return files


def file_kind(path: Path) -> str | None:
    """``parquet`` or ``csv`` by the file's suffix, else ``None``."""
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def read_files(
    source: str, table: str = "input", text_columns: tuple[str, ...] = ID_COLUMNS
) -> pd.DataFrame:
    """Read and stack every Parquet or CSV file of a file, folder or glob.

    Parts may differ in columns (missing ones become empty). Inside a folder,
    ``key=value`` folder names become string columns, as Hive partitioning does.
    ``text_columns`` of CSV files are read as text rather than guessed (ids).

    Raises:
        ValueError: A file cannot be parsed; the message names it.
    """
    files = list_source_files(source, table)
    root = Path(source).expanduser()
    frames = []
    for file in files:
        try:
            if file_kind(file) == "parquet":
                frame = pd.read_parquet(file)
            else:
                check_csv_rows(file, table)
                frame = pd.read_csv(file, dtype=dict.fromkeys(text_columns, "str"))
        except ContractError:
            raise
        except EOFError as exc:
            raise ValueError(ends_early(table, file, exc)) from exc
        except (ValueError, OSError, pa.ArrowException) as exc:
            if isinstance(exc, OSError) and "truncated" in str(exc).lower():
                raise ValueError(ends_early(table, file, exc)) from exc
            raise ValueError(f"Could not read the {table} file {file}: {exc}") from exc
        if root.is_dir():
            for part in file.relative_to(root).parent.parts:
                key, sep, value = part.partition("=")
                if sep and key not in frame.columns:
                    frame[key] = value
        frames.append(frame)
    non_empty = [f for f in frames if len(f)] or frames[:1]
    combined = non_empty[0] if len(non_empty) == 1 else pd.concat(non_empty, ignore_index=True)
    log.info("Read %d %s rows from %d file(s) at %s.", len(combined), table, len(files), source)
    return combined.reset_index(drop=True)


def read_source(
    source: str,
    table: TableName,
    mapping: InputMapping | None = None,
    *,
    validate: bool = True,
) -> pd.DataFrame:
    """Read one input, map its columns and values to the contract's and check it.

    Args:
        source: A Parquet/CSV file, a folder of them, a glob, or a SQL URL with
            ``?table=NAME`` (``duckdb:///``, ``postgresql://``, ``sqlite:///``).
        table: Which input this is: ``events``, ``entities`` or ``outcomes``.
        mapping: The user's column names, values and timestamp format
            (``sources.column_map``, ``value_map``, ``timestamp_format``), applied
            before validation.
        validate: Run the data contract (normalise types, reject bad rows).

    Returns:
        The input, with contract column names (normalised when ``validate``).

    Raises:
        SourceNotFoundError: The file, folder, database or table does not exist.
        features.column_checks.ContractError: The data breaks the contract.
    """
    if is_sql_url(source):
        frame = sql_read(source, table)
    else:
        pairs = column_pairs(mapping.columns if mapping else None)
        mapped_ids = tuple(user for user, ours in pairs if ours in ID_COLUMNS)
        frame = read_files(source, table, text_columns=ID_COLUMNS + mapped_ids)
    frame = apply_mapping(frame, mapping, table, source)
    return VALIDATORS[table](frame, source) if validate else frame
