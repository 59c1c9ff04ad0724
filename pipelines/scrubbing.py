"""Removing entities' rows from the file stores: score partitions, snapshots, CRM files, boards.

Shared by erasure (``leadscore forget``, :mod:`pipelines.erasure`) and by the purge of
withdrawn consent (:mod:`pipelines.retention`). Each function reports what one store
lost as a :class:`StoreErasure` (counts, never which rows); every file is rewritten
atomically.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic_files import write_parquet_atomic, write_text_atomic
from pipelines.board import embed_json, render_board
from pipelines.board_data import ENTITIES_FILE
from pipelines.crm_export import csv_safe
from pipelines.outputs import list_partitions

#: A run date in a file or folder name.
_DATED_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
_BAND_RULE = re.compile(r"<li>Band rule: (.*?)</li>", re.DOTALL)
_BOARD_DATA = re.compile(
    r'(<script type="application/json" id="board-data">)(.*?)(</script>)', re.DOTALL
)


@dataclass
class StoreErasure:
    """What one store lost: rows and files, never which ones."""

    store: str
    location: str
    rows_deleted: int = 0
    files_rewritten: int = 0
    files_deleted: int = 0


def rows_of_entities(frame: pd.DataFrame, ids: list[str]) -> np.ndarray:
    """Whether each row of ``frame`` belongs to one of ``ids`` (by ``entity_id``)."""
    return frame["entity_id"].astype("string").isin(ids).fillna(False).to_numpy(bool)


def crm_ids_in(partitions: list[Path], ids: list[str]) -> set[str]:
    """The CRM ids the score partitions give the entities ``ids``."""
    crm_ids: set[str] = set()
    for path in partitions:
        frame = pd.read_parquet(path)
        if "crm_id" in frame:
            crm_ids.update(frame.loc[rows_of_entities(frame, ids), "crm_id"].dropna().astype(str))
    return crm_ids


def _without(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    """``frame`` without the rows of ``ids``, and without categories no row uses."""
    kept = frame.loc[~rows_of_entities(frame, ids)].reset_index(drop=True)
    for column in kept.columns:
        # Parquet stores a category's whole dictionary: drop levels no row uses any more.
        if isinstance(kept[column].dtype, pd.CategoricalDtype):
            kept[column] = kept[column].cat.remove_unused_categories()
    return kept


def scrub_parquet(files: list[Path], ids: list[str], store: str, root: Path) -> StoreErasure:
    """Rewrite each Parquet file of ``files`` that holds rows of ``ids`` without them."""
    result = StoreErasure(store, str(root))
    for path in files:
        frame = pd.read_parquet(path)
        kept = _without(frame, ids)
        if len(kept) < len(frame):
            write_parquet_atomic(kept, path)
            result.rows_deleted += len(frame) - len(kept)
            result.files_rewritten += 1
    return result


def dated_before(paths: list[Path], before: date | None) -> list[Path]:
    """The paths whose name (or folder name) carries a date before ``before``; all when None."""
    if before is None:
        return paths
    kept = []
    for path in paths:
        found = _DATED_NAME.search(f"{path.parent.name}/{path.name}")
        if found and date.fromisoformat(found.group(1)) < before:
            kept.append(path)
    return kept


def scrub_crm(crm_root: Path, crm_ids: list[str], before: date | None = None) -> StoreErasure:
    """Rewrite the CRM import files (of dates before ``before``) without ``crm_ids``.

    An id is matched as given and as written (:func:`~pipelines.crm_export.csv_safe`).
    """
    result = StoreErasure("CRM export files", str(crm_root))
    if not crm_ids:
        return result
    written = {*crm_ids, *csv_safe(pd.Series(crm_ids, dtype="string")).tolist()}
    for path in dated_before(sorted(crm_root.glob("as_of=*/batch-*.csv")), before):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        keep = ~frame["Id"].isin(written)
        if keep.all():
            continue
        text = frame[keep].to_csv(index=False, lineterminator="\r\n")
        write_text_atomic(text, path)
        result.rows_deleted += int((~keep).sum())
        result.files_rewritten += 1
    return result


def regenerate_boards(out: Path, ids: list[str], before: date | None = None) -> StoreErasure:
    """Rebuild every board page from its (already scrubbed) score partition.

    The board's display columns (``board/entities.parquet``) lose the rows of ``ids``
    first, and the pages are rendered with what remains.
    """
    board_dir = out / "board"
    result = StoreErasure("lead board pages", str(board_dir))
    display = board_dir / ENTITIES_FILE
    entities = None
    if display.is_file():
        entities = pd.read_parquet(display)
        kept = _without(entities, ids)
        if len(kept) < len(entities):
            write_parquet_atomic(kept, display)
        entities = kept
    partitions = list_partitions(out)
    pages = dated_before(sorted(board_dir.glob("????-??-??.html")), before)
    for page in pages:
        old = page.read_text(encoding="utf-8")
        day = date.fromisoformat(page.stem)
        if day in partitions:
            scored = pd.read_parquet(partitions[day])
            new = render_board(scored, day, board_band_rule(old), entities=entities)
        else:  # partition purged: drop the rows from the page's data block instead
            new = _BOARD_DATA.sub(
                lambda m: m.group(1) + _drop_rows(m.group(2), ids) + m.group(3), old
            )
        if new != old:
            write_text_atomic(new, page)
            result.files_rewritten += 1
        result.rows_deleted += old.count('"id":') - new.count('"id":')
    if before is None and pages and (board_dir / "index.html").exists():
        write_text_atomic(pages[-1].read_text(encoding="utf-8"), board_dir / "index.html")
    return result


def board_band_rule(page: str) -> str | None:
    """The band rule sentence shown on a board page, or ``None``."""
    rule = _BAND_RULE.search(page)
    return html.unescape(rule.group(1)) if rule else None


def _drop_rows(data: str, ids: list[str]) -> str:
    """A board's JSON data block without the rows of ``ids``."""
    rows = [row for row in json.loads(data) if str(row.get("id")) not in set(ids)]
    return str(embed_json(rows))
