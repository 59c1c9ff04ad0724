"""An export that is only events: constant contract columns and entities derived from events."""

from __future__ import annotations

import pandas as pd
import pytest

from features.column_checks import ContractError
from features.mapping import InputMapping, add_constants, apply_mapping, entities_from_events
from features.schemas import validate_entities, validate_events


def purchase_log() -> pd.DataFrame:
    """A CDNOW-like log: customer, day, amount; no event type, no entities file."""
    return pd.DataFrame(
        {
            "customer_id": ["00002", "00001", "00002", "00001"],
            "date": pd.to_datetime(["1997-01-12", "1997-01-01", "1997-01-03", "1997-02-20"]),
            "dollar_value": [12.0, 11.77, 20.5, 0.0],
        }
    )


PURCHASES = InputMapping(
    columns={"customer_id": ["entity_id", "crm_id"], "date": "event_time", "dollar_value": "value"},
    constants={"event_type": "purchase"},
)


def test_a_constant_fills_the_column_the_export_lacks():
    events = validate_events(apply_mapping(purchase_log(), PURCHASES, "events", "log"), "log")
    assert (events["event_type"] == "purchase").all()
    assert events["value"].tolist() == [12.0, 11.77, 20.5, 0.0]


def test_a_constant_never_hides_a_column_the_export_has():
    with pytest.raises(ContractError, match="sources.constant sets column 'entity_id'"):
        add_constants(pd.DataFrame({"entity_id": ["a"]}), {"entity_id": "x"}, "events", "log")


def test_entities_are_one_per_id_created_at_the_first_event_with_their_crm_id():
    events = validate_events(apply_mapping(purchase_log(), PURCHASES, "events", "log"), "log")
    entities = validate_entities(entities_from_events(events), "log")
    assert entities["entity_id"].tolist() == ["00001", "00002"]
    assert entities["crm_id"].tolist() == ["00001", "00002"]
    assert entities["created_at"].tolist() == [
        pd.Timestamp("1997-01-01", tz="UTC"),
        pd.Timestamp("1997-01-03", tz="UTC"),
    ]
    assert entities["consent"].all()


def test_entities_without_a_crm_id_in_the_events_have_none():
    events = pd.DataFrame(
        {"entity_id": ["b", "a"], "event_time": pd.to_datetime(["2025-01-02", "2025-01-01"])}
    )
    assert list(entities_from_events(events).columns) == ["entity_id", "created_at"]
