"""One row per entity without event dates (a CRM export), as the pipeline's inputs.

Many real exports are a snapshot: one row per lead or call with its attributes and an
outcome column (``Converted``, ``y``), and no dated events. :func:`snapshot_inputs`
turns such a table into the three contract tables, so that everything downstream
(features, training, scoring, reasons, CRM files, board) runs unchanged:

* entities: one per row, every column but the id, the outcome and the dropped ones
  is a fit attribute; created two days before the snapshot date unless the export
  maps a ``created_at`` column;
* outcomes: the rows whose outcome column holds a positive value, dated half a day
  before the snapshot date, so a run dated on it sees them as known;
* events: none.

The training cutoff is the day before the snapshot date (:func:`training_cutoff`):
features as of then are the attributes, and the label window ``(cutoff, cutoff +
horizon]`` holds exactly the known outcomes. With ``rows_in_time_order``, the file's
row order is the time order and is kept per entity, so evaluation can validate on
later rows (:func:`models.splits.row_order_split`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from features.column_checks import MAX_SAMPLE_ROWS, ContractError

#: How long before the snapshot date the rows' entities were created.
CREATED_BEFORE = pd.Timedelta(days=2)
#: How long before the snapshot date the known outcomes are dated.
OUTCOME_BEFORE = pd.Timedelta(hours=12)


@dataclass(frozen=True)
class SnapshotSpec:
    """How a snapshot export reads.

    Attributes:
        source: Where the table came from, named in error messages.
        taken_at: The day the export was taken (midnight UTC).
        outcome_column: The user's column saying whether the entity reached the outcome.
        outcome: ``converted`` (the rows are leads) or ``churned`` (customers).
        positive_values: Values of ``outcome_column`` meaning yes (compared as text,
            case-insensitively).
        id_column: The user's id column (also the CRM id); ``None``: row numbers.
        drop_columns: Columns never used (known only after the outcome, free text).
        missing_values: Values meaning "not answered" (a form's ``Select``).
        rows_in_time_order: The file's rows are in time order.
    """

    source: str
    taken_at: pd.Timestamp
    outcome_column: str
    positive_values: tuple[str, ...]
    outcome: str = "converted"
    id_column: str | None = None
    drop_columns: tuple[str, ...] = ()
    missing_values: tuple[str, ...] = ()
    rows_in_time_order: bool = False


@dataclass(frozen=True)
class SnapshotInputs:
    """The contract tables made from a snapshot, and its row order.

    Attributes:
        entities: One per row (``entity_id``, ``crm_id``, ``created_at``, ``kind``,
            fit attributes).
        outcomes: One per positive row.
        events: Empty, with the contract's columns.
        cutoff: The training cutoff (the day before the snapshot date).
        row_order: Position of each entity in the file (index ``entity_id``) when the
            rows are in time order, else ``None``.
    """

    entities: pd.DataFrame
    outcomes: pd.DataFrame
    events: pd.DataFrame
    cutoff: pd.Timestamp
    row_order: pd.Series | None


def training_cutoff(taken_at: pd.Timestamp) -> pd.Timestamp:
    """The one training cutoff of a snapshot taken on ``taken_at``."""
    return taken_at - pd.Timedelta(days=1)


def _missing(frame: pd.DataFrame, names: Sequence[str], setting: str) -> list[str]:
    present = ", ".join(repr(str(c)) for c in frame.columns[:40])
    return [
        f"it has no column {name!r} ({setting}); the columns are {present}"
        for name in names
        if name not in frame.columns
    ]


def _ids(frame: pd.DataFrame, spec: SnapshotSpec) -> pd.Series:
    if spec.id_column is None:
        width = len(str(len(frame)))
        return pd.Series([f"row-{i:0{width}d}" for i in range(1, len(frame) + 1)], dtype="str")
    ids = frame[spec.id_column].astype("string").str.strip()
    problems = []
    blank = ids.isna() | (ids == "")
    if blank.any():
        rows = ", ".join(str(i + 1) for i in blank.to_numpy().nonzero()[0][:MAX_SAMPLE_ROWS])
        problems.append(f"{int(blank.sum())} rows have no {spec.id_column!r} (rows {rows})")
    repeated = ids.duplicated(keep=False) & ~blank
    if repeated.any():
        shown = ", ".join(repr(v) for v in ids[repeated].unique()[:MAX_SAMPLE_ROWS])
        problems.append(
            f"{int(ids[repeated].nunique())} values of {spec.id_column!r} occur on more than "
            f"one row ({shown}); a snapshot has one row per entity, so set "
            "sources.snapshot.id_column to a unique column, or null to number the rows"
        )
    if problems:
        raise ContractError("snapshot", spec.source, problems)
    return ids.astype("str").reset_index(drop=True)


def snapshot_inputs(frame: pd.DataFrame, spec: SnapshotSpec) -> SnapshotInputs:
    """The entities, outcomes and (no) events of a snapshot export.

    Args:
        frame: The export as read, the user's column names.
        spec: How it reads.

    Returns:
        The contract tables (not yet validated) and the training cutoff.

    Raises:
        ContractError: A named column is missing, an id is blank or repeated, or the
            outcome column is empty.
    """
    problems = _missing(frame, [spec.outcome_column], "sources.snapshot.outcome_column")
    if spec.id_column is not None:
        problems += _missing(frame, [spec.id_column], "sources.snapshot.id_column")
    problems += _missing(frame, spec.drop_columns, "sources.snapshot.drop_columns")
    if problems:
        raise ContractError("snapshot", spec.source, problems)
    frame = frame.reset_index(drop=True)
    ids = _ids(frame, spec)
    outcome_text = frame[spec.outcome_column].astype("string").str.strip().str.lower()
    empty = outcome_text.isna() | (outcome_text == "")
    if empty.any():
        rows = ", ".join(str(i + 1) for i in empty.to_numpy().nonzero()[0][:MAX_SAMPLE_ROWS])
        raise ContractError(
            "snapshot",
            spec.source,
            [f"{int(empty.sum())} rows have no value in {spec.outcome_column!r} (rows {rows}); "
             "every row of a snapshot needs its outcome"],
        )  # fmt: skip
    positive = outcome_text.isin([v.lower() for v in spec.positive_values]).to_numpy(bool)

    used = [spec.outcome_column, *spec.drop_columns]
    if spec.id_column is not None:
        used.append(spec.id_column)
    attributes = frame.drop(columns=used)
    if spec.missing_values:
        attributes = attributes.mask(attributes.isin(list(spec.missing_values)))
    kind = "lead" if spec.outcome == "converted" else "customer"
    entities = attributes.assign(entity_id=ids, crm_id=ids, kind=kind)
    if "created_at" not in entities.columns:
        entities["created_at"] = spec.taken_at - CREATED_BEFORE
    outcomes = pd.DataFrame(
        {
            "entity_id": ids[positive].to_numpy(),
            "outcome": spec.outcome,
            "occurred_at": spec.taken_at - OUTCOME_BEFORE,
        }
    )
    events = pd.DataFrame(
        {
            "entity_id": pd.Series(dtype="str"),
            "event_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "event_type": pd.Series(dtype="str"),
        }
    )
    order = pd.Series(range(len(ids)), index=ids.to_numpy()) if spec.rows_in_time_order else None
    return SnapshotInputs(entities, outcomes, events, training_cutoff(spec.taken_at), order)
