"""A bounded training sample: every positive, a weighted random sample of the negatives.

Boosting on every (entity, cutoff) row grows with entities times cutoffs (150k
entities over 12 monthly cutoffs is 1.8M rows). :func:`bound_training_rows` keeps a
fold's training rows under ``model.max_training_rows``: all positives and a seeded
random sample of the negatives, each kept negative weighted by the inverse of its
sampling rate, so the booster's scores stay on the full population's scale. Early
stopping, calibration and validation rows are never sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrainingSample:
    """The training rows a booster fits on and their weights.

    Attributes:
        rows: Row positions kept (sorted), a subset of the rows given.
        weights: Weight of each kept row (aligned with ``rows``), or ``None`` when every
            row was kept (all weights 1).
        positives: Positive rows given.
        negatives: Negative rows given.
        kept_positives: Positive rows kept.
        kept_negatives: Negative rows kept.
        description: One sentence saying what was kept (empty when nothing was sampled).
    """

    rows: np.ndarray
    weights: np.ndarray | None
    positives: int
    negatives: int
    kept_positives: int
    kept_negatives: int
    description: str = ""

    @property
    def sampled(self) -> bool:
        """Whether some rows were left out."""
        return self.weights is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (counts, weights, the sentence; no row positions)."""
        return {
            "sampled": self.sampled,
            "positives": self.positives,
            "negatives": self.negatives,
            "kept_positives": self.kept_positives,
            "kept_negatives": self.kept_negatives,
            "positive_weight": _weight(self.positives, self.kept_positives),
            "negative_weight": _weight(self.negatives, self.kept_negatives),
            "description": self.description,
        }


def _weight(total: int, kept: int) -> float:
    return total / kept if kept else 1.0


def _describe(positives: int, negatives: int, kept_pos: int, kept_neg: int) -> str:
    if kept_pos == positives:
        pos = f"all {positives:,} positives"
    else:
        pos = f"{kept_pos:,} of {positives:,} positives (weight {_weight(positives, kept_pos):.3g})"
    neg = f"{kept_neg:,} of {negatives:,} negatives (weight {_weight(negatives, kept_neg):.3g})"
    return f"trained on {pos} and {neg}, calibrated and validated on unsampled rows"


def bound_training_rows(
    rows: np.ndarray, y: np.ndarray, max_rows: int | None, seed: int
) -> TrainingSample:
    """Keep at most ``max_rows`` of ``rows``: every positive, a seeded sample of negatives.

    Each kept row is weighted by ``given / kept`` of its class, so weighted counts equal
    the full fold's. Only when the positives alone fill more than half the bound are
    they sampled too, at half the bound (the negatives fill the rest), so the bound
    always holds.

    Args:
        rows: Row positions of a fold's booster-training rows.
        y: 0/1 labels of every row (indexed by ``rows``).
        max_rows: The bound; ``None`` keeps every row.
        seed: Seed of the random sample.

    Returns:
        The :class:`TrainingSample` (``weights`` is ``None`` when nothing was left out).

    Raises:
        ValueError: ``max_rows`` below 2.
    """
    rows = np.asarray(rows)
    positive = np.asarray(y)[rows] == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if max_rows is None or rows.size <= max_rows:
        return TrainingSample(rows, None, n_pos, n_neg, n_pos, n_neg)
    if max_rows < 2:
        raise ValueError(f"max_training_rows must be at least 2, not {max_rows}.")
    kept_neg = max(max_rows - n_pos, min(n_neg, max_rows // 2))
    kept_pos = max_rows - kept_neg
    rng = np.random.default_rng(seed)
    pos_rows = rows[positive]
    neg_rows = rng.choice(rows[~positive], size=kept_neg, replace=False)
    if kept_pos < n_pos:
        pos_rows = rng.choice(pos_rows, size=kept_pos, replace=False)
    kept = np.concatenate([pos_rows, neg_rows])
    order = np.argsort(kept, kind="stable")
    weights = np.where(np.asarray(y)[kept] == 1, _weight(n_pos, kept_pos), _weight(n_neg, kept_neg))
    return TrainingSample(
        kept[order],
        weights[order].astype("float64"),
        n_pos,
        n_neg,
        kept_pos,
        kept_neg,
        _describe(n_pos, n_neg, kept_pos, kept_neg),
    )


def uniform_rows(rows: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """At most ``max_rows`` of ``rows``: a seeded uniform sample (sorted), else all of them.

    Unlike :func:`bound_training_rows` every row has the same chance, so the outcome
    rate stays the fold's and no weights are needed (the rule baseline's refit).

    Args:
        rows: Row positions.
        max_rows: The bound; ``None`` keeps every row.
        seed: Seed of the sample.

    Returns:
        The kept positions, in their order in ``rows``.
    """
    rows = np.asarray(rows)
    if max_rows is None or rows.size <= max_rows:
        return rows
    kept = np.random.default_rng(seed).choice(rows.size, size=max_rows, replace=False)
    return rows[np.sort(kept)]
