"""Ended entities leave the populations (issue 15 item 2), on data built to show why."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.input_report import clean_events, duplicates_warning, input_report
from features.labels import make_labels

START = pd.Timestamp("2024-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
CUTOFFS = pd.date_range("2024-04-01", periods=6, freq="30D", tz="UTC")


def contracts(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Customers active weekly until they churn (a third) or their contract ends (a third).

    Both go silent afterwards; only churners have a ``churned`` outcome.
    """
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i:03d}" for i in range(n)])
    fate = rng.integers(0, 3, n)  # 0 stays, 1 churns, 2 ends
    stop = START + pd.to_timedelta(rng.uniform(100, 260, n), unit="D")
    last = np.where(fate == 0, START + 400 * DAY, stop)
    rows = [
        (entity, START + (week * 7 + 0.5) * DAY)
        for entity, until in zip(ids, last, strict=True)
        for week in range(int((until - START) / DAY // 7))
    ]
    events = pd.DataFrame(rows, columns=["entity_id", "event_time"]).assign(event_type="login")
    entities = pd.DataFrame(
        {
            "entity_id": ids,
            "created_at": START - DAY,
            "kind": "customer",
            "ended_at": pd.Series(stop).where(fate == 2).to_numpy(),
        }
    )
    churned = pd.DataFrame(
        {"entity_id": ids[fate == 1], "outcome": "churned", "occurred_at": stop[fate == 1]}
    )
    return events, entities, churned


def churn_labels(events, entities, outcomes):  # noqa: ANN001, ANN201
    return make_labels(
        outcomes, entities, CUTOFFS, "churn", 60, events=events, churn_from_inactivity=True
    )


def test_ended_contracts_are_not_labelled_churn_after_or_before_their_end():
    events, entities, outcomes = contracts()
    ended = set(entities.loc[entities["ended_at"].notna(), "entity_id"])
    churners = set(outcomes["entity_id"])
    # Without the end date, every completed contract looks like an inactivity churn.
    blind = churn_labels(events, entities.drop(columns="ended_at"), outcomes)
    blind_positives = set(blind.loc[blind["label"] == 1, "entity_id"])
    assert len(blind_positives & ended) > 0.8 * len(ended)
    # With it, churn positives are the churners only, and ended entities leave the rows.
    labels = churn_labels(events, entities, outcomes)
    positives = set(labels.loc[labels["label"] == 1, "entity_id"])
    assert positives <= churners and len(positives) > 0.8 * len(churners)
    end = labels["entity_id"].map(entities.set_index("entity_id")["ended_at"])
    assert not (end <= labels["as_of"]).any()


def test_ended_entities_leave_the_conversion_population_too():
    entities = pd.DataFrame(
        {
            "entity_id": ["trial_expired", "open"],
            "created_at": START,
            "kind": "lead",
            "ended_at": [CUTOFFS[1] - DAY, pd.NaT],
        }
    )
    none = pd.DataFrame(columns=["entity_id", "outcome", "occurred_at"])
    labels = make_labels(none, entities, CUTOFFS, "conversion", 30)
    assert labels.loc[labels["entity_id"] == "trial_expired", "as_of"].tolist() == [CUTOFFS[0]]
    assert (labels["entity_id"] == "open").sum() == len(CUTOFFS)


def test_many_exact_duplicates_warn_with_a_sample_and_the_likely_cause():
    times = pd.to_datetime(["2024-03-01 10:00"] * 3 + ["2024-03-02 10:00"], utc=True)
    events = pd.DataFrame(
        {"entity_id": "a", "event_time": times, "event_type": "video_watch", "value": 1.0}
    )
    report = input_report(events, "2024-04-01")
    warning = duplicates_warning(report)
    assert "2 events (50.0%) exactly repeat another event" in warning
    assert "`item`) is probably not mapped" in warning and "event_type=video_watch" in warning
    kept, rejected = clean_events(events, "2024-04-01", drop_duplicates=False)
    assert len(kept) == 4 and rejected == {}
    report.duplicates_kept = True
    assert "they were kept (sources.keep_duplicates)" in duplicates_warning(report)
    assert duplicates_warning(input_report(events.iloc[2:], "2024-04-01")) == ""


def test_given_kinds_are_tidied_and_converted_leads_become_customers():
    from features.population import kinds

    entities = pd.DataFrame(
        {"kind": [" Lead", "CUSTOMER", None, "lead", "Lead ", np.nan, "customer"]}
    )
    converted = np.array([False, False, False, True, False, True, False])
    got = kinds(entities, converted, None)
    assert got.dtype == object
    assert got.tolist() == ["lead", "customer", "lead", "customer", "lead", "customer", "customer"]
    inferred = kinds(pd.DataFrame(index=range(3)), np.array([True, False, False]),
                     np.array([False, True, False]))  # fmt: skip
    assert inferred.dtype == object and inferred.tolist() == ["customer", "customer", "lead"]
