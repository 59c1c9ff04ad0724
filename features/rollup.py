"""Daily roll-ups of the events, and the features as of a cutoff computed from them.

With ``features.incremental_rollups`` the nightly keeps, between runs, what the
features of :mod:`features.engine` need from the events, so the next day aggregates
only the new day's events (:mod:`pipelines.rollups` stores them). Three tables:

* ``daily``: one row per (entity, event type, UTC day): ``n`` events, ``first_us`` and
  ``last_us`` (first and last event time, microseconds since the epoch),
  ``decay_sum`` (the recency weights of the day's events as of the end of that day:
  ``sum(exp((day_end - t) * rate))``), ``value_sum`` and ``value_n`` (values present);
* ``items``: per (entity, event type, item) of ``feature_use`` and undeclared types,
  the time of the item's latest use (distinct items per window count the items whose
  latest use falls in the window);
* ``nps``: per entity, the latest NPS answer with a score (highest score at a tie).

Cutoffs at midnight UTC make every window exact: an event of UTC day ``D`` has an age
in ``((d - 1) days, d days]`` at the cutoff ``d`` days after ``D``'s start, so
``age <= N days`` is ``d <= N``, its day offset is ``d`` and its login week
``(d - 1) // 7``. Recency weights are exact up to rounding: ``exp(age * rate)`` is
``exp((d - 1) days * rate) * exp((day_end - t) * rate)``. The features from the
roll-ups are therefore the features of :func:`features.engine.per_entity_and_type`
and :func:`features.engine_small.nps_and_key_features` (tested to 1e-9 in
``tests/features/test_rollup.py``). The features are read from the window state of
:mod:`features.rollup_window` (one row per (entity, type)), which each night moves
forward with only the days that enter or leave a window. Merging is a union for
``daily`` (days never overlap) and a latest-wins grouping for ``items`` and ``nps``;
days older than the longest window are merged into one row per (entity, type)
(:func:`compacted`), so the roll-ups grow with the entities and the window, not with
the history.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from features import engine, engine_small, pivot, rollup_window
from features.engine import (
    ACTIVE_DAYS_WINDOW,
    DAY_US,
    FEATURE_USE,
    KEY_FEATURES_WINDOW,
    LOGIN_DAYS_WINDOW,
    NPS_ANSWER,
    SPECIAL_TYPES,
    day_of,
)
from features.spec import FeatureSpec
from features.table import (
    columns_for,
    existing_entities,
    featurised_types,
    finish_table,
    fit_columns,
)

log = logging.getLogger(__name__)

#: Bump when the roll-up tables change: stored roll-ups are then rebuilt.
ROLLUP_VERSION = 3


def is_midnight(moment: pd.Timestamp) -> bool:
    """Whether a UTC cutoff falls on a day boundary (roll-ups are exact only there)."""
    return engine.microseconds(moment) % DAY_US == 0


def events_between(
    events: ir.Table, start: pd.Timestamp | None, end: pd.Timestamp, backend: str
) -> ir.Table:
    """``entity_id, event_type, t_us, value, item`` of the events in ``[start, end)``.

    Args:
        events: ``entity_id, event_time, event_type`` and optional ``value``, ``item``.
        start: The first moment (``None``: from the first event).
        end: The cutoff (exclusive).
        backend: Backend name, for :func:`features.engine.epoch_microseconds`.
    """
    utc = "timestamp('UTC')"
    kept = events.event_time < ibis.literal(end.to_pydatetime(), type=utc)
    if start is not None:
        kept &= events.event_time >= ibis.literal(start.to_pydatetime(), type=utc)
    chosen = events.filter(kept)
    return chosen.select(
        entity_id=chosen.entity_id,
        event_type=chosen.event_type,
        t_us=engine.epoch_microseconds(chosen.event_time, backend),
        **engine.payload_columns(chosen, backend),
    )


def item_types_excluded(spec: FeatureSpec) -> list[str]:
    """Types whose items no feature reads (declared or special, but not ``feature_use``)."""
    declared = {e.name for e in spec.event_types} | set(SPECIAL_TYPES)
    return sorted(declared - {FEATURE_USE})


def daily_rows(rows: ir.Table, spec: FeatureSpec) -> ir.Table:
    """The ``daily`` roll-up of :func:`events_between` rows (see the module docstring)."""
    day = rows.t_us // DAY_US
    rate = ibis.literal(engine.decay_rate_per_us(spec), "float64")
    weight = (((day + 1) * DAY_US - rows.t_us).cast("float64") * rate).exp()
    dated = rows.mutate(day=day, weight=weight)
    grouped = dated.group_by(["entity_id", "event_type", "day"]).aggregate(
        n=dated.count(),
        first_us=dated.t_us.min(),
        last_us=dated.t_us.max(),
        decay_sum=dated.weight.sum(),
        value_sum=dated.value.sum(),
        value_n=dated.value.count(),
    )
    return grouped.mutate(value_sum=grouped.value_sum.fill_null(0.0))


def item_rows(rows: ir.Table, spec: FeatureSpec) -> ir.Table:
    """The ``items`` roll-up of :func:`events_between` rows: latest use per item."""
    used = rows.filter(~rows.event_type.isin(item_types_excluded(spec)) & rows.item.notnull())
    return merge_items(used.select("entity_id", "event_type", "item", last_us=used.t_us))


def merge_items(rows: ir.Table) -> ir.Table:
    """``entity_id, event_type, item, last_us``: the latest use per item of ``rows``."""
    return rows.group_by(["entity_id", "event_type", "item"]).aggregate(last_us=rows.last_us.max())


def nps_rows(rows: ir.Table) -> ir.Table:
    """The ``nps`` roll-up of :func:`events_between` rows: the latest scored answer."""
    answers = rows.filter((rows.event_type == NPS_ANSWER) & rows.value.notnull())
    return merge_nps(answers.select("entity_id", last_us=answers.t_us, value=answers.value))


def merge_nps(rows: ir.Table) -> ir.Table:
    """``entity_id, last_us, value``: per entity the latest answer, the highest score at a tie."""
    rank = ibis.row_number().over(
        group_by=rows.entity_id, order_by=[rows.last_us.desc(), rows.value.desc()]
    )
    ranked = rows.mutate(rank=rank)
    return ranked.filter(ranked["rank"] == 0).select("entity_id", "last_us", "value")


def rollups_of(rows: ir.Table, spec: FeatureSpec) -> tuple[ir.Table, ir.Table, ir.Table]:
    """The ``daily``, ``items`` and ``nps`` roll-ups of :func:`events_between` rows."""
    return daily_rows(rows, spec), item_rows(rows, spec), nps_rows(rows)


def merged(
    old: tuple[ir.Table, ir.Table, ir.Table], new: tuple[ir.Table, ir.Table, ir.Table]
) -> tuple[ir.Table, ir.Table, ir.Table]:
    """Roll-ups of earlier days (``old``) followed by those of later days (``new``)."""
    return (
        old[0].union(new[0].select(*old[0].columns)),
        merge_items(old[1].union(new[1].select(*old[1].columns))),
        merge_nps(old[2].union(new[2].select(*old[2].columns))),
    )


def longest_window(spec: FeatureSpec) -> int:
    """The longest window (days) any feature reads day by day; older days count only in total."""
    windows = [*engine.count_windows(spec), *spec.windows_days, spec.kpi_window_days]
    return max(*windows, ACTIVE_DAYS_WINDOW, LOGIN_DAYS_WINDOW)


def compaction_day(as_of: pd.Timestamp, spec: FeatureSpec) -> int:
    """The first day :func:`compacted` keeps as it is at ``as_of`` and every later cutoff."""
    return day_of(as_of) - longest_window(spec)


def compacted(daily: ir.Table, before_day: int, spec: FeatureSpec) -> ir.Table:
    """``daily`` with the days before ``before_day`` merged into one row per (entity, type).

    The merged row is dated ``before_day - 1``: at a cutoff on or after the one of
    :func:`compaction_day` it is older than every window, where only the totals, the
    first and last times and the recency weights count, and those merge exactly (the
    weights rescaled to the new row's day end). So the roll-ups hold the days of the
    longest window plus one row per (entity, type) for all the history before it.
    """
    old = daily.filter(daily.day < before_day)
    rate_per_day = ibis.literal(engine.decay_rate_per_us(spec) * DAY_US, "float64")
    rescale = ((before_day - 1 - old.day).cast("float64") * rate_per_day).exp()
    merged = old.group_by(["entity_id", "event_type"]).aggregate(
        day=ibis.literal(before_day - 1, "int64"),
        n=old.n.sum(),
        first_us=old.first_us.min(),
        last_us=old.last_us.max(),
        decay_sum=(old.decay_sum * rescale).sum(),
        value_sum=old.value_sum.sum(),
        value_n=old.value_n.sum(),
    )
    # DuckDB sums 64-bit integers to 128 bits, and Ibis drops a cast to the type it
    # already assumes: through float64 (exact below 2**53) they stay 64-bit in Parquet.
    whole = {"n", "value_n"}
    typed = merged.select(
        *[merged[c].cast("float64").cast("int64").name(c) if c in whole else merged[c]
          for c in daily.columns]
    )  # fmt: skip
    return typed.union(daily.filter(daily.day >= before_day))


def per_entity_and_type(
    state: ir.Table,
    items: ir.Table,
    entity_rows: ir.Table,
    codes: pd.DataFrame,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
) -> ir.Table:
    """:func:`features.engine.per_entity_and_type` from the roll-ups (same columns).

    Args:
        state: The window state as of ``as_of`` (:mod:`features.rollup_window`).
        items: The ``items`` roll-up; only latest uses before ``as_of`` are read.
        entity_rows: ``entity_id, row`` of the entities to featurise.
        codes: ``event_type, code`` (see :func:`features.engine.type_codes`).
        as_of: The cutoff: midnight UTC.
        spec: The feature set.

    Raises:
        ValueError: ``as_of`` is not midnight UTC.
    """
    if not is_midnight(as_of):
        raise ValueError(f"Roll-ups need a cutoff at midnight UTC, not {as_of}.")
    grouped = rollup_window.per_entity_and_type(state, codes, as_of, spec)
    generic = engine.generic_codes(codes, spec)
    if generic:
        cutoff_us = engine.microseconds(as_of)
        grouped = _with_distinct_items(grouped, items, codes, generic, cutoff_us, spec)
        zeroed = [f"items_{days}d" for days in spec.windows_days]
        grouped = grouped.mutate(**{column: grouped[column].fill_null(0) for column in zeroed})
    joined = grouped.join(entity_rows, grouped.entity_id == entity_rows.entity_id)
    return joined.drop("entity_id")


def _with_distinct_items(
    grouped: ir.Table,
    items: ir.Table,
    codes: pd.DataFrame,
    generic: list[int],
    cutoff_us: int,
    spec: FeatureSpec,
) -> ir.Table:
    """``grouped`` with ``items_{N}d``: items of undeclared types last used in the window."""
    coded = engine.coded_events(items.filter(items.last_us < cutoff_us), codes)
    used = coded.filter(coded.code.isin(generic))
    age = cutoff_us - used.last_us
    counts = used.group_by(["entity_id", "code"]).aggregate(
        **{
            f"items_{days}d": used.count(where=age <= days * DAY_US).cast("int64")
            for days in spec.windows_days
        }
    )
    counts = counts.rename(item_entity_id="entity_id", item_code="code")
    same = [grouped.entity_id == counts.item_entity_id, grouped.code == counts.item_code]
    return grouped.left_join(counts, same).drop("item_entity_id", "item_code")


def nps_and_key_features(
    state: ir.Table,
    nps: ir.Table,
    items: ir.Table,
    entity_rows: ir.Table,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
) -> ir.Table:
    """:func:`features.engine_small.nps_and_key_features` from the roll-ups (same columns).

    The purchases' count and first time are the window state's (``state`` as of
    ``as_of``, see :mod:`features.rollup_window`).
    """
    cutoff_us = engine.microseconds(as_of)
    no_count = ibis.null("int64")
    answers = nps.filter(nps.last_us < cutoff_us)
    latest = answers.select("entity_id", nps_latest=answers.value, key_features_used=no_count,
                            purchases_total=no_count, first_purchase_age_us=no_count)  # fmt: skip
    bought = state.filter((state.event_type == engine.PURCHASE) & (state.n_all > 0))
    purchases = bought.select(
        "entity_id", nps_latest=ibis.null("float64"), key_features_used=no_count,
        purchases_total=bought.n_all.cast("int64"),
        first_purchase_age_us=(cutoff_us - bought.first_us).cast("int64"),
    )  # fmt: skip
    uses = items.filter(
        (items.event_type == FEATURE_USE)
        & (items.last_us < cutoff_us)
        & (cutoff_us - items.last_us <= KEY_FEATURES_WINDOW * DAY_US)
    )
    if spec.key_features is not None:
        uses = uses.filter(uses.item.isin(list(spec.key_features)))
    counts = uses.group_by("entity_id").aggregate(
        nps_latest=ibis.null("float64"), key_features_used=uses.count(),
        purchases_total=no_count, first_purchase_age_us=no_count,
    )  # fmt: skip
    stacked = latest.union(counts).union(purchases)
    both = stacked.group_by("entity_id").aggregate(
        nps_latest=stacked.nps_latest.max(),
        key_features_used=stacked.key_features_used.max().fill_null(0),
        purchases_total=stacked.purchases_total.max().fill_null(0),
        first_purchase_age_us=stacked.first_purchase_age_us.max(),
    )
    return both.join(entity_rows, both.entity_id == entity_rows.entity_id).select(
        *engine_small.SMALL_COLUMNS
    )


def build_features(
    con: Any,
    rollups: tuple[ir.Table, ir.Table, ir.Table],
    entities: pd.DataFrame,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
    event_types: Sequence[str],
    rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """The feature table of :func:`features.build.build_features`, from the roll-ups.

    Args:
        con: The engine connection holding the roll-up tables.
        rollups: The window state as of ``as_of`` (:mod:`features.rollup_window`) and
            the ``items`` and ``nps`` tables (see the module docstring).
        entities: Entities frame; its non-contract columns are fit attributes.
        as_of: The cutoff: midnight UTC.
        spec: The feature set.
        event_types: Event types to featurise besides the declared ones.
        rows: :func:`~features.table.existing_rows` of ``entities`` at ``as_of``, when
            known (as in :func:`features.build.build_features`).
    """
    state, items, nps = rollups
    fits = fit_columns(entities)
    catalog = columns_for(spec, event_types, fits)
    featurised = featurised_types(spec, event_types)
    existing = existing_entities(entities, as_of, rows)
    n_rows = len(existing)
    entity_rows = ibis.memtable(
        pd.DataFrame({"entity_id": existing["entity_id"], "row": np.arange(n_rows)})
    )
    codes = engine.type_codes(featurised)
    long = con.to_pyarrow(per_entity_and_type(state, items, entity_rows, codes, as_of, spec))
    with ThreadPoolExecutor(max_workers=1) as background:
        small = background.submit(
            con.to_pyarrow, nps_and_key_features(state, nps, items, entity_rows, as_of, spec)
        )
        columns = pivot.spread(long, n_rows, codes, spec, featurised)
        engagement = pivot.with_nps_and_key_features(columns, small.result())
    age = (as_of - existing["created_at"]) / pd.Timedelta(microseconds=1)
    engagement["tenure_days"] = age.to_numpy() / engine.DAY_US
    log.info("Built %d feature rows as of %s from the roll-ups' %d (entity, type) rows.",
             n_rows, as_of, long.num_rows)  # fmt: skip
    return finish_table(engagement, existing, as_of, catalog, fits, entities)
