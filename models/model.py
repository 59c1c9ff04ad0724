"""The trained-model object shared by training, scoring and explanations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd


class Calibrator(Protocol):
    """Maps the booster's raw margin (log-odds) to a calibrated probability."""

    def predict(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw margins."""
        ...


@dataclass
class TrainedModel:
    """A LightGBM booster plus its calibration and the schema it was trained on.

    Attributes:
        target: ``conversion`` or ``churn``.
        booster: The fitted LightGBM booster (raw margin = log-odds).
        calibrator: Fitted on data the booster did not train on.
        feature_names: Columns the booster reads, in order.
        categorical_levels: Levels seen in training per categorical column; unseen
            values become missing at prediction time.
        feature_set_version: ``FeatureSpec.version`` of the training features.
        reference_scores: Sorted calibrated probabilities on the validation fold;
            the 0-100 score is a percentile against them.
        metadata: Anything else worth keeping with the model (thresholds, windows).
    """

    target: str
    booster: lgb.Booster
    calibrator: Calibrator
    feature_names: list[str]
    categorical_levels: dict[str, list[str]] = field(default_factory=dict)
    feature_set_version: str = ""
    reference_scores: np.ndarray = field(default_factory=lambda: np.array([]))
    metadata: dict = field(default_factory=dict)

    def prepare(self, features: pd.DataFrame) -> pd.DataFrame:
        """Select the model's columns and align categories with training.

        Missing columns are added as missing values; unseen category levels become
        missing (LightGBM routes them like NaN), so new data never fails to score.
        """
        out = pd.DataFrame(index=features.index)
        for name in self.feature_names:
            column = features[name] if name in features else pd.Series(np.nan, index=features.index)
            if name in self.categorical_levels:
                column = pd.Categorical(
                    column.astype("object"), categories=self.categorical_levels[name]
                )
            else:
                column = pd.to_numeric(column, errors="coerce").astype("float64")
            out[name] = column
        return out

    def predict_margin(self, features: pd.DataFrame) -> np.ndarray:
        """Raw log-odds from the booster."""
        return self.booster.predict(self.prepare(features), raw_score=True)

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive outcome."""
        return np.clip(self.calibrator.predict(self.predict_margin(features)), 0.0, 1.0)
