"""The events' data contract as engine queries: counts and five sample rows, never a frame.

:func:`normalise_events` is the engine twin of :func:`features.schemas.validate_events`:
one aggregate query over the raw (mapped) events counts, per contract column, the
values that break the contract and the values that need normalising (untrimmed text,
whole-number floats used as ids); only columns that need it are rewritten, so a clean
Parquet feed is read as it is. Every problem is the same sentence as the pandas
checks give (:class:`~features.column_checks.ColumnChecker`), with up to five
offending rows counted from 1 across the source's files in order.

:func:`duplicate_count` counts exact duplicates (rows equal in every column, as
``DataFrame.duplicated``) with one grouping query; :func:`duplicate_sample` shows a few.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from features.column_checks import MAX_SAMPLE_ROWS, ContractError, show_value
from features.event_table import EVENT_COLUMNS, UTC_TYPE
from features.schemas import REQUIRED_COLUMNS

#: Virtual columns of the engine's file reader: which file, and which row of it.
FILE_COLUMN, FILE_ROW_COLUMN = "_leadscore_file", "file_row_number"
SOURCE_COLUMNS = (FILE_COLUMN, FILE_ROW_COLUMN)

#: Whitespace that ``strip`` removes from the edges of ids (Ibis strips Python's
#: ``string.whitespace``: a vertical tab or a form feed too, as pandas' ``strip`` does).
WHITESPACE = tuple(string.whitespace)
#: (singular, plural) of each problem, as the pandas checks word them.
EMPTY = ("is empty", "are empty")
NOT_TIMESTAMP = ("is not a timestamp", "are not timestamps")
NOT_NUMBER = ("is not a number", "are not numbers")


@dataclass
class _Column:
    """One contract column's plan: its normalised expression and its problem predicate."""

    name: str
    value: ir.Value
    bad: ir.BooleanValue | None
    what: tuple[str, str] = EMPTY
    #: Rows that need normalising, or whether all do (known from the column's type).
    rewrite: ir.BooleanValue | bool = False
    #: What to do, said after the sample (``fix the format ...``); then the count
    #: reads "value(s) that ..." as the mapping's sentences do.
    advice: str = ""


@dataclass(frozen=True)
class RowLocator:
    """Turns (file, row in file) into the row number a person sees: 1-based, files in order.

    Attributes:
        offsets: Rows in the files before each file, by file name.
    """

    offsets: Mapping[str, int] = field(default_factory=dict)

    def row(self, file: str, row_in_file: int) -> int:
        """The 1-based row of the source."""
        return self.offsets.get(file, 0) + int(row_in_file) + 1


def check_required(columns: list[str], source: str) -> None:
    """Raise the contract's sentence when required event columns are missing.

    Raises:
        ContractError: The missing columns and the columns present are named.
    """
    missing = [c for c in REQUIRED_COLUMNS["events"] if c not in columns]
    if missing:
        present = ", ".join(repr(str(c)) for c in columns if c not in SOURCE_COLUMNS) or "none"
        raise ContractError("events", source, [
            f"missing required column(s) {', '.join(repr(c) for c in missing)}; the columns "
            f"present are {present}. Rename them in the source or map them with "
            "sources.column_map."
        ])  # fmt: skip


def _text(column: ir.Value) -> ir.StringValue:
    """A column as stripped text; blank is null."""
    dtype = column.type()
    if dtype.is_floating():
        column = column.cast("float64")
    return _stripped(column.cast("string")).nullif("")


def _may_have_blank_edges(text: ir.StringValue) -> ir.BooleanValue:
    """True where the first or last character is a space or control character (or empty).

    A cheap guard: text sorts before ``"!"`` exactly when its first character is at
    most a space, and the last character is one slice; that costs a fraction of
    stripping (DuckDB, 10.6M CSV times: 0.3 s against 1.9 s), and text without such
    an edge is its own strip.
    """
    return (text < "!") | (text.right(1) <= " ")


def _stripped(text: ir.StringValue) -> ir.StringValue:
    """``text.strip()``, stripping only where an edge may be blank."""
    return ibis.cases((_may_have_blank_edges(text), text.strip()), else_=text)


def _id_plan(table: ir.Table, name: str, nullable: bool) -> _Column:
    column = table[name]
    dtype = column.type()
    if dtype.is_string():
        # A test of the edges is cheaper than stripping every value: strip only there.
        exact = ibis.or_(*(column.startswith(c) | column.endswith(c) for c in WHITESPACE))
        edge = _may_have_blank_edges(column) & exact
        rewrite = edge | (column == "")
        value = column.strip().nullif("")
        only_spaces = ibis.cases((edge, column.strip() == ""), else_=False)
        blank = column.isnull() | (column == "") | only_spaces
        return _Column(name, value, None if nullable else blank, EMPTY, rewrite)
    if dtype.is_integer():
        value = column.cast("string")
    elif dtype.is_floating():
        # Whole numbers (an integer id read with a gap) are "123", not "123.0".
        whole = (column.floor() == column) & column.notnull()
        value = ibis.cases((whole, column.cast("int64").cast("string")), else_=_text(column))
    else:
        value = _text(column)
    return _Column(name, value, None if nullable else value.isnull(), EMPTY, True)


def _time_plan(table: ir.Table, name: str, timestamp_format: str | None) -> _Column:
    column = table[name]
    dtype = column.type()
    if dtype.is_timestamp():
        value = column.cast(UTC_TYPE)  # naive is UTC: the session's time zone is UTC
        needs = not (dtype.timezone == "UTC" and dtype.scale in (None, 6))
    elif dtype.is_date():
        value, needs = column.cast(UTC_TYPE), True
    elif dtype.is_string():
        text = _stripped(column).nullif("")
        if timestamp_format:
            value = _try_strptime(text, timestamp_format).cast(UTC_TYPE)
            fmt = f"sources.timestamp_format {timestamp_format!r}"
            advice = "fix the format (Python strftime codes) or the rows"
            what = (f"do not match {fmt}", f"do not match {fmt}")
            return _Column(name, value, value.isnull(), what, True, advice)
        value = text.try_cast(UTC_TYPE)
        needs = True
    else:
        # Epoch numbers are ambiguous (seconds? milliseconds?): refuse them.
        every_row = column.isnull() | column.notnull()
        return _Column(name, ibis.null(UTC_TYPE), every_row, NOT_TIMESTAMP, True)
    return _Column(name, value, value.isnull(), NOT_TIMESTAMP, needs)


@ibis.udf.scalar.builtin(
    name="try_strptime", signature=((dt.string, dt.string), dt.Timestamp(timezone="UTC"))
)
def _try_strptime_udf(text, fmt):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
    """DuckDB's ``try_strptime``: null where the text does not match the format."""


def _try_strptime(text: ir.StringValue, timestamp_format: str) -> ir.TimestampValue:
    return _try_strptime_udf(text, timestamp_format)


def _float_plan(table: ir.Table, name: str) -> _Column:
    column = table[name]
    dtype = column.type()
    if dtype.is_numeric():
        value = column.cast("float64")
        return _Column(name, value, None, NOT_NUMBER, not dtype.is_float64())
    text = _text(column)
    value = text.try_cast("float64")
    return _Column(name, value, text.notnull() & value.isnull(), NOT_NUMBER, True)


def _plans(table: ir.Table, timestamp_format: str | None) -> list[_Column]:
    plans = [
        _id_plan(table, "entity_id", nullable=False),
        _time_plan(table, "event_time", timestamp_format),
        _id_plan(table, "event_type", nullable=False),
    ]
    if "value" in table.columns:
        plans.append(_float_plan(table, "value"))
    if "item" in table.columns:
        plans.append(_id_plan(table, "item", nullable=True))
    return plans


def normalise_events(
    raw: ir.Table,
    con: Any,
    source: str,
    locate: Callable[[], RowLocator],
    timestamp_format: str | None = None,
    rewrites: Mapping[str, bool] | None = None,
    keep: Sequence[str] = (),
) -> ir.Table:
    """The contract's checks on raw (mapped) events, and the events normalised.

    Args:
        raw: The events with contract column names (after ``column_map``, constants
            and ``value_map``) and the reader's :data:`SOURCE_COLUMNS`.
        con: The Ibis connection running the queries.
        source: Where the events came from, named in error messages.
        locate: Gives the row numbering of the source (asked only on problems).
        timestamp_format: ``strptime`` format of text timestamps; ``None``: ISO 8601.
        rewrites: The result of :func:`check_events` for these very rows, when known
            (the same files, unchanged since): the check is not run again.
        keep: Reader's columns (:data:`SOURCE_COLUMNS`) to keep, after the others.

    Returns:
        The events: contract columns normalised (text ids stripped, ``event_time``
        UTC, ``value`` float64), the source's other columns as they are, without the
        reader's columns.

    Raises:
        ContractError: Missing columns, empty ids or types, bad timestamps or values:
            one sentence per problem with up to five rows.
    """
    if rewrites is None:
        rewrites = check_events(raw, con, source, locate, timestamp_format)
    plans = _plans(raw, timestamp_format)
    rewritten = {plan.name: plan.value for plan in plans if rewrites.get(plan.name, True)}
    table = raw.mutate(**rewritten) if rewritten else raw
    others = [c for c in raw.columns if c not in EVENT_COLUMNS and c not in SOURCE_COLUMNS]
    contract = [c for c in EVENT_COLUMNS if c in raw.columns]
    return table.select(*contract, *others, *keep)


def check_events(
    raw: ir.Table,
    con: Any,
    source: str,
    locate: Callable[[], RowLocator],
    timestamp_format: str | None = None,
) -> dict[str, bool]:
    """Run the contract's checks (one aggregate query) and say which columns need normalising.

    Returns:
        Contract column -> whether it must be rewritten (untrimmed or blank text,
        numbers as ids, timestamps to UTC); a column that is already in contract form
        is read as it is.

    Raises:
        ContractError: As :func:`normalise_events`.
    """
    check_required(list(raw.columns), source)
    plans = _plans(raw, timestamp_format)
    metrics: dict[str, ir.Scalar] = {}
    for plan in plans:
        if plan.bad is not None:
            metrics[f"bad_{plan.name}"] = plan.bad.sum()
        if not isinstance(plan.rewrite, bool):
            metrics[f"rewrite_{plan.name}"] = plan.rewrite.any()
    counts = con.execute(raw.aggregate(**metrics)).iloc[0] if metrics else pd.Series()
    problems = []
    for plan in plans:
        bad = int(counts.get(f"bad_{plan.name}", 0) or 0)
        if plan.bad is not None and bad:
            problems.append(_sentence(raw, con, plan, bad, locate))
    if problems:
        raise ContractError("events", source, problems)
    return {
        plan.name: (
            plan.rewrite if isinstance(plan.rewrite, bool) else bool(counts[f"rewrite_{plan.name}"])
        )
        for plan in plans
    }


def _sentence(
    raw: ir.Table, con: Any, plan: _Column, count: int, locate: Callable[[], RowLocator]
) -> str:
    """``column 'x' has N values that are empty, e.g. rows 1, 5: null, ''`` (pandas' wording)."""
    assert plan.bad is not None
    shown = con.execute(
        raw.filter(plan.bad)
        .select(FILE_COLUMN, FILE_ROW_COLUMN, original=raw[plan.name])
        .order_by([FILE_COLUMN, FILE_ROW_COLUMN])
        .limit(MAX_SAMPLE_ROWS)
    )
    locator = locate()
    rows = ", ".join(
        str(locator.row(f, r))
        for f, r in zip(shown[FILE_COLUMN], shown[FILE_ROW_COLUMN], strict=True)
    )
    values = ", ".join(show_value(v) for v in shown["original"])
    singular, plural = plan.what
    noun = "row" if len(shown) == 1 else "rows"
    if plan.advice:
        return (
            f"column '{plan.name}' has {count} value(s) that {plural}, e.g. {noun} {rows}: "
            f"{values}; {plan.advice}"
        )
    return (
        f"column '{plan.name}' has {count} "
        f"{'value that ' + singular if count == 1 else 'values that ' + plural}, "
        f"e.g. {noun} {rows}: {values}"
    )


def _row_hashes(table: ir.Table) -> ir.Table:
    """The table with ``_row_hash``: one hash of the whole row."""
    row = ibis.struct({name: table[name] for name in table.columns})
    return table.mutate(_row_hash=row.hash())


def _repeated(table: ir.Table, con: Any) -> ir.Table | None:
    """Groups of rows equal in every column that occur more than once, with ``copies``.

    Every row is hashed by the engine and the hashes (8 bytes a row) are sorted with
    numpy: grouping tens of millions of distinct rows in the engine costs ten times
    more. Only rows whose hash repeats are then compared column by column.

    Returns:
        The repeated groups, or ``None`` when no hash repeats (no duplicates).
    """
    hashed = _row_hashes(table)
    keys = con.to_pyarrow(hashed.select("_row_hash")).column(0).to_numpy()
    ordered = np.sort(keys)
    repeats = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if repeats.size == 0:
        return None
    candidates = ibis.memtable(pd.DataFrame({"_row_hash": repeats}))
    rows = hashed.semi_join(candidates, "_row_hash").drop("_row_hash")
    groups = rows.group_by(list(table.columns)).aggregate(copies=rows.count())
    return groups.filter(groups.copies > 1)


def rows_that_could_repeat(by_file: ir.Table, new_files: Sequence[str], con: Any) -> ir.Table:
    """The rows of ``new_files`` and the other files' rows of the same time span.

    When the other files' rows are known to hold no duplicate among themselves (their
    checks passed before), the exact duplicates of all the rows are the duplicates
    among these: an exact copy of a new row has its ``event_time``, so it lies in the
    new rows' span. The engine skips the row groups outside the span by their Parquet
    statistics (files a feed writes day by day: all of the older ones).

    Args:
        by_file: The normalised events with their source file in :data:`FILE_COLUMN`.
        new_files: The files not checked before, as the engine names them.
        con: The engine connection.
    """
    is_new = by_file[FILE_COLUMN].isin(list(new_files))
    new = by_file.filter(is_new)
    span = con.execute(new.aggregate(first=new.event_time.min(), last=new.event_time.max()))
    first, last = span["first"].iloc[0], span["last"].iloc[0]
    if pd.isna(first):
        return new
    # Two scans, not one filter "new file or in the span": an OR with the file name
    # keeps the engine from skipping row groups by their statistics (DuckDB read all
    # 44M events of a daily feed for it: 0.5 s against 0.07 s).
    older = by_file.filter(~is_new & by_file.event_time.between(first, last))
    return new.union(older, distinct=False)


def duplicate_count(table: ir.Table, con: Any) -> int:
    """Rows equal in every column to another row, beyond the first of each (``duplicated``)."""
    repeated = _repeated(table, con)
    if repeated is None:
        return 0
    total = con.execute(repeated.aggregate(extra=(repeated.copies - 1).sum()))["extra"].iloc[0]
    return 0 if total is None or pd.isna(total) else int(total)


def duplicate_sample(table: ir.Table, con: Any, rows: int) -> list[dict[str, str]]:
    """A few repeated events (their contract columns, as text), for the warning."""
    repeated = _repeated(table, con)
    if repeated is None:
        return []
    contract = [c for c in EVENT_COLUMNS if c in table.columns]
    frame = con.execute(repeated.select(*contract).order_by(contract[:3]).limit(rows))
    return frame.astype("str").to_dict("records")
