"""Probability calibration of a booster's raw margin, fitted on held-out data.

Two methods, both picklable and both mapping a 1-D score to a probability:

* :class:`SigmoidCalibrator` (Platt scaling): a logistic regression on the margin.
  Two parameters, so it is stable on small calibration folds.
* :class:`IsotonicCalibrator`: a monotone step function. Flexible, but it needs many
  positives to avoid overfitting the calibration fold, so :func:`choose_method`
  only picks it with at least :data:`ISOTONIC_MIN_POSITIVES` positives.

The same calibrators also map rule points to probabilities, so a rule score can be
compared with the model on log loss, Brier score and ECE.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)

CalibrationMethod = Literal["sigmoid", "isotonic"]

#: Isotonic regression only with at least this many positives in the calibration fold.
ISOTONIC_MIN_POSITIVES = 1000


def _checked(score: object, y: object | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    s = np.asarray(score, dtype="float64").ravel()
    if np.isnan(s).any():
        raise ValueError(f"{int(np.isnan(s).sum())} calibration scores are missing.")
    if y is None:
        return s, None
    y_arr = np.asarray(y, dtype="float64").ravel()
    if y_arr.shape != s.shape:
        raise ValueError(
            f"Calibration needs one label per score ({s.size} scores, {y_arr.size} labels)."
        )
    positives = int(y_arr.sum())
    if positives == 0 or positives == y_arr.size:
        raise ValueError(
            f"The calibration fold has {positives} positives out of {y_arr.size} rows; "
            "calibration needs both outcomes. Use more cutoffs or a longer history."
        )
    return s, y_arr


class SigmoidCalibrator:
    """Platt scaling: ``p = 1 / (1 + exp(-(a * margin + b)))``.

    The score is standardised before the fit so rule points (0-150) and margins
    (about -10..10) are handled alike; the regularisation is negligible.
    """

    method: CalibrationMethod = "sigmoid"

    def fit(self, score: object, y: object) -> SigmoidCalibrator:
        """Fit on held-out scores and outcomes.

        Args:
            score: Raw margins (or any monotone score) of the calibration fold.
            y: Their outcomes (0/1).

        Returns:
            self.
        """
        s, y_arr = _checked(score, y)
        self.center_ = float(s.mean())
        self.scale_ = float(s.std()) or 1.0
        model = LogisticRegression(C=1e6, max_iter=1000)
        model.fit(((s - self.center_) / self.scale_).reshape(-1, 1), y_arr)
        self.slope_ = float(model.coef_[0, 0])
        self.intercept_ = float(model.intercept_[0])
        return self

    def predict(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw margins."""
        s, _ = _checked(margin)
        z = self.slope_ * (s - self.center_) / self.scale_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))


class IsotonicCalibrator:
    """Monotone (non-decreasing) step function from score to probability."""

    method: CalibrationMethod = "isotonic"

    def fit(self, score: object, y: object) -> IsotonicCalibrator:
        """Fit on held-out scores and outcomes.

        Args:
            score: Raw margins (or any monotone score) of the calibration fold.
            y: Their outcomes (0/1).

        Returns:
            self.
        """
        s, y_arr = _checked(score, y)
        self.isotonic_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        self.isotonic_.fit(s, y_arr)
        return self

    def predict(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw margins."""
        s, _ = _checked(margin)
        return np.asarray(self.isotonic_.predict(s), dtype="float64")


def choose_method(n_positives: int, min_isotonic_positives: int = ISOTONIC_MIN_POSITIVES) -> str:
    """Isotonic when the calibration fold has enough positives, sigmoid otherwise.

    Args:
        n_positives: Positives in the calibration fold.
        min_isotonic_positives: Threshold for isotonic regression.

    Returns:
        ``"isotonic"`` or ``"sigmoid"``.
    """
    return "isotonic" if n_positives >= min_isotonic_positives else "sigmoid"


def fit_calibrator(
    score: object,
    y: object,
    method: CalibrationMethod | Literal["auto"] = "auto",
    *,
    min_isotonic_positives: int = ISOTONIC_MIN_POSITIVES,
) -> SigmoidCalibrator | IsotonicCalibrator:
    """Fit a calibrator on data the model did not train on.

    Args:
        score: Raw margins (or rule points) of the calibration fold.
        y: Outcomes of the calibration fold.
        method: ``sigmoid``, ``isotonic`` or ``auto`` (by number of positives).
        min_isotonic_positives: Positives needed for ``auto`` to pick isotonic.

    Returns:
        The fitted calibrator; its ``method`` attribute says which one.
    """
    positives = int(np.asarray(y, dtype="float64").sum())
    chosen = choose_method(positives, min_isotonic_positives) if method == "auto" else method
    if chosen not in ("sigmoid", "isotonic"):
        raise ValueError(f"Unknown calibration method {method!r}; use sigmoid, isotonic or auto.")
    log.info("calibrating with %s regression on %d positives", chosen, positives)
    calibrator = SigmoidCalibrator() if chosen == "sigmoid" else IsotonicCalibrator()
    return calibrator.fit(score, y)
