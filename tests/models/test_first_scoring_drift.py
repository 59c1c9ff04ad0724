"""Drift on a champion's first scoring of a population warns; on later scorings it fails."""

import json

import pandas as pd

from models.drift import drift_status, first_scorings

CURRENT = json.dumps({"churn": "rules", "conversion": "3"})


def test_no_previous_run_is_a_first_scoring_of_every_champion():
    assert first_scorings(CURRENT, None) == {"conversion"}
    assert first_scorings(CURRENT, []) == {"conversion"}


def test_a_version_scored_before_is_not_a_first_scoring_and_a_new_one_is():
    before = [json.dumps({"churn": "rules", "conversion": "3"}), None, float("nan")]
    assert first_scorings(CURRENT, before) == set()
    older = [json.dumps({"churn": "rules", "conversion": "2"})]
    assert first_scorings(CURRENT, older) == {"conversion"}


def test_first_scoring_above_the_failure_threshold_is_a_clear_warning():
    status, messages = drift_status({"conversion probability": 0.9}, 0.1, 0.25, {"conversion"})

    assert status == "warning"
    assert len(messages) == 1
    assert "first time" in messages[0] and "not a failure" in messages[0]
    assert "0.900" in messages[0]


def test_later_scorings_fail_as_before():
    values = {"conversion probability": 0.9, "churn probability": 0.05}
    status, messages = drift_status(values, 0.1, 0.25)
    assert status == "failed"
    assert messages == ["PSI of conversion probability is 0.900, above the failure threshold 0.25."]
    # One target's first scoring does not excuse another's failure.
    both = {"conversion probability": 0.9, "churn probability": 0.9}
    assert drift_status(both, 0.1, 0.25, {"churn"})[0] == "failed"


def test_small_shifts_stay_ok_on_a_first_scoring():
    assert drift_status({"conversion probability": 0.01}, 0.1, 0.25, {"conversion"}) == ("ok", [])


def test_first_scorings_read_a_previous_column_as_its_distinct_values():
    """A partition's column (Arrow text, missing values) gives what a list of it gives."""
    current = '{"churn": "2", "conversion": "1"}'
    rows = ['{"churn": "1", "conversion": "1"}'] * 1000 + [None, ""]
    for previous in (pd.Series(rows, dtype="str"), pd.Series(rows, dtype=object), rows):
        assert first_scorings(current, previous) == {"churn"}
        assert first_scorings(current, [*previous, '{"churn": "2"}']) == set()
