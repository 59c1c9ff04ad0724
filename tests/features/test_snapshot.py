"""A snapshot export (one row per entity, an outcome column, no dates) as contract tables."""

from __future__ import annotations

import pandas as pd
import pytest

from features.column_checks import ContractError
from features.snapshot import SnapshotSpec, snapshot_inputs, training_cutoff

TAKEN = pd.Timestamp("2024-03-01", tz="UTC")


def export() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Prospect ID": ["a1", "b2", "c3", "d4"],
            "Converted": [1, 0, 1, 0],
            "Lead Source": ["Google", "Select", "Olark", "Google"],
            "Visits": [3.0, 0.0, 7.0, None],
            "Tags": ["Closed", "Ringing", "Closed", "Ringing"],
        }
    )


def spec(**changes) -> SnapshotSpec:
    given = {
        "source": "leads.csv",
        "taken_at": TAKEN,
        "outcome_column": "Converted",
        "positive_values": ("1", "yes"),
        "id_column": "Prospect ID",
        "drop_columns": ("Tags",),
        "missing_values": ("Select",),
    }
    return SnapshotSpec(**(given | changes))


def test_rows_become_entities_and_positive_rows_outcomes_before_the_snapshot_date():
    made = snapshot_inputs(export(), spec())
    entities = made.entities.set_index("entity_id")
    assert list(entities.index) == ["a1", "b2", "c3", "d4"]
    assert (entities["crm_id"] == entities.index).all() and (entities["kind"] == "lead").all()
    # The outcome, the id and the dropped column are not attributes; "Select" is missing.
    assert {"Converted", "Tags", "Prospect ID"}.isdisjoint(entities.columns)
    assert pd.isna(entities.loc["b2", "Lead Source"])
    assert entities.loc["a1", "Lead Source"] == "Google"
    assert list(made.outcomes["entity_id"]) == ["a1", "c3"]
    assert (made.outcomes["outcome"] == "converted").all()
    # Known before the run date, after the training cutoff, after every entity began.
    cutoff = training_cutoff(TAKEN)
    assert made.cutoff == cutoff
    assert (made.outcomes["occurred_at"] > cutoff).all()
    assert (made.outcomes["occurred_at"] < TAKEN).all()
    assert (entities["created_at"] < cutoff).all()
    assert made.events.empty and made.row_order is None


def test_without_an_id_column_rows_are_numbered_and_the_order_kept():
    made = snapshot_inputs(
        export().drop(columns="Prospect ID"),
        spec(id_column=None, rows_in_time_order=True),
    )
    assert list(made.entities["entity_id"]) == ["row-1", "row-2", "row-3", "row-4"]
    assert made.row_order.to_dict() == {"row-1": 0, "row-2": 1, "row-3": 2, "row-4": 3}


def test_text_outcomes_are_read_ignoring_case_and_churn_makes_customers():
    frame = export().assign(Converted=["YES", "no", "No", "yes"])
    made = snapshot_inputs(frame, spec(outcome="churned"))
    assert list(made.outcomes["entity_id"]) == ["a1", "d4"]
    assert (made.outcomes["outcome"] == "churned").all()
    assert (made.entities["kind"] == "customer").all()


def test_missing_columns_are_named_with_the_setting_and_the_columns_present():
    with pytest.raises(ContractError) as caught:
        snapshot_inputs(export(), spec(outcome_column="converted", drop_columns=("Tag",)))
    message = str(caught.value)
    assert message.startswith("snapshot (leads.csv): it has no column 'converted'")
    assert "sources.snapshot.outcome_column" in message and "'Converted'" in message
    assert "no column 'Tag' (sources.snapshot.drop_columns)" in message


def test_repeated_or_blank_ids_and_blank_outcomes_are_sentences_with_rows():
    repeated = export().assign(**{"Prospect ID": ["a1", "a1", "c3", ""]})
    with pytest.raises(ContractError) as caught:
        snapshot_inputs(repeated, spec())
    assert "1 rows have no 'Prospect ID' (rows 4)" in str(caught.value)
    assert "occur on more than one row ('a1')" in str(caught.value)
    blank = export().assign(Converted=[1, None, 0, None])
    with pytest.raises(ContractError, match=r"2 rows have no value in 'Converted' \(rows 2, 4\)"):
        snapshot_inputs(blank, spec())
