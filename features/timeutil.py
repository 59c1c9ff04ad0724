"""Points in time as the data contract holds them: UTC, naive values read as UTC.

:func:`as_utc` is the rule for a single moment (a cutoff, a run's "now");
:func:`engine_timestamp` and :func:`utc_microseconds` also bring moments and
columns to microseconds, the finest unit both feature engines (DuckDB and Spark) keep.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

#: The dtype of every timestamp column of the data contract.
UTC_TIMESTAMP = pd.DatetimeTZDtype("us", "UTC")


def as_utc(moment: pd.Timestamp | str | Any) -> pd.Timestamp:
    """A point in time as a UTC timestamp; naive values are read as UTC.

    Args:
        moment: Anything :class:`pandas.Timestamp` accepts.

    Returns:
        The timestamp in UTC, at the unit it came with.
    """
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def engine_timestamp(moment: pd.Timestamp | str | Any) -> pd.Timestamp:
    """A point in time as the feature engines hold it: UTC, in microseconds.

    Args:
        moment: Anything :class:`pandas.Timestamp` accepts; naive values are UTC.

    Returns:
        The UTC timestamp with unit ``us``.
    """
    return as_utc(moment).as_unit("us")


def utc_microseconds(values: pd.Series) -> pd.Series:
    """Timestamps as ``datetime64[us, UTC]``; naive values are UTC, finer ones floored.

    Both engines keep microseconds; flooring never moves an event across a cutoff.

    Args:
        values: Timestamps, or values :func:`pandas.to_datetime` parses.

    Returns:
        The column with dtype :data:`UTC_TIMESTAMP`.
    """
    values = pd.to_datetime(values, utc=True)
    return values if values.dtype == UTC_TIMESTAMP else values.dt.as_unit("us")
