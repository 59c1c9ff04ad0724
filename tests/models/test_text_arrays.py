"""Text columns put together in Arrow equal the same texts put together in Python."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.text_arrays import IMPACT_RANGE, arrow_text, concat, impact_text, joined, pick


def test_impacts_inside_and_outside_the_table_read_as_formatted():
    impact = np.array([0, 5, -7, IMPACT_RANGE, -IMPACT_RANGE, IMPACT_RANGE + 1, -4000, 12])
    assert impact_text(impact, "{:+d} pts").to_pylist() == [f"{i:+d} pts" for i in impact]


@pytest.mark.parametrize("k", [0, 1, 4])
def test_a_rows_valid_items_are_joined_in_rank_order(k):
    rng = np.random.default_rng(k)
    valid = rng.random((50, k)) < 0.5  # any cells, not only a prefix of each row
    rows, ranks = np.nonzero(valid)
    items = [f"item {r}.{j} é" for r, j in zip(rows, ranks, strict=True)]
    out = joined(arrow_text(np.array(items, dtype=object)), rows, ranks, valid, "; ")
    expected = ["; ".join(f"item {r}.{j} é" for j in range(k) if valid[r, j]) for r in range(50)]
    assert out.to_pylist() == expected


def test_pieces_are_picked_by_code_and_concatenated_with_plain_strings():
    codes = np.array([2, 0, 1, 2])
    out = concat("[", pick(["a", "b", '"c"'], codes), "|", pick(["x", "y", "z"], codes), "]")
    assert out.to_pylist() == ['["c"|z]', "[a|x]", "[b|y]", '["c"|z]']


def test_pandas_and_object_texts_are_taken_as_they_are():
    text = pd.array(["a", None, "c"], dtype="str")
    assert arrow_text(text).to_pylist() == ["a", None, "c"]
    assert arrow_text(np.array(["a", "b"], dtype=object)).to_pylist() == ["a", "b"]
