from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from models.rules import (
    RuleFileError,
    RuleScore,
    RuleSet,
    Signal,
    load_rules,
    parse_rules,
    save_rules,
)

ENGAGEMENT_COLUMNS = [
    "login_active_days_28d",
    "login_active_weeks_4w",
    "key_features_used_30d",
    "avg_session_minutes_30d",
    "days_since_last_event",
    "nps_class",
    "open_tickets",
]


def customers(**overrides: list) -> pd.DataFrame:
    """Feature rows of engaged-but-unremarkable customers; overrides set columns."""
    n = len(next(iter(overrides.values()))) if overrides else 1
    base = {
        "entity_id": [f"c{i}" for i in range(n)],
        "login_active_days_28d": [3] * n,
        "login_active_weeks_4w": [2] * n,
        "key_features_used_30d": [0] * n,
        "avg_session_minutes_30d": [np.nan] * n,
        "days_since_last_event": [2.0] * n,
        "nps_class": ["none"] * n,
        "open_tickets": [0] * n,
    }
    base.update(overrides)
    frame = pd.DataFrame(base)
    frame["nps_class"] = frame["nps_class"].astype("category")
    return frame


def test_worked_example_scores_90_medium():
    # Weekly logins, 3 key features, 30-minute sessions, NPS promoter, one open ticket.
    row = customers(
        login_active_days_28d=[9],
        login_active_weeks_4w=[4],
        key_features_used_30d=[3],
        avg_session_minutes_30d=[30.0],
        nps_class=["promoter"],
        open_tickets=[1],
    )
    score = RuleScore("engagement").fit(row)
    assert score.predict(row).tolist() == [90.0]
    assert score.predict_band(row).tolist() == ["medium"]
    assert score.signal_points(row).loc[0].to_dict() == {
        "daily_login": 0.0,
        "weekly_login": 25.0,
        "key_features": 30.0,
        "session_time": 15.0,
        "inactive_30d": -0.0,
        "nps_promoter": 25.0,
        "nps_detractor": -0.0,
        "open_tickets": -5.0,
    }


def test_score_is_clipped_to_0_150():
    # Engagement rules: a disengaged customer's points sum far below 0.
    cold = customers(days_since_last_event=[np.nan], nps_class=["detractor"], open_tickets=[12])
    assert RuleScore().signal_points(cold).sum(axis=1).tolist() == [-100.0]
    assert RuleScore().predict(cold).tolist() == [0.0]
    # Lead rules: three forms and a demo request sum above 150.
    hot = pd.DataFrame({s.column: [0] for s in load_rules("lead").signals})
    hot[["form_submit_count_90d", "demo_request_count_90d"]] = [[3, 1]]
    assert RuleScore("lead").signal_points(hot).sum(axis=1).tolist() == [200.0]
    assert RuleScore("lead").predict(hot).tolist() == [150.0]
    assert RuleScore(_one_signal_rules()).predict(pd.DataFrame({"points": [400]})).tolist() == [150]


def _one_signal_rules(bands_from: str = "engagement") -> RuleSet:
    base = load_rules(bands_from)
    signal = Signal("points", "One point per unit.", "points", "per_unit", 1)
    return RuleSet("edges", (signal,), base.bands)


@pytest.mark.parametrize(
    ("points", "band"),
    [(0, "at-risk"), (49, "at-risk"), (50, "medium"), (99, "medium"), (100, "high"), (150, "high")],
)
def test_engagement_band_edges(points, band):
    frame = pd.DataFrame({"points": [points]})
    assert RuleScore(_one_signal_rules()).predict_band(frame).tolist() == [band]


def test_caps_are_in_units_and_negative_signals_take_points_off():
    rows = customers(
        key_features_used_30d=[5, 6, 40],
        avg_session_minutes_30d=[49.9, 50.0, 500.0],
        open_tickets=[5, 6, 100],
    )
    units = RuleScore().signal_matrix(rows)
    assert units["key_features"].tolist() == [5, 5, 5]
    assert units["session_time"].tolist() == [4, 5, 5]
    assert units["open_tickets"].tolist() == [5, 5, 5]
    points = RuleScore().signal_points(rows)
    assert points["open_tickets"].tolist() == [-25, -25, -25]
    assert (points[["key_features", "session_time"]] > 0).all().all()


def test_daily_and_weekly_login_do_not_stack():
    rows = customers(login_active_days_28d=[20, 19, 27], login_active_weeks_4w=[4, 4, 3])
    points = RuleScore().signal_points(rows)[["daily_login", "weekly_login"]]
    assert points.sum(axis=1).tolist() == [50, 25, 50]


def test_never_active_and_no_sessions_are_explicit():
    rows = customers(
        days_since_last_event=[np.nan, 29.9, 30.0], avg_session_minutes_30d=[np.nan] * 3
    )
    units = RuleScore().signal_matrix(rows)
    assert units["inactive_30d"].tolist() == [1, 0, 1]
    assert units["session_time"].tolist() == [0, 0, 0]


def test_missing_column_names_the_rule_file_and_the_column():
    rows = customers().drop(columns=["open_tickets"])
    with pytest.raises(RuleFileError, match=r"engagement\.yaml.*open_tickets"):
        RuleScore().fit(rows)


def test_text_in_a_numeric_column_is_reported_with_rows():
    rows = customers(open_tickets=["1", "two"])
    with pytest.raises(RuleFileError, match=r"open_tickets.*\[1\].*two"):
        RuleScore().predict(rows)


def test_estimator_contract():
    rows = customers(login_active_weeks_4w=[4, 1])
    estimator = RuleScore("engagement")
    unfitted_prediction = estimator.predict(rows)  # points come from the file
    assert estimator.fit(rows, y=np.array([0, 1])) is estimator
    assert estimator.weights_.to_dict() == load_rules("engagement").points.to_dict()
    np.testing.assert_array_equal(estimator.predict(rows), unfitted_prediction)
    np.testing.assert_array_equal(estimator.decision_function(rows), unfitted_prediction)
    copy = clone(estimator)
    assert copy.get_params() == {"rules": "engagement"} and not hasattr(copy, "weights_")


def test_yaml_round_trip_and_toml_file_give_the_same_rules(tmp_path):
    rules = load_rules("engagement")
    again = load_rules(save_rules(rules, tmp_path / "copy.yaml"))
    assert again == rules
    toml = tmp_path / "tiny.toml"
    toml.write_text(
        'name = "tiny"\nbands = [{name = "high", min = 10}, {name = "low", min = 0}]\n'
        '[[signals]]\nname = "visits"\ncolumn = "visits"\nkind = "per_unit"\n'
        "points = 2\ncap = 10\n"
    )
    tiny = RuleScore(toml).fit(pd.DataFrame({"visits": [1, 4, 9]}))
    assert tiny.predict(pd.DataFrame({"visits": [1, 4, 9]})).tolist() == [2, 8, 10]
    assert tiny.predict_band(pd.DataFrame({"visits": [4, 5]})).tolist() == ["low", "high"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"points": 2.5}, "whole number"),
        ({"kind": "ratio"}, "kind must be"),
        ({"cap": 7, "max_units": 5}, "disagree"),
        ({"excludes": ["b"]}, "at least as"),
        ({"excludes": ["nope"]}, "unknown signal"),
    ],
)
def test_bad_rule_files_are_explained(change, message):
    a = {"name": "a", "column": "x", "kind": "per_unit", "points": 1, **change}
    b = {"name": "b", "column": "y", "kind": "per_unit", "points": 3}
    data = {"signals": [a, b], "bands": [{"name": "all", "min": 0}]}
    with pytest.raises(RuleFileError, match=message):
        parse_rules(data, source="bad.yaml")


def test_lead_file_follows_account_engagement_defaults():
    points = load_rules("lead").points
    # Account Engagement's published defaults, as the issue requires.
    defaults = {
        "form_submit": 50,
        "page_view": 1,
        "link_click": 3,
        "email_open": 0,
        "form_error": -5,
    }
    assert points[list(defaults)].to_dict() == defaults
    frame = pd.DataFrame({s.column: [0, 1] for s in load_rules("lead").signals})
    frame["days_since_last_event"] = [np.nan, 1.0]
    scores = RuleScore("lead").predict(frame)
    assert scores[0] == 0 and scores[1] > 0


def test_purchase_rules_score_a_purchase_only_frame():
    frame = pd.DataFrame(
        {
            "purchase_count_30d": [1, 0, 0],
            "purchase_count_90d": [4, 1, 0],
            "purchase_amount_90d": [200.0, 30.0, 0.0],
            "purchase_days_since_last": [3.0, 45.0, np.nan],
        }
    )
    scores = RuleScore("purchase").fit(frame).predict(frame)
    assert scores[0] > scores[1] > scores[2] == 0
    ladder = [f"bought_within_{d}d" for d in (120, 180, 270, 365)]
    assert RuleScore("purchase").signal_matrix(frame)[ladder].sum(axis=1).tolist() == [4, 4, 0]


# --- Behaviour (property-based) ---------------------------------------------------------

engagement_rows = st.fixed_dictionaries(
    {
        "login_active_days_28d": st.integers(0, 28),
        "login_active_weeks_4w": st.integers(0, 4),
        "key_features_used_30d": st.integers(0, 12),
        "avg_session_minutes_30d": st.one_of(st.none(), st.floats(0, 240)),
        "days_since_last_event": st.one_of(st.none(), st.floats(0, 400)),
        "nps_class": st.sampled_from(["promoter", "passive", "detractor", "none"]),
        "open_tickets": st.integers(0, 9),
    }
)

MORE_ENGAGED = {
    "login_active_days_28d": lambda v, step: min(v + step, 28),
    "login_active_weeks_4w": lambda v, step: min(v + step, 4),
    "key_features_used_30d": lambda v, step: v + step,
    "avg_session_minutes_30d": lambda v, step: (0 if v is None else v) + 7.5 * step,
    "days_since_last_event": lambda v, step: 0.0 if v is None else max(v - 10 * step, 0.0),
    "nps_class": lambda v, step: "promoter",
    "open_tickets": lambda v, step: max(v - step, 0),
}


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows).astype(
        {"avg_session_minutes_30d": "float64", "days_since_last_event": "float64"}
    )
    frame["nps_class"] = frame["nps_class"].astype("category")
    return frame


@settings(max_examples=150, deadline=None)
@given(row=engagement_rows, column=st.sampled_from(sorted(MORE_ENGAGED)), step=st.integers(1, 30))
def test_more_engagement_never_lowers_the_score(row, column, step):
    more = dict(row, **{column: MORE_ENGAGED[column](row[column], step)})
    scores = RuleScore().predict(_frame([row, more]))
    assert scores[1] >= scores[0]


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(engagement_rows, min_size=1, max_size=8), noise=st.floats(-1e6, 1e6))
def test_an_irrelevant_extra_column_changes_nothing(rows, noise):
    frame = _frame(rows)
    with_extra = frame.assign(unrelated_feature=noise, another_text="x")
    np.testing.assert_array_equal(RuleScore().predict(frame), RuleScore().predict(with_extra))
    assert set(RuleScore().predict_band(frame)) <= {"high", "medium", "at-risk"}
