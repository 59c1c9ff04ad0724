"""Refusals before training: forbidden LightGBM parameters, too few labels, leaky features.

:data:`DEFAULT_PARAMS` are the LightGBM parameters of every model; overrides that
reweight classes are refused (:func:`resolve_params`), a feature that alone predicts
the label is refused (:func:`check_leakage`, each feature's own AUC by
:func:`feature_auc` from one sort of the column).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

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


def _midranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's rank among ``values`` (1-based, ties averaged) and the sort order."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    ranks = np.empty(values.size, dtype="float64")
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks, order


def _auc_from_rank_sum(rank_sum: float, n_pos: float, n_neg: float) -> float:
    """ROC AUC from the positives' rank sum (Mann-Whitney U), ties counted half."""
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def feature_auc(values: pd.Series, y: object, min_level_rows: int = 20) -> float:
    """How well one feature alone separates the classes: AUC folded to at least 0.5.

    Numeric features are ranked as they are, with missing values tried both below and
    above all others (the better of the two counts). Categorical features are ranked by
    their level's outcome rate, levels with fewer than ``min_level_rows`` rows pooled,
    so a column that identifies single rows is not mistaken for a leak by chance.

    The AUC is the Mann-Whitney statistic of mid-ranks (ties count half), the value
    ``roc_auc_score`` gives, from one sort of the column: the leakage guard runs it on
    every feature of a training fold.

    Args:
        values: The feature column.
        y: Outcomes (0/1).
        min_level_rows: Smallest level kept apart for categorical features.

    Returns:
        ``max(AUC, 1 - AUC)``; 0.5 when the feature or the labels are constant.
    """
    y_arr = np.asarray(y, dtype="float64").ravel()
    positive = y_arr == 1
    n_pos = float(positive.sum())
    n_neg = float(y_arr.size - n_pos)
    if not 0 < n_pos < y_arr.size:
        return 0.5
    column = values.reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(column) and not isinstance(column.dtype, pd.CategoricalDtype):
        numbers = column.astype("float64").to_numpy()
        present = ~np.isnan(numbers)
        if not present.any():
            return 0.5
        ranks, _ = _midranks(numbers[present])
        n_missing = float(y_arr.size - present.sum())
        pos_present, pos_missing = float(positive[present].sum()), float(positive[~present].sum())
        rank_sum = float(ranks[positive[present]].sum())
        # Missing values as one tied block below every present value, then above them.
        below = rank_sum + pos_present * n_missing + pos_missing * (n_missing + 1) / 2.0
        above = rank_sum + pos_missing * (present.sum() + (n_missing + 1) / 2.0)
        aucs = [_auc_from_rank_sum(s, n_pos, n_neg) for s in (below, above)]
    else:
        levels = column.astype("string").fillna("<missing>")
        counts = levels.map(levels.value_counts())
        levels = levels.where(counts >= min_level_rows, "<rare>")
        rates = pd.Series(y_arr).groupby(levels.to_numpy()).mean()
        ranks, _ = _midranks(levels.map(rates).to_numpy(dtype="float64"))
        aucs = [_auc_from_rank_sum(float(ranks[positive].sum()), n_pos, n_neg)]
    return float(max(max(a, 1.0 - a) for a in aucs))
