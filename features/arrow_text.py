"""The Arrow strings behind a pandas text column, for work Arrow does at C speed."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa


def arrow_strings(values: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow array of an Arrow-backed text column (no copy), else ``None``.

    Hashing, sorting or handing a million ids to the engine through Arrow spares
    converting them to Python strings; callers fall back to pandas on ``None``.
    """
    array = values.array
    if not isinstance(array, pd.arrays.ArrowStringArray):
        return None
    return array._pa_array  # noqa: SLF001 - pandas has no public accessor without a copy
