"""The retrain decision: age, drift and an earlier training for the same date."""

from __future__ import annotations

import pandas as pd
import pytest

from models.retrain import RetrainDecision, RetrainPolicy, retrain_due

RUN_DATE = pd.Timestamp("2025-12-08", tz="UTC")
POLICY = RetrainPolicy(max_age_days=14, psi_warn=0.1)


@pytest.mark.parametrize(
    ("trained_at", "kwargs", "due", "words"),
    [
        ("2025-12-01", {}, False, "7 days old; no retrain"),
        ("2025-11-20", {}, True, "18 days old (limit 14)"),
        ("2025-12-01", {"drift_psi": 0.05}, False, "no retrain"),
        ("2025-12-01", {"drift_psi": 0.3}, True, "drift flagged: score PSI 0.300 above 0.1"),
        ("2025-12-08", {"drift_psi": 0.3}, False, "trained today"),
        ("2025-12-09", {}, False, "after this run date; kept"),
        (
            "2025-11-01",
            {"trained_already": "no champion yet; churn v3 promoted"},
            False,
            "no champion yet; churn v3 promoted",
        ),  # fmt: skip
    ],
)
def test_retrain_due_on_age_drift_and_earlier_training(trained_at, kwargs, due, words):
    decision = retrain_due(POLICY, {"trained_at": trained_at}, RUN_DATE, **kwargs)
    assert (decision.due, words in decision.reason) == (due, True), decision.reason


def test_no_champion_is_due_and_an_undated_one_is_of_unknown_age():
    assert retrain_due(POLICY, None, RUN_DATE) == RetrainDecision(True, "no champion yet")
    undated = retrain_due(POLICY, {}, RUN_DATE)
    assert not undated.due and undated.reason == "champion of unknown age; no retrain"
