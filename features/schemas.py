"""The data contract at the input boundary: the three tables' schemas and validators.

``validate_events``, ``validate_entities`` and ``validate_outcomes`` take a frame
whose columns already carry the contract names (see ``docs/ARCHITECTURE.md``),
normalise it (timestamps to UTC with naive values read as UTC, ids to strings,
``consent`` to bool defaulting to true, ``value`` to float64) and raise
:class:`features.column_checks.ContractError` with sentences a person can act on.
Extra columns are kept. What a run read and set aside is :mod:`features.input_report`.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from features.column_checks import ColumnChecker
from features.timeutil import UTC_TIMESTAMP

#: ``ended`` and ``disqualified`` end an entity without converting or churning
#: (a contract that completes, a lead ruled out): see :mod:`features.population`.
OUTCOME_VALUES: tuple[str, ...] = ("converted", "churned", "ended", "disqualified")
KIND_VALUES: tuple[str, ...] = ("lead", "customer")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("entity_id", "event_time", "event_type"),
    "entities": ("entity_id", "created_at"),
    "outcomes": ("entity_id", "outcome", "occurred_at"),
}
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
        "ended_at": pa.Column(UTC_TIMESTAMP, nullable=True, required=False),
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


def _checker(table: str, source: str, df: pd.DataFrame) -> ColumnChecker:
    return ColumnChecker(table, source, df, REQUIRED_COLUMNS[table], SCHEMAS[table])


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
    checker = _checker("events", source, df)
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
            consent values or kinds. An optional ``ended_at`` (empty: not ended)
            takes the entity out of the populations from that date.
    """
    checker = _checker("entities", source, df)
    checker.ids("entity_id")
    checker.unique("entity_id")
    checker.timestamps("created_at")
    checker.ids("crm_id", nullable=True)
    checker.consent("consent")
    checker.choices("kind", KIND_VALUES, nullable=True)
    _end_dates(checker)
    return checker.result()


def _end_dates(checker: ColumnChecker) -> None:
    """The optional ``ended_at`` as UTC timestamps; empty is "not ended", text a problem."""
    if "ended_at" not in checker.out.columns:
        return
    raw = checker.out["ended_at"]
    blank = raw.isna() | raw.astype("str").str.strip().eq("")
    parsed = pd.to_datetime(raw.where(~blank), utc=True, errors="coerce", format="ISO8601")
    bad = ~blank & parsed.isna()
    if bad.any():
        sample = ", ".join(map(str, raw[bad].head(3).tolist()))
        checker.problems.append(
            f"column 'ended_at' has {int(bad.sum())} values that are not timestamps, "
            f"e.g. {sample} (leave it empty for entities that have not ended)"
        )
    checker.out["ended_at"] = parsed.astype(UTC_TIMESTAMP)


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
    checker = _checker("outcomes", source, df)
    checker.ids("entity_id")
    checker.choices("outcome", OUTCOME_VALUES, nullable=False)
    checker.timestamps("occurred_at")
    return checker.result()


VALIDATORS = {
    "events": validate_events,
    "entities": validate_entities,
    "outcomes": validate_outcomes,
}
