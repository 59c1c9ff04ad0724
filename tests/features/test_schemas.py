from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.column_checks import MAX_SAMPLE_ROWS, ContractError
from features.input_report import InputReport, clean_events, exact_duplicates, input_report
from features.schemas import validate_entities, validate_events, validate_outcomes
from features.timeutil import UTC_TIMESTAMP

SOURCE = "data/events.csv"


def make_events(n: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-03-01")
    return pd.DataFrame(
        {
            "entity_id": rng.integers(1, 4, n),
            "event_time": [
                (start + pd.Timedelta(hours=int(h))).isoformat() for h in rng.integers(0, 500, n)
            ],
            "event_type": rng.choice(["login", "page_view", "session"], n),
            "value": rng.uniform(0, 30, n).round(1),
            "campaign": rng.choice(["spring", "summer"], n),
        }
    )


def make_entities() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": ["e1", "e2", "e3"],
            "created_at": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-03"]),
            "industry": ["retail", "saas", "saas"],
        }
    )


def make_outcomes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": ["e1", "e2"],
            "outcome": ["converted", "churned"],
            "occurred_at": ["2025-02-01T00:00:00Z", "2025-02-03T12:00:00+01:00"],
        }
    )


def contract_message(excinfo: pytest.ExceptionInfo[ContractError]) -> str:
    return str(excinfo.value)


# --- normalisation -----------------------------------------------------------------


def test_events_are_normalised_and_extra_columns_kept():
    raw = make_events()
    events = validate_events(raw, SOURCE)

    assert events["event_time"].dtype == UTC_TIMESTAMP
    assert events["entity_id"].tolist() == [str(i) for i in raw["entity_id"]]
    assert events["value"].dtype == np.float64
    assert list(events.columns) == list(raw.columns)
    assert events["campaign"].tolist() == raw["campaign"].tolist()
    assert raw["entity_id"].dtype.kind == "i", "the input frame must not be modified"


def test_naive_timestamps_are_read_as_utc_and_offsets_converted():
    raw = pd.DataFrame(
        {
            "entity_id": ["a", "b", "c"],
            "event_time": ["2025-03-01 10:00:00", "2025-03-01T10:00:00+02:00", "2025-03-01"],
            "event_type": ["login"] * 3,
        }
    )
    events = validate_events(raw, SOURCE)
    expected = pd.to_datetime(
        ["2025-03-01 10:00", "2025-03-01 08:00", "2025-03-01 00:00"]
    ).tz_localize("UTC")
    assert (events["event_time"].to_numpy() == expected.to_numpy()).all()

    naive_datetimes = raw.assign(event_time=pd.to_datetime(["2025-03-01 10:00"] * 3))
    parsed = validate_events(naive_datetimes, SOURCE)["event_time"]
    assert (parsed == pd.Timestamp("2025-03-01 10:00", tz="UTC")).all()


@settings(max_examples=30, deadline=None)
@given(
    st.datetimes(
        min_value=pd.Timestamp("2000-01-01").to_pydatetime(),
        max_value=pd.Timestamp("2040-01-01").to_pydatetime(),
    ),
    st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]),
)
def test_aware_timestamps_keep_their_instant(moment, zone):
    local = pd.Timestamp(moment).tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
    raw = pd.DataFrame({"entity_id": ["a"], "event_time": [local], "event_type": ["login"]})
    parsed = validate_events(raw, SOURCE)["event_time"].iloc[0]
    assert parsed == local
    assert str(parsed.tz) == "UTC"


def test_float_ids_from_a_gappy_integer_column_join_as_integers():
    raw = make_entities().assign(entity_id=[1.0, 2.0, 30.0], crm_id=[7.0, np.nan, 9.0])
    entities = validate_entities(raw, "entities.csv")
    assert entities["entity_id"].tolist() == ["1", "2", "30"]
    assert entities["crm_id"].isna().tolist() == [False, True, False]
    assert entities.loc[0, "crm_id"] == "7"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([True, False, True], [True, False, True]),
        ([1, 0, 1], [True, False, True]),
        (["true", "FALSE", "Yes"], [True, False, True]),
        (["no", "1", None], [False, True, True]),
    ],
)
def test_consent_accepts_yes_no_spellings_and_defaults_to_true(values, expected):
    entities = validate_entities(make_entities().assign(consent=values), "entities.csv")
    assert entities["consent"].dtype == bool
    assert entities["consent"].tolist() == expected


def test_consent_column_is_added_as_true_when_absent():
    entities = validate_entities(make_entities(), "entities.csv")
    assert entities["consent"].tolist() == [True, True, True]
    assert entities["industry"].tolist() == ["retail", "saas", "saas"]


def test_outcomes_are_lower_cased_and_in_utc():
    outcomes = validate_outcomes(make_outcomes().assign(outcome=["Converted", " churned "]), "o")
    assert outcomes["outcome"].tolist() == ["converted", "churned"]
    assert outcomes["occurred_at"].iloc[1] == pd.Timestamp("2025-02-03 11:00", tz="UTC")


# --- errors --------------------------------------------------------------------------


def test_missing_columns_are_named_with_the_columns_that_exist():
    raw = make_events().rename(columns={"event_time": "ts"})
    with pytest.raises(ContractError) as excinfo:
        validate_events(raw, SOURCE)
    message = contract_message(excinfo)
    assert message.startswith(f"events ({SOURCE}): missing required column(s) 'event_time'")
    for column in ("'entity_id'", "'ts'", "'event_type'", "'campaign'"):
        assert column in message
    assert "column_map" in message


def test_unparseable_timestamps_name_source_column_rows_and_values():
    raw = make_events(n=12).assign(
        event_time=["2025-03-01"] * 3 + ["yesterday"] + ["2025-03-02"] * 4
        + ["2025-13-01"] + ["2025-03-03"] * 2 + [""]
    )  # fmt: skip
    with pytest.raises(ContractError) as excinfo:
        validate_events(raw, SOURCE)
    assert contract_message(excinfo) == (
        f"events ({SOURCE}): column 'event_time' has 3 values that are not timestamps, "
        "e.g. rows 4, 9, 12: 'yesterday', '2025-13-01', ''"
    )
    assert excinfo.value.table == "events" and excinfo.value.source == SOURCE
    assert isinstance(excinfo.value, ValueError)


def test_epoch_numbers_are_not_taken_for_timestamps():
    raw = make_events(n=2).assign(event_time=[1_700_000_000, 1_700_000_100])
    with pytest.raises(ContractError, match=r"column 'event_time' has 2 values that are not"):
        validate_events(raw, SOURCE)


def test_samples_are_capped_but_the_count_is_complete():
    raw = make_events(n=9).assign(entity_id=[None, "", "  "] * 3)
    with pytest.raises(ContractError) as excinfo:
        validate_events(raw, SOURCE)
    message = contract_message(excinfo)
    assert message.endswith(
        "column 'entity_id' has 9 values that are empty, "
        "e.g. rows 1, 2, 3, 4, 5: null, '', '  ', null, ''"
    )
    assert message.split(": ")[-1].count(", ") + 1 == MAX_SAMPLE_ROWS


def test_all_problems_are_reported_at_once():
    raw = make_events(n=3).assign(event_type=["login", None, "x"], value=["1", "lots", None])
    with pytest.raises(ContractError) as excinfo:
        validate_events(raw, SOURCE)
    problems = excinfo.value.problems
    assert problems == [
        "column 'event_type' has 1 value that is empty, e.g. row 2: null",
        "column 'value' has 1 value that is not a number, e.g. row 2: 'lots'",
    ]


def test_blank_text_values_are_missing_and_only_other_text_is_reported():
    raw = make_events(n=7).assign(value=[" ", "", None, "nan", "3.5", "x", " 2 "])
    with pytest.raises(ContractError) as excinfo:
        validate_events(raw, SOURCE)
    assert excinfo.value.problems == [
        "column 'value' has 2 values that are not numbers, e.g. rows 4, 6: 'nan', 'x'"
    ]
    numbers = validate_events(raw.assign(value=[" ", "", None, "1", "3.5", "4", " 2 "]), SOURCE)
    assert numbers["value"].tolist()[3:] == [1.0, 3.5, 4.0, 2.0]
    assert numbers["value"].iloc[:3].isna().all()


def test_validation_leaves_its_input_as_it_was():
    raw = make_events()
    before = raw.copy()
    validate_events(raw, SOURCE)
    pd.testing.assert_frame_equal(raw, before)


def test_null_and_duplicate_entity_ids_are_reported():
    raw = make_entities().assign(entity_id=["e1", None, "e1"])
    with pytest.raises(ContractError) as excinfo:
        validate_entities(raw, "crm/entities.parquet")
    message = contract_message(excinfo)
    assert (
        "entities (crm/entities.parquet): column 'entity_id' has 1 value that is empty, "
        "e.g. row 2: null"
    ) in message
    assert "column 'entity_id' has 2 values that are duplicate ids, e.g. rows 1, 3: 'e1', 'e1'" in (
        message
    )


def test_unknown_outcomes_and_kinds_and_consent_values_are_reported():
    with pytest.raises(ContractError) as excinfo:
        validate_outcomes(make_outcomes().assign(outcome=["won", None]), "outcomes.csv")
    assert contract_message(excinfo) == (
        "outcomes (outcomes.csv): column 'outcome' has 2 values that are not 'converted' or "
        "'churned' or 'ended' or 'disqualified', e.g. rows 1, 2: 'won', null"
    )
    raw = make_entities().assign(kind=["lead", "prospect", None], consent=["yes", "maybe", 2])
    with pytest.raises(ContractError) as excinfo:
        validate_entities(raw, "entities.csv")
    assert excinfo.value.problems == [
        "column 'consent' has 2 values that are not yes/no values, e.g. rows 2, 3: 'maybe', '2'",
        "column 'kind' has 1 value that is not 'lead' or 'customer', e.g. row 2: 'prospect'",
    ]


# --- input report --------------------------------------------------------------------


def events_with_duplicates_and_future() -> pd.DataFrame:
    events = validate_events(
        pd.DataFrame(
            {
                "entity_id": ["e1", "e1", "e2", "e9", "e2", "e2"],
                "event_time": [
                    "2025-03-01",
                    "2025-03-01",
                    "2025-03-02",
                    "2025-03-03",
                    "2025-04-02",
                    "2025-04-02",
                ],  # fmt: skip
                "event_type": ["login"] * 6,
            }
        ),
        SOURCE,
    )
    return events


def test_input_report_counts_duplicates_future_events_and_unknown_entities():
    events = events_with_duplicates_and_future()
    entities = validate_entities(make_entities().assign(consent=[True, False, True]), "e")
    outcomes = validate_outcomes(make_outcomes(), "o")

    report = input_report(events, "2025-04-01", entities, outcomes)

    assert (report.events, report.entities, report.outcomes) == (6, 3, 2)
    assert report.duplicate_events == 2
    assert report.future_events == 2
    assert report.events_of_unknown_entities == 1
    assert report.entities_without_consent == 1
    assert report.as_of == pd.Timestamp("2025-04-01", tz="UTC")


def test_clean_events_drops_duplicates_and_keeps_future_events_by_default():
    events = events_with_duplicates_and_future()
    kept, rejected = clean_events(events, pd.Timestamp("2025-04-01", tz="UTC"))
    assert rejected == {"duplicate_events": 2}
    assert len(kept) == 4
    assert not kept.duplicated().any()

    kept, rejected = clean_events(events, "2025-04-01", drop_future=True)
    assert rejected == {"duplicate_events": 2, "future_events": 1}
    assert (kept["event_time"] <= pd.Timestamp("2025-04-01", tz="UTC")).all()


def test_report_to_dict_is_json_ready():
    report = input_report(events_with_duplicates_and_future(), "2025-04-01T00:00:00")
    _, report.rejected = clean_events(events_with_duplicates_and_future(), report.as_of)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["as_of"] == "2025-04-01T00:00:00+00:00"
    assert data["rejected"] == {"duplicate_events": 2}
    assert set(data) >= {"events", "entities", "outcomes", "duplicate_events", "future_events"}
    assert isinstance(report, InputReport)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_exact_duplicates_are_what_pandas_calls_duplicated(rows, seed):
    rng = np.random.default_rng(seed)
    times = pd.to_datetime(rng.choice([0, 10**15], rows)).tz_localize("UTC")
    frame = pd.DataFrame(
        {
            "value": rng.choice([0.0, -0.0, np.nan, 1.5, np.inf], rows),
            "entity_id": pd.Series(rng.choice(["e1", "e2", None], rows), dtype="str"),
            "extra": pd.Series(list(rng.choice([1, "1", None, np.nan, "z"], rows)), dtype=object),
            "event_time": times.where(rng.random(rows) > 0.3),
            "kind": pd.Categorical(rng.choice(["lead", "customer"], rows)),
        },
        index=rng.permutation(rows) + 100,
    )
    pd.testing.assert_series_equal(exact_duplicates(frame), frame.duplicated())
