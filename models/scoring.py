"""Batch scoring: one row per input entity with probabilities, score, band and reasons.

Who is scored with what:

* Leads (``kind == "lead"``, a missing kind, or everyone when there is no ``kind``
  column) get the conversion probability; customers get the churn probability.
* The 0-100 score is a percentile against the model's validation probabilities
  (``models.bands.score_from_probability``): for leads the conversion percentile, for
  customers a health score (100 minus the churn percentile).
* The band comes from the :class:`~models.bands.BandRule` (the same function
  everywhere). When a target has no champion, its entities get the rule score (scaled
  from 0..``rule_points_max`` points to 0-100) and the rule band, with
  ``score_source = "rules (no champion model)"`` and no reason codes.
* The rule score and rule band are always shown side by side.

Every input entity gets exactly one row; those not scored say why in ``status``:
``not scored: no consent`` (no probabilities, no score, no reasons),
``not scored: not yet created`` (``created_at`` on or after the cutoff),
``not scored: no feature row`` and ``not scored: unknown kind '...'``.

Reason codes (``models.explain``) are the expensive part, so they are recomputed only
for entities that are new, whose band changed, whose score moved more than
``tolerance`` points, or whose model version or score source changed; the others keep
their previous reasons together with the date those were computed
(``reasons_computed_at``). Kept impacts add up to the score of that date.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.spec import FeatureDef
from features.timeutil import as_utc
from models.bands import BandRule, ScoreKind, score_from_probability
from models.concepts import concept_map
from models.explain import REASON_COLUMNS, explain

if TYPE_CHECKING:
    from models.model import TrainedModel

log = logging.getLogger(__name__)

SCORED = "scored"
NO_CONSENT = "not scored: no consent"
NOT_YET_CREATED = "not scored: not yet created"
NO_FEATURES = "not scored: no feature row"
CHURNED = "not scored: already churned"
MODEL_SOURCE = "model"
RULE_SOURCE = "rules (no champion model)"
#: Target scoring each kind of entity, and the kind of score it gives.
TARGET_OF_KIND: dict[str, tuple[str, ScoreKind]] = {
    "lead": ("conversion", "lead"),
    "customer": ("churn", "customer"),
}
#: Timestamps are kept to the microsecond (what Parquet and SQL stores round-trip).
STAMP_DTYPE = "datetime64[us, UTC]"
#: Reason columns and their dtypes (carried from the previous run when not recomputed).
REASON_DTYPES = {
    "reasons_up": "str",
    "reasons_down": "str",
    "reasons_text": "str",
    "base_score": "Int64",
    "other_factors_points": "Int64",
    "reasons_computed_at": STAMP_DTYPE,
}
RULE_REASON = "No champion model: score and band come from the rule score; no reason codes."


def _sample(values: object, n: int = 5) -> str:
    return ", ".join(map(repr, pd.Series(values).head(n).tolist()))


def _ids(frame: pd.DataFrame, name: str) -> np.ndarray:
    """The frame's ``entity_id`` as an object array, checked present and unique."""
    if "entity_id" not in frame.columns:
        raise ValueError(f"The {name} frame has no entity_id column (columns: {list(frame)[:10]}).")
    ids = frame["entity_id"].to_numpy(dtype=object)
    index = pd.Index(ids)
    if not index.is_unique:
        duplicated = index[index.duplicated()]
        raise ValueError(
            f"The {name} frame holds {len(duplicated)} duplicate entity_id values, e.g. "
            f"{_sample(duplicated)}; scoring needs one row per entity."
        )
    return ids


def _positions(ids: np.ndarray, other_ids: np.ndarray) -> np.ndarray:
    """Row of each id in ``other_ids`` (-1 when absent); hashes Python strings, fast."""
    return pd.Index(other_ids).get_indexer(ids)


def entity_status(
    entities: pd.DataFrame,
    has_features: np.ndarray,
    as_of: pd.Timestamp,
    outcomes: pd.DataFrame | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each entity's kind and whether (or why not) it is scored.

    Scored are the entities the models were trained for (the label eligibility of
    ``features.labels``): leads not yet converted get the conversion model; customers,
    and leads converted by ``as_of``, get the churn model unless churned by ``as_of``.

    Args:
        entities: ``entity_id``, ``created_at``; optional ``consent`` (missing counts
            as consent, as in the data contract) and ``kind`` (missing: ``lead``).
        has_features: Per entity, whether the feature table has its row.
        as_of: The cutoff.
        outcomes: ``entity_id``, ``outcome``, ``occurred_at``; a lead converted at or
            before ``as_of`` counts as a customer, a customer churned by then is not
            scored. ``None``: kinds as given.

    Returns:
        ``(kind, status)`` object arrays in the order of ``entities``.
    """
    n = len(entities)
    consent = (
        entities["consent"].astype("boolean").fillna(True).to_numpy(dtype=bool)
        if "consent" in entities
        else np.ones(n, dtype=bool)
    )
    created = (pd.to_datetime(entities["created_at"], utc=True) >= as_of).to_numpy(bool)
    converted, churned = _outcome_by(entities, outcomes, as_of)
    kind = _current_kinds(entities, converted)
    known_kind = np.zeros(n, dtype=bool)
    for name in TARGET_OF_KIND:
        known_kind |= kind == name
    status = np.select(
        [
            ~consent,
            created,
            ~np.asarray(has_features, dtype=bool),
            ~known_kind,
            (kind == "customer") & churned,
        ],
        [NO_CONSENT, NOT_YET_CREATED, NO_FEATURES, "unknown", CHURNED],
        default=SCORED,
    ).astype(object)
    unknown = status == "unknown"
    status[unknown] = [f"not scored: unknown kind {k!r}" for k in kind[unknown]]
    return kind, status


def _current_kinds(entities: pd.DataFrame, converted: np.ndarray) -> np.ndarray:
    """Kinds as of the run (missing: ``lead``).

    A converted lead is a customer from then on, as in the labels.
    """
    if "kind" in entities:
        given = entities["kind"].astype("string").str.strip().str.lower().fillna("lead")
        kind = given.to_numpy(dtype=object)
    else:
        kind = np.full(len(entities), "lead", dtype=object)
    return np.where((kind == "lead") & converted, "customer", kind).astype(object)


def kinds_as_of(
    entities: pd.DataFrame, outcomes: pd.DataFrame | None, as_of: pd.Timestamp
) -> pd.Series:
    """``kind`` per entity id as of the run date: converted leads are customers."""
    converted, _ = _outcome_by(entities, outcomes, as_of)
    return pd.Series(
        _current_kinds(entities, converted), index=entities["entity_id"].astype("str").to_numpy()
    )


def _outcome_by(
    entities: pd.DataFrame, outcomes: pd.DataFrame | None, as_of: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """Per entity: converted by ``as_of``, churned by ``as_of``."""
    n = len(entities)
    if outcomes is None or not len(outcomes):
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    when = pd.to_datetime(outcomes["occurred_at"], utc=True)
    past = outcomes.loc[(when <= as_of).to_numpy(bool)]
    ids = entities["entity_id"].astype("str")
    result = []
    for outcome in ("converted", "churned"):
        done = set(past.loc[past["outcome"].astype("str") == outcome, "entity_id"].astype("str"))
        result.append(ids.isin(done).to_numpy(bool))
    return result[0], result[1]


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


class _PreviousRun:
    """The previous run's rows aligned to this run's entities, one column at a time.

    Columns are taken with their own dtype (Arrow strings stay Arrow), so carrying a
    million kept reason texts over costs a C-level take, not a million Python strings.
    """

    def __init__(self, previous: pd.DataFrame | None, ids: np.ndarray) -> None:
        self.size = len(ids)
        self.last: pd.DataFrame | None = None
        self.rows = np.full(self.size, -1)
        if previous is not None and len(previous) and "entity_id" in previous:
            self.last = previous.drop_duplicates("entity_id", keep="last").reset_index(drop=True)
            self.rows = _positions(ids, self.last["entity_id"].to_numpy(dtype=object))

    def index(self, where: np.ndarray | None = None) -> np.ndarray:
        """Row of each entity in the previous run, -1 when absent or outside ``where``."""
        return self.rows if where is None else np.where(where, self.rows, -1)

    def column(self, name: str, where: np.ndarray | None = None) -> pd.Series:
        """The column per entity; missing where not found, not in ``where`` or absent."""
        if self.last is None or name not in self.last:
            return pd.Series([None] * self.size, dtype=object)
        return pd.Series(self.last[name].array.take(self.index(where), allow_fill=True))

    def equals(self, name: str, current: object) -> np.ndarray:
        """True where the previous value equals ``current`` (missing never equals)."""
        return np.asarray((self.column(name) == current).fillna(False), dtype=bool)


def _assemble(
    kept: pd.Series | None,
    kept_index: np.ndarray,
    fresh: list[tuple[np.ndarray, pd.Series]],
    dtype: str,
) -> pd.Series:
    """One column from kept previous values and fresh blocks, by a single take.

    Args:
        kept: The previous run's column (all its rows), or ``None``.
        kept_index: Per entity, its row in ``kept`` or -1.
        fresh: ``(positions, values)`` blocks that replace entities' values.
        dtype: Dtype of the result.
    """
    parts = [] if kept is None else [kept.astype(dtype)]
    index = kept_index.copy() if kept is not None else np.full(len(kept_index), -1)
    offset = sum(len(p) for p in parts)
    for positions, values in fresh:
        parts.append(values.astype(dtype))
        index[positions] = offset + np.arange(len(positions))
        offset += len(positions)
    if not parts:
        parts = [pd.Series([None], dtype=object).astype(dtype)]
    combined = pd.concat(parts, ignore_index=True).array
    return pd.Series(combined.take(index, allow_fill=True))


def absent_columns_warning(target: str, model: TrainedModel, columns: Iterable[str]) -> str:
    """A sentence naming the columns the model reads that a feature table lacks; "" if none.

    Those columns are scored as missing. A renamed or dropped source column does this,
    and so does a text column that has become different for most entities (no longer a
    fit attribute, see :func:`features.table.fit_columns`).
    """
    present = set(columns)
    absent = [name for name in model.feature_names if name not in present]
    if not absent:
        return ""
    return (
        f"The {target} model reads {len(absent)} {'column' if len(absent) == 1 else 'columns'} "
        f"this run's feature table lacks ({', '.join(absent[:5])}), scored as missing. A "
        "renamed or dropped source column does this, or a text column now unique per entity."
    )


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
    scored_at: object | None = None,
    top_k: int = 3,
    rule_points_max: float = 150.0,
    num_threads: int | None = None,
    with_reasons: bool = True,
    outcomes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Score every entity: probabilities, 0-100 score, band, rule score, change, reasons.

    Args:
        features: Feature table as of ``as_of`` (one row per existing entity).
        entities: The entities table; every row gets exactly one output row.
        models: ``{"conversion": model or None, "churn": model or None}`` (champions).
        rules_scores: ``entity_id``, ``rule_score`` (0..``rule_points_max`` points),
            ``rule_band``; ``None`` when no rule score is configured.
        band_rule: The band rule in force (stored with the model versions).
        catalog: Feature catalog of the feature table (reason sentences, concepts).
        previous: The last run's scored frame, or ``None`` on a first run.
        as_of: The cutoff (UTC).
        tolerance: Score move (points) up to which previous reasons are kept.
        scored_at: When this run scored (default: now, UTC).
        top_k: Reasons per direction.
        rule_points_max: Rule points mapped to a score of 100 in the rule fallback.
        num_threads: LightGBM threads for reason codes.
        with_reasons: ``False`` for probabilities, scores and bands only (reason
            columns left empty, nothing carried over): a quick rescoring.
        outcomes: The outcomes table: leads converted by ``as_of`` are scored as
            customers, customers churned by then get a ``not scored`` row (see
            :func:`entity_status`).

    Returns:
        One row per entity of ``entities``, in its order: ``entity_id``, ``crm_id``,
        ``kind``, ``status``, ``conversion_probability``, ``churn_probability``,
        ``score`` (Int64 0-100), ``band``, ``rule_score``, ``rule_band``,
        ``score_source``, ``model_versions``, ``scored_at``, ``as_of``,
        ``previous_band``, ``score_delta``, ``reasons_up``, ``reasons_down``,
        ``reasons_text``, ``reasons_computed_at``, ``base_score``,
        ``other_factors_points``. ``attrs["band_rule"]`` holds the rule.

    Raises:
        ValueError: Duplicate ids, or features computed for another cutoff.
    """
    cutoff = as_utc(as_of)
    now = as_utc(pd.Timestamp.now(tz="UTC") if scored_at is None else scored_at).floor("us")
    ids, feature_ids = _ids(entities, "entities"), _ids(features, "features")
    if "as_of" in features and len(features):
        stamps = pd.to_datetime(features["as_of"], utc=True)
        other = features.loc[(stamps != cutoff).to_numpy(), "as_of"]
        if len(other):
            raise ValueError(
                f"{len(other)} feature rows were computed for another cutoff than {cutoff} "
                f"(e.g. {_sample(other.astype(str))}); rebuild the features as of the run date."
            )
    feature_row = _positions(ids, feature_ids)
    stray = len(feature_ids) - int((feature_row >= 0).sum())
    if stray:
        log.warning("%d feature rows belong to no input entity; ignored.", stray)

    n = len(ids)
    kind, status = entity_status(entities, feature_row >= 0, cutoff, outcomes)
    scored = status == SCORED
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
        rule_row = _positions(ids, _ids(rules_scores, "rule scores"))
        has_rule = scored & (rule_row >= 0)
        points = pd.to_numeric(rules_scores["rule_score"], errors="coerce").to_numpy("float64")
        col["rule_score"][has_rule] = points[rule_row[has_rule]]
        col["rule_band"][has_rule] = rules_scores["rule_band"].to_numpy(object)[rule_row[has_rule]]

    for entity_kind, (target, score_kind) in TARGET_OF_KIND.items():
        rows = scored & (kind == entity_kind)
        model = models.get(target)
        if not rows.any():
            continue
        if model is None:
            col["score_exact"][rows] = np.clip(
                100 * col["rule_score"][rows] / rule_points_max, 0, 100
            )
            col["band"][rows] = col["rule_band"][rows]
            col["score_source"][rows] = RULE_SOURCE
            log.warning(
                "No %s champion: %d %ss get the rule score.", target, rows.sum(), entity_kind
            )
            continue
        absent = absent_columns_warning(target, model, features.columns)
        if absent:
            log.warning(absent)
        probability = model.predict_proba(features.iloc[feature_row[rows]])
        col[f"{target}_probability"][rows] = probability
        col["score_exact"][rows] = score_from_probability(
            probability, model.reference_scores, score_kind
        )
        col["score_source"][rows] = MODEL_SOURCE

    from_model = col["score_source"] == MODEL_SOURCE
    bands = band_rule.assign(col["conversion_probability"], col["churn_probability"])
    col["band"][from_model] = bands[from_model]
    score = np.round(col.pop("score_exact"))
    versions = np.where(scored, model_versions(models), None).astype(object)

    prior = _PreviousRun(previous, ids)
    prior_scored = prior.equals("status", SCORED) & scored
    previous_score = pd.to_numeric(prior.column("score"), errors="coerce").to_numpy("float64")
    delta = np.where(prior_scored, score - previous_score, np.nan)
    keep = (
        with_reasons
        & from_model
        & prior_scored
        & prior.column("reasons_computed_at").notna().to_numpy(bool)
        & prior.equals("band", col["band"])
        & prior.equals("model_versions", versions)
        & prior.equals("score_source", col["score_source"])
        & (np.abs(np.nan_to_num(delta, nan=np.inf)) <= tolerance)
    )
    refresh = from_model & ~keep & with_reasons
    fresh = _explain_rows(features, feature_row, kind, models, catalog, refresh, top_k,
                          num_threads)  # fmt: skip
    rule_rows = np.flatnonzero(col["score_source"] == RULE_SOURCE)
    fresh["reasons_text"].append((rule_rows, pd.Series([RULE_REASON] * len(rule_rows))))
    fresh_rows = np.flatnonzero(refresh)
    stamps = pd.Series(pd.DatetimeIndex([now]).repeat(len(fresh_rows)))
    fresh["reasons_computed_at"] = [(fresh_rows, stamps)]
    carried = prior.last if prior.last is not None else pd.DataFrame()
    reasons = {
        name: _assemble(carried.get(name), prior.index(keep), fresh[name], dtype)
        for name, dtype in REASON_DTYPES.items()
    }

    # Short text columns as object dtype: inferring Arrow strings costs more than it saves.
    def text(values: object) -> pd.Series:
        return pd.Series(values, dtype=object)

    out = pd.DataFrame(
        {
            "entity_id": entities["entity_id"].reset_index(drop=True),
            "crm_id": entities["crm_id"].reset_index(drop=True) if "crm_id" in entities else None,
            "kind": text(kind),
            "status": text(status),
            "conversion_probability": col["conversion_probability"],
            "churn_probability": col["churn_probability"],
            "score": pd.array(score, dtype="Int64"),
            "band": text(col["band"]),
            "rule_score": col["rule_score"],
            "rule_band": text(col["rule_band"]),
            "score_source": text(col["score_source"]),
            "model_versions": text(versions),
            "scored_at": now,
            "as_of": cutoff,
            "previous_band": text(prior.column("band", prior_scored).to_numpy(dtype=object)),
            "score_delta": delta,
            **reasons,
        }
    )
    if len(out) != len(entities):
        raise AssertionError(f"Scoring lost or added entities: {len(entities)} in, {len(out)} out.")
    log.info(
        "Scored %d entities (%s); reasons recomputed for %d, kept for %d.",
        n,
        pd.Series(status).value_counts().to_dict(),
        int(refresh.sum()),
        int(keep.sum()),
    )
    out.attrs["band_rule"] = band_rule.to_dict()
    return out


def _explain_rows(
    features: pd.DataFrame,
    feature_row: np.ndarray,
    kind: np.ndarray,
    models: Mapping[str, TrainedModel | None],
    catalog: Sequence[FeatureDef],
    refresh: np.ndarray,
    top_k: int,
    num_threads: int | None,
) -> dict[str, list[tuple[np.ndarray, pd.Series]]]:
    """Fresh reason codes for the ``refresh`` rows: ``(positions, values)`` per column."""
    fresh: dict[str, list[tuple[np.ndarray, pd.Series]]] = {c: [] for c in REASON_COLUMNS}
    for entity_kind, (target, score_kind) in TARGET_OF_KIND.items():
        model = models.get(target)
        rows = refresh & (kind == entity_kind)
        if model is None or not rows.any():
            continue
        concepts = concept_map(model.feature_names, catalog, model.categorical_levels)
        reasons = explain(
            model,
            features.iloc[feature_row[rows]],
            score_kind,
            concepts,
            top_k,
            num_threads=num_threads,
        )
        for column in REASON_COLUMNS:
            fresh[column].append((np.flatnonzero(rows), reasons[column]))
    return fresh
