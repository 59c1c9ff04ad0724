"""Pooled fold predictions: ranking metrics within folds, probability metrics as they are."""

from __future__ import annotations

import numpy as np

from models.evaluate import evaluate
from models.fold_metrics import pooled_metrics, rank_metrics, within_fold_ranks


def test_a_constant_score_ranks_nobody_even_when_later_folds_convert_more():
    # Three folds with rising outcome rates; each fold's constant is its training rate.
    rng = np.random.default_rng(3)
    rates, sizes = (0.05, 0.2, 0.5), (1000, 1001, 999)
    y = np.concatenate([rng.random(n) < r for r, n in zip(rates, sizes, strict=True)])
    parts = [np.full(n, r) for r, n in zip((0.04, 0.1, 0.3), sizes, strict=True)]
    pooled_as_is = evaluate(y, np.concatenate(parts))["roc_auc"]
    assert pooled_as_is > 0.65  # the fold levels alone look like skill
    metrics = pooled_metrics(y, parts)
    assert metrics["roc_auc"] == 0.5
    assert metrics["roc_auc_ci_low"] == metrics["roc_auc_ci_high"] == 0.5
    assert rank_metrics(y, parts)["roc_auc"] == 0.5
    # Calibration is still judged on the probabilities themselves.
    assert metrics["ece"] == evaluate(y, np.concatenate(parts))["ece"]


def test_one_fold_gives_the_plain_metrics():
    rng = np.random.default_rng(4)
    p = rng.random(500)
    y = rng.random(500) < p
    assert pooled_metrics(y, [p])["roc_auc"] == evaluate(y, p)["roc_auc"]


def test_within_fold_ranks_keep_each_folds_order():
    ranks = within_fold_ranks([np.array([0.9, 0.1, 0.5]), np.array([0.2, 0.3])])
    np.testing.assert_allclose(ranks, [5 / 6, 1 / 6, 0.5, 0.25, 0.75])
