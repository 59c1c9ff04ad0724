"""The data contract at the input boundary: schemas, normalisation and input counts.

``validate_events``, ``validate_entities`` and ``validate_outcomes`` take a frame
whose columns already carry the contract names (see ``docs/ARCHITECTURE.md``),
normalise it (timestamps to UTC with naive values read as UTC, ids to strings,
``consent`` to bool defaulting to true, ``value`` to float64) and raise
:class:`ContractError` with sentences a person can act on. Extra columns are kept.

:class:`InputReport` counts what was read and what the run set aside: exact
duplicate events and events later than the run's "now" are counted here, and the
caller decides what to do with them (:func:`clean_events`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from features.timeutil import UTC_TIMESTAMP, as_utc

log = logging.getLogger(__name__)

OUTCOME_VALUES: tuple[str, ...] = ("converted", "churned")
KIND_VALUES: tuple[str, ...] = ("lead", "customer")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("entity_id", "event_time", "event_type"),
    "entities": ("entity_id", "created_at"),
    "outcomes": ("entity_id", "outcome", "occurred_at"),
}
#: How many offending rows an error message shows.
MAX_SAMPLE_ROWS = 5

_CONSENT_WORDS: dict[str, bool] = {
    "true": True, "t": True, "yes": True, "y": True, "1": True, "1.0": True,
    "false": False, "f": False, "no": False, "n": False, "0": False, "0.0": False,
}  # fmt: skip

EVENTS_SCHEMA = pa.DataFrameSchema(
    {
        "entity_id": pa.Column(str, nullable=False),
        "event_time": pa.Column(UTC_TIMESTAMP, nullable=False),
        "event_type": pa.Column(str, nullable=False),
        "value": pa.Column("float64", nullable=True, required=False),
        "item": pa.Column(str, nullable=True, required=False),
    },
    strict=False,
    name="events",
)
ENTITIES_SCHEMA = pa.DataFrameSchema(
    {
        "entity_id": pa.Column(str, nullable=False, unique=True),
        "created_at": pa.Column(UTC_TIMESTAMP, nullable=False),
        "crm_id": pa.Column(str, nullable=True, required=False),
        "consent": pa.Column(bool, nullable=False),
        "kind": pa.Column(str, pa.Check.isin(KIND_VALUES), nullable=True, required=False),
    },
    strict=False,
    name="entities",
)
OUTCOMES_SCHEMA = pa.DataFrameSchema(
    {
        "entity_id": pa.Column(str, nullable=False),
        "outcome": pa.Column(str, pa.Check.isin(OUTCOME_VALUES), nullable=False),
        "occurred_at": pa.Column(UTC_TIMESTAMP, nullable=False),
    },
    strict=False,
    name="outcomes",
)
SCHEMAS: dict[str, pa.DataFrameSchema] = {
    schema.name: schema for schema in (EVENTS_SCHEMA, ENTITIES_SCHEMA, OUTCOMES_SCHEMA)
}


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


def validate_events(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check and normalise events (string ids and types, UTC times, float ``value``).

    Args:
        df: Events with contract column names; other columns are kept.
        source: Where the frame came from, named in error messages.

    Returns:
        A normalised copy.

    Raises:
        ContractError: Missing columns, empty ids or types, bad timestamps or values.
    """
    checker = _Checker("events", source, df)
    checker.ids("entity_id")
    checker.timestamps("event_time")
    checker.ids("event_type")
    checker.floats("value")
    checker.ids("item", nullable=True)
    return checker.result()


def validate_entities(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check and normalise entities (string ids, UTC ``created_at``, bool ``consent``).

    Args:
        df: Entities with contract column names; other columns (fit attributes)
            are kept. ``consent`` is added as true when absent; empty values are true.
        source: Where the frame came from, named in error messages.

    Returns:
        A normalised copy.

    Raises:
        ContractError: Missing columns, empty or duplicate ids, bad timestamps,
            consent values or kinds.
    """
    checker = _Checker("entities", source, df)
    checker.ids("entity_id")
    checker.unique("entity_id")
    checker.timestamps("created_at")
    checker.ids("crm_id", nullable=True)
    checker.consent("consent")
    checker.choices("kind", KIND_VALUES, nullable=True)
    return checker.result()


def validate_outcomes(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check and normalise outcomes (string ids, lower-case outcomes, UTC times).

    Args:
        df: Outcomes with contract column names; other columns are kept.
        source: Where the frame came from, named in error messages.

    Returns:
        A normalised copy.

    Raises:
        ContractError: Missing columns, empty ids, unknown outcomes or bad timestamps.
    """
    checker = _Checker("outcomes", source, df)
    checker.ids("entity_id")
    checker.choices("outcome", OUTCOME_VALUES, nullable=False)
    checker.timestamps("occurred_at")
    return checker.result()


VALIDATORS = {
    "events": validate_events,
    "entities": validate_entities,
    "outcomes": validate_outcomes,
}


class _Checker:
    """Normalises one column at a time and collects the problems found."""

    def __init__(self, table: str, source: str, df: pd.DataFrame) -> None:
        self.table, self.source = table, source
        self.out = df.copy()
        self.problems: list[str] = []
        missing = [c for c in REQUIRED_COLUMNS[table] if c not in df.columns]
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
        values = ", ".join(_show(original.iloc[p]) for p in positions)
        noun = "row" if len(positions) == 1 else "rows"
        self.problems.append(
            f"column '{column}' has {count} "
            f"{'value that ' + singular if count == 1 else 'values that ' + plural}, "
            f"e.g. {noun} {rows}: {values}"
        )

    def ids(self, column: str, nullable: bool = False) -> None:
        if column not in self.out.columns:
            return
        ids = _as_strings(self.out[column])
        if not nullable:
            self._report(column, ids.isna(), ("is empty", "are empty"))
        self.out[column] = ids

    def unique(self, column: str) -> None:
        if column not in self.out.columns:
            return
        ids = self.out[column]
        duplicated = ids.duplicated(keep=False) & ids.notna()
        self._report(column, duplicated, ("is a duplicate id", "are duplicate ids"))

    def timestamps(self, column: str) -> None:
        parsed = _to_utc(self.out[column])
        self._report(column, parsed.isna(), ("is not a timestamp", "are not timestamps"))
        self.out[column] = parsed

    def floats(self, column: str) -> None:
        if column not in self.out.columns:
            return
        original = self.out[column]
        numbers = pd.to_numeric(original, errors="coerce").astype("float64")
        blank = original.isna() | original.astype("str").str.strip().eq("")
        self._report(column, numbers.isna() & ~blank, ("is not a number", "are not numbers"))
        self.out[column] = numbers

    def consent(self, column: str) -> None:
        if column not in self.out.columns:
            self.out[column] = True
            return
        keys = _as_strings(self.out[column])
        decided = keys.str.lower().map(_CONSENT_WORDS)
        what = ("is not a yes/no value", "are not yes/no values")
        self._report(column, keys.notna() & decided.isna(), what)
        if defaulted := int(keys.isna().sum()):
            where = f"{self.table} ({self.source})"
            log.info("%s: %d empty consent values read as true.", where, defaulted)
        self.out[column] = decided.fillna(True).astype(bool)

    def choices(self, column: str, allowed: tuple[str, ...], nullable: bool) -> None:
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
        if self.problems:
            raise ContractError(self.table, self.source, self.problems)
        try:
            return SCHEMAS[self.table].validate(self.out, lazy=True)
        except SchemaErrors as exc:  # a safety net: the checks above should catch all
            cases = exc.failure_cases.head(MAX_SAMPLE_ROWS)
            problems = [
                f"column '{row.column}' fails check {row.check}, e.g. {_show(row.failure_case)}"
                for row in cases.itertuples()
            ]
            raise ContractError(self.table, self.source, problems) from exc


def _show(value: object) -> str:
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


@dataclass
class InputReport:
    """What a run read and what it set aside.

    Attributes:
        events: Event rows read.
        entities: Entity rows read.
        outcomes: Outcome rows read.
        duplicate_events: Event rows that exactly repeat an earlier row.
        future_events: Events later than ``as_of`` (never used by features).
        events_of_unknown_entities: Events whose ``entity_id`` is not in entities.
        entities_without_consent: Entities with ``consent`` false (the suppression
            list included).
        entities_on_suppression_list: Entities set to no consent by the suppression list.
        entities_forgotten_earlier: Entities erased earlier by ``leadscore forget`` and
            found again in the sources; their rows were dropped before any count above.
        rejected: Rows removed from the inputs, by reason.
        as_of: The run's "now".
    """

    events: int
    entities: int
    outcomes: int
    duplicate_events: int
    future_events: int
    events_of_unknown_entities: int = 0
    entities_without_consent: int = 0
    entities_on_suppression_list: int = 0
    entities_forgotten_earlier: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    as_of: pd.Timestamp | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts (``as_of`` as an ISO 8601 string)."""
        data = asdict(self)
        data["as_of"] = None if self.as_of is None else self.as_of.isoformat()
        return data


def input_report(
    events: pd.DataFrame,
    as_of: pd.Timestamp | str,
    entities: pd.DataFrame | None = None,
    outcomes: pd.DataFrame | None = None,
) -> InputReport:
    """Count the validated inputs of a run (nothing is removed here).

    Args:
        events: Validated events, before duplicates are dropped.
        as_of: The run's "now"; naive values are UTC.
        entities: Validated entities, if loaded.
        outcomes: Validated outcomes, if loaded.

    Returns:
        The counts; ``rejected`` is empty until :func:`clean_events` fills it.
    """
    unknown = 0
    without_consent = 0
    if entities is not None:
        unknown = int((~events["entity_id"].isin(entities["entity_id"])).sum())
        if "consent" in entities.columns:
            without_consent = int((~entities["consent"].astype(bool)).sum())
    return InputReport(
        events=len(events),
        entities=0 if entities is None else len(entities),
        outcomes=0 if outcomes is None else len(outcomes),
        duplicate_events=int(events.duplicated().sum()),
        future_events=int((events["event_time"] > as_utc(as_of)).sum()),
        events_of_unknown_entities=unknown,
        entities_without_consent=without_consent,
        as_of=as_utc(as_of),
    )


def clean_events(
    events: pd.DataFrame,
    as_of: pd.Timestamp | str,
    *,
    drop_duplicates: bool = True,
    drop_future: bool = False,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply the run's policy for duplicate and future events.

    By default exact duplicates are dropped (a re-sent export must not double
    counts) and future events are kept: the point-in-time rule already keeps them
    out of every feature, and a later run may need them.

    Args:
        events: Validated events.
        as_of: The run's "now"; naive values are UTC.
        drop_duplicates: Drop rows equal to an earlier row.
        drop_future: Drop events later than ``as_of``.

    Returns:
        The kept events and the number of rows removed by reason.
    """
    rejected: dict[str, int] = {}
    keep = pd.Series(True, index=events.index)
    if drop_duplicates:
        duplicated = events.duplicated()
        rejected["duplicate_events"] = int(duplicated.sum())
        keep &= ~duplicated
    if drop_future:
        future = events["event_time"] > as_utc(as_of)
        rejected["future_events"] = int((future & keep).sum())
        keep &= ~future
    return events.loc[keep].reset_index(drop=True), rejected
