"""Batch scoring: one row per input entity with probabilities, score, band and reasons.

* Who is scored with which target, and why the others are not, is
  :mod:`models.entity_status`; which reasons are kept from the previous run is
  :mod:`models.previous_run`.
* The 0-100 score is a percentile against the model's validation probabilities
  (``models.bands.score_from_probability``): for leads the conversion percentile, for
  customers a health score (100 minus the churn percentile).
* The band comes from the :class:`~models.bands.BandRule` (the same function
  everywhere). When a target has no champion, its entities get the rule score (scaled
  from 0..``rule_points_max`` points to 0-100), with
  ``score_source = "rules (no champion model)"``, the rule signals' points as reasons
  and the same three bands (:mod:`models.rule_reasons`).
* The rule score and rule band are always shown side by side.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.arrow_text import as_arrow_text
from features.spec import FeatureDef
from features.targets import target as target_named
from features.timeutil import as_utc
from models.bands import BandRule, score_from_probability
from models.concepts import concept_map
from models.entity_rows import aligned_rows, sample, unique_ids
from models.entity_status import SCORED, TARGET_OF_KIND, entity_status
from models.explain import REASON_COLUMNS, SHARED_SHARE, explain
from models.model import ModelInput, TrainedModel, absent_columns_warning
from models.previous_run import ColumnReader, PreviousRun, positions
from models.rule_reasons import fallback_band_sentence, fallback_bands, rule_reasons
from models.rulefile import RuleSet, load_rules
from models.rules import scores_of_kinds
from models.treeshap import margins

log = logging.getLogger(__name__)

MODEL_SOURCE = "model"
#: Rows per booster call when predicting: one 30 MB input matrix, reused (touching
#: fresh memory costs more than the calls).
PREDICT_BATCH = 25_000
RULE_SOURCE = "rules (no champion model)"


def model_versions(models: Mapping[str, TrainedModel | None]) -> str:
    """JSON of the model version used per target (``rules`` without a champion)."""
    versions = {
        target: (
            "rules"
            if model is None
            else str(model.metadata.get("registered_version", "unregistered"))
        )
        for target, model in sorted(models.items())
    }
    return json.dumps(versions, sort_keys=True)


@dataclass(frozen=True)
class ScoreResult:
    """What :func:`score_entities` produced.

    Attributes:
        frame: One row per input entity (columns in :func:`score_entities`).
        band_rule: The band rule the bands were assigned with.
        previous_rows: Per row of ``frame``, its row in the ``previous`` frame scoring
            was given (-1: not there; ``None``: no previous frame).
    """

    frame: pd.DataFrame
    band_rule: BandRule
    previous_rows: np.ndarray | None = None


def score_entities(
    features: pd.DataFrame,
    entities: pd.DataFrame,
    models: Mapping[str, TrainedModel | None],
    rules_scores: pd.DataFrame | None,
    band_rule: BandRule,
    catalog: Sequence[FeatureDef],
    previous: pd.DataFrame | None,
    as_of: object,
    tolerance: float = 2.0,
    top_k: int = 3,
    rule_points_max: float = 150.0,
    num_threads: int | None = None,
    with_reasons: bool = True,
    outcomes: pd.DataFrame | None = None,
    value_labels: Mapping[str, Mapping[str, str]] | None = None,
    shared_share: float = SHARED_SHARE,
    churn_inactivity_days: int | None = None,
    read_previous: ColumnReader | None = None,
    rules_by_kind: bool = False,
    feature_rows: np.ndarray | None = None,
) -> ScoreResult:
    """Score every entity: probabilities, 0-100 score, band, rule score, change, reasons.

    Args:
        features: Feature table as of ``as_of`` (one row per existing entity).
        entities: The entities table; every row gets exactly one output row.
        models: ``{"conversion": model or None, "churn": model or None}`` (champions).
        rules_scores: ``entity_id``, ``rule_score`` (0..``rule_points_max`` points),
            ``rule_band``; ``None`` when not configured or with ``rules_by_kind``.
        band_rule: The band rule in force (stored with the model versions).
        catalog: Feature catalog of the feature table (reason sentences, concepts).
        previous: The last run's scored frame, or ``None`` on a first run.
        as_of: The cutoff (UTC).
        tolerance: Score move (points) up to which previous reasons are kept.
        top_k: Reasons per direction.
        rule_points_max: Rule points mapped to a score of 100 in the rule fallback.
        num_threads: LightGBM threads for reason codes.
        with_reasons: ``False`` for probabilities, scores and bands only (reason
            columns left empty, nothing carried over): a quick rescoring.
        outcomes: The outcomes table: leads converted by ``as_of`` are scored as
            customers, customers churned by then get a ``not scored`` row (see
            :func:`models.entity_status.entity_status`).
        value_labels: Per column, the label reasons show for each value
            (``reasons.lookups``).
        shared_share: A reason shown for this share of the entities whose reasons are
            recomputed is part of their base score (:mod:`models.explain`).
        churn_inactivity_days: The churn horizon when churn is learnt from
            inactivity: customers silent for it have churned and are not scored.
        read_previous: Reads a reason column ``previous`` lacks from the previous
            run's rows (:class:`~models.previous_run.PreviousRun`).
        rules_by_kind: Score each kind's rules here (:func:`~models.rules.scores_of_kinds`).
        feature_rows: Per row of ``features``, its row in ``entities``, when the
            feature table was built from them (``FeatureTable.entity_rows``): checked
            against the ids, which are then not matched again.

    Returns:
        The :class:`ScoreResult`: its ``frame`` has one row per entity of ``entities``,
        in its order: ``entity_id``, ``crm_id``,
        ``kind``, ``status``, ``conversion_probability``, ``churn_probability``,
        ``score`` (Int64 0-100), ``band``, ``rule_score``, ``rule_band``,
        ``score_source``, ``model_versions``, ``scored_at``, ``as_of``,
        ``previous_band``, ``score_delta``, ``reasons_up``, ``reasons_down``,
        ``reasons_text``, ``reasons_computed_at``, ``base_score``,
        ``other_factors_points``. ``scored_at`` and the ``reasons_computed_at`` of
        recomputed reasons are the cutoff ``as_of``, never the wall clock, so scoring a
        date twice gives the same rows.

    Raises:
        ValueError: Duplicate ids, or features computed for another cutoff.
    """
    cutoff = as_utc(as_of)
    stamp = cutoff.floor("us")  # scored_at: the run date, so reruns are byte-identical
    ids = unique_ids(entities, "entities")
    _check_cutoff(features, cutoff)
    feature_row = aligned_rows(entities["entity_id"], features, feature_rows)
    if feature_row is None:
        feature_row = positions(ids, unique_ids(features, "features"))
    stray = len(features) - int((feature_row >= 0).sum())
    if stray:
        log.warning("%d feature rows belong to no input entity; ignored.", stray)

    n = len(ids)
    kind, status = entity_status(
        entities, feature_row >= 0, cutoff, outcomes, features, churn_inactivity_days, ids
    )
    scored = status == SCORED
    rule_row = None
    if rules_by_kind:
        rules_scores, rule_row = scores_of_kinds(features, feature_row, kind)
    col = _rule_columns(ids, scored, rules_scores, rule_row)
    fallbacks: list[tuple[RuleSet, np.ndarray]] = []
    fallback_sentences: list[str] = []
    inputs: dict[str, ModelInput] = {}
    for entity_kind, (target, score_kind) in TARGET_OF_KIND.items():
        rows = scored & (kind == entity_kind)
        model = models.get(target)
        if not rows.any():
            continue
        if model is None:
            col["score_exact"][rows] = np.clip(
                100 * col["rule_score"][rows] / rule_points_max, 0, 100
            )
            definition = target_named(target)
            rule_set = load_rules(definition.rules)
            col["band"][rows] = fallback_bands(col["rule_band"][rows], rule_set, definition)
            col["score_source"][rows] = RULE_SOURCE
            fallbacks.append((rule_set, rows))
            fallback_sentences.append(fallback_band_sentence(rule_set, definition))
            log.warning(
                "No %s champion: %d %ss get the rule score.", target, rows.sum(), entity_kind
            )
            continue
        absent = absent_columns_warning(target, model, features.columns)
        if absent:
            log.warning(absent)
        inputs[target] = model.inputs(features)
        probability = _probability(model, inputs[target], features, feature_row[rows])
        col[f"{target}_probability"][rows] = probability
        col["score_exact"][rows] = score_from_probability(
            probability, model.reference_scores, score_kind
        )
        col["score_source"][rows] = MODEL_SOURCE

    from_model = col["score_source"] == MODEL_SOURCE
    bands = band_rule.assign(col["conversion_probability"], col["churn_probability"])
    col["band"][from_model] = bands[from_model]
    score_exact = col.pop("score_exact")
    score = np.round(score_exact)
    versions = np.array([None, model_versions(models)], dtype=object)[scored * 1]  # one string

    # Short text columns as Arrow text, made once here: every writer (score tables,
    # Parquet, CRM, board) would otherwise turn the same million Python strings into
    # Arrow text again (about 0.7 s of a million-row nightly), and the previous run's
    # values (Arrow text) are compared with them without converting them per comparison.
    def text(values: object) -> pd.Series:
        column = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
        return as_arrow_text(column, "str").reset_index(drop=True)

    current = {"band": text(col["band"]), "model_versions": text(versions),
               "score_source": text(col["score_source"])}  # fmt: skip
    prior = PreviousRun(previous, ids, read_previous)
    delta = prior.score_delta(score, scored)
    keep = prior.reasons_to_keep(with_reasons & from_model, scored, current, delta, tolerance)
    refresh = from_model & ~keep & with_reasons
    prior.carry_texts(keep)  # taken beside the explanation
    fresh = _explain_rows(features, feature_row, kind, models, catalog, refresh, top_k,
                          num_threads, value_labels, shared_share, score_exact,
                          inputs)  # fmt: skip
    for rule_set, rows in fallbacks if with_reasons else []:
        block = features.iloc[feature_row[rows]]
        reasons = rule_reasons(rule_set, block, score[rows], rule_points_max, top_k)
        for column in REASON_COLUMNS:
            fresh[column].append((np.flatnonzero(rows), reasons[column].reset_index(drop=True)))
        refresh = refresh | rows
    fresh_rows = np.flatnonzero(refresh)
    stamps = pd.Series(pd.DatetimeIndex([stamp]).repeat(len(fresh_rows)))
    fresh["reasons_computed_at"] = [(fresh_rows, stamps)]

    out = pd.DataFrame(
        {
            "entity_id": entities["entity_id"].reset_index(drop=True),
            "crm_id": entities["crm_id"].reset_index(drop=True) if "crm_id" in entities else None,
            "kind": text(kind),
            "status": text(status),
            "conversion_probability": col["conversion_probability"],
            "churn_probability": col["churn_probability"],
            "score": pd.array(score, dtype="Int64"),
            "band": current["band"],
            "rule_score": col["rule_score"],
            "rule_band": text(col["rule_band"]),
            "score_source": current["score_source"],
            "model_versions": current["model_versions"],
            "scored_at": stamp,
            "as_of": cutoff,
            "previous_band": text(prior.column("band", prior.scored_too(scored))),
            "score_delta": delta,
            **prior.reason_columns(keep, fresh),
        }
    )
    if len(out) != len(entities):
        raise AssertionError(f"Scoring lost or added entities: {len(entities)} in, {len(out)} out.")
    log.info(
        "Scored %d entities (%s); reasons recomputed for %d, kept for %d.",
        n,
        out["status"].value_counts().to_dict(),  # Arrow text: 0.25 s less than objects
        int(refresh.sum()),
        int(keep.sum()),
    )
    if fallback_sentences:
        band_rule = replace(band_rule, rule_fallback="; ".join(fallback_sentences))
    rows = None if previous is None else prior.source_index()  # for the CRM export
    return ScoreResult(frame=out, band_rule=band_rule, previous_rows=rows)


def _probability(
    model: TrainedModel, inputs: ModelInput, features: pd.DataFrame, rows: np.ndarray
) -> np.ndarray:
    """Calibrated probabilities of ``features``' rows at positions ``rows``.

    Raw scores (:func:`models.treeshap.margins`) of :class:`~models.model.ModelInput`
    blocks of :data:`PREDICT_BATCH` rows, calibrated at once as ``predict_proba`` does.
    Each core takes a share of the rows and both gathers its blocks and scores them
    (numpy and the kernel release the GIL), so the gathering is not left to one core.
    """
    if not inputs.exact:
        return model.predict_proba(features.iloc[rows])
    probability = np.empty(len(rows), dtype="float64")
    width = len(inputs.columns)
    margins(model.booster, np.empty((0, width)), num_threads=1)  # the trees, read once

    def share(lo: int, hi: int) -> None:
        buffer, margin = None, np.empty(hi - lo, dtype="float64")
        for start in range(lo, hi, PREDICT_BATCH):
            stop = min(start + PREDICT_BATCH, hi)
            block = buffer = inputs.rows(rows[start:stop], out=buffer)
            margin[start - lo : stop - lo] = margins(model.booster, block, num_threads=1)
        # Calibration is element by element: each core calibrates its own share.
        probability[lo:hi] = np.clip(model.calibrator.predict(margin), 0.0, 1.0)

    bounds = np.linspace(0, len(rows), (os.cpu_count() or 1) + 1).astype(int)
    with ThreadPoolExecutor(len(bounds) - 1, thread_name_prefix="predict") as pool:
        list(pool.map(share, bounds[:-1], bounds[1:]))
    return probability


def _check_cutoff(features: pd.DataFrame, cutoff: pd.Timestamp) -> None:
    """Refuse feature rows computed for another cutoff than the run's."""
    if "as_of" not in features or not len(features):
        return
    stamps = pd.to_datetime(features["as_of"], utc=True)
    other = features.loc[(stamps != cutoff).to_numpy(), "as_of"]
    if len(other):
        raise ValueError(
            f"{len(other)} feature rows were computed for another cutoff than {cutoff} "
            f"(e.g. {sample(other.astype(str))}); rebuild the features as of the run date."
        )


def _rule_columns(
    ids: pd.Index,
    scored: np.ndarray,
    rules_scores: pd.DataFrame | None,
    rule_row: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Empty score columns, with the rule score and rule band of the scored entities.

    ``rule_row``: each entity's row of ``rules_scores`` (-1: none), when known.
    """
    n = len(ids)
    col: dict[str, np.ndarray] = {
        "conversion_probability": np.full(n, np.nan),
        "churn_probability": np.full(n, np.nan),
        "score_exact": np.full(n, np.nan),
        "rule_score": np.full(n, np.nan),
        "band": np.full(n, None, dtype=object),
        "rule_band": np.full(n, None, dtype=object),
        "score_source": np.full(n, None, dtype=object),
    }
    if rules_scores is not None and len(rules_scores):
        if rule_row is None:
            rule_row = positions(ids, unique_ids(rules_scores, "rule scores"))
        has_rule = scored & (rule_row >= 0)
        points = pd.to_numeric(rules_scores["rule_score"], errors="coerce").to_numpy("float64")
        col["rule_score"][has_rule] = points[rule_row[has_rule]]
        # The few band names, shared: not a million new strings from the Arrow text.
        codes, names = pd.factorize(rules_scores["rule_band"])  # missing: -1, the last
        bands = np.append(np.asarray(names, dtype=object), None)
        col["rule_band"][has_rule] = bands[codes[rule_row[has_rule]]]
    return col


def _explain_rows(
    features: pd.DataFrame,
    feature_row: np.ndarray,
    kind: np.ndarray,
    models: Mapping[str, TrainedModel | None],
    catalog: Sequence[FeatureDef],
    refresh: np.ndarray,
    top_k: int,
    num_threads: int | None,
    value_labels: Mapping[str, Mapping[str, str]] | None = None,
    shared_share: float = SHARED_SHARE,
    score_exact: np.ndarray | None = None,
    inputs: Mapping[str, ModelInput] | None = None,
) -> dict[str, list[tuple[np.ndarray, pd.Series]]]:
    """Fresh reason codes for the ``refresh`` rows: ``(positions, values)`` per column.

    ``score_exact`` (per entity, the unrounded score) and ``inputs`` (per target, its
    model's :class:`~models.model.ModelInput` of ``features``) spare predicting and
    converting the explained rows a second time.
    """
    fresh: dict[str, list[tuple[np.ndarray, pd.Series]]] = {c: [] for c in REASON_COLUMNS}
    for entity_kind, (target, score_kind) in TARGET_OF_KIND.items():
        model = models.get(target)
        rows = refresh & (kind == entity_kind)
        if model is None or not rows.any():
            continue
        concepts = concept_map(model.feature_names, catalog, model.categorical_levels, value_labels)
        reasons = explain(
            model,
            features,
            score_kind,
            concepts,
            top_k,
            num_threads=num_threads,
            shared_share=shared_share,
            rows=feature_row[rows],
            score=None if score_exact is None else score_exact[rows],
            inputs=None if inputs is None else inputs.get(target),
        )
        for column in REASON_COLUMNS:
            fresh[column].append((np.flatnonzero(rows), reasons[column]))
    return fresh
