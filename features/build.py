"""Point-in-time feature tables: one row per entity as of a cutoff.

The aggregation itself is the Ibis expression of :mod:`features.engine`; this
module takes the inputs (pandas frames or Parquet paths), picks the engine
(``duckdb`` by default, ``pyspark`` unchanged), and finishes the table to the
contract of ``docs/ARCHITECTURE.md``: ``entity_id``, ``as_of``, then the columns of
:func:`features.spec.feature_catalog` in order and with their declared dtypes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features import engine, pivot
from features.engine import NPS_CLASSES
from features.spec import FeatureDef, FeatureSpec, feature_catalog, safe_name
from features.timeutil import UTC_TIMESTAMP, engine_timestamp, utc_microseconds

log = logging.getLogger(__name__)

EventsInput = pd.DataFrame | str | Path
#: Entity columns of the data contract; every other entity column is a fit attribute.
CONTRACT_ENTITY_COLUMNS: frozenset[str] = frozenset(
    {"entity_id", "created_at", "crm_id", "consent", "kind"}
)
EVENT_COLUMNS: tuple[str, ...] = ("entity_id", "event_time", "event_type", "value", "item")
REQUIRED_EVENT_COLUMNS: tuple[str, ...] = ("entity_id", "event_time", "event_type")
BACKENDS: tuple[str, ...] = ("duckdb", "pyspark")


def fit_columns(entities: pd.DataFrame) -> dict[str, Literal["float64", "category"]]:
    """Fit attributes of an entities table and their feature dtypes.

    Every column outside the data contract (``entity_id, created_at, crm_id,
    consent, kind``) is a fit attribute: numbers and booleans become ``float64``,
    strings and categories ``category``. Other types (timestamps) are skipped with
    a warning, since no model can use them as they are, and so are text columns
    with a different value for most entities (names, e-mails, ids): they carry no
    pattern to learn and would keep personal data inside the model.

    Args:
        entities: The entities table.

    Returns:
        Column name to dtype, in the table's column order.
    """
    columns: dict[str, Literal["float64", "category"]] = {}
    for column in entities.columns:
        if column in CONTRACT_ENTITY_COLUMNS:
            continue
        dtype = entities[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            columns[column] = "float64"
        elif pd.api.types.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
            if _looks_like_an_identifier(entities[column]):
                log.warning(
                    "Entities column %r holds a different value for most entities (a name, "
                    "e-mail or id?): it is not used as a fit attribute, so no model learns "
                    "or stores it.", column,
                )  # fmt: skip
                continue
            columns[column] = "category"
        else:
            log.warning(
                "Entities column %r has type %s, neither numeric nor text: "
                "it is not used as a fit attribute.", column, dtype,
            )  # fmt: skip
    return columns


#: A text column with more distinct values than this share of its rows is per-entity.
IDENTIFIER_DISTINCT_SHARE = 0.5
#: ... and more than this many distinct values (small tables repeat little by chance).
IDENTIFIER_MIN_DISTINCT = 20


def _looks_like_an_identifier(values: pd.Series) -> bool:
    present = values.dropna()
    distinct = present.nunique()
    share = IDENTIFIER_DISTINCT_SHARE * len(present)
    return distinct > IDENTIFIER_MIN_DISTINCT and distinct > share


def existing_entities(entities: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Entities that exist at the cutoff (``created_at < as_of``) and consent.

    ``consent`` false means never profiled, so such entities get no feature row.
    The result is sorted by ``entity_id`` with a fresh index.
    """
    missing = [c for c in ("entity_id", "created_at") if c not in entities.columns]
    if missing:
        raise ValueError(
            f"The entities table has no column {', '.join(map(repr, missing))}; it has "
            f"{list(entities.columns)}. Map its columns to the data contract first."
        )
    created = utc_microseconds(entities["created_at"])
    keep = created < as_of
    if "consent" in entities.columns:
        keep &= entities["consent"].fillna(True).astype(bool)
    kept = entities.loc[keep].assign(created_at=created[keep])
    kept = kept.assign(entity_id=kept["entity_id"].astype("str"))
    if not kept["entity_id"].is_monotonic_increasing:
        kept = kept.sort_values("entity_id", kind="stable")
    kept = kept.reset_index(drop=True)
    ids = kept["entity_id"]
    # Sorted, so a repeated id sits next to itself.
    repeated = ids[(ids == ids.shift()).to_numpy()]
    if len(repeated):
        raise ValueError(
            f"The entities table repeats entity_id {list(repeated.unique()[:5])}: "
            "each entity must appear once."
        )
    return kept


def check_events_frame(events: pd.DataFrame) -> pd.DataFrame:
    """The contract columns of an events frame, with ``event_time`` in UTC.

    Raises:
        ValueError: A required column is missing.
    """
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(
            f"The events table has no column {', '.join(map(repr, missing))}; it has "
            f"{list(events.columns)}. Map its columns to the data contract first."
        )
    frame = events[[c for c in EVENT_COLUMNS if c in events.columns]]
    if frame["event_time"].dtype != UTC_TIMESTAMP:
        frame = frame.assign(event_time=utc_microseconds(frame["event_time"]))
    return frame


def columns_for(
    spec: FeatureSpec, event_types: Iterable[str], fits: dict[str, Literal["float64", "category"]]
) -> list[FeatureDef]:
    """The feature catalog, refusing event types whose column names would collide."""
    declared = [e.name for e in spec.event_types]
    types = declared + sorted(set(event_types) - set(declared))
    by_column: dict[str, list[str]] = {}
    for name in types:
        by_column.setdefault(safe_name(name), []).append(name)
    clashes = {column: names for column, names in by_column.items() if len(names) > 1}
    if clashes:
        described = "; ".join(f"{names} all become {column!r}" for column, names in clashes.items())
        raise ValueError(
            f"Event types differ only in case or punctuation, so their feature columns "
            f"would collide: {described}. Rename them in the events table."
        )
    return feature_catalog(spec, types, fits)


def finish_table(
    engagement: pd.DataFrame,
    entities: pd.DataFrame,
    as_of: pd.Timestamp,
    catalog: list[FeatureDef],
    fits: dict[str, Literal["float64", "category"]],
    all_entities: pd.DataFrame,
) -> pd.DataFrame:
    """Put computed features in contract form: columns, order and dtypes.

    Args:
        engagement: Every engagement feature (``tenure_days`` included), one row
            per row of ``entities``, in the same order; its index is ignored.
        entities: The existing entities (see :func:`existing_entities`).
        as_of: The cutoff.
        catalog: The feature definitions, in column order.
        fits: The fit attributes and their dtypes.
        all_entities: The whole entities table; category levels come from it, so
            tables of different cutoffs stack without losing the category dtype.

    Returns:
        The feature table.

    Raises:
        ValueError: A feature of the catalog was not computed.
    """
    missing = [d.name for d in catalog if d.name not in fits and d.name not in engagement]
    if missing:
        raise ValueError(
            f"No values were computed for the features {missing}: the spec declares "
            "features the feature engine does not know."
        )
    n_rows = len(entities)
    columns: dict[str, Any] = {
        # The string array itself: through numpy it would become Python objects and back.
        "entity_id": entities["entity_id"].astype("str").array,
        "as_of": pd.DatetimeIndex(
            np.full(n_rows, as_of.tz_localize(None).as_unit("us").asm8)
        ).tz_localize("UTC"),
    }
    for feature in catalog:
        if feature.name in fits:
            columns[feature.name] = _fit_values(entities, all_entities, feature.name, fits)
            continue
        values = engagement[feature.name]
        if feature.dtype == "category":
            if not isinstance(values.dtype, pd.CategoricalDtype):
                values = pd.Categorical(values.astype("str"), categories=list(NPS_CLASSES))
            columns[feature.name] = pd.Categorical(values)
        else:
            columns[feature.name] = np.asarray(values, dtype=feature.dtype)
    # No copy: each column stays the array it was computed in (a 1M-row table is
    # ~1.2 GB; consolidating it into blocks would copy all of it once more).
    return pd.DataFrame(columns, index=pd.RangeIndex(n_rows), copy=False)


def _fit_values(
    entities: pd.DataFrame,
    all_entities: pd.DataFrame,
    column: str,
    fits: dict[str, Literal["float64", "category"]],
) -> pd.Series | pd.Categorical:
    values = entities[column]
    if fits[column] == "float64":
        return pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    levels = pd.Series(all_entities[column]).dropna().astype("str").unique()
    return pd.Categorical(values.astype("str").where(values.notna()), categories=sorted(levels))


# --- engines and inputs -----------------------------------------------------------------


def connect(backend: str = "duckdb", con: Any = None) -> Any:
    """An Ibis connection for ``backend``, reusing ``con`` when given.

    Args:
        backend: ``duckdb`` or ``pyspark``.
        con: An Ibis connection of that backend, a raw ``duckdb`` connection or a
            ``SparkSession``; ``None`` opens a new one (an in-memory DuckDB, or the
            active Spark session).

    Returns:
        The Ibis backend.

    Raises:
        ValueError: Unknown backend, or a connection of another backend.
    """
    import ibis

    if backend not in BACKENDS:
        raise ValueError(f"Unknown feature backend {backend!r}; choose one of {BACKENDS}.")
    if con is not None and getattr(con, "name", None) == backend:
        return con
    if backend == "duckdb":
        import duckdb

        if con is None:
            return ibis.duckdb.connect()
        if isinstance(con, duckdb.DuckDBPyConnection):
            return ibis.duckdb.from_connection(con)
    else:
        from pyspark.sql import SparkSession

        if con is None:
            return ibis.pyspark.connect(SparkSession.builder.getOrCreate())
        if isinstance(con, SparkSession):
            return ibis.pyspark.connect(con)
    raise ValueError(f"The connection given ({type(con).__name__}) is not a {backend} connection.")


def events_table(con: Any, events: EventsInput) -> Any:
    """The events as an Ibis table of ``con``: a pandas frame, or Parquet path/glob.

    Raises:
        ValueError: Required columns are missing (the message names the source).
    """
    import ibis

    if isinstance(events, pd.DataFrame):
        return ibis.memtable(check_events_frame(events))
    source = str(events)
    if con.name == "duckdb" and Path(source).is_dir():
        source = str(Path(source) / "**" / "*.parquet")
    table = con.read_parquet(source)
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"The events at {events} have no column {', '.join(map(repr, missing))}; "
            f"they have {list(table.columns)}."
        )
    dtype = table.event_time.type()
    is_timestamp = dtype.is_timestamp() or (dtype.is_unknown() and "TIMESTAMP" in str(dtype))
    if not is_timestamp:
        raise ValueError(
            f"The events at {events} have event_time of type {dtype}, not a timestamp."
        )
    if not (dtype.is_timestamp() and dtype.timezone == "UTC" and dtype.scale in (None, 6)):
        # Naive times are UTC (the session time zone of both engines is UTC);
        # nanoseconds become microseconds, which both engines keep.
        table = table.mutate(event_time=table.event_time.cast("timestamp('UTC')"))
    return table.select(*[c for c in EVENT_COLUMNS if c in table.columns])


def _types_seen(con: Any, table: Any, before: pd.Timestamp | None) -> list[str]:
    import ibis

    if before is not None:
        table = table.filter(
            table.event_time < ibis.literal(before.to_pydatetime(), type="timestamp('UTC')")
        )
    types = con.execute(table.select("event_type").distinct())["event_type"]
    return sorted(str(t) for t in types.dropna())


def event_types_seen(
    events: EventsInput,
    before: Any = None,
    *,
    backend: str = "duckdb",
    con: Any = None,
) -> list[str]:
    """Distinct event types in the events, only those before ``before`` if given.

    Feature columns follow the types seen before the cutoff, never after it, so
    that events at or after the cutoff cannot change the feature table.

    Args:
        events: Events frame or Parquet path/glob.
        before: Only count events strictly before this time (naive means UTC).
        backend: ``duckdb`` or ``pyspark``.
        con: Connection to reuse (see :func:`connect`).

    Returns:
        The event types, sorted.
    """
    connection = connect(backend, con)
    cutoff = None if before is None else engine_timestamp(before)
    return _types_seen(connection, events_table(connection, events), cutoff)


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
            else background.submit(_types_seen, connection, table, cutoffs[-1])
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
