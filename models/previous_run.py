"""This run against the previous one: band and score change, and which reasons are kept.

Reason codes (``models.explain``) are the expensive part of scoring, so they are
recomputed only for entities that are new, whose band changed, whose score moved more
than ``tolerance`` points, or whose model version or score source changed; the others
keep their previous reasons together with the date those were computed
(``reasons_computed_at``). Kept impacts add up to the score of that date.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models.entity_status import SCORED

#: Timestamps are kept to the microsecond (what Parquet and SQL stores round-trip).
STAMP_DTYPE = "datetime64[us, UTC]"
#: Reason columns and their dtypes (carried from the previous run when not recomputed).
REASON_DTYPES = {
    "reasons_up": "str",
    "reasons_down": "str",
    "reasons_text": "str",
    "base_score": "Int64",
    "other_factors_points": "Int64",
    "reasons_computed_at": STAMP_DTYPE,
}
#: Rows per take when a text column is assembled (a multiple of the Parquet writer's
#: 1024-row batches): the previous texts are gathered slice by slice, never copied whole.
TEXT_SLICE = 131_072
#: The reason texts: most of a score partition (about 0.75 GB of a million rows).
TEXT_COLUMNS = ("reasons_up", "reasons_down", "reasons_text")
#: Threads that fill in the fresh texts, a column each: two columns being rebuilt at
#: once (about 0.25 GB each at a million rows) besides the one this thread assembles.
FILL_THREADS = 2
#: Reads one column of the previous run's rows, all of them in order (``None``: absent).
ColumnReader = Callable[[str], "pd.Series | None"]


def positions(ids: np.ndarray | pd.Index, other_ids: np.ndarray | pd.Index) -> np.ndarray:
    """Row of each id in ``other_ids`` (-1 when absent); hashes Python strings, fast.

    An index passed as ``other_ids`` is used as it is, with its hash table if built.
    """
    index = other_ids if isinstance(other_ids, pd.Index) else pd.Index(other_ids)
    return index.get_indexer(ids)


class PreviousRun:
    """The previous run's rows aligned to this run's entities, one column at a time.

    Columns are taken with their own dtype (Arrow strings stay Arrow), so carrying a
    million kept reason texts over costs a C-level take, not a million Python strings.

    A reason column ``previous`` lacks is asked of ``read`` (when given) as it is
    assembled, so the previous texts are in memory one column at a time, and only
    while scoring (see :func:`pipelines.steps.read_previous`).
    """

    def __init__(
        self,
        previous: pd.DataFrame | None,
        ids: np.ndarray | pd.Index,
        read: ColumnReader | None = None,
    ) -> None:
        self.size = len(ids)
        self.last: pd.DataFrame | None = None
        self.rows = np.full(self.size, -1)
        self.read = read
        #: Row of ``previous`` of each row of :attr:`last` (``None``: the same rows).
        self.source_rows: np.ndarray | None = None
        self.source_size = 0 if previous is None else len(previous)
        #: The kept texts being taken (:meth:`carry_texts`), with the rows they keep.
        self._carried: tuple[np.ndarray, Future[dict[str, _Carried]]] | None = None
        if previous is not None and len(previous) and "entity_id" in previous:
            index = pd.Index(previous["entity_id"])
            if _same_unique(index, ids):  # the same entities in the same order
                self.last = previous.reset_index(drop=True)
                self.rows = np.arange(self.size)
                return
            if index.is_unique:  # as written: no copy of every reason text
                self.last = previous.reset_index(drop=True)
            else:
                last = ~previous["entity_id"].duplicated(keep="last").to_numpy(bool)
                self.source_rows = np.flatnonzero(last)
                self.last = previous.iloc[self.source_rows].reset_index(drop=True)
                index = pd.Index(self.last["entity_id"])
            self.rows = positions(ids, index)

    def source_index(self) -> np.ndarray:
        """Row of each entity in the previous frame as given (-1: absent).

        Its last row when an entity has several, as the previous run's rows are read.
        """
        if self.source_rows is None:
            return self.rows
        return np.where(self.rows >= 0, self.source_rows[np.maximum(self.rows, 0)], -1)

    def index(self, where: np.ndarray | None = None) -> np.ndarray:
        """Row of each entity in the previous run, -1 when absent or outside ``where``."""
        return self.rows if where is None else np.where(where, self.rows, -1)

    def column(self, name: str, where: np.ndarray | None = None) -> pd.Series:
        """The column per entity; missing where not found, not in ``where`` or absent."""
        if self.last is None or name not in self.last:
            return pd.Series([None] * self.size, dtype=object)
        return pd.Series(self.last[name].array.take(self.index(where), allow_fill=True))

    def equals(self, name: str, current: object) -> np.ndarray:
        """True where the previous value equals ``current`` (missing never equals)."""
        return np.asarray((self.column(name) == current).fillna(False), dtype=bool)

    def scored_too(self, scored: np.ndarray) -> np.ndarray:
        """Entities scored in both runs."""
        return self.equals("status", SCORED) & scored

    def score_delta(self, score: np.ndarray, scored: np.ndarray) -> np.ndarray:
        """Score change since the previous run (NaN unless scored in both)."""
        before = pd.to_numeric(self.column("score"), errors="coerce").to_numpy("float64")
        return np.where(self.scored_too(scored), score - before, np.nan)

    def reasons_to_keep(
        self,
        candidates: np.ndarray,
        scored: np.ndarray,
        current: dict[str, pd.Series],
        delta: np.ndarray,
        tolerance: float,
    ) -> np.ndarray:
        """Entities whose previous reasons still hold.

        Args:
            candidates: Entities that could keep reasons (model-scored, reasons wanted).
            scored: Entities scored in this run.
            current: This run's ``band``, ``model_versions`` and ``score_source``, one
                value per entity in the order of ``ids`` (compared as Arrow text when
                both runs' columns are).
            delta: :meth:`score_delta`.
            tolerance: Score move (points) up to which reasons are kept.
        """
        keep = (
            candidates
            & self.scored_too(scored)
            & self.column("reasons_computed_at").notna().to_numpy(bool)
            & (np.abs(np.nan_to_num(delta, nan=np.inf)) <= tolerance)
        )
        for name, values in current.items():
            keep &= self.equals(name, values)
        return keep

    def carry_texts(self, keep: np.ndarray) -> None:
        """Start taking the kept reason texts in a background thread.

        Call it once ``keep`` is known, before the moved entities are explained: Arrow
        takes the million kept texts without the GIL, beside the explanation, and
        :meth:`reason_columns` only puts the fresh texts in. The previous columns are
        read and taken one at a time, as :meth:`reason_columns` would.
        """
        if self.last is None or self._carried is not None:
            return
        kept_index = self.index(keep)
        pool = ThreadPoolExecutor(1, thread_name_prefix="kept-texts")
        self._carried = (kept_index, pool.submit(self._carry, kept_index))
        pool.shutdown(wait=False)

    def _carry(self, kept_index: np.ndarray) -> dict[str, _Carried]:
        carried: dict[str, _Carried] = {}
        for name in TEXT_COLUMNS:
            column = self._previous(name)
            values = _text_values(column, REASON_DTYPES[name])
            if values is None:
                carried[name] = column
            else:
                slices, blank = _kept_slices(values, kept_index)
                carried[name] = _CarriedText(slices, values.type, column.dtype, blank)
            del column, values  # one previous column in memory at a time
        return carried

    def reason_columns(
        self, keep: np.ndarray, fresh: dict[str, list[tuple[np.ndarray, pd.Series]]]
    ) -> dict[str, pd.Series]:
        """:data:`REASON_DTYPES` columns: kept previous values, replaced by fresh blocks."""
        kept_index = self.index(keep)
        carried: dict[str, _Carried] = {}
        if self._carried is not None:
            carried_index, future = self._carried
            self._carried = None
            if np.array_equal(carried_index, kept_index):  # else taken for other rows
                carried = future.result()
        columns: dict[str, pd.Series] = {}
        # The carried texts are filled in by a thread each (Arrow, without the GIL)
        # while this one assembles the other columns: about 1 s of a million rows.
        with ThreadPoolExecutor(FILL_THREADS, thread_name_prefix="fill-texts") as pool:
            filling = {}
            for name, dtype in REASON_DTYPES.items():
                kept = carried.pop(name) if name in carried else self._previous(name)
                if isinstance(kept, _CarriedText):
                    filling[name] = pool.submit(_fill_text, kept, fresh.get(name, []))
                else:
                    columns[name] = _assemble(kept, kept_index, fresh.get(name, []), dtype)
                del kept  # one previous column in memory at a time (carried ones aside)
            columns |= {name: future.result() for name, future in filling.items()}
        return {name: columns[name] for name in REASON_DTYPES}

    def _previous(self, name: str) -> pd.Series | None:
        """The previous run's column ``name`` aligned to :attr:`last` (``None``: absent)."""
        if self.last is None:
            return None
        kept = self.last.get(name)
        if kept is None and self.read is not None:
            kept = self._read(name)
        return kept

    def _read(self, name: str) -> pd.Series | None:
        """A column read from the previous run's rows, aligned to :attr:`last`."""
        column = self.read(name) if self.read is not None else None
        if column is None:
            return None
        if len(column) != self.source_size:
            raise ValueError(
                f"The previous scores' {name} column has {len(column)} rows, not the "
                f"{self.source_size} read before: the partition changed during the run."
            )
        if self.source_rows is not None:
            column = column.iloc[self.source_rows]
        return column.reset_index(drop=True)


def _same_unique(index: pd.Index, ids: np.ndarray | pd.Index) -> bool:
    """Whether ``index`` holds ``ids`` (an index known unique) in order, without hashing."""
    return (
        isinstance(ids, pd.Index)
        and len(index) == len(ids)
        and index.dtype == ids.dtype
        and index.equals(ids)
        and ids.is_unique  # scoring has checked it already: cached
    )


@dataclass
class _CarriedText:
    """Kept texts of one column, slice by slice; the fresh texts go in later.

    ``blank`` holds, per slice, ``None`` when the slice was taken (rows not kept are
    null already) or, for a slice that is the previous column's own rows (no copy),
    the rows to blank because their texts are not kept.
    """

    slices: list[pa.Array]
    type: pa.DataType
    dtype: object
    blank: list[np.ndarray | None]


#: What :meth:`PreviousRun.carry_texts` prepared per column: kept texts, or the column.
_Carried = _CarriedText | pd.Series | None


def _text_values(kept: pd.Series | None, dtype: str) -> pa.ChunkedArray | None:
    """The Arrow strings of a previous text column, when it is one (else ``None``)."""
    if dtype != "str" or kept is None or kept.dtype != dtype:
        return None
    values = pa.chunked_array(pa.array(kept.array))
    if pa.types.is_large_string(values.type) or pa.types.is_string(values.type):
        return values
    return None


def _assemble(
    kept: pd.Series | None,
    kept_index: np.ndarray,
    fresh: list[tuple[np.ndarray, pd.Series]],
    dtype: str,
) -> pd.Series:
    """One column from kept previous values and fresh blocks, by a single take.

    Args:
        kept: The previous run's column (all its rows), or ``None``.
        kept_index: Per entity, its row in ``kept`` or -1.
        fresh: ``(positions, values)`` blocks that replace entities' values.
        dtype: Dtype of the result.
    """
    values = _text_values(kept, dtype)
    if values is not None and kept is not None:
        slices, blank = _kept_slices(values, kept_index)
        return _fill_text(_CarriedText(slices, values.type, kept.dtype, blank), fresh)
    parts = [] if kept is None else [kept.astype(dtype)]
    index = kept_index.copy() if kept is not None else np.full(len(kept_index), -1)
    offset = sum(len(p) for p in parts)
    for positions, values in fresh:
        parts.append(values.astype(dtype))
        index[positions] = offset + np.arange(len(positions))
        offset += len(positions)
    if not parts:
        parts = [pd.Series([None], dtype=object).astype(dtype)]
    combined = pd.concat(parts, ignore_index=True).array
    return pd.Series(combined.take(index, allow_fill=True))


def _kept_slices(
    kept: pa.ChunkedArray, kept_index: np.ndarray
) -> tuple[list[pa.Array], list[np.ndarray | None]]:
    """The kept texts per :data:`TEXT_SLICE` rows of entities, and the rows to blank.

    A slice whose kept rows are the previous run's same rows (the entities in the same
    order, as night after night, new ones at the end) is a view of the previous
    column, no copy: its rows not kept are blanked when the fresh texts go in
    (:func:`_fill_text`). Other slices are taken (null where not kept), slice by slice
    from the previous column (one chunk: no concatenation), so memory holds the
    previous column and the result, not also their concatenation.
    """
    previous = kept.combine_chunks() if kept.num_chunks != 1 else kept.chunk(0)
    slices: list[pa.Array] = []
    blank: list[np.ndarray | None] = []
    for lo in range(0, len(kept_index), TEXT_SLICE):
        index = kept_index[lo : lo + TEXT_SLICE]
        keeps = index >= 0
        same_rows = lo + len(index) <= len(previous) and np.array_equal(
            index[keeps], np.flatnonzero(keeps) + lo
        )
        if same_rows:
            slices.append(previous.slice(lo, len(index)))
            blank.append(~keeps)
        else:
            slices.append(previous.take(pa.array(index, mask=~keeps)))
            blank.append(None)
    return slices, blank


def _fill_text(carried: _CarriedText, fresh: list[tuple[np.ndarray, pd.Series]]) -> pd.Series:
    """:func:`_assemble` of an Arrow string column: the fresh texts put in their places.

    The same values (and Parquet bytes) as the single take of :func:`_assemble`.
    """
    kind = carried.type
    if fresh:
        at = np.concatenate([positions for positions, _ in fresh])
        texts = pa.concat_arrays(
            [pa.array(values.astype("str"), type=kind, from_pandas=True) for _, values in fresh]
        )
        order = np.argsort(at, kind="stable")
        at = at[order]
        last = np.append(at[1:] != at[:-1], True)  # a later block wins, as in a take
        at, texts = at[last], texts.take(pa.array(order[last]))
    else:
        at, texts = np.empty(0, dtype=np.int64), pa.array([], type=kind)
    chunks = []
    for number, (part, blank) in enumerate(zip(carried.slices, carried.blank, strict=True)):
        lo = number * TEXT_SLICE
        a, b = np.searchsorted(at, [lo, lo + len(part)])
        mask = np.zeros(len(part), dtype=bool) if blank is None else blank.copy()
        mask[at[a:b] - lo] = True
        if not mask.any():
            chunks.append(part)  # every row kept: the previous column's own slice
            continue
        if blank is None:
            values = texts.slice(a, b - a)
        else:  # per replaced row, its fresh text, or null where the text is not kept
            replaced = np.flatnonzero(mask)
            source = np.full(len(replaced), -1)
            source[np.searchsorted(replaced, at[a:b] - lo)] = np.arange(a, b)
            values = texts.take(pa.array(source, mask=source < 0))
        chunks.append(pc.replace_with_mask(part, pa.array(mask), values))
    column = pa.chunked_array(chunks, type=kind)
    return pd.Series(pd.array(column, dtype=carried.dtype))
