"""Training records: a run date is trained once, whatever happens after."""

from __future__ import annotations

import pandas as pd

from features.targets import CHURN, CONVERSION
from pipelines import training

RUN_DATE = pd.Timestamp("2025-12-08", tz="UTC")


def test_a_training_record_is_found_for_its_date_only_and_a_damaged_one_is_ignored(tmp_path):
    assert training.trained_for_date(tmp_path, CHURN, RUN_DATE) is None
    outcome = training.TrainOutcome("churn", "run1", "2", "churn v2 promoted", {"roc_auc": 0.7})
    training._record_training(tmp_path, CHURN, RUN_DATE, outcome)
    assert training.trained_for_date(tmp_path, CHURN, RUN_DATE) == "churn v2 promoted"
    assert training.trained_for_date(tmp_path, CONVERSION, RUN_DATE) is None
    assert training.trained_for_date(tmp_path, CHURN, RUN_DATE + pd.Timedelta(days=1)) is None
    (tmp_path / "training" / "churn-2025-12-08.json").write_text("{not json")
    assert training.trained_for_date(tmp_path, CHURN, RUN_DATE) is None


def test_a_rerun_reports_the_first_runs_training_word_for_word(tmp_path):
    outcome = training.TrainOutcome(
        "churn", "run1", "2", "churn v2 promoted", {"roc_auc": 0.7}, reason="no champion yet"
    )
    training._record_training(tmp_path, CHURN, RUN_DATE, outcome)
    assert outcome.summary_text == "no champion yet; churn v2 promoted"
    assert training.trained_for_date(tmp_path, CHURN, RUN_DATE) == outcome.summary_text
