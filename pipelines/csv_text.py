"""CSV files of text and number columns, written with Arrow string kernels.

The CRM export writes the changed records of a night (150,000 at 1M entities) as CSV.
pandas' ``to_csv`` formats and quotes them row by row in Python (0.7 s for those
rows); :func:`csv_lines` makes the same lines column by column with Arrow (about
0.1 s). The bytes are pandas' own, character for character, for the columns it
handles: text, whole numbers (with or without missing values) and floats.

* Text is written as it is; a missing value is an empty field.
* Whole numbers are written in decimal; floats as numpy writes them with
  ``astype(str)``, which is what ``to_csv`` does (``0.1``, ``2.0``, ``1e-05``, ``inf``).
* A field is quoted when it holds the delimiter, a quote or a line break, with its
  quotes doubled, as Python's ``csv`` module does with ``QUOTE_MINIMAL``.

:func:`write_csv` falls back to ``to_csv`` for any other frame (dates, booleans,
categories, a single column, text that Arrow cannot hold).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: Characters that make Python's csv writer quote a field (``QUOTE_MINIMAL``).
_NEEDS_QUOTES = '[,"\r\n]'
LINE_END = "\r\n"


def csv_lines(frame: pd.DataFrame) -> tuple[str, pa.Array] | None:
    """The header and the data lines (without line ends) of ``frame``, or ``None``.

    ``None`` when a column is of a kind this module does not write exactly as
    ``frame.to_csv(index=False)`` (see the module's docstring), or holds text Arrow
    cannot (lone surrogates): write that frame with pandas.
    """
    if frame.shape[1] < 2:  # Python's csv quotes the empty field of a one-column row
        return None
    if not all(isinstance(name, str) for name in frame.columns):
        return None
    try:
        fields = []
        for name in frame.columns:
            text = _field_text(frame[name])
            if text is None:
                return None
            fields.append(_quoted(text))
        names = _quoted(pa.array(list(frame.columns), pa.large_string())).to_pylist()
    except (pa.ArrowException, UnicodeError, ValueError, TypeError):
        return None
    header = ",".join(names)
    if not len(frame):
        return header, pa.array([], pa.large_string())
    return header, pc.binary_join_element_wise(*fields, pa.scalar(",", pa.large_string()))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as ``frame.to_csv(path, index=False)`` would, with CRLF line ends.

    UTF-8, a header line, no index.
    """
    made = csv_lines(frame)
    if made is None:
        frame.to_csv(path, index=False, encoding="utf-8", lineterminator=LINE_END)
    else:
        write_lines(path, *made)


def write_lines(path: Path, header: str, lines: pa.Array) -> None:
    """Write ``header`` and ``lines``, each ended by CRLF, as UTF-8."""
    with open(path, "wb") as out:
        out.write((header + LINE_END).encode("utf-8"))
        if len(lines):
            one_list = pa.LargeListArray.from_arrays(pa.array([0, len(lines)], pa.int64()), lines)
            joined = pc.binary_join(one_list, pa.scalar(LINE_END, pa.large_string()))
            out.write(joined[0].as_buffer())
            out.write(LINE_END.encode("ascii"))


def _field_text(values: pd.Series) -> pa.Array | None:
    """The column's fields as Arrow text (missing: empty), or ``None`` if not handled."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) or (dtype == np.dtype(object) and _all_text(values)):
        text = pa.array(values.array if isinstance(dtype, pd.StringDtype) else values.to_numpy(),
                        type=pa.large_string(), from_pandas=True)  # fmt: skip
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
    elif isinstance(dtype, np.dtype) and dtype.kind in "iu":
        text = pc.cast(pa.array(values.to_numpy()), pa.large_string())
    elif isinstance(dtype, pd.Int64Dtype):
        text = pc.cast(pa.array(values.array), pa.large_string())
    elif isinstance(dtype, np.dtype) and dtype == np.float64:
        numbers = values.to_numpy()
        text = pa.array(numbers.astype(str), pa.large_string(), mask=np.isnan(numbers))
    else:
        return None
    return text.fill_null("")


def _all_text(values: pd.Series) -> bool:
    """Whether an object column holds only ``str`` and missing values (``None``, NaN)."""
    present = values.dropna().to_numpy()
    return all(type(value) is str for value in present)


def _quoted(text: pa.Array) -> pa.Array:
    """Each field quoted, its quotes doubled, where Python's csv would quote it."""
    needs = pc.match_substring_regex(text, _NEEDS_QUOTES)
    if not pc.any(needs).as_py():
        return text
    doubled = pc.replace_substring(text, '"', '""')
    mark = pa.scalar('"', pa.large_string())
    quoted = pc.binary_join_element_wise(mark, doubled, mark, pa.scalar("", pa.large_string()))
    return pc.if_else(needs, quoted, text)
