"""The engine twin of the quarantine: the profile's value bounds skip its scan, same result."""

from __future__ import annotations

import math

import ibis
import pandas as pd
import pyarrow as pa
import pytest

from features.event_report import quarantine_table
from features.event_table import EventTable

IN_RANGE = [("nps_answer", 0.0), ("nps_answer", 10.0), ("session", 12.5), ("purchase", -20.0)]
CASES = {
    "in range": IN_RANGE,
    "no values": [("page_view", None), ("session", None)],
    "nps out of range": [*IN_RANGE, ("nps_answer", 11.0)],
    "negative minutes": [*IN_RANGE, ("session", -1.0)],
    "huge": [*IN_RANGE, ("purchase", 2e12)],
    "huge negative": [*IN_RANGE, ("page_view", -2e12)],
    "infinite": [*IN_RANGE, ("page_view", math.inf)],
    "minus infinite": [*IN_RANGE, ("page_view", -math.inf)],
    "nan": [*IN_RANGE, ("page_view", math.nan)],
    "nan and null": [*IN_RANGE, ("session", math.nan), ("session", None)],
}


def engine_events(rows: list[tuple[str, float | None]]) -> EventTable:
    """Events held by DuckDB with NaN kept as NaN (as Parquet files can hold it)."""
    table = pa.table(
        {
            "entity_id": [f"e{i}" for i in range(len(rows))],
            "event_time": pa.array(
                pd.date_range("2025-01-01", periods=len(rows), freq="D", tz="UTC"),
                pa.timestamp("us", "UTC"),
            ),
            "event_type": [t for t, _ in rows],
            "value": pa.array([v for _, v in rows], pa.float64(), from_pandas=False),
        }
    )
    return EventTable(ibis.memtable(table), ibis.duckdb.connect())


@pytest.mark.parametrize("case", list(CASES))
def test_the_quarantine_is_the_same_with_and_without_the_profile_bounds(case):
    rows = CASES[case]
    scanned_kept, scanned = quarantine_table(engine_events(rows))
    profiled = engine_events(rows)
    profiled.profile_moments([pd.Timestamp("2026-01-01", tz="UTC")])
    assert profiled.value_bounds() is not None
    kept, quarantine = quarantine_table(profiled)
    assert quarantine == scanned
    assert kept.rows == scanned_kept.rows
    if not quarantine.rows:
        assert kept is profiled  # nothing set aside: the same events, no query built


def test_no_bounds_without_a_profile_or_without_values():
    events = engine_events(IN_RANGE)
    assert events.value_bounds() is None
    no_values = EventTable(events.table.drop("value"), events.con)
    no_values.profile_moments(["2026-01-01"])
    assert no_values.value_bounds() is None
