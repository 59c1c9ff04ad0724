"""The CRM's one-line reason text of many rows at once, read from the reason lists.

:func:`crm_reason_texts` gives :func:`models.reason_text.crm_reason_text` of every
row without a loop over rows: lists as the scorer writes them are read with Arrow
string kernels; any other value (hand-edited JSON, parsed lists) goes through
``crm_reason_text``'s own reader, row by row. Used by :mod:`pipelines.crm_export`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models.reason_text import CRM_TEXT_LIMIT, crm_items, crm_line

#: A JSON string's body as ``json.loads`` accepts it (RE2 syntax).
_TEXT = r'(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*'
#: One reason object between its braces, exactly as ``models.reason_text.reason_lists``
#: writes it; impacts of up to 15 digits are exact as floats.
_ITEM = (
    f'^"concept": "(?P<concept>{_TEXT})", "group": "{_TEXT}", "text": "{_TEXT}", '
    '"impact": (?P<impact>0|-?[1-9][0-9]{0,14})$'
)


@dataclass
class _Items:
    """One direction's reasons read in bulk: rows read, and their items strongest first."""

    ok: np.ndarray  # per row: read here (else it goes through crm_items one by one)
    row: np.ndarray  # per item, sorted by row then strength (stable)
    text: pa.Array  # per item, "concept +12"
    length: np.ndarray  # per item, characters of text


def _choice(pick: np.ndarray, texts: list[str]) -> pa.Array:
    """``texts[pick[i]]`` per row as an Arrow string array."""
    return pa.DictionaryArray.from_arrays(pa.array(pick.astype(np.int8)), texts).cast(pa.string())


def _bools(array: pa.Array) -> np.ndarray:
    return array.fill_null(False).to_numpy(zero_copy_only=False)


def _written_items(values: pa.Array) -> _Items:
    """The CRM items of lists written by ``reason_lists``; other rows are marked not ok.

    Such a list is ``[{...}, {...}]`` with every object matching :data:`_ITEM`, so
    splitting at ``}, {`` and matching each piece reads what ``json.loads`` reads.
    """
    framed = _bools(pc.and_(pc.starts_with(values, "[{"), pc.ends_with(values, "}]")))
    pieces = pc.split_pattern(pc.utf8_slice_codeunits(values, 2, -2), "}, {")
    parents = pc.list_parent_indices(pieces).to_numpy()
    parts = pc.extract_regex(pc.list_flatten(pieces), _ITEM)
    concept = parts.field("concept")
    good = _bools(parts.is_valid()) & ~_bools(pc.match_substring(concept, "\\"))
    bad_rows = np.bincount(parents[~good], minlength=len(values)) > 0
    ok = _bools(values.is_null()) | _bools(pc.equal(values, "[]")) | (framed & ~bad_rows)
    keep = good & ok[parents]
    keep[keep] = pc.utf8_length(concept.filter(pa.array(keep))).to_numpy() > 0
    impact = parts.field("impact").filter(pa.array(keep))
    points = pc.cast(impact, pa.int64()).to_numpy()
    text = pc.binary_join_element_wise(
        concept.filter(pa.array(keep)), _choice(points >= 0, [" ", " +"]), impact, ""
    )
    row = parents[keep]
    order = np.lexsort((-np.abs(points), row))  # stable: equal strength keeps list order
    text = text.take(pa.array(order))
    return _Items(ok, row[order], text, pc.utf8_length(text).to_numpy())


def _kept(items: _Items, n: int, used: np.ndarray, label: str, limit: int) -> pa.Array:
    """`` label: a, b.`` per row (null if none) with the items that fit after ``used``."""
    start = np.searchsorted(items.row, np.arange(n))
    rank = np.arange(len(items.row)) - start[items.row]
    total = np.cumsum(items.length)
    before = np.concatenate([[0], total])[start][items.row]
    prefix = used[items.row] + (used[items.row] > 0)  # the text so far and a space
    # The candidate "label: " + kept items must leave room for the closing ".".
    fits = prefix + len(label) + 2 + (total - before) + 2 * rank + 1 <= limit
    counts = np.bincount(items.row[fits], minlength=n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    kept = items.text.filter(pa.array(fits))  # each row's fitting items are a prefix
    lists = pa.ListArray.from_arrays(offsets, kept, mask=pa.array(counts == 0))
    heads = _choice(used > 0, [f"{label}: ", f" {label}: "])
    return pc.binary_join_element_wise(heads, pc.binary_join(lists, ", "), ".", "")


def crm_reason_texts(
    reasons_up: object, reasons_down: object, limit: int = CRM_TEXT_LIMIT
) -> np.ndarray:
    """:func:`models.reason_text.crm_reason_text` of every row, without a loop over rows.

    Lists as the scorer writes them are read with Arrow string kernels; any other
    value (hand-edited JSON, parsed lists) goes through ``crm_reason_text``'s own
    reader, row by row.

    Args:
        reasons_up: The rows' ``reasons_up`` values (array-like).
        reasons_down: Their ``reasons_down`` values, as many.
        limit: Most characters of a text.

    Returns:
        An object array of the texts, one per row.
    """
    n = len(reasons_up)
    out = np.empty(n, dtype=object)
    try:
        arrays = [_arrow_text(values) for values in (reasons_up, reasons_down)]
    except (pa.ArrowException, TypeError, UnicodeError):  # not all text, lone surrogates
        up_items = down_items = _Items(np.zeros(n, bool), *[np.array([], np.int64)] * 3)
    else:
        up_items, down_items = (_written_items(values) for values in arrays)
        # Texts start "Up" or "Down" and end within the limit: no formula prefix, no cut.
        up_text = _kept(up_items, n, np.zeros(n, np.int64), "Up", limit)
        used = pc.utf8_length(up_text).fill_null(0).to_numpy()
        down_text = _kept(down_items, n, used, "Down", limit)
        out[:] = pc.binary_join_element_wise(
            up_text, down_text, "", null_handling="replace", null_replacement=""
        ).to_numpy(zero_copy_only=False)
    rest = np.flatnonzero(~(up_items.ok & down_items.ok))
    if len(rest):
        up, down = (_objects(values) for values in (reasons_up, reasons_down))
        for i in rest:
            out[i] = crm_line(crm_items(up[i]), crm_items(down[i]), limit)
    return out


def _arrow_text(values: object) -> pa.Array:
    """``values`` as an Arrow string array; Arrow-backed text is taken as it is."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        return array.cast(pa.string())
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":  # no str per row
        array = pa.array(values.array)  # type: ignore[attr-defined]
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        return array.cast(pa.string())
    return pa.array(np.asarray(values, dtype=object), pa.string(), from_pandas=True)


def _objects(values: object) -> np.ndarray:
    """``values`` as an object array (``None`` for missing values)."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return np.array(values.to_pylist(), dtype=object)
    return np.asarray(values, dtype=object)
