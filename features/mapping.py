"""From a user's export to the data contract: column names, values and text timestamps.

An :class:`InputMapping` says how one input (``events``, ``entities``, ``outcomes``)
is written in the user's export: which column feeds which contract column (one
column may feed several, an id used as both ``entity_id`` and ``crm_id``), which
values stand for which contract values (``"Email Opened"`` -> ``email_opened``;
``None`` drops the rows), which contract columns the export lacks and hold one
value for every row (a purchase log without an event type: ``event_type:
purchase``) and how text timestamps are written (a ``strptime`` format such as
``"%m/%d/%Y %H:%M"``). :func:`apply_mapping` applies it before the contract's
validators run; :func:`entities_from_events` gives the entities of an export that
has only events. Every step is a whole-column operation (renames, hash
lookups, one vectorised parse), so the same plan can be compiled to Ibis when the
input layer moves into the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.column_checks import MAX_SAMPLE_ROWS, ContractError
from features.schemas import OUTCOME_VALUES
from features.timeutil import UTC_TIMESTAMP

log = logging.getLogger(__name__)

#: User column -> contract column, or several contract columns fed by the one column.
ColumnMap = Mapping[str, str | Sequence[str]]
#: Contract column -> {user value: contract value, or ``None`` to drop the rows}.
ValueMap = Mapping[str, Mapping[str, str | None]]
#: Contract column the export lacks -> the one value it holds on every row.
Constants = Mapping[str, str]

#: The text timestamp columns of each input, read with the input's timestamp format.
TIMESTAMP_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("event_time",),
    "entities": ("created_at",),
    "outcomes": ("occurred_at",),
}


@dataclass(frozen=True)
class InputMapping:
    """How one input is written in the user's export.

    Attributes:
        columns: User column -> contract column(s).
        values: Contract column -> user value -> contract value (``None`` drops the row).
        timestamp_format: ``strptime`` format of text timestamps; ``None``: ISO 8601.
        constants: Contract column the export lacks -> its value on every row.
    """

    columns: ColumnMap = field(default_factory=dict)
    values: ValueMap = field(default_factory=dict)
    timestamp_format: str | None = None
    constants: Constants = field(default_factory=dict)


def column_pairs(column_map: ColumnMap | None) -> list[tuple[str, str]]:
    """``(user column, contract column)`` pairs, one per contract column fed."""
    pairs = []
    for user_name, contract in (column_map or {}).items():
        names = [contract] if isinstance(contract, str) else list(contract)
        pairs += [(user_name, name) for name in names]
    return pairs


def apply_mapping(
    df: pd.DataFrame, mapping: InputMapping | None, table: str, source: str
) -> pd.DataFrame:
    """Columns renamed, constant columns added, text timestamps parsed and values mapped.

    In that order: timestamps are parsed before rows are dropped by the value map, so
    the rows an error names are rows of the file.

    Raises:
        ContractError: A mapped column is missing or collides, a constant names a
            column the input has, a timestamp does not match the format, or an
            outcome is not a contract outcome.
    """
    mapping = mapping or InputMapping()
    df = apply_column_map(df, mapping.columns, table, source)
    df = add_constants(df, mapping.constants, table, source)
    if mapping.timestamp_format:
        df = parse_timestamps(df, TIMESTAMP_COLUMNS.get(table, ()), mapping.timestamp_format,
                              table, source)  # fmt: skip
    df = apply_value_map(df, mapping.values, table, source)
    if table == "outcomes":
        check_outcome_values(df, source)
    return df


def column_feeds(
    columns: Sequence[str], column_map: ColumnMap | None, table: str, source: str
) -> dict[str, str]:
    """Which user column feeds each renamed contract column, checked against ``columns``.

    Returns:
        Contract column -> user column, for the map's columns present in ``columns``.

    Raises:
        ContractError: A mapped column is missing (and the contract name is absent
            too), or a rename would duplicate a column.
    """
    problems = []
    feeds: dict[str, str] = {}
    for user_name, contract_name in column_pairs(column_map):
        if user_name in columns:
            if contract_name in columns and contract_name != user_name:
                problems.append(
                    f"column_map renames '{user_name}' to '{contract_name}', but a column "
                    f"'{contract_name}' already exists; drop one of them or fix the map"
                )
            feeds[contract_name] = user_name
        elif contract_name not in columns:
            existing = ", ".join(repr(str(c)) for c in columns)
            problems.append(
                f"column_map names column '{user_name}' (for '{contract_name}'), "
                f"which does not exist; the columns present are {existing}"
            )
    if problems:
        raise ContractError(table, source, problems)
    return feeds


def apply_column_map(
    df: pd.DataFrame, column_map: ColumnMap | None, table: str, source: str
) -> pd.DataFrame:
    """Rename the user's columns (``column_map`` keys) to the contract's names.

    A key mapped to a list feeds every contract column in it (``{contact_id:
    [entity_id, crm_id]}``). A mapped column that is absent is fine when the frame
    already has the contract name (one map can serve several exports); otherwise
    it is a typo. Returns the input itself when there is nothing to rename.

    Raises:
        ContractError: A mapped column is missing, or a rename would duplicate a
            column; ``table`` and ``source`` are named.
    """
    feeds = column_feeds(list(df.columns), column_map, table, source)
    if not feeds:
        return df
    fed = set(feeds.values())
    kept = {name: df[name] for name in df.columns if name not in fed}
    renamed = {contract: df[user] for contract, user in feeds.items()}
    # No copy of the columns: copy-on-write keeps ``df`` as it is.
    return pd.DataFrame({**kept, **renamed}, index=df.index, copy=False)


def add_constants(
    df: pd.DataFrame, constants: Constants | None, table: str, source: str
) -> pd.DataFrame:
    """Add each contract column the export lacks, holding one value on every row.

    Raises:
        ContractError: The input already has such a column (after ``column_map``), so
            the constant would hide its values.
    """
    if not constants:
        return df
    present = [column for column in constants if column in df.columns]
    if present:
        raise ContractError(table, source, [
            f"sources.constant sets column '{column}', which the input already has; "
            "remove the constant or the column" for column in present
        ])  # fmt: skip
    return df.assign(**{column: str(value) for column, value in constants.items()})


def entities_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """One entity per ``entity_id`` of the events, created at its first event.

    For an export that has only events (a purchase log): the entities table is then
    ``entity_id``, ``created_at`` and, when the events carry one (``column_map``
    ``{customer_id: [entity_id, crm_id]}``), the entity's first ``crm_id``, sorted
    by id; kinds are inferred downstream (:mod:`features.population`). Whole-column
    group-bys, as an engine would run them.

    Args:
        events: Validated events (string ``entity_id``, UTC ``event_time``).
    """
    groups = events.groupby("entity_id", sort=True, observed=True)
    entities = groups["event_time"].min().rename("created_at").rename_axis("entity_id")
    if "crm_id" in events.columns:
        entities = pd.concat([entities, groups["crm_id"].first().astype("string")], axis=1)
    return entities.reset_index()


def apply_value_map(
    df: pd.DataFrame, value_map: ValueMap | None, table: str, source: str
) -> pd.DataFrame:
    """Replace user values by contract values, per contract column.

    Values are matched as stripped text; unmapped values are kept as they are. A
    value mapped to ``None`` drops its rows (lost deals in an outcomes export).

    Raises:
        ContractError: ``value_map`` names a column the input does not have.
    """
    if not value_map:
        return df
    missing = [column for column in value_map if column not in df.columns]
    if missing:
        present = ", ".join(repr(str(c)) for c in df.columns)
        raise ContractError(table, source, [
            f"value_map names column '{column}', which the input does not have after "
            f"column_map; the columns present are {present}" for column in missing
        ])  # fmt: skip
    out = df.copy(deep=False)  # mapped columns are replaced whole
    keep = pd.Series(True, index=df.index)
    for column, renames in value_map.items():
        text = out[column].astype("string").str.strip()
        known = text.isin(list(renames)).fillna(False).to_numpy(bool)
        replaced = text.map(dict(renames))
        keep &= ~(known & replaced.isna().to_numpy(bool))
        out[column] = out[column].mask(known, replaced)
    dropped = int((~keep).sum())
    if dropped:
        log.info("%s (%s): value_map dropped %d rows mapped to null.", table, source, dropped)
        out = out.loc[keep].reset_index(drop=True)
    return out


def parse_timestamps(
    df: pd.DataFrame, columns: Sequence[str], timestamp_format: str, table: str, source: str
) -> pd.DataFrame:
    """Text timestamps read exactly with ``timestamp_format``, as UTC (naive means UTC).

    Columns that are already timestamps (Parquet, SQL) and absent columns are left
    alone; blank values stay missing for the contract to report.

    Raises:
        ContractError: A value does not match the format; the sentence names the
            column, the format and up to five rows (counted from 1, the first data row).
    """
    out = df
    problems = []
    for column in columns:
        if column not in df.columns or not _is_text(df[column]):
            continue
        text = df[column].astype("string").str.strip()
        parsed = pd.to_datetime(text, format=timestamp_format, errors="coerce", utc=True)
        bad = (text.notna() & text.ne("")).fillna(False).to_numpy(bool) & parsed.isna().to_numpy()
        if bad.any():
            problems.append(
                f"column '{column}' has {int(bad.sum())} value(s) that do not match "
                f"sources.timestamp_format {timestamp_format!r}, e.g. {_sample(text, bad)}; "
                "fix the format (Python strftime codes) or the rows"
            )
        out = out.assign(**{column: parsed.astype(UTC_TIMESTAMP)})
    if problems:
        raise ContractError(table, source, problems)
    return out


def check_outcome_values(df: pd.DataFrame, source: str) -> None:
    """Refuse outcomes that are not contract values, saying how to map them.

    Raises:
        ContractError: The unknown values with their row counts, the valid values and
            a ``sources.value_map`` example built from the first unknown value.
    """
    if "outcome" not in df.columns:
        return
    text = df["outcome"].astype("string").str.strip()
    unknown = text[text.notna() & ~text.str.lower().isin(OUTCOME_VALUES)]
    if unknown.empty:
        return
    counts = unknown.value_counts()
    shown = ", ".join(f"{value!r} ({count} rows)" for value, count in counts.head(5).items())
    valid = " and ".join(repr(v) for v in OUTCOME_VALUES)
    example = str(counts.index[0]).replace('"', '\\"')
    raise ContractError("outcomes", source, [
        f"column 'outcome' has values that are not outcomes: {shown}. The valid outcomes are "
        f"{valid}. Map yours in the config, e.g. sources: {{value_map: {{outcomes: "
        f'{{outcome: {{"{example}": converted}}}}}}}}, and map other values (lost deals) '
        "to null to drop their rows"
    ])  # fmt: skip


def _is_text(series: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)


def _sample(text: pd.Series, bad: np.ndarray) -> str:
    positions = np.flatnonzero(bad)[:MAX_SAMPLE_ROWS]
    noun = "row" if len(positions) == 1 else "rows"
    rows = ", ".join(str(p + 1) for p in positions)
    return f"{noun} {rows}: " + ", ".join(repr(str(text.iloc[p])) for p in positions)
