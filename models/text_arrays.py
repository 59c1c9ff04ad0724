"""Text columns built element by element in Arrow: picked from tables, joined per row.

The reason columns of a nightly are hundreds of thousands of texts, each put together
from a few pieces (a concept's JSON head, an impact, a sentence). Concatenating numpy
object arrays made a new Python string at every step, and writers then turned the
result into Arrow text again. Here the pieces are taken from small Arrow tables by
code (:func:`pick`), concatenated by Arrow's kernels (:func:`concat`), and the result
is an Arrow-backed pandas ``str`` array (:func:`as_text`), without a Python string per
row.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.arrow_text import arrow_strings

#: Arrow's text type of pandas' ``str`` dtype.
TEXT = pa.large_string()
#: Impacts formatted through a lookup table within [-RANGE, RANGE], one by one beyond.
IMPACT_RANGE = 300

Piece = pa.Array | str
#: Texts as the functions here take them: Arrow or pandas ``str`` arrays, or objects.
TextArray = pa.Array | pd.api.extensions.ExtensionArray | np.ndarray


def arrow_text(values: TextArray | pd.Series) -> pa.Array:
    """``values`` (Arrow or pandas ``str`` array, object array, list) as Arrow text."""
    if isinstance(values, pd.Series | pd.api.extensions.ExtensionArray):
        values = strings if (strings := arrow_strings(values)) is not None else values
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        return values if values.type == TEXT else values.cast(TEXT)
    return pa.array(np.asarray(values, dtype=object), type=TEXT, from_pandas=True)


def as_text(values: pa.Array) -> pd.api.extensions.ExtensionArray:
    """Arrow text as a pandas ``str`` array (no copy)."""
    return pd.array(values, dtype="str")


def joined_texts(parts: list[TextArray]) -> pd.api.extensions.ExtensionArray:
    """Text arrays one after the other, as a pandas ``str`` array."""
    return as_text(pa.concat_arrays([arrow_text(part) for part in parts]))


def pick(table: Sequence[str] | np.ndarray, codes: np.ndarray) -> pa.Array:
    """``table[codes]`` as Arrow text."""
    return pa.array(list(table), type=TEXT).take(pa.array(np.asarray(codes, dtype=np.int64)))


def concat(*pieces: Piece) -> pa.Array:
    """Element-wise concatenation of equally long arrays and plain strings."""
    parts = [p if isinstance(p, pa.Array) else pa.scalar(p, type=TEXT) for p in pieces]
    return pc.binary_join_element_wise(*parts, pa.scalar("", type=TEXT))


@functools.cache
def _impact_table(template: str) -> tuple[str, ...]:
    return tuple(template.format(i) for i in range(-IMPACT_RANGE, IMPACT_RANGE + 1))


def impact_text(impact: np.ndarray, template: str) -> pa.Array:
    """``template.format(i)`` for each integer (formatting millions one by one is slow)."""
    impact = np.asarray(impact, dtype=np.int64)
    inside = np.abs(impact) <= IMPACT_RANGE
    table = list(_impact_table(template))
    codes = np.where(inside, impact, 0) + IMPACT_RANGE
    if not inside.all():
        outside = impact[~inside]
        codes[~inside] = len(table) + np.arange(len(outside))
        table += [template.format(int(i)) for i in outside]
    return pick(table, codes)


def joined(items: pa.Array, rows: np.ndarray, ranks: np.ndarray, valid: np.ndarray,
           separator: str) -> pa.Array:  # fmt: skip
    """Per row, its valid items in rank order with ``separator`` between them.

    Args:
        items: One text per valid ``(row, rank)`` cell, in ``np.nonzero(valid)`` order.
        rows: Row of each item.
        ranks: Rank of each item.
        valid: ``(rows, k)`` which cells hold an item.
        separator: Put between two items of a row.
    """
    n_rows, k = valid.shape
    pool = pa.concat_arrays([items, pa.array([""], type=TEXT)])
    position = np.full((n_rows, k), len(items), dtype=np.int64)
    position[rows, ranks] = np.arange(len(items))
    seen = np.zeros(n_rows, dtype=bool)
    pieces: list[Piece] = [pa.array([""] * n_rows, type=TEXT)] if k == 0 else []
    for rank in range(k):
        if rank:
            pieces.append(pick(("", separator), valid[:, rank] & seen))
        pieces.append(pool.take(pa.array(position[:, rank])))
        seen |= valid[:, rank]
    return concat(*pieces)
