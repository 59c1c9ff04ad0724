"""Reading a snapshot export (``sources.snapshot``) into the run's three inputs.

The reading is :func:`pipelines.sources.read_snapshot`; the meaning is
:func:`features.snapshot.snapshot_inputs`; the data contract is
:data:`features.schemas.VALIDATORS`, as for any other input.
"""

from __future__ import annotations

import logging

import pandas as pd

from features.schemas import VALIDATORS
from features.snapshot import SnapshotInputs, SnapshotSpec, snapshot_inputs
from pipelines.settings_sections import SnapshotSettings

log = logging.getLogger(__name__)


def snapshot_spec(snapshot: SnapshotSettings) -> SnapshotSpec:
    """The core's reading of the ``sources.snapshot`` settings."""
    return SnapshotSpec(
        source=snapshot.path,
        taken_at=pd.Timestamp(snapshot.taken_at, tz="UTC"),
        outcome_column=snapshot.outcome_column,
        positive_values=tuple(snapshot.positive_values),
        outcome=snapshot.outcome,
        id_column=snapshot.id_column,
        drop_columns=tuple(snapshot.drop_columns),
        missing_values=tuple(snapshot.missing_values),
        rows_in_time_order=snapshot.rows_in_time_order,
    )


def snapshot_tables(snapshot: SnapshotSettings, frame: pd.DataFrame) -> SnapshotInputs:
    """The validated entities, outcomes and (no) events of a snapshot export.

    Args:
        snapshot: The ``sources.snapshot`` settings.
        frame: The export as read (:func:`pipelines.sources.read_snapshot`).

    Raises:
        features.column_checks.ContractError: It breaks the contract; the message
            names the file, the column and sample rows.
    """
    spec = snapshot_spec(snapshot)
    made = snapshot_inputs(frame, spec)
    entities = VALIDATORS["entities"](made.entities, snapshot.path)
    outcomes = VALIDATORS["outcomes"](made.outcomes, snapshot.path)
    events = VALIDATORS["events"](made.events, snapshot.path)
    log.info(
        "Snapshot %s taken %s: %d entities, %d with outcome %s; training cutoff %s.",
        snapshot.path, snapshot.taken_at, len(entities), len(outcomes), spec.outcome,
        made.cutoff.date(),
    )  # fmt: skip
    return SnapshotInputs(entities, outcomes, events, made.cutoff, made.row_order)
