import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from models.evaluate import (
    band_outcome_rates,
    calibration_curve_figure,
    evaluate,
    expected_calibration_error,
    flat_metrics,
    lift_chart_figure,
    lift_table,
)
from models.train_guards import feature_auc


def calibrated_sample(seed: int, n: int = 50_000):
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 6, n)
    return (rng.random(n) < p).astype(int), p


def test_ece_is_small_for_calibrated_and_large_for_distorted_probabilities():
    y, p = calibrated_sample(0)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, p, strategy="uniform") < 0.01
    doubled = np.clip(p * 2, 0, 1)
    assert expected_calibration_error(y, doubled) > 0.1


def test_ece_equals_the_mean_gap_when_every_row_has_the_same_score():
    y = np.r_[np.ones(30), np.zeros(70)]
    assert expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(abs(0.5 - y.mean()))


def test_perfect_ranking_puts_every_positive_in_the_top_decile():
    y = np.r_[np.ones(50), np.zeros(950)]
    score = np.r_[np.linspace(0.9, 1.0, 50), np.linspace(0.0, 0.5, 950)]
    metrics = evaluate(y, score)
    assert metrics["roc_auc"] == 1.0
    assert metrics["capture_top_decile"] == 1.0
    assert metrics["lift_top_decile"] == pytest.approx((50 / 100) / y.mean())


def test_metrics_agree_with_their_definitions_on_random_data():
    y, p = calibrated_sample(1, 20_000)
    metrics = evaluate(y, p)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert metrics["brier"] == pytest.approx(np.mean((p - y) ** 2))
    expected_log_loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert metrics["log_loss"] == pytest.approx(expected_log_loss, rel=1e-6)
    deciles = metrics["band_rates"]
    assert sum(b["n"] for b in deciles.values()) == len(y)
    assert deciles["decile_01"]["rate"] > deciles["decile_10"]["rate"]


def test_random_scores_have_no_lift():
    rng = np.random.default_rng(2)
    y = (rng.random(40_000) < 0.1).astype(int)
    metrics = evaluate(y, rng.random(40_000))
    assert abs(metrics["lift_top_decile"] - 1) < 0.15
    assert abs(metrics["roc_auc"] - 0.5) < 0.02


def test_rule_points_get_rank_metrics_only():
    y, p = calibrated_sample(3, 5000)
    metrics = evaluate(y, p * 150, probabilities=False)
    assert math.isnan(metrics["log_loss"]) and math.isnan(metrics["ece"])
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    with pytest.raises(ValueError, match="between 0 and 1"):
        evaluate(y, p * 150)


def test_band_rates_and_flat_metrics():
    y = np.array([1, 0, 1, 1, 0, 0])
    bands = np.array(["high", "high", "high", "low", "low", None], dtype=object)
    rates = band_outcome_rates(y, bands)
    assert rates["high"] == {"n": 3.0, "rate": pytest.approx(2 / 3)}
    assert rates["<none>"]["n"] == 1.0
    flat = flat_metrics(evaluate(y, np.linspace(0.1, 0.9, 6), bands), prefix="rule_")
    assert flat["rule_band_high_rate"] == pytest.approx(2 / 3)
    assert all(isinstance(v, float) and math.isfinite(v) for v in flat.values())


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="differ in length"):
        evaluate([0, 1], [0.5])
    with pytest.raises(ValueError, match="missing"):
        evaluate([0, 1], [0.5, np.nan])


def test_lift_table_capture_reaches_one():
    y, p = calibrated_sample(4, 3000)
    table = lift_table(y, p)
    assert table["cumulative_capture"].iloc[-1] == pytest.approx(1.0)
    assert table["n"].sum() == 3000


def test_figures_render(tmp_path):
    y, p = calibrated_sample(5, 2000)
    for figure in (
        calibration_curve_figure(y, {"model": p, "flat": np.full(2000, y.mean())}),
        lift_chart_figure(y, {"model": p}),
    ):
        assert isinstance(figure, Figure) and figure.axes
        figure.savefig(tmp_path / "chart.png")
        assert (tmp_path / "chart.png").stat().st_size > 1000


def test_feature_auc_flags_separating_features_in_either_direction():
    rng = np.random.default_rng(6)
    y = (rng.random(4000) < 0.3).astype(int)
    assert feature_auc(pd.Series(y + rng.normal(0, 0.01, 4000)), y) > 0.99
    assert feature_auc(pd.Series(-y.astype(float)), y) == 1.0
    assert feature_auc(pd.Series(rng.normal(size=4000)), y) < 0.56
    leaky_when_missing = pd.Series(np.where(y == 1, np.nan, rng.normal(size=4000)))
    assert feature_auc(leaky_when_missing, y) > 0.99


def _two_sided_reference(values: pd.Series, y: np.ndarray) -> float:
    """The former definition: roc_auc_score with missing values filled below, then above."""
    numbers = values.to_numpy(dtype="float64")
    present = ~np.isnan(numbers)
    low, high = np.nanmin(numbers) - 1.0, np.nanmax(numbers) + 1.0
    aucs = [roc_auc_score(y, np.where(present, numbers, fill)) for fill in (low, high)]
    return max(max(a, 1.0 - a) for a in aucs)


@pytest.mark.parametrize("seed", range(6))
def test_feature_auc_equals_roc_auc_score_with_ties_and_missing_values(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    y = (rng.random(n) < rng.uniform(0.02, 0.5)).astype(int)
    y[:2] = [0, 1]
    values = pd.Series(rng.integers(0, 6, n).astype("float64") + y * rng.integers(0, 2, n))
    values[rng.random(n) < rng.uniform(0.0, 0.6)] = np.nan  # missing, more among some
    values[(y == 1) & (rng.random(n) < 0.3)] = np.nan
    assert feature_auc(values, y) == pytest.approx(_two_sided_reference(values, y), abs=1e-12)
    levels = pd.Series(rng.choice(list("abcde"), n))
    rates = pd.Series(y).groupby(levels.to_numpy()).mean()
    expected = roc_auc_score(y, levels.map(rates).to_numpy())
    assert feature_auc(levels, y, min_level_rows=1) == pytest.approx(
        max(expected, 1 - expected), abs=1e-12
    )


def test_feature_auc_of_categories_pools_rare_levels():
    rng = np.random.default_rng(7)
    y = (rng.random(4000) < 0.3).astype(int)
    unique_ids = pd.Series([f"row{i}" for i in range(4000)], dtype="category")
    assert feature_auc(unique_ids, y) == 0.5
    status = pd.Series(np.where(y == 1, "won", "open"))
    assert feature_auc(status, y) == 1.0


def test_auc_carries_its_bootstrap_interval_and_the_positives_behind_it():
    from models.evaluate import describe_auc, with_auc_interval

    rng = np.random.default_rng(7)
    y = (rng.random(400) < 0.05).astype(int)
    score = y * 0.5 + rng.random(400)
    metrics = with_auc_interval(evaluate(y, score, probabilities=False), y, score)
    assert metrics["roc_auc_ci_low"] < metrics["roc_auc"] < metrics["roc_auc_ci_high"]
    text = describe_auc(metrics)
    assert text.startswith(f"AUC {metrics['roc_auc']:.3f} (95% CI 0.")
    assert text.endswith(f"{int(y.sum())} positives)")
    one_class = with_auc_interval(evaluate(y * 0, score, probabilities=False), y * 0, score)
    assert describe_auc(one_class) == "AUC nan (0 positives)"
