"""Input reading and the atomic writers every pipeline step uses.

Reading: :func:`read_source` (file, folder, glob or SQL table; column mapping, then
the data contract of :mod:`features.schemas`) and :func:`load_inputs` (all three
inputs of a run plus an :class:`~features.input_report.InputReport`).

Writing: files are written to a temporary sibling and renamed into place, so a
failed write leaves the previous file as it was; folders are swapped the same way;
SQL tables are upserted in one transaction so a rerun replaces rows instead of
adding them.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa

from features.column_checks import ContractError
from features.input_report import InputReport, clean_events, input_report
from features.schemas import VALIDATORS
from features.timeutil import as_utc
from models.privacy import (
    PSEUDONYM_KEY_ENV,
    PseudonymKeyError,
    pseudonymise,
    pseudonymise_one,
    resolve_pseudonym_key,
)
from pipelines.settings import Settings
from pipelines.sources import SourceNotFoundError, is_sql_url
from pipelines.sources import sql_delete as sql_delete  # re-exported: callers use pipelines.io
from pipelines.sources import sql_read as sql_read
from pipelines.sources import sql_upsert as sql_upsert
from pipelines.sources import sql_upsert_tables as sql_upsert_tables

log = logging.getLogger(__name__)

TableName = Literal["events", "entities", "outcomes"]

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
#: Contract columns read from CSV as text, so ids like ``00123`` keep their zeros.
ID_COLUMNS = ("entity_id", "crm_id")
#: Under the output folder: keyed hashes of the entity ids ``leadscore forget`` erased,
#: one per line, so that entities read again from a source stay unprofiled.
FORGOTTEN_LIST = Path("erasure") / "forgotten.txt"


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
        files = [f for f in files if f.is_file() and _kind(f)]
        if not files:
            raise SourceNotFoundError(f"The {table} glob {source} matches no Parquet or CSV file.")
    elif path.is_file():
        if not _kind(path):
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
            and _kind(f)
            and not any(part.startswith((".", "_")) for part in f.relative_to(path).parts)
        )
        if not files:
            raise SourceNotFoundError(f"The {table} folder {source} holds no Parquet or CSV file.")
    else:
        raise SourceNotFoundError(
            f"The {table} source {source} does not exist (no file or folder at {path.resolve()})."
        )
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise ValueError(
            f"The {table} source {source} mixes Parquet and CSV files; keep one format."
        )
    return files


def _kind(path: Path) -> str | None:
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
            if _kind(file) == "parquet":
                frame = pd.read_parquet(file)
            else:
                frame = pd.read_csv(file, dtype=dict.fromkeys(text_columns, "str"))
        except (ValueError, OSError, pa.ArrowException) as exc:
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
    column_map: dict[str, str] | None = None,
    *,
    validate: bool = True,
) -> pd.DataFrame:
    """Read one input, rename its columns to the contract's and check it.

    Args:
        source: A Parquet/CSV file, a folder of them, a glob, or a SQL URL with
            ``?table=NAME`` (``duckdb:///``, ``postgresql://``, ``sqlite:///``).
        table: Which input this is: ``events``, ``entities`` or ``outcomes``.
        column_map: User column name -> contract column name, applied before
            validation.
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
        mapped_ids = tuple(user for user, ours in (column_map or {}).items() if ours in ID_COLUMNS)
        frame = read_files(source, table, text_columns=ID_COLUMNS + mapped_ids)
    frame = apply_column_map(frame, column_map, table, source)
    return VALIDATORS[table](frame, source) if validate else frame


def apply_column_map(
    df: pd.DataFrame, column_map: dict[str, str] | None, table: str, source: str
) -> pd.DataFrame:
    """Rename the user's columns (``column_map`` keys) to the contract's names.

    A mapped column that is absent is fine when the frame already has the
    contract name (one map can serve several exports); otherwise it is a typo.
    Returns the input itself when there is nothing to rename.

    Raises:
        ContractError: A mapped column is missing, or a rename would duplicate a
            column; ``table`` and ``source`` are named.
    """
    if not column_map:
        return df
    problems = []
    renames = {}
    for user_name, contract_name in column_map.items():
        if user_name in df.columns:
            if contract_name in df.columns and contract_name != user_name:
                problems.append(
                    f"column_map renames '{user_name}' to '{contract_name}', but a column "
                    f"'{contract_name}' already exists; drop one of them or fix the map"
                )
            renames[user_name] = contract_name
        elif contract_name not in df.columns:
            existing = ", ".join(repr(str(c)) for c in df.columns)
            problems.append(
                f"column_map names column '{user_name}' (for '{contract_name}'), "
                f"which does not exist; the columns present are {existing}"
            )
    if problems:
        raise ContractError(table, source, problems)
    return df.rename(columns=renames) if renames else df


@dataclass
class Inputs:
    """The validated inputs of a run.

    Attributes:
        events: Events, exact duplicates dropped (future events kept: the
            point-in-time rule keeps them out of features).
        entities: Entities.
        outcomes: Outcomes (empty when not required and absent).
        report: Counts of what was read and set aside.
    """

    events: pd.DataFrame
    entities: pd.DataFrame
    outcomes: pd.DataFrame
    report: InputReport


def load_inputs(
    settings: Settings,
    as_of: pd.Timestamp | str | None = None,
    *,
    outcomes_required: bool = True,
) -> Inputs:
    """Read, map and validate events, entities and outcomes named by the settings.

    Args:
        settings: Run settings (``settings.sources``).
        as_of: The run's "now" (naive values are UTC); default: the current time.
        outcomes_required: When false, a missing outcomes source gives an empty
            table (scoring needs no outcomes).

    Returns:
        The inputs and their :class:`~features.input_report.InputReport`.
    """
    sources = settings.sources
    now = as_utc(pd.Timestamp.now(tz="UTC") if as_of is None else as_of)
    maps = sources.column_map
    events = read_source(sources.events, "events", maps.get("events"))
    entities = read_source(sources.entities, "entities", maps.get("entities"))
    try:
        outcomes = read_source(sources.outcomes, "outcomes", maps.get("outcomes"))
    except SourceNotFoundError:
        if outcomes_required:
            raise
        log.info("No outcomes at %s; continuing without them.", sources.outcomes)
        outcomes = VALIDATORS["outcomes"](
            pd.DataFrame(columns=["entity_id", "outcome", "occurred_at"]), sources.outcomes
        )
    suppressed = 0
    if sources.suppression_list:
        listed = read_suppression_list(sources.suppression_list, maps.get("suppression_list"))
        entities, suppressed = apply_suppression(entities, listed)
    events, entities, outcomes, forgotten = _drop_forgotten(events, entities, outcomes, settings)
    report = input_report(events, now, entities, outcomes)
    events, report.rejected = clean_events(events, now)
    report.entities_on_suppression_list = suppressed
    report.entities_forgotten_earlier = forgotten
    log.info(
        "Inputs as of %s: %d events (%d exact duplicates dropped, %d after as_of), "
        "%d entities, %d outcomes.", now.isoformat(), report.events, report.duplicate_events,
        report.future_events, report.entities, report.outcomes,
    )  # fmt: skip
    return Inputs(events=events, entities=entities, outcomes=outcomes, report=report)


def read_suppression_list(source: str, column_map: dict[str, str] | None = None) -> set[str]:
    """The entity ids of a suppression list (people who objected to profiling).

    Args:
        source: A CSV/Parquet file, folder or glob, or a SQL URL with ``?table=``;
            it needs an ``entity_id`` column (after ``column_map``).
        column_map: User column name -> ``entity_id``.

    Returns:
        The listed ids as text (blank values ignored).

    Raises:
        SourceNotFoundError: The list does not exist.
        ContractError: It has no ``entity_id`` column; the columns present are named.
    """
    if is_sql_url(source):
        frame = sql_read(source, "suppression_list")
    else:
        frame = read_files(source, "suppression list", text_columns=("entity_id",))
    frame = apply_column_map(frame, column_map, "suppression_list", source)
    if "entity_id" not in frame.columns:
        present = ", ".join(repr(str(c)) for c in frame.columns) or "none"
        raise ContractError(
            "suppression_list",
            source,
            [f"it has no entity_id column (columns present: {present}); add one or map it "
             "with column_map.suppression_list"],
        )  # fmt: skip
    ids = frame["entity_id"].dropna().astype("string").str.strip()
    return set(ids[ids != ""].tolist())


def apply_suppression(entities: pd.DataFrame, listed: set[str]) -> tuple[pd.DataFrame, int]:
    """Entities with ``consent`` set to false for everyone on the suppression list.

    Everything downstream already treats consent false as "never profiled, trained
    on or scored", so this is the only place the list needs to act.

    Returns:
        The new entities table and how many of its entities are on the list.
    """
    on_list = entities["entity_id"].astype("string").isin(listed).fillna(False).to_numpy(bool)
    consent = (
        entities["consent"].astype("boolean").fillna(True)
        if "consent" in entities.columns
        else pd.Series(True, index=entities.index, dtype="boolean")
    )
    out = entities.assign(consent=(consent & ~on_list).astype(bool))
    log.info("Suppression list: %d of %d entities set to no consent.", on_list.sum(), len(out))
    return out, int(on_list.sum())


@dataclass
class ForgottenList:
    """The keyed hashes of erased entities, and a hash that identifies the key."""

    path: Path
    pseudonyms: set[str]
    key_check: str | None


#: Hashed with the pseudonym key into the list's header, to recognise a changed key.
FORGOTTEN_KEY_CHECK = "leadscore forgotten-list key check"
_KEY_CHECK_PREFIX = "# key-check: "


def read_forgotten(output_dir: str | os.PathLike[str]) -> ForgottenList:
    """The entities ``leadscore forget`` erased, as keyed hashes (see :data:`FORGOTTEN_LIST`)."""
    path = Path(output_dir) / FORGOTTEN_LIST
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    stripped = [line.strip() for line in lines]
    checks = [
        line[len(_KEY_CHECK_PREFIX) :] for line in stripped if line.startswith(_KEY_CHECK_PREFIX)
    ]
    pseudonyms = {line for line in stripped if line and not line.startswith("#")}
    return ForgottenList(path, pseudonyms, checks[0] if checks else None)


def forgotten_list_text(pseudonyms: set[str], key: bytes) -> str:
    """The file content of a list of erased entities (header, key check, hashes)."""
    return (
        "# Keyed hashes of entities erased by `leadscore forget`: never profile them again.\n"
        f"{_KEY_CHECK_PREFIX}{pseudonymise_one(FORGOTTEN_KEY_CHECK, key)}\n"
        + "".join(f"{p}\n" for p in sorted(pseudonyms))
    )


def check_forgotten_key(listing: ForgottenList, key: bytes | None) -> None:
    """Refuse a missing key, or one other than the key the list was written with.

    Raises:
        PseudonymKeyError: In a sentence that says which key is needed.
    """
    erased = (
        f"{len(listing.pseudonyms):,} entities were erased earlier and are listed by keyed "
        f"hash in {listing.path}"
    )
    if key is None:
        raise PseudonymKeyError(
            f"{erased}, but {PSEUDONYM_KEY_ENV} is not set. Set it to the key in use when they "
            "were erased (a new key would not recognise them); nothing was read further."
        )
    if listing.key_check is not None and listing.key_check != pseudonymise_one(
        FORGOTTEN_KEY_CHECK, key
    ):
        raise PseudonymKeyError(
            f"{erased}, but {PSEUDONYM_KEY_ENV} is not the key in use when they were erased "
            "(the list's key check differs), so they could not be recognised. Set the "
            "original key; nothing was read further."
        )


def _drop_forgotten(
    events: pd.DataFrame, entities: pd.DataFrame, outcomes: pd.DataFrame, settings: Settings
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """The inputs without entities erased earlier and read again from a source.

    They are dropped, events and outcomes included, rather than set to no consent: a
    "not scored" row would write the erased id back into the score tables.

    Returns:
        Events, entities and outcomes without them, and how many erased entities were
        found again.

    Raises:
        PseudonymKeyError: Entities were erased, but the key that recognises them is
            not configured.
    """
    listing = read_forgotten(settings.output.dir)
    if not listing.pseudonyms:
        return events, entities, outcomes, 0
    try:
        key: bytes | None = resolve_pseudonym_key(settings.pseudonym_key)
    except PseudonymKeyError:
        key = None
    check_forgotten_key(listing, key)
    assert key is not None
    forgotten = listing.pseudonyms
    tables = (events, entities, outcomes)
    id_columns = [t["entity_id"].astype("string") for t in tables]
    ids = pd.Series(pd.unique(pd.concat(id_columns).dropna()))
    erased = set(ids[pseudonymise(ids, key).isin(forgotten).to_numpy(bool)])
    if not erased:
        return events, entities, outcomes, 0
    log.warning(
        "%d entities erased earlier with `leadscore forget` are in the sources again; their "
        "rows are dropped. Erase them in the source systems too.",
        len(erased),
    )
    kept = [t[~c.isin(erased).to_numpy(bool)] for t, c in zip(tables, id_columns, strict=True)]
    return kept[0], kept[1], kept[2], len(erased)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling of ``path`` that replaces it when the block succeeds.

    If the block raises, the temporary file is removed and ``path`` keeps its
    old content. The new file keeps the old one's permissions (0644 when new).

    Args:
        path: The final file; its folder is created when missing.

    Yields:
        The temporary path to write to.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        mode = final.stat().st_mode & 0o777 if final.exists() else 0o644
        os.chmod(temp, mode)
        _fsync(temp)
        os.replace(temp, final)
        _fsync(final.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    # Flush to disk before the rename, so a power cut cannot leave an empty file.
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to Parquet at ``path`` atomically (without the index); returns ``path``."""
    with atomic_path(path) as temp:
        df.to_parquet(temp, index=False)
    return Path(path)


def write_text_atomic(text: str, path: str | os.PathLike[str], encoding: str = "utf-8") -> Path:
    """Write text atomically.

    Args:
        text: The content.
        path: Destination file. For convenience ``write_text_atomic(path, text)``
            with a ``Path`` first is accepted too (a path is never valid text).
        encoding: Text encoding.

    Returns:
        The destination path.
    """
    if isinstance(text, os.PathLike) and isinstance(path, str):
        text, path = path, text
    with atomic_path(path) as temp:
        temp.write_text(text, encoding=encoding)
    return Path(path)


def sibling_temp_dir(final_dir: str | os.PathLike[str]) -> Path:
    """A new empty folder next to ``final_dir``, to fill and then swap in.

    Args:
        final_dir: The folder that :func:`replace_dir_atomic` will replace.

    Returns:
        The temporary folder (on the same file system, so renames are atomic).
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))


def _backup_of(final: Path) -> Path:
    return final.with_name(f".{final.name}.previous")


def restore_interrupted_dir(final_dir: str | os.PathLike[str]) -> bool:
    """Undo a swap that a crash interrupted between its two renames.

    Args:
        final_dir: The folder :func:`replace_dir_atomic` was replacing.

    Returns:
        Whether the previous folder had to be put back.
    """
    final = Path(final_dir)
    backup = _backup_of(final)
    if backup.is_dir() and not final.exists():
        os.rename(backup, final)
        log.warning("Restored %s from an interrupted replacement.", final)
        return True
    return False


def replace_dir_atomic(tmp_dir: str | os.PathLike[str], final_dir: str | os.PathLike[str]) -> Path:
    """Swap a fully written sibling folder in place of ``final_dir``.

    The old folder is renamed aside, the new one renamed in, then the old one
    removed. If the second rename fails the old folder is put back; if the
    process dies between the renames, :func:`restore_interrupted_dir` (called
    here on the next run) puts it back.

    Args:
        tmp_dir: The new content, a sibling of ``final_dir`` (see
            :func:`sibling_temp_dir`).
        final_dir: Where the content must end up.

    Returns:
        ``final_dir``.

    Raises:
        FileNotFoundError: ``tmp_dir`` is not a folder.
        ValueError: The two folders are not siblings.
    """
    new, final = Path(tmp_dir), Path(final_dir)
    if not new.is_dir():
        raise FileNotFoundError(f"Cannot replace {final}: the new folder {new} does not exist.")
    if new.resolve().parent != final.resolve().parent:
        raise ValueError(
            f"Cannot swap {new} into {final}: they must be in the same folder for the "
            "rename to be atomic (use sibling_temp_dir)."
        )
    restore_interrupted_dir(final)
    backup = _backup_of(final)
    if backup.exists():  # left by a run that died after its swap, before the cleanup
        shutil.rmtree(backup)
    if final.exists():
        os.rename(final, backup)
    try:
        os.rename(new, final)
    except BaseException:
        if backup.exists():
            os.rename(backup, final)
        raise
    _fsync(final.parent)
    shutil.rmtree(backup, ignore_errors=True)
    return final
