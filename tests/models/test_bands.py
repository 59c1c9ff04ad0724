"""Band rule, validation thresholds and the 0-100 score."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bands import (
    AT_RISK,
    BAND_METADATA_KEY,
    HIGH,
    MEDIUM,
    BandRule,
    band_rule_for_models,
    band_rule_from_validation,
    choose_thresholds,
    score_from_probability,
)
from tests.models.test_explain import make_model


def _validation(seed: int, n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1.0, 12.0, n)
    y = (rng.random(n) < p).astype(int)
    return y, p


def test_threshold_flags_the_top_share_and_reports_its_lift() -> None:
    y, p = _validation(0)
    choice = choose_thresholds(y, p, share=0.1)
    flagged = p >= choice.threshold
    assert flagged.sum() == int(np.ceil(0.1 * p.size))
    assert choice.share_flagged == pytest.approx(flagged.mean())
    assert choice.precision == pytest.approx(y[flagged].mean())
    assert choice.base_rate == pytest.approx(y.mean())
    # Probabilities that carry signal: the flagged tenth converts well above the base rate.
    assert choice.lift > 1.5
    without_labels = choose_thresholds(None, p, share=0.1)
    assert without_labels.threshold == choice.threshold
    assert np.isnan(without_labels.lift)


@pytest.mark.parametrize(
    ("y", "p", "share", "message"),
    [
        (None, [0.1, 0.2], 0.0, "strictly between"),
        (None, [], 0.1, "No validation probabilities"),
        (None, [0.1, np.nan], 0.1, "1 of 2 validation probabilities are missing"),
        ([1, 0, 1], [0.1, 0.2], 0.1, "2 probabilities, 3 labels"),
    ],
)
def test_threshold_errors_are_sentences(y, p, share, message) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        choose_thresholds(y, p, share)


def test_band_rule_order_and_missing_probabilities() -> None:
    rule = BandRule(conversion_threshold=0.3, churn_threshold=0.2)
    conversion = np.array([0.5, 0.5, 0.1, np.nan, np.nan, 0.3])
    churn = np.array([np.nan, 0.25, np.nan, 0.1, np.nan, np.nan])
    bands = rule.assign(conversion, churn)
    assert list(bands) == [HIGH, AT_RISK, MEDIUM, MEDIUM, MEDIUM, HIGH]
    never = BandRule(conversion_threshold=None, churn_threshold=None)
    assert set(never.assign(conversion, churn)) == {MEDIUM}
    with pytest.raises(ValueError, match="as many conversion"):
        rule.assign([0.1, 0.2], [0.1])


def test_band_rule_round_trips_through_json() -> None:
    y, p = _validation(1)
    rule = band_rule_from_validation((y, p), (None, p[::-1]), high_share=0.05, at_risk_share=0.2)
    restored = BandRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    assert restored == rule
    assert restored.details["conversion"]["share_target"] == 0.05
    conversion, churn = p[:500], p[500:1000]
    np.testing.assert_array_equal(
        restored.assign(conversion, churn), rule.assign(conversion, churn)
    )
    assert "at-risk: churn probability" in rule.describe()
    with pytest.raises(ValueError, match="must be a probability"):
        BandRule.from_dict({"conversion_threshold": 1.5})


def test_configured_thresholds_win_over_validation() -> None:
    y, p = _validation(2)
    rule = band_rule_from_validation((y, p), None, conversion_threshold=0.42)
    assert rule.conversion_threshold == 0.42
    assert rule.churn_threshold is None
    assert "conversion: settings" in rule.source


def test_rule_for_models_prefers_the_threshold_stored_with_the_version() -> None:
    conversion = make_model("conversion", seed=0, n=1500)
    churn = make_model("churn", seed=1, n=1500)
    conversion.metadata[BAND_METADATA_KEY] = {"threshold": 0.37, "share_target": 0.1}
    rule = band_rule_for_models({"conversion": conversion, "churn": churn}, at_risk_share=0.2)
    assert rule.conversion_threshold == 0.37
    flagged = churn.reference_scores >= rule.churn_threshold
    assert flagged.mean() == pytest.approx(0.2, abs=0.05)
    assert "stored with the model version" in rule.source
    none = band_rule_for_models({"conversion": None, "churn": None}, churn_threshold=0.5)
    assert none.conversion_threshold is None and none.churn_threshold == 0.5


def test_score_is_the_odds_against_the_validation_base_rate() -> None:
    reference = np.array([0.05, 0.10, 0.15])  # base rate 10%: odds 1/9
    lead = score_from_probability([0.10, 2 / 11, 1 / 19, 0.0, 1.0, np.nan], reference, "lead")
    np.testing.assert_allclose(lead[:5], [50.0, 200 / 3, 100 / 3, 0.0, 100.0])  # 2x, 1/2 odds
    assert np.isnan(lead[5])
    customer = score_from_probability([0.10, 2 / 11, 0.0, 1.0], reference, "customer")
    np.testing.assert_allclose(customer, 100.0 - lead[[0, 1, 3, 4]])
    with pytest.raises(ValueError, match="no reference_scores"):
        score_from_probability([0.1], [], "lead")
    with pytest.raises(ValueError, match="Unknown score kind"):
        score_from_probability([0.1], reference, "partner")  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40), st.integers(0, 1000))
def test_score_is_monotone_and_bounded(reference: list[float], seed: int) -> None:
    p = np.sort(np.random.default_rng(seed).uniform(0, 1, 200))
    lead = score_from_probability(p, reference, "lead")
    assert np.all(np.diff(lead) >= -1e-9)
    assert lead.min() >= 0.0 and lead.max() <= 100.0
    customer = score_from_probability(p, reference, "customer")
    assert np.all(np.diff(customer) <= 1e-9)
