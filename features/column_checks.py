"""Checking an input column by column, and the :class:`ContractError` it raises.

:class:`ColumnChecker` normalises one column at a time (ids to strings, timestamps to
UTC, ``consent`` to bool, numbers to float) and turns every problem into a sentence
naming the column and up to :data:`MAX_SAMPLE_ROWS` offending rows, counted from 1.
Which columns each table has, and which checks they get, is :mod:`features.schemas`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.config import ValidationDepth, config_context
from pandera.engines.pandas_engine import Engine
from pandera.errors import SchemaErrors

from features.arrow_text import all_different
from features.timeutil import UTC_TIMESTAMP

log = logging.getLogger(__name__)

#: How many offending rows an error message shows.
MAX_SAMPLE_ROWS = 5

_CONSENT_WORDS: dict[str, bool] = {
    "true": True, "t": True, "yes": True, "y": True, "1": True, "1.0": True,
    "false": False, "f": False, "no": False, "n": False, "0": False, "0.0": False,
}  # fmt: skip


class ContractError(ValueError):
    """An input breaks the data contract.

    The message is one sentence per problem, naming the table, the source, the
    column and up to five offending rows. Rows are counted from 1, the first data
    row (a CSV header line is not counted).

    Attributes:
        table: ``events``, ``entities`` or ``outcomes``.
        source: Where the data came from (path or URL), as given by the caller.
        problems: One sentence per problem, without the table/source prefix.
    """

    def __init__(self, table: str, source: str, problems: Sequence[str]) -> None:
        self.table = table
        self.source = source
        self.problems = list(problems)
        prefix = f"{table} ({source})"
        super().__init__("\n".join(f"{prefix}: {problem}" for problem in self.problems))


class ColumnChecker:
    """Normalises one column at a time and collects the problems found.

    Each check normalises its column in :attr:`out` and notes one sentence per
    problem with up to :data:`MAX_SAMPLE_ROWS` offending rows; :meth:`result` raises
    them all at once, or returns the frame validated against the table's schema.

    Args:
        table: ``events``, ``entities`` or ``outcomes``.
        source: Where the frame came from, named in error messages.
        df: The frame (contract column names); never changed.
        required: Columns that must be present.
        schema: The table's pandera schema, the final safety net.

    Raises:
        ContractError: A required column is missing.
    """

    def __init__(
        self,
        table: str,
        source: str,
        df: pd.DataFrame,
        required: Sequence[str],
        schema: pa.DataFrameSchema,
    ) -> None:
        self.table, self.source, self.schema = table, source, schema
        # Checks replace whole columns, and copy-on-write keeps ``df`` as it is.
        self.out = df.copy(deep=False)
        self.problems: list[str] = []
        missing = [c for c in required if c not in df.columns]
        if missing:
            existing = ", ".join(repr(str(c)) for c in df.columns) or "none"
            problem = (
                f"missing required column(s) {', '.join(repr(c) for c in missing)}; the "
                f"columns present are {existing}. Rename them in the source or map them "
                "with sources.column_map."
            )
            raise ContractError(table, source, [problem])

    def _report(self, column: str, bad: pd.Series, what: tuple[str, str]) -> None:
        count = int(bad.sum())
        if count == 0:
            return
        singular, plural = what
        original = self.out[column]
        positions = np.flatnonzero(bad.to_numpy())[:MAX_SAMPLE_ROWS]
        rows = ", ".join(str(p + 1) for p in positions)
        values = ", ".join(show_value(original.iloc[p]) for p in positions)
        noun = "row" if len(positions) == 1 else "rows"
        self.problems.append(
            f"column '{column}' has {count} "
            f"{'value that ' + singular if count == 1 else 'values that ' + plural}, "
            f"e.g. {noun} {rows}: {values}"
        )

    def ids(self, column: str, nullable: bool = False) -> None:
        """Ids or labels as stripped strings; empty ones are problems unless ``nullable``."""
        if column not in self.out.columns:
            return
        ids = _as_strings(self.out[column])
        if not nullable:
            self._report(column, ids.isna(), ("is empty", "are empty"))
        self.out[column] = ids

    def unique(self, column: str) -> None:
        """Repeated ids are problems."""
        if column not in self.out.columns:
            return
        ids = self.out[column]
        if all_different(ids):
            return
        duplicated = ids.duplicated(keep=False) & ids.notna()
        self._report(column, duplicated, ("is a duplicate id", "are duplicate ids"))

    def timestamps(self, column: str) -> None:
        """Timestamps as UTC microseconds (ISO 8601 text, naive is UTC); others are problems."""
        parsed = _to_utc(self.out[column])
        self._report(column, parsed.isna(), ("is not a timestamp", "are not timestamps"))
        self.out[column] = parsed

    def floats(self, column: str) -> None:
        """Numbers as ``float64``; blanks are missing, other text is a problem."""
        if column not in self.out.columns:
            return
        original = self.out[column]
        numbers = pd.to_numeric(original, errors="coerce").astype("float64")
        bad = numbers.isna().to_numpy() & original.notna().to_numpy()
        if bad.any() and not pd.api.types.is_numeric_dtype(original):
            # Only values that are not numbers are read as text: blank text is missing.
            positions = np.flatnonzero(bad)
            blank = original.iloc[positions].astype("str").str.strip().eq("")
            bad[positions[blank.to_numpy(dtype=bool)]] = False
        self._report(column, pd.Series(bad), ("is not a number", "are not numbers"))
        self.out[column] = numbers

    def consent(self, column: str) -> None:
        """Yes/no words as bool, empty and absent meaning true; other values are problems."""
        if column not in self.out.columns:
            self.out[column] = True
            return
        original = self.out[column]
        if pd.api.types.is_bool_dtype(original.dtype):
            # Already yes/no: the words of a million "True"/"False" would decide the same.
            if defaulted := int(original.isna().sum()):
                where = f"{self.table} ({self.source})"
                log.info("%s: %d empty consent values read as true.", where, defaulted)
            self.out[column] = original.fillna(True).astype(bool)
            return
        keys = _as_strings(original)
        decided = keys.str.lower().map(_CONSENT_WORDS)
        what = ("is not a yes/no value", "are not yes/no values")
        self._report(column, keys.notna() & decided.isna(), what)
        if defaulted := int(keys.isna().sum()):
            where = f"{self.table} ({self.source})"
            log.info("%s: %d empty consent values read as true.", where, defaulted)
        self.out[column] = decided.fillna(True).astype(bool)

    def choices(self, column: str, allowed: tuple[str, ...], nullable: bool) -> None:
        """Lower-case values of ``allowed``; others, and empty unless ``nullable``, are problems."""
        if column not in self.out.columns:
            return
        values = _as_strings(self.out[column]).str.lower()
        unknown = values.notna() & ~values.isin(allowed)
        if not nullable:
            unknown |= values.isna()
        options = " or ".join(repr(a) for a in allowed)
        self._report(column, unknown, (f"is not {options}", f"are not {options}"))
        self.out[column] = values

    def result(self) -> pd.DataFrame:
        """The normalised frame, validated against the schema.

        Raises:
            ContractError: Any problem noted by the checks, or a schema failure.
        """
        if self.problems:
            raise ContractError(self.table, self.source, self.problems)
        if self._columns_hold():
            return self.out
        try:
            # Columns and dtypes only: the checks above already tested every value
            # (empty, repeated, not among the choices); testing them again took 0.3 s
            # of hashing for a million entities.
            with config_context(validation_depth=ValidationDepth.SCHEMA_ONLY):
                return self.schema.validate(self.out, lazy=True)
        except SchemaErrors as exc:  # a safety net: the checks above should catch all
            cases = exc.failure_cases.head(MAX_SAMPLE_ROWS)
            problems = [
                f"column '{row.column}' fails check {row.check}, "
                f"e.g. {show_value(row.failure_case)}"
                for row in cases.itertuples()
            ]
            raise ContractError(self.table, self.source, problems) from exc

    def _columns_hold(self) -> bool:
        """Every required column of the schema is present, and every column has its dtype.

        Read from the schema in microseconds; pandera's own validation, which words
        the failures, then only runs when this fails. Its first run in a process
        imports its backends (0.44 s with hypothesis installed).
        """
        for name, column in self.schema.columns.items():
            if name not in self.out.columns:
                if column.required:
                    return False
                continue
            if not column.dtype.check(Engine.dtype(self.out[name].dtype)):
                return False
        return True


def show_value(value: object) -> str:
    """A sample value as an error sentence shows it: quoted, cut at 40 characters, ``null``."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "null"
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _as_strings(series: pd.Series) -> pd.Series:
    """Ids and labels as stripped strings; blanks become missing.

    Float columns holding whole numbers (an integer id column with a gap, read
    from CSV) become ``"123"``, not ``"123.0"``, so they still join.
    """
    if pd.api.types.is_float_dtype(series):
        present = series.dropna()
        if (present % 1 == 0).all():
            series = series.astype("Int64")
    strings = series.astype("str").str.strip()
    return strings.mask(series.isna() | strings.eq(""))


def _to_utc(series: pd.Series) -> pd.Series:
    """Timestamps as UTC microseconds; naive values are UTC, bad ones NaT."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        parsed = series.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(dtype):
        parsed = series.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        # Epoch numbers are ambiguous (seconds? milliseconds?): refuse them.
        parsed = pd.Series(pd.NaT, index=series.index, dtype=UTC_TIMESTAMP)
    else:
        # ISO 8601 only: a lenient parser would silently swap day and month.
        parsed = pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")
    return parsed.astype(UTC_TIMESTAMP)
