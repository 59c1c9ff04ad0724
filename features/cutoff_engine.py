"""The point-in-time aggregation of several cutoffs in one engine pass.

Training needs the feature table as of every training cutoff. Instead of one query
per cutoff, the events are paired with every cutoff after them (a small table of
cutoffs joined on ``event_time < cutoff``) and grouped by (cutoff, entity, event
type) at once, with the very aggregates of :func:`features.engine.aggregate_per_type`
and :func:`features.engine_small.latest_nps_and_key_features`. Each group holds the same
events as in the query of its cutoff alone, so the values are the same.

Entities are integers here (their position in :func:`stacked_rows`'s entity index):
grouping on integers is cheaper than on the text ids, more so with a cutoff in the key.
Every aggregate keeps the events' whole history (recency, decayed counts, first
purchase, open tickets and the latest NPS answer look back to the first event), so
the pass is not limited to the longest window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from features.engine import (
    DAY_US,
    FEATURE_USE,
    KEY_FEATURES_WINDOW,
    NPS_ANSWER,
    PURCHASE,
    aggregate_per_type,
    coded_events,
    epoch_microseconds,
    microseconds,
    payload_columns,
)
from features.engine_small import SMALL_COLUMNS, latest_nps_and_key_features
from features.spec import FeatureSpec

#: The columns naming an entity at a cutoff in the one-pass query.
KEYS = ["cutoff", "entity"]
#: A horizon beyond every cutoff (microseconds; far from overflowing with any event time).
ALL_TIME_US = 1 << 60


@dataclass(frozen=True)
class StackedRows:
    """Where each (cutoff, entity) goes in the stacked feature table.

    Attributes:
        entity_index: ``entity_id, entity``: every entity of any cutoff and its number.
        cutoffs: ``cutoff, cutoff_us``: each cutoff's number and microseconds since
            the epoch.
        rows: ``cutoff, entity, row``: the output row of each entity at each cutoff.
    """

    entity_index: pd.DataFrame
    cutoffs: pd.DataFrame
    rows: pd.DataFrame


def stacked_rows(
    existing: Sequence[pd.DataFrame],
    cutoffs: Sequence[pd.Timestamp],
    numbered: pd.Series | None = None,
) -> StackedRows:
    """Row numbers of the stacked table: the cutoffs in order, each its entities in order.

    Args:
        existing: Per cutoff, its entities (see :func:`features.table.existing_entities`);
            the last cutoff's hold every earlier one's (entities only ever appear).
        cutoffs: The cutoffs, in the order of ``existing`` (UTC).
        numbered: The ids to number, in their order (default: the last cutoff's); they
            hold every id of ``existing`` (a population's rows are numbered among all
            the entities of the last cutoff).

    Returns:
        The tables of :class:`StackedRows`.
    """
    ids = pd.Index(existing[-1]["entity_id"] if numbered is None else numbered)
    index = pd.DataFrame({"entity_id": ids.to_numpy(), "entity": np.arange(len(ids))})
    sizes = [len(frame) for frame in existing]
    rows = pd.DataFrame(
        {
            "cutoff": np.repeat(np.arange(len(existing)), sizes),
            "entity": np.concatenate([ids.get_indexer(frame["entity_id"]) for frame in existing]),
            "row": np.arange(sum(sizes)),
        }
    )
    times = pd.DataFrame(
        {"cutoff": np.arange(len(cutoffs)), "cutoff_us": [microseconds(c) for c in cutoffs]}
    )
    return StackedRows(
        index.astype({"entity_id": "str", "entity": "int64"}),
        times.astype("int64"),
        rows.astype("int64"),
    )


def timed_events(events: ir.Table, stacked: StackedRows, backend: str) -> ir.Table:
    """The events of the entities in ``stacked``, with integer ids and times.

    Returns:
        ``entity, event_type, time_us, value, item``.
    """
    timed = events.select(
        "entity_id",
        "event_type",
        time_us=epoch_microseconds(events.event_time, backend),
        **payload_columns(events, backend),
    )
    # Integers from here on: the text id is only read in this join.
    return timed.join(ibis.memtable(stacked.entity_index), "entity_id").drop("entity_id")


def paired_with_cutoffs(
    timed: ir.Table, stacked: StackedRows, horizon_us: ir.IntegerValue | None = None
) -> ir.Table:
    """Each event once per cutoff it precedes, its time replaced by its age then.

    Args:
        timed: Events with ``time_us`` (see :func:`timed_events`).
        stacked: The cutoffs.
        horizon_us: Per event, pair it only with cutoffs at most this many
            microseconds after it (its age is never above it); default: every cutoff.

    Returns:
        ``cutoff``, ``cutoff_us`` and ``age_us`` (microseconds from the event to
        the cutoff, > 0), then the other columns of ``timed``.
    """
    times = [int(us) for us in stacked.cutoffs["cutoff_us"]]
    before = timed.filter(timed.time_us < times[-1])
    # The first cutoff after the event, then every later one: an unnested range is
    # cheaper than an inequality join, which engines run as a sort-merge join.
    first = _cutoffs_before(before.time_us, times)
    end = len(times) if horizon_us is None else _cutoffs_before(before.time_us + horizon_us, times)
    spread = before.mutate(cutoff=ibis.range(first, end).unnest())
    cutoffs = ibis.memtable(stacked.cutoffs)
    paired = spread.join(cutoffs, "cutoff")
    others = [column for column in timed.columns if column != "time_us"]
    return paired.select("cutoff", "cutoff_us", *others, age_us=paired.cutoff_us - paired.time_us)


def _cutoffs_before(time_us: ir.IntegerValue, times: list[int]) -> ir.IntegerValue:
    """How many of the sorted cutoffs ``times`` are at or before ``time_us``."""
    return ibis.cases(
        *((time_us < us, number) for number, us in enumerate(times)), else_=len(times)
    )


def per_cutoff_entity_and_type(
    events: ir.Table,
    stacked: StackedRows,
    codes: pd.DataFrame,
    spec: FeatureSpec,
    backend: str,
) -> ir.Table:
    """:func:`features.engine.per_entity_and_type` of every cutoff in one query.

    Returns:
        ``row`` (of the stacked table), ``code`` and the aggregates of
        :func:`features.engine.aggregate_per_type`.
    """
    # Types become codes before the pairing multiplies the rows.
    coded = paired_with_cutoffs(
        coded_events(timed_events(events, stacked, backend), codes), stacked
    )
    grouped = aggregate_per_type(coded, KEYS, codes, coded.cutoff_us, spec)
    return _with_rows(grouped, stacked).drop(*KEYS)


def per_cutoff_nps_and_key_features(
    events: ir.Table, stacked: StackedRows, spec: FeatureSpec, backend: str
) -> ir.Table:
    """:func:`features.engine_small.nps_and_key_features` of every cutoff in one query.

    Returns:
        :data:`~features.engine_small.SMALL_COLUMNS` of the rows with NPS answers, feature use
        or purchases.
    """
    relevant = timed_events(
        events.filter(events.event_type.isin([NPS_ANSWER, FEATURE_USE, PURCHASE])),
        stacked, backend,
    )  # fmt: skip
    # Feature use counts for 30 days, NPS answers and purchases for ever.
    horizon = ibis.ifelse(
        relevant.event_type == FEATURE_USE, KEY_FEATURES_WINDOW * DAY_US, ALL_TIME_US
    )
    before = paired_with_cutoffs(relevant, stacked, horizon)
    both = latest_nps_and_key_features(before, KEYS, spec)
    return _with_rows(both, stacked).select(*SMALL_COLUMNS)


def _with_rows(table: ir.Table, stacked: StackedRows) -> ir.Table:
    """``table`` with each (cutoff, entity)'s ``row``; entities not yet there drop out."""
    rows = ibis.memtable(stacked.rows)
    return table.join(rows, KEYS)
