"""Who is scored, with which target, and why the others are not.

Leads get the conversion probability; customers get the churn probability. Kinds
follow :mod:`features.population`, as the labels of ``features.labels`` do: a
``kind`` column as given (missing: ``lead``) with leads converted by the cutoff
counted as customers; without one, kind is inferred (a ``converted`` outcome or a
purchase before the cutoff makes a customer). Every input entity gets exactly one row;
those not scored say why in ``status``: ``not scored: no consent``, ``not scored: not
yet created`` (``created_at`` on or after the cutoff), ``not scored: no feature row``,
``not scored: ended`` (``ended_at``, an ``ended`` or a ``disqualified`` outcome by the
cutoff), ``not scored: already churned`` (a lead or a customer), ``not scored: silent
for the churn horizon`` (when churn is learnt from inactivity) and ``not scored:
unknown kind '...'``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.population import END_OUTCOMES, ENDED_AT, end_times, first_outcome, kinds
from features.targets import CHURN, CONVERSION, TARGETS
from models.bands import ScoreKind

SCORED = "scored"
NO_CONSENT = "not scored: no consent"
NOT_YET_CREATED = "not scored: not yet created"
NO_FEATURES = "not scored: no feature row"
ENDED = "not scored: ended"
CHURNED = "not scored: already churned"
INACTIVE = "not scored: silent for the churn horizon (churned by inactivity)"
#: The feature giving days since an entity's latest event before the cutoff.
RECENCY_FEATURE = "days_since_last_event"
#: Target scoring each kind of entity, and the kind of score it gives.
TARGET_OF_KIND: dict[str, tuple[str, ScoreKind]] = {t.kind: (t.name, t.kind) for t in TARGETS}
#: The feature counting purchases before the cutoff (it infers customers without ``kind``).
PURCHASES_FEATURE = "purchases_total"


def entity_status(
    entities: pd.DataFrame,
    has_features: np.ndarray,
    as_of: pd.Timestamp,
    outcomes: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
    churn_inactivity_days: int | None = None,
    ids: pd.Index | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each entity's kind and whether (or why not) it is scored.

    Scored are the entities the models were trained for (the label eligibility of
    ``features.labels``): leads get the conversion model, customers the churn model,
    unless ended or churned by ``as_of``.

    Args:
        entities: ``entity_id``, ``created_at``; optional ``consent`` (missing counts
            as consent, as in the data contract), ``kind`` and ``ended_at``.
        has_features: Per entity, whether the feature table has its row.
        as_of: The cutoff.
        outcomes: ``entity_id``, ``outcome``, ``occurred_at``: conversions, churns
            and ends by ``as_of``. ``None``: kinds as given, nobody ended.
        features: The feature table as of ``as_of``; without a ``kind`` column, its
            ``purchases_total`` makes customers.
        churn_inactivity_days: When churn is learnt from inactivity
            (``labels.churn_from_inactivity``), its horizon: as in training, only
            customers with an event in these days before ``as_of`` are scored for
            churn; the others have churned already (:data:`INACTIVE`).
        ids: ``pd.Index(entities["entity_id"])`` when the caller has it (its hash
            table is reused when the ids are strings already).

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
    lookup = _Lookup(entities, ids)
    converted, churned = _outcome_by(entities, outcomes, as_of, lookup)
    kind = kinds(entities, converted, _purchased(entities, features, lookup))
    ended = _ended(entities, outcomes, as_of, lookup)
    known_kind = np.zeros(n, dtype=bool)
    for name in TARGET_OF_KIND:
        known_kind |= kind == name
    silent = np.zeros(n, dtype=bool)
    if churn_inactivity_days is not None:
        silent = (kind == CHURN.kind) & ~_active(entities, features, churn_inactivity_days, lookup)
    labels = np.array(
        [NO_CONSENT, NOT_YET_CREATED, NO_FEATURES, ENDED, CHURNED, INACTIVE, "unknown", SCORED],
        dtype=object,
    )
    # Codes first, then the labels: one object array, not one per label.
    code = np.select(
        [~consent, created, ~np.asarray(has_features, dtype=bool), ended, churned, silent,
         ~known_kind],
        np.arange(len(labels) - 1),
        default=len(labels) - 1,
    )  # fmt: skip
    status = labels[code]
    unknown = status == "unknown"
    status[unknown] = [f"not scored: unknown kind {k!r}" for k in kind[unknown]]
    return kind, status


class _Lookup:
    """Each entity's row by id, hashed once for every per-entity join of a call.

    Entity ids are unique in the data contract; with repeated ids every join goes
    through ``reindex`` as before (:attr:`ids` is then ``None``).
    """

    def __init__(self, entities: pd.DataFrame, ids: pd.Index | None = None) -> None:
        if ids is not None and ids.dtype == "str" and len(ids) == len(entities):
            index = ids  # the same str values as converting the column below
        else:
            index = pd.Index(entities["entity_id"].astype("str").to_numpy(dtype=object))
        self.size = len(index)
        self.ids = index if index.is_unique else None
        self._feature_rows: tuple[pd.DataFrame, np.ndarray] | None = None

    def rows(self, keys: pd.Series) -> np.ndarray:
        """The entity row of each key, -1 when none."""
        assert self.ids is not None
        return self.ids.get_indexer(keys.astype("str").to_numpy(dtype=object))

    def feature_rows(self, features: pd.DataFrame) -> np.ndarray:
        """:meth:`rows` of the feature table's ``entity_id``, found once per table."""
        if self._feature_rows is None or self._feature_rows[0] is not features:
            self._feature_rows = (features, self.rows(features["entity_id"]))
        return self._feature_rows[1]

    def floats(self, values: pd.Series, rows: np.ndarray) -> np.ndarray | None:
        """Per entity, ``values`` (one per row of ``rows``) at its row, else NaN.

        ``None`` when two values fall on one entity.
        """
        found = rows >= 0
        if found.any() and np.bincount(rows[found]).max() > 1:
            return None
        out = np.full(self.size, np.nan)
        out[rows[found]] = values.to_numpy(dtype="float64", na_value=np.nan)[found]
        return out


def _active(
    entities: pd.DataFrame, features: pd.DataFrame | None, days: int, lookup: _Lookup | None = None
) -> np.ndarray:
    """Per entity: an event in the ``days`` before the cutoff (the churn population)."""
    if features is None or RECENCY_FEATURE not in features:
        return np.ones(len(entities), dtype=bool)
    since = None
    if lookup is not None and lookup.ids is not None:
        since = lookup.floats(features[RECENCY_FEATURE], lookup.feature_rows(features))
    if since is None:
        recency = features.set_index("entity_id")[RECENCY_FEATURE]
        since = recency.reindex(entities["entity_id"].astype(str)).to_numpy(dtype="float64")
    return np.nan_to_num(since, nan=np.inf) <= days


def kinds_as_of(
    entities: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    as_of: pd.Timestamp,
    features: pd.DataFrame | None = None,
) -> pd.Series:
    """``kind`` per entity id as of the run date (see :func:`entity_status`)."""
    lookup = _Lookup(entities)
    converted, _ = _outcome_by(entities, outcomes, as_of, lookup)
    return pd.Series(
        kinds(entities, converted, _purchased(entities, features, lookup)),
        index=entities["entity_id"].astype("str").to_numpy(),
    )


def _purchased(
    entities: pd.DataFrame, features: pd.DataFrame | None, lookup: _Lookup | None = None
) -> np.ndarray | None:
    """Per entity, a purchase before the cutoff, from the feature table (``None``: unknown).

    Only kinds inferred without a ``kind`` column use it: with one, it is ``None``.
    """
    if features is None or PURCHASES_FEATURE not in features or "kind" in entities:
        return None
    bought_rows = features[PURCHASES_FEATURE].to_numpy() > 0
    if lookup is not None and lookup.ids is not None:
        rows = lookup.feature_rows(features)[bought_rows]
        found = np.zeros(lookup.size, dtype=bool)
        found[rows[rows >= 0]] = True
        return found
    bought = features.loc[bought_rows, "entity_id"]
    # As object arrays: ``isin`` on the ``str`` dtype is several times slower.
    ids = entities["entity_id"].astype("str").astype(object)
    return ids.isin(bought.astype("str").to_numpy(dtype=object)).to_numpy(bool)


def _outcome_by(
    entities: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    as_of: pd.Timestamp,
    lookup: _Lookup | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per entity: converted by ``as_of``, churned by ``as_of``."""
    return (
        _first_by(entities, outcomes, (CONVERSION.outcome,), as_of, lookup),
        _first_by(entities, outcomes, (CHURN.outcome,), as_of, lookup),
    )


def _first_by(
    entities: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    names: tuple[str, ...],
    as_of: pd.Timestamp,
    lookup: _Lookup | None,
) -> np.ndarray:
    """Per entity: one of the outcomes ``names`` by ``as_of``."""
    first = first_outcome(outcomes, names)
    if lookup is not None and lookup.ids is not None:
        happened = first[(first <= as_of).to_numpy(bool)]
        rows = lookup.rows(happened.index.to_series())
        found = np.zeros(lookup.size, dtype=bool)
        found[rows[rows >= 0]] = True
        return found
    ids = pd.Index(entities["entity_id"].astype("str"))
    return (first.reindex(ids) <= as_of).fillna(False).to_numpy(bool)


def _ended(
    entities: pd.DataFrame, outcomes: pd.DataFrame | None, as_of: pd.Timestamp, lookup: _Lookup
) -> np.ndarray:
    """Per entity: ended by ``as_of`` (:func:`features.population.end_times` on or before it)."""
    if lookup.ids is None:
        return (end_times(entities, outcomes) <= as_of).fillna(False).to_numpy(bool)
    # The earliest end is on or before as_of when either of them is.
    ended = _first_by(entities, outcomes, END_OUTCOMES, as_of, lookup)
    if ENDED_AT in entities:
        given = pd.to_datetime(entities[ENDED_AT], utc=True)
        ended |= (given <= as_of).fillna(False).to_numpy(bool)
    return ended
