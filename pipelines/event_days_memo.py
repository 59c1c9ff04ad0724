"""The events' counts per file and day, remembered between runs (``OUTPUT/checks``).

Every run profiles its events (:meth:`features.event_table.EventTable.profile`): per
event type, how many, how many before and after the run date, the first and last time
and the range of values. At a million entities that is a scan of 53M events (about
0.9 s of two cores) while the run starts. The same numbers add up from counts per
(source file, event type, UTC day) (:mod:`features.event_days`); a Parquet file that
has the same path, size and modification time as at the last run has the same counts.
:class:`FileDays` takes those from :data:`DAYS_FILE` and asks the engine only for the
files it has not seen (a feed that adds a file a day: that file). What it counted is
written back only by a run that wrote its outputs, like the events' checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import pandas as pd

from features.event_checks import FILE_COLUMN
from features.event_days import day_counts

log = logging.getLogger(__name__)

#: Where the counts are kept, in the output folder (beside the events' checks).
DAYS_FILE = "checks/event_days.parquet"
#: Bump when :func:`features.event_days.day_counts` changes: remembered counts expire.
DAYS_VERSION = 1
KEY = "file_key"


def days_file(checks_file: Path) -> Path:
    """:data:`DAYS_FILE` in the folder of the events' checks file."""
    return checks_file.with_name(Path(DAYS_FILE).name)


def file_key(stamp: list[Any], reading: list[Any]) -> str:
    """A digest of one file's stamp (:func:`pipelines.checks_memo.file_stamp`) as read."""
    parts = [DAYS_VERSION, reading, stamp]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


class FileDays:
    """Day counts of a run's event files: remembered ones, and the engine's for the others.

    Called (once; the result is kept) by the profile of the events it was made for.

    Args:
        con: The run's engine connection.
        table: The normalised events with their source file in :data:`FILE_COLUMN`.
        stamps: Per file, as the engine names it, its stamp (path, size, modification
            time: :func:`pipelines.checks_memo.file_stamp`).
        memo: The output folder's :data:`DAYS_FILE`; ``None``: remember nothing.
        reading: What else decides the counts: version, reader, source as given, column
            mapping (:func:`pipelines.checks_memo.reading`, as the checks' digest).
    """

    def __init__(
        self,
        con: Any,
        table: ir.Table,
        stamps: dict[str, list[Any]],
        memo: Path | None,
        reading: list[Any],
    ) -> None:
        self._con, self._table, self._memo = con, table, memo
        self._keys = {name: file_key(stamp, reading) for name, stamp in stamps.items()}
        self._frame: pd.DataFrame | None = None
        self._changed = False
        self.counted_files = 0

    def __call__(self) -> pd.DataFrame:
        """Rows of :func:`features.event_days.day_counts` for every file (``file_key`` too)."""
        if self._frame is None:
            self._frame = self._counts()
        return self._frame

    def _counts(self) -> pd.DataFrame:
        wanted = set(self._keys.values())
        known = self._remembered()
        kept = known[known[KEY].isin(wanted)] if known is not None else None
        have = set() if kept is None else set(kept[KEY])
        missing = [name for name, key in self._keys.items() if key not in have]
        self._changed = known is None or len(kept) != len(known) or bool(missing)
        parts = [] if kept is None else [kept]
        if missing:
            table = self._table
            if len(missing) < len(self._keys):  # the engine then reads those files only
                table = table.filter(table[FILE_COLUMN].isin(missing))
            counted = self._con.execute(day_counts(table, FILE_COLUMN, self._con.name))
            files = counted.pop(FILE_COLUMN).astype("str")
            counted.insert(0, KEY, files.map(self._keys).to_numpy())
            # A file without events keeps a row of its own, so it is not counted again.
            seen = set(files.unique())
            empty = [self._keys[name] for name in missing if name not in seen]
            nothing = pd.DataFrame({KEY: empty, "rows": 0}).reindex(columns=counted.columns)
            parts += [counted, nothing]
            self.counted_files = len(missing)
            log.info("Counted the events of %d new or changed file(s) by day; %d remembered.",
                     len(missing), len(self._keys) - len(missing))  # fmt: skip
        filled = [part for part in parts if len(part)]
        return pd.concat(filled, ignore_index=True) if filled else parts[0]

    def _remembered(self) -> pd.DataFrame | None:
        if self._memo is None or not self._memo.exists():
            return None
        try:
            return pd.read_parquet(self._memo)
        except (OSError, ValueError) as exc:
            log.info("Could not read the remembered day counts %s (%s); counting again.",
                     self._memo, exc)  # fmt: skip
            return None

    def remember(self) -> None:
        """Write the counts for the next run, if the files changed (an unread table: nothing)."""
        if self._memo is None or self._frame is None or not self._changed:
            return
        from pipelines.atomic_files import write_parquet_atomic

        try:
            self._memo.parent.mkdir(parents=True, exist_ok=True)
            write_parquet_atomic(self._frame, self._memo)
        except (OSError, ValueError) as exc:
            log.warning("Could not remember the events' day counts in %s (%s).", self._memo, exc)
