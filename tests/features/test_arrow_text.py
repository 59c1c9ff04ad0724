"""arrow_strings: the Arrow array behind pandas text, or None; as_arrow_text: text made by Arrow."""

from __future__ import annotations

import pandas as pd
import pytest

from features.arrow_text import arrow_strings


def test_arrow_text_gives_its_arrow_strings_and_other_columns_none() -> None:
    text = pd.Series(["e2", None, "e1"], dtype="str")
    strings = arrow_strings(text)
    assert strings is not None and strings.to_pylist() == ["e2", None, "e1"]
    assert arrow_strings(pd.Series(["e2", None], dtype=object)) is None
    assert arrow_strings(pd.Series([1, 2])) is None


@pytest.mark.parametrize("dtype", ["str", "string"])
def test_python_strings_become_arrow_text_as_pandas_would_make_them(dtype):
    from features.arrow_text import as_arrow_text

    values = pd.Series(["a", None, "b ü", float("nan")], index=[3, 5, 7, 9], name="band")
    got = as_arrow_text(values.astype(object), dtype)
    pd.testing.assert_series_equal(got, values.astype(dtype))
    assert arrow_strings(got) is not None  # Arrow-backed, not Python strings
    mixed = pd.Series(["a", 1, None], dtype=object)  # not all text: pandas' own rules
    pd.testing.assert_series_equal(as_arrow_text(mixed, dtype), mixed.astype(dtype))
    assert as_arrow_text(got, dtype) is got


def test_all_different_counts_present_values_and_declines_other_columns() -> None:
    from features.arrow_text import all_different

    assert all_different(pd.Series(["a", "b", None, None], dtype="str"))
    assert not all_different(pd.Series(["a", "b", "a"], dtype="str"))
    # Not Arrow text: no answer from Arrow, the caller looks with pandas.
    assert not all_different(pd.Series(["a", "b"], dtype=object))
    assert not all_different(pd.Series([1, 2]))


def test_same_texts_compares_row_by_row_and_declines_what_it_cannot_tell() -> None:
    from features.arrow_text import same_texts

    ids = pd.Series(["L1", "C2", "L3"], dtype="str")
    assert same_texts(ids, pd.Series(["L1", "C2", "L3"], dtype="str"))
    assert same_texts(pd.Series([], dtype="str"), pd.Series([], dtype="str"))
    assert not same_texts(ids, pd.Series(["L1", "L3", "C2"], dtype="str"))  # another order
    assert not same_texts(ids, pd.Series(["L1", "C2"], dtype="str"))
    assert not same_texts(ids, pd.Series(["L1", "C2", None], dtype="str"))
    assert not same_texts(ids, pd.Series(["L1", "C2", "L3"], dtype=object))
