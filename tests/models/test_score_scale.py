"""Scores and bands keep their meaning when the scored cohort differs from validation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from scipy.special import expit

from models.bands import AT_RISK, HIGH, band_rule_for_models, score_from_probability


def cohorts(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Validation probabilities, and a cohort whose every member is more engaged."""
    rng = np.random.default_rng(seed)
    reference = np.sort(expit(rng.normal(-3.0, 1.2, 20_000)))
    shifted = expit(rng.normal(-0.5, 1.2, 5_000))
    return reference, shifted


def test_a_more_engaged_cohort_does_not_squeeze_into_the_top_of_the_scale():
    reference, shifted = cohorts()
    # What a percentile of the validation fold did: the cohort squeezed into 78-100.
    percentile = 100 * np.searchsorted(reference, shifted) / reference.size
    low, high = np.percentile(percentile, [10, 90])
    assert low > 70

    scores = score_from_probability(shifted, reference, "lead")
    at_validation = score_from_probability(reference, reference, "lead")
    spread = np.percentile(scores, 90) - np.percentile(scores, 10)
    assert spread >= 30 and spread >= 1.5 * (high - low)
    assert np.percentile(scores, 10) < 65
    # Higher than at validation, as the cohort is likelier to convert.
    assert np.median(scores) > np.median(at_validation) + 30


def test_the_top_band_holds_its_stated_share_of_the_cohort_scored():
    reference, shifted = cohorts(1)
    model = SimpleNamespace(metadata={}, reference_scores=reference)
    rule = band_rule_for_models({"conversion": model, "churn": model}, 0.10, 0.05)
    nothing = np.full(shifted.size, np.nan)

    high = rule.assign(shifted, nothing) == HIGH
    at_risk = rule.assign(nothing, shifted) == AT_RISK

    assert abs(high.mean() - 0.10) < 0.01
    assert abs(at_risk.mean() - 0.05) < 0.01
    # The validation threshold alone would have flagged far more than 10%.
    assert (shifted >= rule.conversion_threshold).mean() > 0.35
    sentence = rule.describe()
    assert "the 10% of this run's leads most likely to convert" in sentence
    assert "the 5% of this run's customers most likely to churn" in sentence
    assert "50 is as likely as the average at validation" in sentence


def test_a_configured_threshold_stays_a_fixed_probability():
    reference, shifted = cohorts(2)
    model = SimpleNamespace(metadata={}, reference_scores=reference)
    rule = band_rule_for_models({"conversion": model, "churn": None}, conversion_threshold=0.5)
    high = rule.assign(shifted, np.full(shifted.size, np.nan)) == HIGH
    assert rule.shares == {}
    assert high.mean() == (shifted >= 0.5).mean()
    assert "conversion probability 50.0% or more" in rule.describe()
