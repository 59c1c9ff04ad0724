"""arrow_strings: the Arrow array behind pandas text, or None for other columns."""

from __future__ import annotations

import pandas as pd

from features.arrow_text import arrow_strings


def test_arrow_text_gives_its_arrow_strings_and_other_columns_none() -> None:
    text = pd.Series(["e2", None, "e1"], dtype="str")
    strings = arrow_strings(text)
    assert strings is not None and strings.to_pylist() == ["e2", None, "e1"]
    assert arrow_strings(pd.Series(["e2", None], dtype=object)) is None
    assert arrow_strings(pd.Series([1, 2])) is None
