"""Refusals before training: forbidden LightGBM parameters, too few labels, leaky features.

:data:`DEFAULT_PARAMS` are the LightGBM parameters of every model; overrides that
reweight classes are refused (:func:`resolve_params`), a feature that alone predicts
the label is refused (:func:`check_leakage`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.evaluate import feature_auc

#: Compact trees keep exact TreeSHAP fast at scoring time.
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "metric": "binary_logloss",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "max_depth": 5,
    "min_child_samples": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 10.0,
    "min_data_per_group": 50,
    "seed": 42,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
    "num_boost_round": 400,
    "early_stopping_rounds": 40,
}
#: Reweighting classes distorts probabilities; calibration cannot fully undo it.
FORBIDDEN_PARAMS = frozenset(
    {
        "is_unbalance",
        "unbalance",
        "unbalanced_sets",
        "scale_pos_weight",
        "class_weight",
        "pos_bagging_fraction",
        "neg_bagging_fraction",
    }
)


class InsufficientLabelsError(ValueError):
    """Too few positive labels to train; scoring falls back to the rule score.

    Attributes:
        target: The target's name.
        positives: Positive labels found.
        needed: The configured minimum (``model.min_positive_labels``).
    """

    def __init__(self, target: str, positives: int, rows: int, needed: int) -> None:
        self.target, self.positives, self.needed = target, positives, needed
        super().__init__(
            f"Only {positives} positive {target} labels in {rows} rows; training needs at "
            f"least {needed} (model.min_positive_labels). No model was trained: "
            f"{target} scoring falls back to the rule score."
        )

    @property
    def missing(self) -> int:
        """How many more positives training needs."""
        return max(self.needed - self.positives, 0)

    def decision(self, fallback: str = "scored with the rule score") -> str:
        """The run's decision in words, for the summary and the CLI.

        Args:
            fallback: What scores the target instead.
        """
        noun = "label" if self.positives == 1 else "labels"
        return (
            f"not trained: {self.positives} positive {noun}, {self.missing} more needed "
            f"(model.min_positive_labels = {self.needed}); {fallback}"
        )


class NotEnoughHistoryError(ValueError):
    """No training cutoff fits the history; the message states the binding constraint.

    A nightly run scores the target with the rule score; ``leadscore train`` stops.
    """

    def decision(self, fallback: str = "scored with the rule score") -> str:
        """The run's decision in words, for the summary and the CLI."""
        return f"not trained: {self}; {fallback}"


def check_positive_labels(y: np.ndarray, minimum: int, target: str) -> int:
    """The number of positive labels, when there are enough to train.

    Raises:
        InsufficientLabelsError: With the count, the minimum and how many are missing.
    """
    positives = int(np.asarray(y, dtype="float64").sum())
    if positives < minimum:
        raise InsufficientLabelsError(target, positives, int(np.asarray(y).size), minimum)
    return positives


class LeakageError(ValueError):
    """A single feature predicts the label too well to be believed."""


def check_leakage(
    features: pd.DataFrame,
    y: np.ndarray | pd.Series,
    threshold: float = 0.95,
    allow: Sequence[str] = (),
    *,
    max_rows: int = 200_000,
    seed: int = 0,
) -> pd.Series:
    """Each feature's own AUC; stop when one exceeds the threshold.

    A feature that alone nearly separates the classes usually encodes the outcome
    itself (a status set at conversion, a date after the cutoff).

    Args:
        features: Feature columns (no ids).
        y: Labels (0/1).
        threshold: Largest believable single-feature AUC.
        allow: Features exempt from the check (still reported).
        max_rows: Rows sampled for the check on large frames.
        seed: Seed of that sample.

    Returns:
        AUC per feature, largest first.

    Raises:
        LeakageError: Naming every offending feature with its AUC.
    """
    labels = np.asarray(y, dtype="float64").ravel()
    frame = features.reset_index(drop=True)
    if len(frame) > max_rows:
        rows = np.random.default_rng(seed).choice(len(frame), max_rows, replace=False)
        frame, labels = frame.iloc[rows], labels[rows]
    aucs = pd.Series(
        {name: feature_auc(frame[name], labels) for name in frame.columns}, dtype="float64"
    ).sort_values(ascending=False)
    leaky = aucs[(aucs > threshold) & ~aucs.index.isin(list(allow))]
    if not leaky.empty:
        named = ", ".join(f"{name} (AUC {auc:.3f})" for name, auc in leaky.items())
        raise LeakageError(
            f"Training stopped: feature(s) {named} alone predict the label above the "
            f"leakage threshold {threshold:.2f}. They probably encode the outcome itself; "
            "remove them, or list them in model.allow_leaky_features if they are genuine."
        )
    return aucs


def resolve_params(overrides: Mapping[str, Any] | None, seed: int) -> dict[str, Any]:
    """Default LightGBM parameters with the configured overrides laid over them.

    Raises:
        ValueError: If an override reweights classes (it would spoil probabilities).
    """
    params = {**DEFAULT_PARAMS, "seed": seed, **dict(overrides or {})}
    bad = sorted(k for k, v in params.items() if k in FORBIDDEN_PARAMS and v not in (None, False))
    if bad:
        raise ValueError(
            f"LightGBM parameter(s) {', '.join(bad)} reweight the classes, which spoils the "
            "probabilities; remove them from model.lightgbm_params."
        )
    return params
