"""Point-in-time feature tables: one row per entity as of a cutoff.

The aggregation itself is the Ibis expression of :mod:`features.engine` (one
cutoff) or :mod:`features.cutoff_engine` (every cutoff of :func:`build_snapshots` in
one pass); this module takes the inputs (pandas frames or Parquet paths, see
:mod:`features.backend`), picks the engine (``duckdb`` by default, ``pyspark``
unchanged), and finishes the table to the contract of ``docs/ARCHITECTURE.md``
(see :mod:`features.table`): ``entity_id``, ``as_of``, then the columns of
:func:`features.spec.feature_catalog` in order and with their declared dtypes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from features import cutoff_engine, engine, engine_small, pivot
from features.backend import EventsInput, connect, events_table, types_seen
from features.event_table import EventTable
from features.spec import FeatureSpec
from features.table import (
    columns_for,
    existing_entities,
    existing_rows,
    featurised_types,
    finish_table,
    fit_columns,
)
from features.timeutil import engine_timestamp

log = logging.getLogger(__name__)


def _prepare(
    events: EventsInput,
    entities: pd.DataFrame,
    cutoffs: list[pd.Timestamp],
    backend: str,
    con: Any,
    event_types: Sequence[str] | None,
    rows: np.ndarray | None = None,
    first_entities: bool = True,
) -> tuple[Any, Any, list[str], pd.DataFrame | None]:
    """The connection, the events table, the types to featurise and the first cutoff's rows.

    ``rows``: the first cutoff's :func:`~features.table.existing_rows`, when known.
    Without ``first_entities`` the first cutoff's rows are not picked (``None``).
    """
    if isinstance(events, EventTable):
        # The events' own engine runs the query; another engine gets their rows.
        if con is None and backend == events.con.name:
            con = events.con
        if con is not None and getattr(con, "name", None) == events.con.name == "duckdb":
            connection, table = con, events.table.select(*events.contract_columns)
        else:
            connection = connect(backend, con)
            table = events_table(connection, events.to_pandas(events.contract_columns))
    else:
        connection = connect(backend, con)
        table = events_table(connection, events)
    with ThreadPoolExecutor(max_workers=1) as background:
        # The engine lists the event types while pandas selects the first cutoff's entities.
        listing = (
            None
            if event_types is not None
            else background.submit(types_seen, connection, table, cutoffs[-1])
        )
        first = existing_entities(entities, cutoffs[0], rows) if first_entities else None
        types = list(event_types) if listing is None else listing.result()
    return connection, table, types, first


def _build_one(
    con: Any,
    table: Any,
    entities: pd.DataFrame,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
    event_types: Sequence[str],
    existing: pd.DataFrame | None = None,
    rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """One cutoff's table; ``existing`` (its entities) or their ``rows`` in ``entities``."""
    import ibis

    fits = fit_columns(entities)
    catalog = columns_for(spec, event_types, fits)
    featurised = featurised_types(spec, event_types)
    if existing is None and rows is None:
        rows = existing_rows(entities, as_of)
    ids = existing["entity_id"] if existing is not None else _ids_at(entities, rows)
    n_rows = len(ids)
    entity_rows = ibis.memtable(pd.DataFrame({"entity_id": ids, "row": np.arange(n_rows)}))
    codes = engine.type_codes(featurised)
    query = engine.per_entity_and_type(table, entity_rows, codes, as_of, spec, con.name)
    with ThreadPoolExecutor(max_workers=1) as background:
        # The engine groups the events while pandas picks the entities' other columns.
        grouping = background.submit(con.to_pyarrow, query)
        if existing is None:
            existing = existing_entities(entities, as_of, rows)
        long = grouping.result()
    # The small query runs while numpy spreads the long table: one core each.
    with ThreadPoolExecutor(max_workers=1) as background:
        small = background.submit(
            con.to_pyarrow,
            engine_small.nps_and_key_features(table, entity_rows, as_of, spec, con.name),
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
    rows: np.ndarray | None = None,
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
        rows: :func:`~features.table.existing_rows` of ``entities`` at the cutoff, when
            the caller has them: row ``i`` of the table is then row ``rows[i]`` of
            ``entities``.

    Returns:
        One row per entity with ``created_at < as_of`` (and consent), sorted by
        ``entity_id``: ``entity_id``, ``as_of``, then the feature catalog columns.
    """
    cutoff = engine_timestamp(as_of)
    connection, table, types, _ = _prepare(
        events, entities, [cutoff], backend, con, event_types, first_entities=False
    )
    return _build_one(connection, table, entities, cutoff, spec, types, rows=rows)


def _ids_at(entities: pd.DataFrame, rows: np.ndarray) -> pd.Series:
    """The ids of ``entities``' ``rows`` as text, as :func:`existing_entities` has them."""
    return entities["entity_id"].iloc[rows].astype("str").reset_index(drop=True)


def build_snapshots(
    events: EventsInput,
    entities: pd.DataFrame,
    cutoffs: Iterable[Any],
    spec: FeatureSpec = FeatureSpec(),  # noqa: B008 - frozen dataclass, safe default
    *,
    backend: str = "duckdb",
    con: Any = None,
    event_types: Sequence[str] | None = None,
    population: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Feature tables of several cutoffs stacked (one row per entity and cutoff).

    Every table has the same columns: the event types seen before the last cutoff
    (or ``event_types``), so earlier tables may carry all-zero columns of types
    that appear later. One engine query serves every cutoff; the result is the
    table :func:`build_features` gives per cutoff (given those event types), stacked.

    Args:
        events: Events frame or Parquet path/glob, read once.
        entities: Entities frame.
        cutoffs: The cutoffs; naive values are UTC; duplicates are built once.
        spec: The feature set.
        backend: ``duckdb`` (default) or ``pyspark``.
        con: Connection to reuse; one connection serves every cutoff.
        event_types: As in :func:`build_features`.
        population: ``entity_id, as_of``: only these (entity, cutoff) rows are built
            (a target's labelled rows); fit attributes and their levels still come
            from every entity, so each row equals its row of the full table.

    Returns:
        The tables in cutoff order, with a fresh index.
    """
    ordered = sorted({engine_timestamp(cutoff) for cutoff in cutoffs})
    if not ordered:
        raise ValueError("build_snapshots needs at least one cutoff.")
    connection, table, types, first = _prepare(events, entities, ordered, backend, con, event_types)
    existing = [first] + [existing_entities(entities, cutoff) for cutoff in ordered[1:]]
    # The engine numbers every entity of the last cutoff, population or not: with a
    # population's own (smaller, reordered) numbering, DuckDB 2.0's dictionary-surviving
    # hash join failed an internal assertion ("global dictionary column 2 changed
    # identity") on the churn snapshots of tests/acceptance/test_populations.py.
    numbered = existing[-1]["entity_id"]
    if population is not None:
        wanted = pd.to_datetime(population["as_of"], utc=True)
        ids = population["entity_id"].astype("str")
        existing = [
            frame[frame["entity_id"].isin(ids[(wanted == cutoff).to_numpy()])].reset_index(
                drop=True
            )
            for cutoff, frame in zip(ordered, existing, strict=True)
        ]
    return _build_all(connection, table, entities, ordered, spec, types, existing, numbered)


def _build_all(
    con: Any,
    table: Any,
    entities: pd.DataFrame,
    cutoffs: list[pd.Timestamp],
    spec: FeatureSpec,
    event_types: Sequence[str],
    existing: list[pd.DataFrame],
    numbered: pd.Series | None = None,
) -> pd.DataFrame:
    """Every cutoff's feature table, stacked, from one engine pass (:mod:`features.cutoff_engine`).

    The same table as :func:`_build_one` per cutoff, concatenated; ``numbered`` as in
    :func:`features.cutoff_engine.stacked_rows`.
    """
    fits = fit_columns(entities)
    catalog = columns_for(spec, event_types, fits)
    featurised = featurised_types(spec, event_types)
    stacked = cutoff_engine.stacked_rows(existing, cutoffs, numbered)
    n_rows = len(stacked.rows)
    codes = engine.type_codes(featurised)
    long = con.to_pyarrow(
        cutoff_engine.per_cutoff_entity_and_type(table, stacked, codes, spec, con.name)
    )
    with ThreadPoolExecutor(max_workers=1) as background:
        small = background.submit(
            con.to_pyarrow,
            cutoff_engine.per_cutoff_nps_and_key_features(table, stacked, spec, con.name),
        )
        columns = pivot.spread(long, n_rows, codes, spec, featurised)
        engagement = pivot.with_nps_and_key_features(columns, small.result())
    ages = [(cutoff - frame["created_at"]) / pd.Timedelta(microseconds=1)
            for cutoff, frame in zip(cutoffs, existing, strict=True)]  # fmt: skip
    engagement["tenure_days"] = np.concatenate([age.to_numpy() for age in ages]) / engine.DAY_US
    log.info(
        "Built %d feature rows at %d cutoffs in one pass with %s from %d (cutoff, entity, "
        "type) rows.", n_rows, len(cutoffs), con.name, long.num_rows,
    )  # fmt: skip
    ends = np.cumsum([len(frame) for frame in existing])
    frames = [
        finish_table(engagement.iloc[end - len(rows) : end], rows, cutoff, catalog, fits, entities)
        for cutoff, rows, end in zip(cutoffs, existing, ends, strict=True)
    ]
    return pd.concat(frames, ignore_index=True)
