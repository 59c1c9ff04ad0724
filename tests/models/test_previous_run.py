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
