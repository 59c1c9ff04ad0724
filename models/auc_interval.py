"""A bootstrap confidence interval of the ROC AUC, seeded and vectorised.

Each resample draws ``n`` rows with replacement; its AUC is computed from the resample
counts of each row (no copying of the data): rows are grouped by distinct score, and
the AUC is the share of (positive, negative) pairs ranked correctly, ties counting
half, exactly as :func:`sklearn.metrics.roc_auc_score` with those counts as weights.
Resamples are processed in blocks so memory stays bounded on large folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Resample counts held in memory at once (resamples x rows).
_BLOCK_CELLS = 2_000_000


@dataclass(frozen=True)
class AucInterval:
    """A bootstrap interval of the ROC AUC.

    Attributes:
        low: Lower bound (NaN when a class is absent).
        high: Upper bound (NaN when a class is absent).
        level: Confidence level, e.g. 0.95.
        resamples: Bootstrap resamples drawn.
    """

    low: float
    high: float
    level: float
    resamples: int

    def describe(self) -> str:
        """``95% CI 0.612-0.701``."""
        return f"{self.level:.0%} CI {self.low:.3f}-{self.high:.3f}"


def _resample_aucs(y_sorted: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC of each resample from its per-row counts (rows sorted by score)."""
    positives = np.add.reduceat(counts * y_sorted, starts, axis=1)
    negatives = np.add.reduceat(counts * (1.0 - y_sorted), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    correct = (positives * (below + 0.5 * negatives)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, correct / pairs, np.nan)


def auc_interval(
    y: object, score: object, *, resamples: int = 500, level: float = 0.95, seed: int = 0
) -> AucInterval:
    """Percentile bootstrap interval of the ROC AUC of ``score`` against ``y``.

    Args:
        y: Outcomes (0/1).
        score: Scores or probabilities (higher = likelier positive).
        resamples: Bootstrap resamples.
        level: Confidence level.
        seed: Seed of the resampling.

    Returns:
        The interval; NaN bounds when either class is absent.
    """
    labels = np.asarray(y, dtype="float64").ravel()
    values = np.asarray(score, dtype="float64").ravel()
    n = labels.size
    if n == 0 or labels.sum() in (0, n):
        return AucInterval(float("nan"), float("nan"), level, resamples)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    y_sorted = labels[order]
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    aucs = []
    for first in range(0, resamples, block):
        size = min(block, resamples - first)
        drawn = position[rng.integers(0, n, size=(size, n))] + n * np.arange(size)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
        aucs.append(_resample_aucs(y_sorted, starts, counts))
    all_aucs = np.concatenate(aucs)
    tail = 100 * (1 - level) / 2
    if np.isnan(all_aucs).all():
        return AucInterval(float("nan"), float("nan"), level, resamples)
    low, high = np.nanpercentile(all_aucs, [tail, 100 - tail])
    return AucInterval(float(low), float(high), level, resamples)
