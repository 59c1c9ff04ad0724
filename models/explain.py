"""Reason codes: the top factors raising and lowering each entity's 0-100 score.

How a reason is made, per entity:

1. Exact TreeSHAP contributions in log-odds: LightGBM's ``pred_contrib`` values (to
   the rounding of per-feature sums) from :mod:`models.treeshap` (last column = base
   value), in chunks so memory stays flat. The ``shap`` library is for plots and notebooks only.
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
   ``engagement``; identifiers and huge categories are described as a group
   (:func:`models.reason_text.sentence`).
6. A reason (concept and sentence) shown for at least :data:`SHARED_SHARE` of the
   entities explained together says nothing about one of them: it is dropped from
   their lists (the next strongest concept takes its place) and its points are added
   to each one's ``base_score``, so base + shown + other still equals the score.
   The entities explained together are those whose reasons a run recomputes.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.bands import ScoreKind, score_from_probability
from models.concepts import ConceptMap
from models.model import ModelInput, TrainedModel
from models.reason_text import entity_values, reason_lists, reasons_text, sentences
from models.text_arrays import TextArray, joined_texts
from models.treeshap import contributions

log = logging.getLogger(__name__)

REASON_COLUMNS = (
    "reasons_up",
    "reasons_down",
    "reasons_text",
    "base_score",
    "other_factors_points",
)
#: The reason texts, built as Arrow text (:mod:`models.text_arrays`).
TEXT_COLUMNS = ("reasons_up", "reasons_down", "reasons_text")
#: A reason shown for at least this share of the entities explained together is part
#: of the base score, not a reason (e.g. "No NPS answer yet" for every lead).
SHARED_SHARE = 0.99
#: ... when at least this many entities are explained together.
SHARED_MIN_ENTITIES = 20
#: Candidates kept per direction beyond ``top_k``, to fill in for dropped shared reasons.
_SPARE = 2


def score_from_margin(model: TrainedModel, margin: np.ndarray, kind: ScoreKind) -> np.ndarray:
    """The 0-100 score of raw margins: calibrate, then percentile (see ``models.bands``)."""
    probability = np.clip(model.calibrator.predict(np.asarray(margin, dtype="float64")), 0.0, 1.0)
    return score_from_probability(probability, model.reference_scores, kind)


def tree_contributions(
    model: TrainedModel, prepared: pd.DataFrame | np.ndarray, num_threads: int | None = None
) -> np.ndarray:
    """LightGBM's ``pred_contrib`` (to rounding): :mod:`models.treeshap` for a matrix.

    Args:
        model: The trained model.
        prepared: ``model.prepare(features)`` rows, or their ``ModelInput.rows`` matrix.
        num_threads: Threads (default: LightGBM's own choice, all cores for a matrix).

    Returns:
        ``(rows, features + 1)`` array; the last column is the base value.
    """
    if isinstance(prepared, np.ndarray):
        contrib = contributions(model.booster, prepared, num_threads)
        if contrib is not None:
            return contrib
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


@dataclass(frozen=True)
class Candidates:
    """A block's candidate reasons per direction (``up``, ``down``), in order of impact.

    Attributes:
        impact: ``(rows, m)`` whole points of each candidate.
        valid: ``(rows, m)`` which candidates move the score the direction's way.
        concept: ``(rows, m)`` concept index of each candidate.
        sentence: ``(rows, m)`` index of each candidate's sentence in ``texts``.
        texts: The block's sentences.
        total: Per row, ``round(score) - round(base score)``.
    """

    impact: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    concept: dict[str, np.ndarray]
    sentence: dict[str, np.ndarray]
    texts: list[str]
    total: np.ndarray


def candidates(
    contrib: np.ndarray,
    score: np.ndarray,
    base_score: float,
    values: list[np.ndarray],
    concepts: ConceptMap,
    per_direction: int,
) -> Candidates:
    """The strongest concepts of a block of rows in each direction, with their sentences.

    Args:
        contrib: ``(rows, features + 1)`` from :func:`tree_contributions`.
        score: The rows' 0-100 scores (a monotone function of the margin).
        base_score: Score at the base-value margin.
        values: Per feature, the rows' own values (see :func:`entity_values`).
        concepts: From :func:`models.concepts.concept_map`.
        per_direction: Candidates per direction.
    """
    features = contrib[:, :-1]
    logodds = features @ concepts.membership
    points = allocate_points(logodds, score, base_score)
    total = (np.round(score) - round(base_score)).astype(np.int64)
    rounded = round_to_total(points, total)
    best = _most_contributing(features, concepts, np.sign(logodds))
    order = np.argsort(-points, axis=1, kind="stable")
    m = min(per_direction, points.shape[1])
    rows = np.arange(len(points))[:, None]
    picks = {"up": order[:, :m], "down": order[:, ::-1][:, :m]}
    impact = {name: rounded[rows, picked] for name, picked in picks.items()}
    # Rounded points are monotone in the exact ones, so valid reasons form a prefix.
    valid = {"up": impact["up"] > 0, "down": impact["down"] < 0}
    cells = {name: np.nonzero(valid[name]) for name in picks}
    pair_rows = np.concatenate([cells[name][0] for name in picks])
    pair_features = np.concatenate([best[r, picks[name][r, j]] for name, (r, j) in cells.items()])
    codes, texts = sentences(pair_rows, pair_features, values, concepts)
    sentence: dict[str, np.ndarray] = {}
    start = 0
    for name, (r, j) in cells.items():
        sentence[name] = np.full(picks[name].shape, len(texts), dtype=np.int64)
        sentence[name][r, j] = codes[start : start + len(r)]
        start += len(r)
    return Candidates(impact, valid, picks, sentence, texts, total)


def shared_reasons(
    blocks: list[Candidates], top_k: int, share: float = SHARED_SHARE
) -> set[tuple[int, str]]:
    """The reasons (concept, sentence) at least ``share`` of all rows would be shown.

    Such a reason tells a salesperson nothing about one entity: it is part of the
    base. Fewer than :data:`SHARED_MIN_ENTITIES` rows never share a reason.

    Args:
        blocks: The candidates of every block of rows explained together.
        top_k: Reasons shown per direction.
        share: Share of the rows from which a reason counts as shared.
    """
    n_rows = sum(len(block.total) for block in blocks)
    if n_rows < SHARED_MIN_ENTITIES:
        return set()
    counts: Counter[tuple[int, str]] = Counter()
    for block in blocks:
        for name in ("up", "down"):
            shown = block.valid[name][:, :top_k]
            keys = block.concept[name][:, :top_k][shown] * (len(block.texts) + 1)
            keys += block.sentence[name][:, :top_k][shown]
            found, times = np.unique(keys, return_counts=True)
            for key, n in zip(found.tolist(), times.tolist(), strict=True):
                concept, text = divmod(key, len(block.texts) + 1)
                counts[concept, block.texts[text]] += n
    return {key for key, n in counts.items() if n >= share * n_rows}


def finish(
    block: Candidates,
    shared: set[tuple[int, str]],
    base: int,
    concepts: ConceptMap,
    top_k: int = 3,
) -> dict[str, TextArray]:
    """Reason columns of a block: shared reasons go into the base, the top ``top_k`` shown.

    Args:
        block: The block's :func:`candidates`.
        shared: From :func:`shared_reasons`.
        base: The rounded score at the base-value margin.
        concepts: The model's concept map.
        top_k: Reasons per direction.

    Returns:
        Columns :data:`REASON_COLUMNS`; per row ``base_score`` (with the shared
        reasons' points) + shown impacts + ``other_factors_points`` = the rounded score.
    """
    n_rows = len(block.total)
    width = len(block.texts) + 1
    shared_keys = [c * width + t for t, text in enumerate(block.texts) for c, s in shared
                   if s == text]  # fmt: skip
    shown = np.zeros(n_rows, dtype=np.int64)
    dropped = np.zeros(n_rows, dtype=np.int64)
    columns: dict[str, np.ndarray] = {}
    lines: dict[str, np.ndarray] = {}
    for name in ("up", "down"):
        impact, valid = block.impact[name], block.valid[name]
        is_shared = valid & np.isin(block.concept[name] * width + block.sentence[name], shared_keys)
        dropped += np.where(is_shared, impact, 0).sum(axis=1)
        keep = valid & ~is_shared
        order = np.argsort(~keep, axis=1, kind="stable")[:, :top_k]
        kept = np.take_along_axis(keep, order, axis=1)
        kept_impact = np.take_along_axis(impact, order, axis=1)
        shown += np.where(kept, kept_impact, 0).sum(axis=1)
        columns[f"reasons_{name}"], lines[name] = reason_lists(
            kept_impact,
            kept,
            np.take_along_axis(block.concept[name], order, axis=1),
            np.take_along_axis(block.sentence[name], order, axis=1),
            block.texts,
            concepts,
        )
    other = block.total - shown - dropped
    base_score = base + dropped
    columns |= {
        "reasons_text": reasons_text(lines["up"], lines["down"], base_score, other),
        "base_score": base_score,
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
    shared_share: float = SHARED_SHARE,
    *,
    rows: np.ndarray | None = None,
    score: np.ndarray | None = None,
    inputs: ModelInput | None = None,
) -> pd.DataFrame:
    """Reason codes for every row of ``features`` (or for its ``rows``).

    Args:
        model: The champion model of the rows' target.
        features: Feature rows (unprepared: entity values are read from here).
        kind: ``lead`` (conversion score) or ``customer`` (health score).
        concepts: ``concept_map(model.feature_names, catalog, model.categorical_levels)``.
        top_k: Reasons per direction.
        chunk_rows: Rows per ``pred_contrib`` call (bounds memory).
        num_threads: LightGBM threads.
        shared_share: A reason shown for at least this share of the rows is part of
            each row's base score instead (see :func:`shared_reasons`).
        rows: Positions of the rows of ``features`` to explain (default: all), so a
            caller need not copy them out of a large table first.
        score: The explained rows' exact scores, when the caller has them already
            (scoring does): the score of the booster's margin, as computed here.
        inputs: ``model.inputs(features)``, when the caller has built it already.

    Returns:
        Frame on the explained rows' index with :data:`REASON_COLUMNS` plus
        ``score_exact`` (the unrounded score the impacts add up to).
    """
    if list(concepts.feature_names) != list(model.feature_names):
        raise ValueError(
            "The concept map was built for other features than the model's "
            f"({len(concepts.feature_names)} vs {len(model.feature_names)} columns); build it "
            "with concept_map(model.feature_names, catalog, model.categorical_levels)."
        )
    out: dict[str, list[TextArray]] = {name: [] for name in (*REASON_COLUMNS, "score_exact")}
    base_score: float | None = None
    blocks: list[Candidates] = []
    positions = np.arange(len(features)) if rows is None else np.asarray(rows, dtype=np.intp)
    inputs = model.inputs(features) if inputs is None else inputs
    buffer = None
    for start in range(0, len(positions), chunk_rows):
        chunk = positions[start : start + chunk_rows]
        # The booster's input matrix: the same numbers LightGBM makes of model.prepare().
        if inputs.exact:
            prepared = buffer = inputs.rows(chunk, out=buffer)
            # Numeric values from the matrix (copied: the buffer is reused next chunk).
            values = entity_values(features, concepts, chunk, prepared)
        else:
            block = features.iloc[chunk]
            prepared = model.prepare(block)
            values = entity_values(block, concepts)
        contrib = tree_contributions(model, prepared, num_threads)
        if base_score is None:
            base_score = float(score_from_margin(model, contrib[:1, -1], kind)[0])
        if score is None:
            # The score from the booster's own margin, as scoring computes it: summing the
            # contributions differs in the last bits, which can flip a score on .5.
            margin = model.booster.predict(prepared, raw_score=True, **_threads(num_threads))
            exact = score_from_margin(model, margin, kind)
        else:
            exact = np.asarray(score[start : start + chunk_rows], dtype="float64")
        blocks.append(candidates(contrib, exact, base_score, values, concepts, top_k + _SPARE))
        out["score_exact"].append(exact)
    shared = shared_reasons(blocks, top_k, shared_share)
    if shared:
        texts, n = "; ".join(sorted(text for _, text in shared)), len(positions)
        log.info("In the base score, not a reason: %s (of %d entities).", texts, n)
    while blocks:
        chunk = finish(blocks.pop(0), shared, round(base_score or 0.0), concepts, top_k)
        for name in REASON_COLUMNS:
            out[name].append(chunk[name])
    index = features.index[positions]
    if not out["score_exact"]:
        return pd.DataFrame(columns=[*REASON_COLUMNS, "score_exact"], index=index)
    cat = {name: joined_texts if name in TEXT_COLUMNS else np.concatenate for name in out}
    return pd.DataFrame({name: cat[name](parts) for name, parts in out.items()}, index=index)
