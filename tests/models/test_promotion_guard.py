"""A challenger is never promoted on too little evidence (issue 14, item 3).

The degenerate case from the issue: on a tiny history LightGBM grows no tree, so the
model is constant (validation AUC 0.500), and its validation fold holds a single
conversion. It used to become ``@champion``; now it is refused with a sentence, and
the decision records the AUC's bootstrap interval and the validation positives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from models import tracking, tracking_registry
from models.auc_interval import auc_interval
from models.promotion import decide_promotion
from models.train import train_model
from models.train_guards import InsufficientLabelsError, check_positive_labels
from tests.models.conftest import PointsRule


@pytest.fixture(scope="module")
def constant():
    """A constant model trained on 6 cutoffs x 40 entities, one validation positive."""
    rng = np.random.default_rng(0)
    cutoffs = pd.date_range("2025-01-01", periods=6, freq="30D", tz="UTC")
    n_entities = 40
    features = pd.DataFrame(
        {
            "entity_id": np.tile([f"e{i}" for i in range(n_entities)], len(cutoffs)),
            "as_of": np.repeat(cutoffs, n_entities),
            "page_view_count_30d": rng.normal(size=n_entities * len(cutoffs)),
        }
    )
    labels = np.zeros(len(features), dtype="int64")
    labels[[5, 50, 90, 130, 170, 175]] = 1  # in every earlier cutoff
    labels[len(features) - 3] = 1  # one in the last (validation) cutoff
    result = train_model(
        features, labels, features["as_of"], "conversion", horizon_days=30,
        min_positive_labels=1, rule_model=PointsRule(),
        # Leaves need more rows than the history has: no split, a constant model.
        params={"min_child_samples": 1_000},
    )  # fmt: skip
    return result


def test_the_degenerate_model_is_constant_with_one_validation_positive(constant):
    assert constant.validation["p_model"].nunique() == 1
    assert constant.metrics["model"]["roc_auc"] == pytest.approx(0.5)
    assert int(constant.validation["label"].sum()) == 1


def test_a_constant_model_on_one_validation_positive_is_refused(constant):
    promote, reasons, numbers = decide_promotion(constant, None)
    assert not promote
    assert "not promoted: 1 validation positive, 20 needed" in "; ".join(reasons)
    assert numbers["validation_positives"] == 1
    assert numbers["new_roc_auc_ci_low"] <= 0.5 <= numbers["new_roc_auc_ci_high"]


def test_a_constant_model_never_beats_chance_whatever_the_minimum(constant):
    promote, reasons, _ = decide_promotion(constant, None, min_validation_positives=1)
    assert not promote
    assert any("lower bound does not beat chance (0.5)" in r for r in reasons)


def test_an_auc_above_the_rule_whose_interval_reaches_below_it_is_refused(trained):
    close = trained.metrics["model"]["roc_auc"] - 0.002
    rule = {**trained.metrics["rule"], "roc_auc": close}
    result = type(trained)(**{**trained.__dict__, "metrics": {**trained.metrics, "rule": rule}})
    promote, reasons, numbers = decide_promotion(result, None)
    assert numbers["new_roc_auc"] > close > numbers["new_roc_auc_ci_low"]
    assert not promote
    assert "its lower bound does not beat the rule score's" in reasons[0]


def test_a_good_model_with_enough_evidence_is_promoted(trained):
    promote, reasons, numbers = decide_promotion(trained, None)
    assert promote, reasons
    assert numbers["validation_positives"] >= 20
    assert numbers["new_roc_auc_ci_low"] > numbers["rule_roc_auc"]


def test_the_refusal_and_its_numbers_reach_mlflow(constant, local_tracking):
    tracking.configure(local_tracking)
    run_id, version = tracking.log_training_run(constant, {"seed": 42})
    decision = tracking_registry.register_and_promote(constant, run_id, version)
    assert decision.alias == "challenger"
    assert "not promoted: 1 validation positive, 20 needed" in decision.summary()
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["promotion_validation_positives"] == 1
    assert {"promotion_new_roc_auc_ci_low", "promotion_new_roc_auc_ci_high"} <= set(metrics)


def test_the_bootstrap_interval_is_seeded_and_brackets_the_auc():
    rng = np.random.default_rng(3)
    y = (rng.random(2_000) < 0.1).astype(int)
    score = rng.random(2_000) + 0.5 * y
    first = auc_interval(y, score, seed=7)
    assert first == auc_interval(y, score, seed=7)
    assert first.low < roc_auc_score(y, score) < first.high
    assert first.high - first.low < 0.1
    one_class = auc_interval(np.zeros(10), np.arange(10))
    assert np.isnan(one_class.low) and np.isnan(one_class.high)


def test_too_few_positive_labels_says_how_many_more_are_needed():
    with pytest.raises(InsufficientLabelsError) as error:
        check_positive_labels(np.r_[np.ones(7), np.zeros(93)], 100, "conversion")
    assert error.value.missing == 93
    assert error.value.decision() == (
        "not trained: 7 positive labels, 93 more needed (model.min_positive_labels = 100); "
        "scored with the rule score"
    )
