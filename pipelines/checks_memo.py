"""The events' checks remembered between runs (``OUTPUT/checks/events.json``).

A feed's checks that passed (no duplicate found) are remembered once the run has
written its outputs: a digest of every file read (paths, sizes, modification times)
and the mapping, with the columns each needed rewritten. A later run over the same
files does not check them again; a run over those files, unchanged, and new ones
(a feed that adds a file a day) checks only the new files (:func:`remembered_files`;
the file-by-file digests are kept, never a path, a row or an entity id).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from features.event_table import KnownDuplicates

if TYPE_CHECKING:
    from features.mapping import InputMapping
    from pipelines.event_days_memo import FileDays

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChecksMemo:
    """Checks that passed, to remember once the run has written its outputs.

    Attributes:
        checks_file: Where (``OUTPUT/checks/events.json``).
        fingerprint: The digest of the files and mapping checked.
        rewrites: Which contract columns needed normalising.
        duplicates: The exact duplicates found (only a feed without any is remembered).
        known: The checks were remembered already (nothing new to write of them).
        days: The events' day counts, written back if the files changed
            (:class:`pipelines.event_days_memo.FileDays`).
    """

    checks_file: Path
    fingerprint: str
    rewrites: dict[str, bool]
    duplicates: KnownDuplicates
    known: bool = False
    days: FileDays | None = None
    files: CheckedFiles | None = None


@dataclass(frozen=True)
class CheckedFiles:
    """What the checks of a set of Parquet files held, file by file, as digests.

    A later run whose files are these (unchanged) and more, read the same way and with
    the same columns, checks only the new files (:func:`remembered_files`). Only
    digests are kept: a path may name an account or a person.

    Attributes:
        schema: A digest of the columns and types the engine read from all the files.
        digests: Per file, as the engine names it, a digest of how it is read and of its
            :func:`file_stamp`.
    """

    schema: str
    digests: dict[str, str]


@dataclass(frozen=True)
class NewFiles:
    """Files to check beside remembered ones, and the remembered files' rewrites."""

    paths: list[str]
    rewrites: dict[str, bool]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()


def checked_files(schema: str, stamps: dict[str, list[Any]], how: list[Any]) -> CheckedFiles:
    """:class:`CheckedFiles` of files with these stamps (:func:`file_stamp`), read ``how``.

    Args:
        schema: The columns and types the engine read from all the files (their text).
        stamps: Per file, as the engine names it, its :func:`file_stamp`.
        how: :func:`reading` of the files.
    """
    return CheckedFiles(_digest(schema), {path: _digest([how, s]) for path, s in stamps.items()})


#: Bump when the checks or the normalisation change: remembered checks then expire.
CHECKS_VERSION = 3


def reading(mapping: InputMapping | None, source: str, reader: str) -> list[Any]:
    """How files are read, besides the files: version, reader, source as given, mapping."""
    return [CHECKS_VERSION, reader, str(source), repr(mapping)]


def file_stamp(file: Path) -> list[Any]:
    """A file's resolved path, size and modification time."""
    stat = file.stat()
    return [str(file.resolve()), stat.st_size, stat.st_mtime_ns]


def files_fingerprint(
    files: list[Path],
    mapping: InputMapping | None,
    source: str = "",
    reader: str = "parquet",
    stamps: list[list[Any]] | None = None,
) -> str:
    """A digest of the reader, the source as given, the files and the mapping.

    The files count with their paths, sizes and modification times (``stamps``, when
    the caller has them: :func:`file_stamp` of each file); the same files read as a
    folder (with ``key=value`` columns) or as a glob are checked apart.
    """
    parts = reading(mapping, source, reader)
    parts += stamps if stamps is not None else [file_stamp(file) for file in files]
    return _digest(parts)


def remembered_checks(
    checks_file: Path | None, fingerprint: str
) -> tuple[dict[str, bool], KnownDuplicates] | None:
    """The rewrites and duplicates remembered for files of this fingerprint, else ``None``."""
    data = _remembered(checks_file)
    if data is None or data.get("fingerprint") != fingerprint:
        return None
    try:
        return _rewrites(data), KnownDuplicates(int(data["duplicates"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable: check again


def remembered_files(checks_file: Path | None, files: CheckedFiles) -> NewFiles | None:
    """The files to check when the remembered ones are among ``files``, unchanged.

    ``None`` (check every file) unless the last checks that passed were of files read
    the same way, with the same columns and types, all still there and unchanged.
    """
    data = _remembered(checks_file)
    if data is None or data.get("schema") != files.schema:
        return None
    try:
        remembered = {str(digest) for digest in data["files"]}
        rewrites = _rewrites(data)
    except (KeyError, TypeError, AttributeError):
        return None  # unreadable (or written before files were remembered): check all
    if not remembered <= set(files.digests.values()):
        return None  # a file checked before changed or went away, or is read otherwise
    new = [path for path, digest in files.digests.items() if digest not in remembered]
    return NewFiles(new, rewrites) if new else None


def _remembered(checks_file: Path | None) -> dict[str, Any] | None:
    """The checks file's contents, or ``None`` (none yet, or unreadable: check again)."""
    if checks_file is None:
        return None
    try:
        data = json.loads(checks_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _rewrites(data: dict[str, Any]) -> dict[str, bool]:
    return {str(k): bool(v) for k, v in data["rewrites"].items()}


def file_rows(paths: list[str]) -> int:
    """Rows in these Parquet files, from their footers."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def remember_checks(memo: ChecksMemo | None) -> None:
    """Write checks that passed (a feed without duplicates: no entity id is kept).

    The events' day counts are written too when the files changed (they hold no id).
    """
    if memo is not None and memo.days is not None:
        memo.days.remember()
    if memo is None or memo.known or memo.duplicates.count:
        return
    from pipelines.atomic_files import write_text_atomic

    data: dict[str, Any] = {
        "fingerprint": memo.fingerprint,
        "rewrites": memo.rewrites,
        "duplicates": 0,
    }
    if memo.files is not None:
        data |= {"schema": memo.files.schema, "files": sorted(memo.files.digests.values())}
    try:
        memo.checks_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps(data, indent=1), memo.checks_file)
    except OSError as exc:
        log.warning("Could not remember the events' checks in %s (%s).", memo.checks_file, exc)
