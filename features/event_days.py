"""Event counts per source file, event type and UTC day: the events' profile, file by file.

:meth:`features.event_table.EventTable.profile` tells, per event type, how many events
there are, how many fall before and after a moment, their first and last time and the
range of their values. A run asks it about midnights (its run date and the previous
run's), so the same numbers add up exactly from counts per UTC day
(:func:`profile_from_days`). Kept per source file, those counts need not be computed
again for a file that has not changed: :mod:`pipelines.event_days_memo` remembers them
between runs, so a nightly scans only new files for its profile.
"""

from __future__ import annotations

import ibis.expr.types as ir
import numpy as np
import pandas as pd

from features.engine import DAY_US, epoch_microseconds, microseconds
from features.timeutil import UTC_TIMESTAMP, as_utc


def is_midnight(moment: pd.Timestamp | str) -> bool:
    """Whether a moment (naive means UTC) is the start of a UTC day."""
    return microseconds(as_utc(moment)) % DAY_US == 0


def day_counts(table: ir.Table, group: str, backend: str) -> ir.Table:
    """Per (``group``, ``event_type``, ``day``): the counts a profile adds up.

    Args:
        table: Events with ``event_time`` (UTC), ``event_type``, optional ``value``,
            and the column ``group`` (the source file).
        group: The column the counts are kept apart by.
        backend: The engine's name (see :func:`features.engine.epoch_microseconds`).

    Returns:
        ``group, event_type, day`` (days since the Unix epoch), ``rows``, ``at_start``
        (events at the day's first microsecond), ``first`` and ``last`` (times), and
        with a ``value`` column ``values`` (present), ``nan_values`` (NaN),
        ``value_low`` and ``value_high`` (the engine's order: NaN above every number).
    """
    us = epoch_microseconds(table.event_time, backend)
    keyed = table.mutate(day=us // DAY_US, midnight=us % DAY_US == 0)
    counts = {
        "rows": keyed.count(),
        "at_start": keyed.count(where=keyed.midnight),
        "first": keyed.event_time.min(),
        "last": keyed.event_time.max(),
    }
    if "value" in keyed.columns:
        value = keyed.value
        counts |= {
            "values": value.count(),
            "nan_values": keyed.count(where=value.isnan()),
            "value_low": value.min(),
            "value_high": value.max(),
        }
    return keyed.group_by([group, "event_type", "day"]).aggregate(**counts)


def profile_from_days(days: pd.DataFrame, moment: pd.Timestamp | str) -> pd.DataFrame:
    """The profile at a midnight, from :func:`day_counts` (any grouping, any number of rows).

    Args:
        days: Rows of :func:`day_counts`; rows without ``event_type`` (a file without
            events) count nothing.
        moment: A midnight (see :func:`is_midnight`).

    Returns:
        Per event type with events: ``event_type``, ``rows``, ``before`` (events
        strictly before ``moment``), ``after`` (strictly after), ``first``, ``last``
        and, when ``days`` has them, ``values``, ``value_low`` and ``value_high`` as
        one grouped query over the events gives them.

    Raises:
        ValueError: ``moment`` is not a midnight: the days cannot tell.
    """
    if not is_midnight(moment):
        raise ValueError(f"A profile from day counts needs a midnight, not {moment}.")
    day = microseconds(as_utc(moment)) // DAY_US
    days = days[days["event_type"].notna()] if "event_type" in days else days.iloc[:0]
    rows = days["rows"].to_numpy("int64")
    on_day = days["day"].to_numpy("int64")
    at_start = np.where(on_day == day, days["at_start"].to_numpy("int64"), 0)
    parts = pd.DataFrame(
        {
            # Pandas arrays, not numpy: a zoned timestamp column would become objects.
            "event_type": days["event_type"].astype("str").array,
            "rows": rows,
            "before": np.where(on_day < day, rows, 0),
            "after": np.where(on_day >= day, rows, 0) - at_start,
            "first": pd.to_datetime(days["first"], utc=True).astype(UTC_TIMESTAMP).array,
            "last": pd.to_datetime(days["last"], utc=True).astype(UTC_TIMESTAMP).array,
        }
    )
    has_values = "values" in days.columns
    if has_values:
        parts["values"] = days["values"].to_numpy("int64")
        parts["nan_values"] = days["nan_values"].to_numpy("int64")
        parts["value_low"] = days["value_low"].to_numpy("float64")
        parts["value_high"] = days["value_high"].to_numpy("float64")
    grouped = parts.groupby("event_type", sort=True)
    profile = grouped.agg(
        rows=("rows", "sum"), before=("before", "sum"), after=("after", "sum"),
        first=("first", "min"), last=("last", "max"),
    )  # fmt: skip
    if has_values:
        # A day's lowest value is NaN only when all its values are: skip those days.
        profile["values"] = grouped["values"].sum()
        profile["value_low"] = grouped["value_low"].min()
        high = grouped["value_high"].max()
        profile["value_high"] = high.where(grouped["nan_values"].sum() == 0, np.nan)
    profile = profile.reset_index()
    profile["event_type"] = profile["event_type"].astype("str")
    for column in ("first", "last"):
        profile[column] = profile[column].astype(UTC_TIMESTAMP)
    return profile
