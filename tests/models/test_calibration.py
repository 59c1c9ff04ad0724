import pickle

import numpy as np
import pytest

from models.calibration import (
    ISOTONIC_MIN_POSITIVES,
    IsotonicCalibrator,
    SigmoidCalibrator,
    choose_method,
    fit_calibrator,
)
from models.evaluate import expected_calibration_error


def miscalibrated_margins(seed: int, n: int, slope: float = 2.0, shift: float = -1.5):
    """Margins whose true probability is sigmoid(slope * margin + shift)."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(size=n)
    p_true = 1 / (1 + np.exp(-(slope * margin + shift)))
    return margin, (rng.random(n) < p_true).astype(int), p_true


def test_sigmoid_recovers_the_true_probabilities():
    margin, y, _ = miscalibrated_margins(0, 20_000)
    calibrator = SigmoidCalibrator().fit(margin, y)
    test_margin, test_y, test_p = miscalibrated_margins(1, 20_000)
    p = calibrator.predict(test_margin)
    assert np.abs(p - test_p).max() < 0.05
    raw = 1 / (1 + np.exp(-test_margin))
    assert expected_calibration_error(test_y, p) < expected_calibration_error(test_y, raw) / 3


def test_sigmoid_handles_rule_points_on_a_large_scale():
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 150, 5000)
    y = (rng.random(5000) < points / 200).astype(int)
    p = SigmoidCalibrator().fit(points, y).predict(points)
    assert np.all(np.diff(p[np.argsort(points)]) >= 0)
    assert abs(p.mean() - y.mean()) < 0.01


def test_isotonic_is_monotone_bounded_and_calibrated():
    margin, y, _ = miscalibrated_margins(3, 30_000)
    calibrator = IsotonicCalibrator().fit(margin, y)
    test_margin, test_y, _ = miscalibrated_margins(4, 30_000)
    p = calibrator.predict(np.sort(test_margin))
    assert np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() <= 1
    assert expected_calibration_error(test_y, calibrator.predict(test_margin)) < 0.02


def test_method_depends_on_the_number_of_positives():
    assert choose_method(ISOTONIC_MIN_POSITIVES - 1) == "sigmoid"
    assert choose_method(ISOTONIC_MIN_POSITIVES) == "isotonic"
    margin, y, _ = miscalibrated_margins(5, 2000)
    assert fit_calibrator(margin, y).method == "sigmoid"
    margin, y, _ = miscalibrated_margins(6, 40_000, shift=0.0)
    assert y.sum() >= ISOTONIC_MIN_POSITIVES
    assert fit_calibrator(margin, y).method == "isotonic"
    assert fit_calibrator(margin, y, "sigmoid").method == "sigmoid"


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibrators_survive_pickling(method):
    margin, y, _ = miscalibrated_margins(7, 3000)
    calibrator = fit_calibrator(margin, y, method)
    restored = pickle.loads(pickle.dumps(calibrator))
    np.testing.assert_array_equal(restored.predict(margin), calibrator.predict(margin))


def test_one_class_calibration_fold_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="both outcomes"):
        fit_calibrator(np.arange(10.0), np.zeros(10))
    with pytest.raises(ValueError, match="Unknown calibration method"):
        fit_calibrator(np.arange(10.0), np.r_[np.zeros(5), np.ones(5)], "beta")  # type: ignore[arg-type]
