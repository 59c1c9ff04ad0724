"""The Arrow strings behind a pandas text column, for work Arrow does at C speed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from pandas.api.extensions import ExtensionArray


def arrow_strings(values: pd.Series | ExtensionArray) -> pa.ChunkedArray | None:
    """The Arrow array of an Arrow-backed text column or array (no copy), else ``None``.

    Hashing, sorting or handing a million ids to the engine through Arrow spares
    converting them to Python strings; callers fall back to pandas on ``None``.
    """
    array = values.array if isinstance(values, pd.Series) else values
    if not isinstance(array, pd.arrays.ArrowStringArray):
        return None
    return array._pa_array  # noqa: SLF001 - pandas has no public accessor without a copy


def all_different(values: pd.Series) -> bool:
    """No value present twice among the present ones, told by Arrow's distinct values.

    ``unique`` hashes a million ids in 0.11 s, as fast as pandas' ``is_unique`` and
    faster than its ``duplicated`` (0.16 s) or Arrow's ``count_distinct`` over the
    chunks Parquet gives (0.19 s). ``False`` also for a column that is not Arrow-backed
    text: callers then look with pandas.
    """
    array = arrow_strings(values)
    if array is None:
        return False
    import pyarrow.compute as pc

    distinct = len(pc.unique(array)) - (array.null_count > 0)  # null counts once there
    return distinct == len(array) - array.null_count


def same_texts(left: pd.Series, right: pd.Series) -> bool:
    """Whether two Arrow-backed text columns hold the same values, row by row.

    One comparison per row instead of a hash lookup (0.41 s for a million ids).
    ``False`` when either has a missing value or is not Arrow-backed text: callers
    then match the values by hashing.
    """
    a, b = arrow_strings(left), arrow_strings(right)
    if a is None or b is None or a.null_count or b.null_count:
        return False
    return a.equals(b)  # whatever the chunks, as models.entity_rows.aligned_rows compares


def as_arrow_text(values: pd.Series, dtype: str) -> pd.Series:
    """``values.astype(dtype)`` for an Arrow text dtype (``"str"`` or ``"string"``).

    A column of Python strings is converted by Arrow itself, at C speed (pandas' own
    conversion takes about three times as long); values that are not all text get
    pandas' conversion. Index and name are kept.
    """
    if values.dtype == dtype:
        return values
    if pd.api.types.is_object_dtype(values.dtype):
        try:
            array = pa.array(values.to_numpy(), type=pa.large_string(), from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):  # not all text: pandas' rules
            return values.astype(dtype)
        return pd.Series(pd.array(array, dtype=dtype), index=values.index, name=values.name)
    return values.astype(dtype)
