"""Who is scored, with which target, and why the others are not.

Leads (``kind == "lead"``, a missing kind, or everyone when there is no ``kind``
column) get the conversion probability; customers get the churn probability. A lead
converted by the cutoff counts as a customer, as in the labels of ``features.labels``.
Every input entity gets exactly one row; those not scored say why in ``status``:
``not scored: no consent``, ``not scored: not yet created`` (``created_at`` on or
after the cutoff), ``not scored: no feature row``, ``not scored: already churned``
and ``not scored: unknown kind '...'``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.targets import TARGETS
from models.bands import ScoreKind

SCORED = "scored"
NO_CONSENT = "not scored: no consent"
NOT_YET_CREATED = "not scored: not yet created"
NO_FEATURES = "not scored: no feature row"
CHURNED = "not scored: already churned"
#: Target scoring each kind of entity, and the kind of score it gives.
TARGET_OF_KIND: dict[str, tuple[str, ScoreKind]] = {t.kind: (t.name, t.kind) for t in TARGETS}


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
