"""Point-in-time feature tables: one row per entity as of a cutoff.

The aggregation itself is the Ibis expression of :mod:`features.engine`; this
module takes the inputs (pandas frames or Parquet paths, see :mod:`features.backend`),
picks the engine (``duckdb`` by default, ``pyspark`` unchanged), and finishes the
table to the contract of ``docs/ARCHITECTURE.md`` (see :mod:`features.table`):
``entity_id``, ``as_of``, then the columns of :func:`features.spec.feature_catalog`
in order and with their declared dtypes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from features import engine, pivot
from features.backend import EventsInput, connect, events_table, types_seen
from features.spec import FeatureSpec
from features.table import columns_for, existing_entities, finish_table, fit_columns
from features.timeutil import engine_timestamp

log = logging.getLogger(__name__)


def _build(
    events: EventsInput,
    entities: pd.DataFrame,
    cutoffs: list[pd.Timestamp],
    spec: FeatureSpec,
    backend: str,
    con: Any,
    event_types: Sequence[str] | None,
) -> list[pd.DataFrame]:
    """One feature table per cutoff; columns follow the types seen before the last."""
    connection = connect(backend, con)
    table = events_table(connection, events)
    with ThreadPoolExecutor(max_workers=1) as background:
        # The engine lists the event types while pandas selects the first cutoff's entities.
        listing = (
            None
            if event_types is not None
            else background.submit(types_seen, connection, table, cutoffs[-1])
        )
        first = existing_entities(entities, cutoffs[0])
        types = list(event_types) if listing is None else listing.result()
    return [
        _build_one(connection, table, entities, cutoff, spec, types, first if i == 0 else None)
        for i, cutoff in enumerate(cutoffs)
    ]


def _build_one(
    con: Any,
    table: Any,
    entities: pd.DataFrame,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
    event_types: Sequence[str],
    existing: pd.DataFrame | None = None,
) -> pd.DataFrame:
    import ibis

    fits = fit_columns(entities)
    catalog = columns_for(spec, event_types, fits)
    declared = [e.name for e in spec.event_types]
    featurised = declared + sorted(set(event_types) - set(declared))
    if existing is None:
        existing = existing_entities(entities, as_of)
    n_rows = len(existing)
    entity_rows = ibis.memtable(
        pd.DataFrame({"entity_id": existing["entity_id"], "row": np.arange(n_rows)})
    )
    codes = engine.type_codes(featurised)
    long = con.to_pyarrow(
        engine.per_entity_and_type(table, entity_rows, codes, as_of, spec, con.name)
    )
    # The small query runs while numpy spreads the long table: one core each.
    with ThreadPoolExecutor(max_workers=1) as background:
        small = background.submit(
            con.to_pyarrow,
            engine.nps_and_key_features(table, entity_rows, as_of, spec, con.name),
        )
        columns = pivot.spread(long, n_rows, codes, spec, featurised)
        engagement = pivot.with_nps_and_key_features(columns, small.result())
    age = (as_of - existing["created_at"]) / pd.Timedelta(microseconds=1)
    engagement["tenure_days"] = age.to_numpy() / engine.DAY_US
    log.info(
        "Built %d feature rows as of %s with %s from %d (entity, type) rows.",
        n_rows, as_of, con.name, long.num_rows,
    )  # fmt: skip
    return finish_table(engagement, existing, as_of, catalog, fits, entities)


def build_features(
    events: EventsInput,
    entities: pd.DataFrame,
    as_of: Any,
    spec: FeatureSpec = FeatureSpec(),  # noqa: B008 - frozen dataclass, safe default
    *,
    backend: str = "duckdb",
    con: Any = None,
    event_types: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The feature table as of one cutoff (see ``docs/ARCHITECTURE.md``).

    Args:
        events: Events frame (contract columns) or a Parquet file, folder or glob.
        entities: Entities frame; its non-contract columns are fit attributes.
        as_of: The cutoff; naive values are UTC. Only events strictly before it count.
        spec: The feature set.
        backend: ``duckdb`` (default) or ``pyspark``.
        con: Connection to reuse (see :func:`connect`).
        event_types: Event types to featurise besides the declared ones; default:
            those seen before the cutoff. Pass a model's list to get its columns.

    Returns:
        One row per entity with ``created_at < as_of`` (and consent), sorted by
        ``entity_id``: ``entity_id``, ``as_of``, then the feature catalog columns.
    """
    return _build(events, entities, [engine_timestamp(as_of)], spec, backend, con, event_types)[0]


def build_snapshots(
    events: EventsInput,
    entities: pd.DataFrame,
    cutoffs: Iterable[Any],
    spec: FeatureSpec = FeatureSpec(),  # noqa: B008 - frozen dataclass, safe default
    *,
    backend: str = "duckdb",
    con: Any = None,
    event_types: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Feature tables of several cutoffs stacked (one row per entity and cutoff).

    Every table has the same columns: the event types seen before the last cutoff
    (or ``event_types``), so earlier tables may carry all-zero columns of types
    that appear later.

    Args:
        events: Events frame or Parquet path/glob, read once.
        entities: Entities frame.
        cutoffs: The cutoffs; naive values are UTC; duplicates are built once.
        spec: The feature set.
        backend: ``duckdb`` (default) or ``pyspark``.
        con: Connection to reuse; one connection serves every cutoff.
        event_types: As in :func:`build_features`.

    Returns:
        The tables in cutoff order, with a fresh index.
    """
    ordered = sorted({engine_timestamp(cutoff) for cutoff in cutoffs})
    if not ordered:
        raise ValueError("build_snapshots needs at least one cutoff.")
    frames = _build(events, entities, ordered, spec, backend, con, event_types)
    return pd.concat(frames, ignore_index=True)
