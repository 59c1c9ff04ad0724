import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.labels import label_definition, make_labels, no_cutoff_message, rolling_cutoffs

CUTOFF = pd.Timestamp("2025-06-01", tz="UTC")
DAY = pd.Timedelta(days=1)
SECOND = pd.Timedelta(seconds=1)


def entities(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def outcomes(rows: list[tuple[str, str, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["entity_id", "outcome", "occurred_at"])


def labels_by_id(frame: pd.DataFrame) -> dict[str, int]:
    return dict(zip(frame["entity_id"], frame["label"], strict=True))


def test_conversion_window_is_open_at_the_cutoff_and_closed_at_the_horizon():
    people = entities(
        [{"entity_id": e, "created_at": "2025-01-01"} for e in ("at_end", "after_end", "never")]
    )
    events = outcomes(
        [
            ("at_end", "converted", CUTOFF + 30 * DAY),
            ("after_end", "converted", CUTOFF + 30 * DAY + SECOND),
        ]
    )
    labels = labels_by_id(make_labels(events, people, [CUTOFF], "conversion", 30))
    assert labels == {"at_end": 1, "after_end": 0, "never": 0}


def test_converted_by_the_cutoff_is_not_eligible_for_conversion():
    people = entities(
        [{"entity_id": e, "created_at": "2025-01-01"} for e in ("at_cutoff", "before", "later")]
    )
    events = outcomes(
        [
            ("at_cutoff", "converted", CUTOFF),
            ("before", "converted", CUTOFF - DAY),
            ("later", "converted", CUTOFF + DAY),
        ]
    )
    labels = labels_by_id(make_labels(events, people, [CUTOFF], "conversion", 30))
    assert labels == {"later": 1}


def test_eligibility_needs_existence_before_the_cutoff_and_consent():
    people = entities(
        [
            {"entity_id": "created_at_cutoff", "created_at": CUTOFF, "consent": True},
            {"entity_id": "no_consent", "created_at": "2025-01-01", "consent": False},
            {"entity_id": "unknown_consent", "created_at": "2025-01-01", "consent": None},
            {"entity_id": "ok", "created_at": CUTOFF - SECOND, "consent": True},
        ]
    )
    labels = make_labels(outcomes([]), people, [CUTOFF], "conversion", 30)
    assert set(labels["entity_id"]) == {"unknown_consent", "ok"}


def test_customers_get_churn_labels_and_leads_get_conversion_labels():
    people = entities(
        [
            {"entity_id": "lead", "created_at": "2025-01-01", "kind": "lead"},
            {"entity_id": "converted_lead", "created_at": "2025-01-01", "kind": "lead"},
            {"entity_id": "customer", "created_at": "2025-01-01", "kind": "customer"},
            {"entity_id": "gone", "created_at": "2025-01-01", "kind": "customer"},
        ]
    )
    events = outcomes(
        [
            ("converted_lead", "converted", CUTOFF - 10 * DAY),
            ("converted_lead", "churned", CUTOFF + 20 * DAY),
            ("customer", "churned", CUTOFF + 61 * DAY),
            ("gone", "churned", CUTOFF - DAY),
        ]
    )
    conversion = labels_by_id(make_labels(events, people, [CUTOFF], "conversion", 30))
    churn = labels_by_id(make_labels(events, people, [CUTOFF], "churn", 60))
    assert conversion == {"lead": 0}
    assert churn == {"converted_lead": 1, "customer": 0}


def test_without_kind_a_conversion_or_a_purchase_makes_a_churn_candidate():
    ids = ("converted", "bought", "bought_later", "lead")
    people = entities([{"entity_id": e, "created_at": "2025-01-01"} for e in ids])
    done = outcomes(
        [("converted", "converted", CUTOFF - DAY), ("converted", "churned", CUTOFF + 5 * DAY)]
    )
    purchases = pd.DataFrame(
        {
            "entity_id": ["bought", "bought_later"],
            "event_time": [CUTOFF - 3 * DAY, CUTOFF + DAY],
            "event_type": "purchase",
        }
    )
    churn = make_labels(done, people, [CUTOFF], "churn", 60, events=purchases)
    assert labels_by_id(churn) == {"bought": 0, "converted": 1}
    conversion = make_labels(done, people, [CUTOFF], "conversion", 60, events=purchases)
    assert set(labels_by_id(conversion)) == {"bought_later", "lead"}


def test_inactivity_churn_needs_activity_before_and_silence_for_the_whole_window():
    people = entities(
        [
            {"entity_id": e, "created_at": "2025-01-01", "kind": "customer"}
            for e in ("silent", "busy", "dormant", "edge")
        ]
    )
    activity = pd.DataFrame(
        {
            "entity_id": ["silent", "busy", "busy", "dormant", "edge", "edge"],
            "event_time": [
                CUTOFF - 5 * DAY,
                CUTOFF - 5 * DAY,
                CUTOFF + 59 * DAY,
                CUTOFF - 61 * DAY,
                CUTOFF - 60 * DAY,  # first instant of [c - h, c): active
                CUTOFF,  # exactly at the cutoff: in neither window
            ],
        }
    )
    labels = make_labels(
        outcomes([]), people, [CUTOFF], "churn", 60, events=activity, churn_from_inactivity=True
    )
    assert labels_by_id(labels) == {"silent": 1, "busy": 0, "edge": 1}


def test_inactivity_churn_without_events_is_a_clear_error():
    people = entities([{"entity_id": "a", "created_at": "2025-01-01"}])
    with pytest.raises(ValueError, match="events table"):
        make_labels(outcomes([]), people, [CUTOFF], "churn", 60, churn_from_inactivity=True)


def test_bad_inputs_are_named():
    people = entities([{"entity_id": "a", "created_at": "2025-01-01"}])
    with pytest.raises(ValueError, match="occurred_at"):
        make_labels(pd.DataFrame({"entity_id": [], "outcome": []}), people, [CUTOFF], "churn", 60)
    with pytest.raises(ValueError, match="Unknown target"):
        make_labels(outcomes([]), people, [CUTOFF], "upsell", 60)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    offsets=st.lists(st.integers(-40 * 24, 80 * 24), min_size=1, max_size=30),
    horizon=st.integers(1, 60),
)
def test_conversion_labels_match_the_window_definition(offsets, horizon):
    """Against a direct reading of the rule: first conversion in (c, c + h]."""
    ids = [f"e{i}" for i in range(len(offsets))]
    people = entities([{"entity_id": e, "created_at": "2024-01-01"} for e in ids])
    times = [CUTOFF + pd.Timedelta(hours=h) for h in offsets]
    events = outcomes([(e, "converted", t) for e, t in zip(ids, times, strict=True)])
    labels = labels_by_id(make_labels(events, people, [CUTOFF], "conversion", horizon))
    expected = {
        e: int(t <= CUTOFF + pd.Timedelta(days=horizon))
        for e, t in zip(ids, times, strict=True)
        if t > CUTOFF
    }
    assert labels == expected


def test_rolling_cutoffs_only_where_the_window_has_closed():
    known = pd.Timestamp("2025-12-15 13:00", tz="UTC")
    cutoffs = rolling_cutoffs("2025-03-01", known, step_days=30, horizon_days=60)
    assert (cutoffs + pd.Timedelta(days=60) <= known).all()
    assert cutoffs[0] >= pd.Timestamp("2025-03-01", tz="UTC")
    assert (np.diff(cutoffs) == pd.Timedelta(days=30)).all()
    assert len(rolling_cutoffs("2025-03-01", known, 30, 60, max_cutoffs=2)) == 2


def test_label_definition_names_the_horizon():
    assert "45 days" in label_definition("churn", 45, churn_from_inactivity=True)


def test_no_cutoff_message_states_the_binding_constraint_and_what_fits():
    text = no_cutoff_message(
        "2025-01-03 10:00", 90, "2025-06-01", 90, 30, "labels.conversion_horizon_days"
    )
    assert "first event (2025-01-03) plus the longest feature window (90 days) = 2025-04-03" in text
    assert "run date (2025-06-01) minus the 90-day horizon = 2025-03-03" in text
    assert "32 days short" in text
    # Each suggested change makes exactly one cutoff fit.
    assert "labels.conversion_horizon_days to at most 58 days" in text
    assert len(rolling_cutoffs("2025-04-03 10:00", "2025-06-01", 30, 58)) == 1
    assert "features.windows_days to at most 58 days" in text
    assert len(rolling_cutoffs("2025-03-02 10:00", "2025-06-01", 30, 90)) == 1
    assert "run date on or after 2025-07-03" in text
    assert len(rolling_cutoffs("2025-04-03 10:00", "2025-07-03", 30, 90)) == 1
    assert "labels.cutoff_step_days (now 30)" in text
