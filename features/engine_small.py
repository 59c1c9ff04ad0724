"""The small query: per-entity features of rare event types, beside the main pass.

NPS answers (the latest score), purchases (how many, and the first one's age) and the
distinct key features used in the last 30 days are read by their own filtered scans
rather than by the main pass of :mod:`features.engine` over every event: every
aggregate of the main pass costs a pass over all the events, while these scans keep
few rows. Feature use of the last 30 days lets the engine skip older row groups by
their statistics; NPS answers and purchases are rare but spread over every file, so
their scan decodes most pages whatever it keeps, and reads both types at once.
Written once in Ibis for every engine, as the main pass.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir
import pandas as pd

from features.engine import (
    DAY_US,
    FEATURE_USE,
    KEY_FEATURES_WINDOW,
    NPS_ANSWER,
    PURCHASE,
    events_before,
    with_entity_rows,
)
from features.spec import FeatureSpec

#: The columns of :func:`nps_and_key_features` (its keys are ``row``).
SMALL_COLUMNS = ("row", "nps_latest", "key_features_used", "purchases_total",
                 "first_purchase_age_us")  # fmt: skip


def nps_and_key_features(
    events: ir.Table,
    entity_rows: ir.Table,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
    backend: str,
) -> ir.Table:
    """:data:`SMALL_COLUMNS` of entities with NPS answers, feature use or purchases.

    See :func:`latest_nps_and_key_features`; entities without any have no row.
    """
    # Two scans with plain filters, which the engine applies as it reads: feature use of
    # the key-feature window only, and NPS answers with purchases (rare types, so their
    # scan reads every page of the files however many of the two it keeps). One scan for
    # feature use too took twice as long at 44M events, and joined five times the rows
    # to their entities.
    since = ibis.literal((as_of - pd.Timedelta(days=KEY_FEATURES_WINDOW)).to_pydatetime(),
                         type="timestamp('UTC')")  # fmt: skip
    answers = events.filter((events.event_type == NPS_ANSWER) | (events.event_type == PURCHASE))
    uses = events.filter((events.event_type == FEATURE_USE) & (events.event_time >= since))
    relevant = answers.union(uses)
    before = with_entity_rows(events_before(relevant, as_of, backend), entity_rows)
    both = latest_nps_and_key_features(before, ["row"], spec)
    return both.select(*SMALL_COLUMNS)


def latest_nps_and_key_features(before: ir.Table, keys: list[str], spec: FeatureSpec) -> ir.Table:
    """``keys`` and :data:`SMALL_COLUMNS` per entity with NPS answers, feature use or purchases.

    ``nps_latest`` is the score of the latest NPS answer before the cutoff; answers
    without a score are ignored and of answers at the same instant the highest
    score counts, so the result never depends on row order. ``key_features_used``
    counts distinct ``item`` of ``feature_use`` events in the last 30 days (only
    the spec's key features, when it lists them). ``purchases_total`` counts the
    purchases before the cutoff and ``first_purchase_age_us`` is the age of the first
    (NULL without one). All read one filtered scan.

    Args:
        before: ``keys``, ``event_type``, ``age_us``, ``value``, ``item`` of the
            events before the cutoff (see :func:`events_before`).
        keys: The columns naming an entity at a cutoff (``row`` for one cutoff).
        spec: The feature set.
    """
    relevant = before.filter(before.event_type.isin([NPS_ANSWER, FEATURE_USE, PURCHASE]))
    no_count, no_age = ibis.null("int64"), ibis.null("int64")
    answers = relevant.filter((relevant.event_type == NPS_ANSWER) & relevant.value.notnull())
    rank = ibis.row_number().over(
        group_by=[answers[key] for key in keys], order_by=[answers.age_us, answers.value.desc()]
    )
    latest = answers.mutate(rank=rank).filter(ibis._.rank == 0)
    latest = latest.select(*keys, nps_latest=latest.value, key_features_used=no_count,
                           purchases_total=no_count, first_purchase_age_us=no_age)  # fmt: skip
    uses = relevant.filter(
        (relevant.event_type == FEATURE_USE)
        & (relevant.age_us <= KEY_FEATURES_WINDOW * DAY_US)
        & relevant.item.notnull()
    )
    if spec.key_features is not None:
        uses = uses.filter(uses.item.isin(list(spec.key_features)))
    # Deduplicate first: no engine needs count(DISTINCT ...).
    pairs = uses.select(*keys, "item").distinct()
    counts = pairs.group_by(keys).aggregate(
        nps_latest=ibis.null("float64"), key_features_used=pairs.count(),
        purchases_total=no_count, first_purchase_age_us=no_age,
    )  # fmt: skip
    bought = relevant.filter(relevant.event_type == PURCHASE)
    purchases = bought.group_by(keys).aggregate(
        nps_latest=ibis.null("float64"), key_features_used=no_count,
        purchases_total=bought.count(), first_purchase_age_us=bought.age_us.max(),
    )  # fmt: skip
    stacked = latest.union(counts).union(purchases)
    return stacked.group_by(keys).aggregate(
        nps_latest=stacked.nps_latest.max(),
        key_features_used=stacked.key_features_used.max().fill_null(0),
        purchases_total=stacked.purchases_total.max().fill_null(0),
        first_purchase_age_us=stacked.first_purchase_age_us.max(),
    )
