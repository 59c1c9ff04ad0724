"""Assembling a reason column from kept previous values and fresh blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from models import previous_run
from models.previous_run import _assemble


def _single_take(kept: pd.Series, kept_index: np.ndarray, fresh: list) -> pd.Series:
    """The plain way: one take over the previous values followed by the fresh ones."""
    parts, index, offset = [kept], kept_index.copy(), len(kept)
    for positions, values in fresh:
        parts.append(values.astype("str"))
        index[positions] = offset + np.arange(len(positions))
        offset += len(positions)
    return pd.Series(pd.concat(parts, ignore_index=True).array.take(index, allow_fill=True))


@pytest.mark.parametrize("chunks", [1, 3])
def test_text_columns_are_assembled_slice_by_slice_to_the_same_values(monkeypatch, chunks):
    monkeypatch.setattr(previous_run, "TEXT_SLICE", 7)
    rng = np.random.default_rng(3)
    n = 50
    texts = [None if i % 9 == 0 else f"reason {i} ü" for i in range(60)]
    bounds = np.linspace(0, 60, chunks + 1).astype(int)
    arrow = pa.chunked_array(
        [
            pa.array(texts[a:b], pa.large_string())
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    )
    kept = pd.Series(pd.array(arrow, dtype="str"))
    kept_index = rng.integers(-1, 60, n)
    first = np.sort(rng.choice(n, 12, replace=False))
    second = np.sort(rng.choice(n, 5, replace=False))  # may overlap the first: it wins
    fresh = [
        (first, pd.Series([f"new {i}" if i % 4 else None for i in range(12)], dtype=object)),
        (second, pd.Series([f"later {i}" for i in range(5)], dtype=object)),
    ]
    got = _assemble(kept, kept_index, fresh, "str")
    want = _single_take(kept, kept_index, fresh)
    pd.testing.assert_series_equal(got, want)
    assert got.array._pa_array.num_chunks == -(-n // 7)
    pd.testing.assert_series_equal(_assemble(kept, kept_index, [], "str"),
                                   _single_take(kept, kept_index, []))  # fmt: skip


@pytest.mark.parametrize("same_rows", [True, False])
def test_texts_carried_ahead_give_the_columns_assembled_at_the_end(monkeypatch, same_rows):
    monkeypatch.setattr(previous_run, "TEXT_SLICE", 7)
    rng = np.random.default_rng(5)
    n = 40
    ids = pd.Index([f"e{i:03d}" for i in range(n)], dtype="str")
    texts = pd.Series([None if i % 6 == 0 else f"text {i}" for i in range(n)], dtype="str")
    previous = pd.DataFrame(
        {"entity_id": ids[::-1], "reasons_up": texts, "reasons_down": texts,
         "reasons_text": texts, "base_score": pd.array(range(n), dtype="Int64")}
    )  # fmt: skip
    keep = rng.random(n) < 0.7
    moved = np.flatnonzero(~keep)
    fresh = {"reasons_up": [(moved, pd.Series([f"new {i}" for i in moved], dtype=object))]}
    plain = previous_run.PreviousRun(previous, ids).reason_columns(keep, fresh)
    ahead = previous_run.PreviousRun(previous, ids)
    ahead.carry_texts(keep if same_rows else ~keep)  # other rows: not used
    carried = ahead.reason_columns(keep, fresh)
    assert list(carried) == list(plain)
    for name in plain:
        pd.testing.assert_series_equal(carried[name], plain[name])


@pytest.mark.parametrize("new_at_end", [0, 9])
def test_texts_of_the_same_rows_are_the_previous_column_itself(monkeypatch, new_at_end):
    """Entities in the previous run's order: kept texts are views, the rest filled in."""
    monkeypatch.setattr(previous_run, "TEXT_SLICE", 8)
    rng = np.random.default_rng(11)
    size = 48
    n = size + new_at_end  # new entities come after the previous ones, not kept
    texts = [None if i % 7 == 0 else f"reason {i} ü" for i in range(size)]
    arrow = pa.chunked_array([pa.array(texts, pa.large_string())])
    kept = pd.Series(pd.array(arrow, dtype="str"))
    keep = rng.random(n) < 0.6
    keep[:8] = True  # the first slice keeps every text: it stays the previous column's
    keep[size:] = False
    kept_index = np.where(keep, np.arange(n), -1)
    moved = np.flatnonzero(~keep)
    fresh_rows = np.sort(rng.choice(moved, len(moved) // 2, replace=False))
    again = np.array([20, 30])  # a row given two fresh texts, or a kept one: the later wins
    fresh = [
        (fresh_rows, pd.Series([f"new {i}" for i in fresh_rows], dtype=object)),
        (again, pd.Series(["later 20", None], dtype=object)),
    ]
    got = _assemble(kept, kept_index, fresh, "str")
    pd.testing.assert_series_equal(got, _single_take(kept, kept_index, fresh))
    previous_data = kept.array._pa_array.chunk(0).buffers()[2].address
    first = got.array._pa_array.chunk(0)
    assert first.buffers()[2].address == previous_data  # no copy of the kept texts
    second = got.array._pa_array.chunk(1)
    assert second.buffers()[2].address != previous_data  # rows replaced: a new slice
