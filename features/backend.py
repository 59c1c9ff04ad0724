"""The feature engines' side of the inputs: connections and the events as an Ibis table.

:func:`connect` opens (or reuses) a DuckDB or Spark connection; :func:`events_table`
turns a pandas frame or Parquet path into an Ibis table with the contract's event
columns and ``event_time`` in UTC microseconds; :func:`event_types_seen` lists the
event types present before a cutoff.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import pandas as pd

from features.timeutil import UTC_TIMESTAMP, engine_timestamp, utc_microseconds

if TYPE_CHECKING:
    from features.event_table import EventTable

EventsInput = Union[pd.DataFrame, str, Path, "EventTable"]
EVENT_COLUMNS: tuple[str, ...] = ("entity_id", "event_time", "event_type", "value", "item")
REQUIRED_EVENT_COLUMNS: tuple[str, ...] = ("entity_id", "event_time", "event_type")
BACKENDS: tuple[str, ...] = ("duckdb", "pyspark")


def check_events_frame(events: pd.DataFrame) -> pd.DataFrame:
    """The contract columns of an events frame, with ``event_time`` in UTC.

    Args:
        events: Events with the contract's column names; other columns are dropped.

    Returns:
        The contract columns present, ``event_time`` as ``datetime64[us, UTC]``.

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

    Args:
        con: The Ibis connection (see :func:`connect`).
        events: Events frame, or a Parquet file, folder or glob.

    Returns:
        The contract's event columns, ``event_time`` a UTC timestamp.

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


def types_seen(con: Any, table: Any, before: pd.Timestamp | None) -> list[str]:
    """Distinct event types of an events table of ``con``, those before ``before`` if given.

    Args:
        con: The Ibis connection the table belongs to.
        table: The events (see :func:`events_table`).
        before: Only count events strictly before this UTC time; ``None``: all.

    Returns:
        The event types, sorted.
    """
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
    from features.event_table import EventTable

    cutoff = None if before is None else engine_timestamp(before)
    if isinstance(events, EventTable):
        return events.types_seen(cutoff)
    connection = connect(backend, con)
    return types_seen(connection, events_table(connection, events), cutoff)
