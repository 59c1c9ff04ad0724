"""The bounded training sample: the pure function, and a capped model on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from models.model_card import model_card_markdown
from models.sampling import bound_training_rows, uniform_rows
from models.train import train_model
from tests.models.conftest import PointsRule


def _labels(positives: int, negatives: int, seed: int = 0) -> np.ndarray:
    y = np.r_[np.ones(positives), np.zeros(negatives)]
    return np.random.default_rng(seed).permutation(y)


def test_every_positive_is_kept_and_the_negatives_fill_the_bound_with_weights():
    y = _labels(300, 9_700)
    rows = np.arange(2_000, 10_000)  # a fold's training rows, not all rows
    positives = int(y[rows].sum())
    sample = bound_training_rows(rows, y, 3_000, seed=7)
    assert sample.sampled and sample.rows.size == 3_000
    assert np.isin(sample.rows, rows).all() and np.all(np.diff(sample.rows) > 0)
    kept = y[sample.rows]
    assert kept.sum() == positives == sample.kept_positives
    assert sample.kept_negatives == 3_000 - positives
    negatives = rows.size - positives
    np.testing.assert_allclose(sample.weights[kept == 1], 1.0)
    np.testing.assert_allclose(sample.weights[kept == 0], negatives / (3_000 - positives))
    # Weighted counts are the fold's own, so scores keep the population's scale.
    assert sample.weights.sum() == pytest.approx(rows.size)
    assert sample.description == (
        f"trained on all {positives:,} positives and {3_000 - positives:,} of "
        f"{negatives:,} negatives (weight {negatives / (3_000 - positives):.3g}), "
        "calibrated and validated on unsampled rows"
    )
    assert sample.to_dict()["negative_weight"] == pytest.approx(negatives / (3_000 - positives))


def test_the_sample_is_seeded():
    y = _labels(100, 5_000)
    rows = np.arange(y.size)
    first = bound_training_rows(rows, y, 1_000, seed=1)
    np.testing.assert_array_equal(first.rows, bound_training_rows(rows, y, 1_000, seed=1).rows)
    assert not np.array_equal(first.rows, bound_training_rows(rows, y, 1_000, seed=2).rows)


def test_no_bound_or_a_fold_within_it_keeps_every_row_unweighted():
    y = _labels(50, 950)
    rows = np.arange(y.size)
    for bound in (None, 1_000):
        sample = bound_training_rows(rows, y, bound, seed=0)
        assert not sample.sampled and sample.weights is None and sample.description == ""
        np.testing.assert_array_equal(sample.rows, rows)


def test_positives_above_half_the_bound_are_sampled_too_so_the_bound_holds():
    y = _labels(800, 200)
    sample = bound_training_rows(np.arange(y.size), y, 500, seed=0)
    assert sample.rows.size == 500
    assert sample.kept_positives == 300 and sample.kept_negatives == 200
    assert sample.weights.sum() == pytest.approx(1_000)
    assert "300 of 800 positives (weight 2.67) and 200 of 200 negatives" in sample.description
    with pytest.raises(ValueError, match="at least 2"):
        bound_training_rows(np.arange(y.size), y, 1, seed=0)


@pytest.mark.slow
def test_a_third_of_the_training_rows_ranks_and_calibrates_as_well(trained, training_data):
    bound = len(trained.split.train) // 3
    capped = train_model(
        training_data.features, training_data.labels, training_data.as_of, "conversion",
        horizon_days=30, feature_set_version="engagement-v1-test", rule_model=PointsRule(),
        label_definition="1 when converted within 30 days of the cutoff.",
        max_training_rows=bound,
    )  # fmt: skip
    # Early stopping, calibration and validation rows are never sampled.
    np.testing.assert_array_equal(capped.split.calibration, trained.split.calibration)
    np.testing.assert_array_equal(capped.split.validation, trained.split.validation)
    model = capped.metrics["model"]
    assert abs(model["roc_auc"] - trained.metrics["model"]["roc_auc"]) <= 0.01
    assert model["ece"] <= 0.02
    sample = capped.model.metadata["training_sample"]
    assert sample["sampled"] and sample["kept_positives"] + sample["kept_negatives"] == bound
    assert sample["negatives"] + sample["positives"] == len(trained.split.train)
    card = model_card_markdown(capped)
    assert sample["description"] in card
    assert f"{sample['kept_negatives']:,} of {sample['negatives']:,} negatives" in card
    assert trained.model.metadata["training_sample"]["sampled"] is False
    assert "negatives (weight" not in model_card_markdown(trained)


def test_uniform_rows_keep_the_outcome_rate_and_are_seeded():
    y = _labels(500, 49_500)
    rows = np.arange(10_000, 50_000)
    kept = uniform_rows(rows, 10_000, seed=3)
    assert kept.size == 10_000 and np.isin(kept, rows).all() and np.all(np.diff(kept) > 0)
    assert abs(y[kept].mean() - y[rows].mean()) < 0.004
    assert np.array_equal(kept, uniform_rows(rows, 10_000, seed=3))
    assert np.array_equal(uniform_rows(rows, None, seed=3), rows)
    assert np.array_equal(uniform_rows(rows, 40_000, seed=3), rows)
