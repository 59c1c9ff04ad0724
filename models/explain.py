"""Reason codes: the top factors raising and lowering each entity's 0-100 score.

How a reason is made, per entity:

1. Exact TreeSHAP contributions in log-odds come from LightGBM itself
   (``Booster.predict(pred_contrib=True)``; last column = base value), computed in
   chunks so memory stays flat. The ``shap`` library is for plots and notebooks only.
2. Contributions of the features sharing one human concept (``FeatureDef.concept``:
   the windows, recency, decay and trend of one event type; a category column is
   already one feature with LightGBM native categoricals) are summed.
3. Impacts are in **points of the 0-100 score**. The score moves from the base score
   (the score at the base-value margin) to the entity's score; that difference is
   allocated to concepts in proportion to their log-odds contributions, so
   ``base score + sum(impacts) == score`` exactly. Because the score is a monotone
   function of the margin, each impact has the sign of its contribution for leads
   and the opposite sign for customers (health score: churn risk lowers it), so
   "raising" always means raising the shown score.
4. Impacts are rounded to whole points by the largest-remainder rule, so the rounded
   impacts of all concepts add up to ``round(score) - round(base score)``; the part not
   shown in the top reasons is reported as ``other_factors_points``.
5. Each reason is the sentence of the concept's most contributing feature, rendered by
   ``FeatureDef.describe`` with the entity's own value (from the unprepared input, so
   an unseen category still shows its value), e.g.
   ``+12 pts: 4 pricing page visits in the last 7 days``, tagged ``fit`` or
   ``engagement``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.bands import ScoreKind, score_from_probability
from models.concepts import ConceptMap
from models.model import TrainedModel
from models.reason_text import entity_values, reason_lists, reasons_text

REASON_COLUMNS = (
    "reasons_up",
    "reasons_down",
    "reasons_text",
    "base_score",
    "other_factors_points",
)
_DTYPES = {"reasons_up": object, "reasons_down": object, "reasons_text": object}


def score_from_margin(model: TrainedModel, margin: np.ndarray, kind: ScoreKind) -> np.ndarray:
    """The 0-100 score of raw margins: calibrate, then percentile (see ``models.bands``)."""
    probability = np.clip(model.calibrator.predict(np.asarray(margin, dtype="float64")), 0.0, 1.0)
    return score_from_probability(probability, model.reference_scores, kind)


def tree_contributions(
    model: TrainedModel, prepared: pd.DataFrame, num_threads: int | None = None
) -> np.ndarray:
    """Exact TreeSHAP log-odds contributions from LightGBM (``pred_contrib``).

    Args:
        model: The trained model.
        prepared: ``model.prepare(features)`` rows.
        num_threads: LightGBM threads (default: LightGBM's own choice).

    Returns:
        ``(rows, features + 1)`` array; the last column is the base value.
    """
    return np.asarray(model.booster.predict(prepared, pred_contrib=True, **_threads(num_threads)))


def _threads(num_threads: int | None) -> dict[str, int]:
    return {} if num_threads is None else {"num_threads": num_threads}


def allocate_points(
    concept_logodds: np.ndarray, score: np.ndarray, base_score: float
) -> np.ndarray:
    """Split each row's score change over concepts in proportion to their log-odds.

    Args:
        concept_logodds: ``(rows, concepts)`` summed contributions.
        score: Each row's 0-100 score.
        base_score: Score at the base-value margin.

    Returns:
        ``(rows, concepts)`` points; each row sums to ``score - base_score``.
    """
    total = concept_logodds.sum(axis=1)
    delta = np.asarray(score, dtype="float64") - base_score
    # A row at the base margin has no change to allocate (0/0): give every concept 0.
    safe = np.abs(total) > 1e-12
    ratio = np.divide(delta, total, out=np.zeros_like(delta), where=safe)
    points = concept_logodds * ratio[:, None]
    # Tiny margins with a non-zero delta cannot happen for a monotone score; keep the
    # sum exact anyway by putting any rest on the largest concept.
    rest = np.where(safe, 0.0, delta)
    if np.any(rest != 0.0):
        largest = np.abs(concept_logodds).argmax(axis=1)
        points[np.arange(len(points)), largest] += rest
    return points


def round_to_total(points: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Whole points per concept adding up to ``total`` per row (largest remainder).

    Every value is floored, then the rows' missing units go to the largest fractional
    parts. With ``total = round(score) - round(base)`` the shortfall lies in
    ``[0, concepts]``, so no value moves by more than one point from its floor.

    Args:
        points: ``(rows, concepts)`` exact points.
        total: Integer target per row.

    Returns:
        ``(rows, concepts)`` int64 array whose rows sum to ``total``.
    """
    floors = np.floor(points)
    fractions = points - floors
    shortfall = np.asarray(total, dtype="float64") - floors.sum(axis=1)
    order = np.argsort(-fractions, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(points.shape[1])[None, :], axis=1)
    n_concepts = points.shape[1]
    # Shortfall outside [0, concepts] only arises from inconsistent inputs; spread it.
    laps = np.floor_divide(shortfall, n_concepts)
    remaining = shortfall - laps * n_concepts
    rounded = floors + laps[:, None] + (ranks < remaining[:, None])
    return rounded.astype(np.int64)


def _most_contributing(contrib: np.ndarray, concepts: ConceptMap, sign: np.ndarray) -> np.ndarray:
    """Per row and concept, the feature pushing hardest in the concept's direction."""
    best = np.empty(sign.shape, dtype=np.int64)
    for c in range(len(concepts.concepts)):
        members = np.flatnonzero(concepts.feature_concept == c)
        block = contrib[:, members]
        best[:, c] = np.where(
            sign[:, c] >= 0, members[block.argmax(axis=1)], members[block.argmin(axis=1)]
        )
    return best


def explain_chunk(
    contrib: np.ndarray,
    score: np.ndarray,
    base_score: float,
    values: list[np.ndarray],
    concepts: ConceptMap,
    top_k: int = 3,
) -> dict[str, np.ndarray]:
    """Reason codes of a block of rows from their contributions (vectorised).

    Args:
        contrib: ``(rows, features + 1)`` from :func:`tree_contributions`.
        score: The rows' 0-100 scores (a monotone function of the margin).
        base_score: Score at the base-value margin.
        values: Per feature, the rows' own values (see :func:`entity_values`).
        concepts: From :func:`models.concepts.concept_map`.
        top_k: Reasons per direction.

    Returns:
        Columns :data:`REASON_COLUMNS` as arrays of the block's length.
    """
    features = contrib[:, :-1]
    logodds = features @ concepts.membership
    points = allocate_points(logodds, score, base_score)
    base = round(base_score)
    total = (np.round(score) - base).astype(np.int64)
    rounded = round_to_total(points, total)
    best = _most_contributing(features, concepts, np.sign(logodds))
    order = np.argsort(-points, axis=1, kind="stable")
    k = min(top_k, points.shape[1])
    n_rows = len(points)
    rows = np.arange(n_rows)[:, None]
    shown = np.zeros(n_rows, dtype=np.int64)
    columns: dict[str, np.ndarray] = {}
    lines: dict[str, np.ndarray] = {}
    for name, picked, positive in (
        ("up", order[:, :k], True),
        ("down", order[:, ::-1][:, :k], False),
    ):
        impact = rounded[rows, picked]
        # Rounded points are monotone in the exact ones, so valid reasons form a prefix.
        valid = impact > 0 if positive else impact < 0
        shown += np.where(valid, impact, 0).sum(axis=1)
        columns[f"reasons_{name}"], lines[name] = reason_lists(
            impact, valid, picked, best, values, concepts
        )
    other = total - shown
    columns |= {
        "reasons_text": reasons_text(lines["up"], lines["down"], base, other),
        "base_score": np.full(n_rows, base, dtype=np.int64),
        "other_factors_points": other,
    }
    return columns


def explain(
    model: TrainedModel,
    features: pd.DataFrame,
    kind: ScoreKind,
    concepts: ConceptMap,
    top_k: int = 3,
    chunk_rows: int = 50_000,
    num_threads: int | None = None,
) -> pd.DataFrame:
    """Reason codes for every row of ``features``.

    Args:
        model: The champion model of the rows' target.
        features: Feature rows (unprepared: entity values are read from here).
        kind: ``lead`` (conversion score) or ``customer`` (health score).
        concepts: ``concept_map(model.feature_names, catalog, model.categorical_levels)``.
        top_k: Reasons per direction.
        chunk_rows: Rows per ``pred_contrib`` call (bounds memory).
        num_threads: LightGBM threads.

    Returns:
        Frame on ``features.index`` with :data:`REASON_COLUMNS` plus ``score_exact``
        (the unrounded score the impacts add up to).
    """
    if list(concepts.feature_names) != list(model.feature_names):
        raise ValueError(
            "The concept map was built for other features than the model's "
            f"({len(concepts.feature_names)} vs {len(model.feature_names)} columns); build it "
            "with concept_map(model.feature_names, catalog, model.categorical_levels)."
        )
    out: dict[str, list[np.ndarray]] = {name: [] for name in (*REASON_COLUMNS, "score_exact")}
    base_score: float | None = None
    for start in range(0, len(features), chunk_rows):
        block = features.iloc[start : start + chunk_rows]
        prepared = model.prepare(block)
        contrib = tree_contributions(model, prepared, num_threads)
        if base_score is None:
            base_score = float(score_from_margin(model, contrib[:1, -1], kind)[0])
        # The score from the booster's own margin, as scoring computes it: summing the
        # contributions differs in the last bits, which can flip a score sitting on .5.
        margin = model.booster.predict(prepared, raw_score=True, **_threads(num_threads))
        score = score_from_margin(model, margin, kind)
        values = entity_values(block, concepts)
        chunk = explain_chunk(contrib, score, base_score, values, concepts, top_k)
        for name in REASON_COLUMNS:
            out[name].append(chunk[name])
        out["score_exact"].append(score)
    if not out["score_exact"]:
        return pd.DataFrame(columns=[*REASON_COLUMNS, "score_exact"], index=features.index)
    # Object dtype on purpose: inferring Arrow strings for millions of rows costs seconds.
    return pd.DataFrame(
        {
            name: pd.Series(np.concatenate(parts), index=features.index, dtype=_DTYPES.get(name))
            for name, parts in out.items()
        }
    )
