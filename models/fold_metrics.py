"""Metrics of validation predictions pooled over several folds.

Rolling-origin evaluation pools the validation predictions of folds whose models were
calibrated at different times. Each fold's probabilities sit at its own level (the
outcome rate its training saw), so pooled as they are, a score that ranks nobody
within a fold (a constant rule score) still earns an AUC well above 0.5 whenever later
folds convert more often. Ranking metrics (:data:`models.evaluate.RANK_METRICS`) are
therefore computed on each prediction's rank *within its fold*, the ranking a
salesperson sees on one day; probability metrics (log loss, Brier, ECE) on the
probabilities themselves. With one fold both are the plain metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from models.evaluate import RANK_METRICS, evaluate, with_auc_interval


def within_fold_ranks(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Each score's mid-rank in its own fold scaled to (0, 1), ties averaged; pooled.

    ``(rank - 0.5) / n`` puts a fold's median at exactly 0.5 whatever its size, so a
    constant score is 0.5 in every fold and ranks nobody.
    """
    return np.concatenate(
        [(rankdata(part, method="average") - 0.5) / max(len(part), 1) for part in parts]
    )


def rank_metrics(y: np.ndarray, parts: Sequence[np.ndarray]) -> dict[str, object]:
    """The rank metrics of scores that are not probabilities (rule points), pooled."""
    scores = np.concatenate(parts) if len(parts) <= 1 else within_fold_ranks(parts)
    ranked = evaluate(y, scores, probabilities=False)
    return {name: ranked[name] for name in RANK_METRICS}


def pooled_metrics(y: np.ndarray, parts: Sequence[np.ndarray]) -> dict[str, object]:
    """:func:`models.evaluate.evaluate` with its AUC interval, of fold predictions pooled.

    Args:
        y: Outcomes of the pooled rows, in fold order.
        parts: Each fold's calibrated probabilities, in fold order.

    Returns:
        The metrics; with more than one fold, the rank metrics and the AUC interval
        come from :func:`within_fold_ranks`.
    """
    probabilities = np.concatenate(parts)
    metrics = evaluate(y, probabilities)
    if len(parts) <= 1:
        return with_auc_interval(metrics, y, probabilities)
    ranks = within_fold_ranks(parts)
    ranked = evaluate(y, ranks, probabilities=False)
    metrics.update({name: ranked[name] for name in RANK_METRICS})
    return with_auc_interval(metrics, y, ranks)
