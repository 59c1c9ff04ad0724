"""The mapping from a user's export to the contract: columns, values, text timestamps."""

from __future__ import annotations

import pandas as pd
import pytest

from features.column_checks import ContractError
from features.mapping import (
    InputMapping,
    apply_column_map,
    apply_mapping,
    apply_value_map,
    parse_timestamps,
)
from features.schemas import validate_entities, validate_events, validate_outcomes
from features.timeutil import UTC_TIMESTAMP


def raw_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "contact_id": ["007", "007", "012"],
            "timestamp": ["03/04/2025 10:00", "12/31/2025 23:59", "01/02/2025 08:30"],
            "activity": ["Email Opened", "Podcast", " Email Opened "],
        }
    )


EVENTS = InputMapping(
    columns={"contact_id": "entity_id", "timestamp": "event_time", "activity": "event_type"},
    values={"event_type": {"Email Opened": "email_opened"}},
    timestamp_format="%m/%d/%Y %H:%M",
)


def test_one_column_feeds_two_contract_columns_and_the_old_shape_still_works():
    raw = pd.DataFrame({"contact_id": ["007"], "created": ["2025-01-01"], "company": ["Acme"]})

    both = apply_column_map(
        raw, {"contact_id": ["entity_id", "crm_id"], "created": "created_at"}, "entities", "c.csv"
    )

    assert both.to_dict("records") == [
        {"company": "Acme", "entity_id": "007", "crm_id": "007", "created_at": "2025-01-01"}
    ]
    assert validate_entities(both, "c.csv")["crm_id"].tolist() == ["007"]
    single = apply_column_map(raw, {"contact_id": "entity_id"}, "entities", "c.csv")
    assert list(single.columns) == ["created", "company", "entity_id"]


def test_a_double_use_column_that_collides_is_named():
    raw = pd.DataFrame({"contact_id": ["1"], "crm_id": ["x"]})
    with pytest.raises(ContractError, match="renames 'contact_id' to 'crm_id', but a column"):
        apply_column_map(raw, {"contact_id": ["entity_id", "crm_id"]}, "entities", "c.csv")


def test_values_are_renamed_before_validation_and_unmapped_ones_kept():
    events = validate_events(apply_mapping(raw_events(), EVENTS, "events", "a.csv"), "a.csv")

    assert events["event_type"].tolist() == ["email_opened", "Podcast", "email_opened"]
    assert events["entity_id"].tolist() == ["007", "007", "012"]


def test_us_dates_are_read_exactly_as_utc():
    events = apply_mapping(raw_events(), EVENTS, "events", "a.csv")

    assert events["event_time"].dtype == UTC_TIMESTAMP
    assert events["event_time"].tolist() == [
        pd.Timestamp("2025-03-04 10:00", tz="UTC"),  # 4 March, not 3 April
        pd.Timestamp("2025-12-31 23:59", tz="UTC"),
        pd.Timestamp("2025-01-02 08:30", tz="UTC"),
    ]


def test_a_timestamp_that_does_not_match_names_file_column_format_and_rows():
    raw = raw_events()
    raw.loc[1, "timestamp"] = "2025-12-31 23:59"  # ISO, not the configured format
    raw.loc[2, "timestamp"] = "31/12/2025 10:00"  # day first

    with pytest.raises(ContractError) as raised:
        apply_mapping(raw, EVENTS, "events", "exports/activities.csv")

    message = str(raised.value)
    assert message.startswith("events (exports/activities.csv): column 'event_time' has 2 value")
    assert "'%m/%d/%Y %H:%M'" in message and "rows 2, 3: '2025-12-31 23:59'" in message


def test_timestamps_already_typed_and_blank_values_are_left_to_the_contract():
    typed = pd.DataFrame({"event_time": pd.to_datetime(["2025-01-01"]), "x": ["y"]})
    assert parse_timestamps(typed, ("event_time",), "%m/%d/%Y", "events", "e").equals(typed)
    blank = parse_timestamps(
        pd.DataFrame({"event_time": ["", None]}), ("event_time",), "%m/%d/%Y", "events", "e"
    )
    assert blank["event_time"].isna().all()


def test_a_value_mapped_to_null_drops_its_rows():
    deals = pd.DataFrame(
        {"entity_id": ["1", "2", "3"], "outcome": ["Closed Won", "Closed Lost", "converted"]}
    )

    kept = apply_value_map(
        deals, {"outcome": {"Closed Won": "converted", "Closed Lost": None}}, "outcomes", "d.csv"
    )

    assert kept.to_dict("list") == {"entity_id": ["1", "3"], "outcome": ["converted"] * 2}


def test_mapping_leaves_the_export_as_it_was():
    raw = raw_events()
    before = raw.copy()

    mapped = apply_mapping(raw, EVENTS, "events", "a.csv")
    mapped.loc[0, "entity_id"] = "changed"

    pd.testing.assert_frame_equal(raw, before)


def test_a_value_map_on_a_missing_column_is_named():
    with pytest.raises(ContractError, match="value_map names column 'stage'"):
        apply_value_map(raw_events(), {"stage": {"a": "b"}}, "events", "a.csv")


def test_an_unknown_outcome_names_the_valid_ones_and_how_to_map_it():
    deals = pd.DataFrame(
        {
            "entity_id": ["1", "2", "3"],
            "outcome": ["Closed Won", "Closed Won", "churned"],
            "occurred_at": ["2025-01-01"] * 3,
        }
    )

    with pytest.raises(ContractError) as raised:
        apply_mapping(deals, None, "outcomes", "deals.csv")

    message = str(raised.value)
    assert "'Closed Won' (2 rows)" in message
    assert "'converted' and 'churned'" in message
    assert 'value_map: {outcomes: {outcome: {"Closed Won": converted}}}' in message
    mapped = InputMapping(values={"outcome": {"Closed Won": "converted"}})
    outcomes = validate_outcomes(apply_mapping(deals, mapped, "outcomes", "d.csv"), "d.csv")
    assert outcomes["outcome"].tolist() == ["converted", "converted", "churned"]
