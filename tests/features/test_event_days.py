"""The events' profile at a midnight, added up from counts per file and day.

It must equal the grouped query over the events, to the row and the dtype: events at
the very midnight (neither before nor after), a microsecond either side, missing and
NaN values, infinite values, a type with no values at all.
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.event_days import day_counts, is_midnight, profile_from_days
from features.event_table import EventTable

MOMENTS = ["2025-03-02", "2025-03-01", "2025-03-03", "2024-01-01", "2026-01-01"]


def _events() -> pd.DataFrame:
    times = pd.to_datetime(
        [
            "2025-03-02 00:00:00",  # the moment itself
            "2025-03-01 23:59:59.999999",
            "2025-03-02 00:00:00.000001",
            "2025-03-01 00:00:00",
            "2025-03-02 00:00:00",
            "2025-02-27 13:00:00",
            "2025-03-05 08:00:00",
            "2025-03-02 00:00:00",
            "2025-03-01 12:00:00",
            "2025-03-03 00:00:00",
        ],
        utc=True,
        format="ISO8601",
    )
    return pd.DataFrame(
        {
            "entity_id": list("abcdefghij"),
            "event_time": times.astype("datetime64[us, UTC]"),
            "event_type": [
                "login",
                "login",
                "nps_answer",
                "nps_answer",
                "session",
                "session",
                "purchase",
                "purchase",
                "page_view",
                "page_view",
            ],
            "value": [None, None, 7.0, np.nan, 12.5, -3.0, np.inf, 99.0, None, None],
            "source_file": ["f1", "f2", "f1", "f2", "f1", "f1", "f2", "f2", "f1", "f2"],
        }  # fmt: skip
    )


def _table(frame: pd.DataFrame, **kwargs: object) -> EventTable:
    """The events in DuckDB with NaN kept as NaN (pandas would hand it over as NULL)."""
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    values = pa.array(frame["value"].astype("object").tolist(), pa.float64(), from_pandas=False)
    arrow = arrow.set_column(arrow.schema.get_field_index("value"), "value", values)
    return EventTable(ibis.memtable(arrow), ibis.duckdb.connect(), **kwargs)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("event_type").reset_index(drop=True)


@pytest.mark.parametrize("moment", MOMENTS)
def test_the_profile_from_day_counts_equals_the_query_over_the_events(moment):
    events = _table(_events())
    days = events.con.execute(day_counts(events.table, "source_file", "duckdb"))

    expected = events.profile(moment)
    got = profile_from_days(days, moment)

    pd.testing.assert_frame_equal(_sorted(got), _sorted(expected))
    assert got["event_type"].tolist() == sorted(got["event_type"])
    # By file: a row per (file, type, day); a NaN value makes the highest NaN.
    assert days["rows"].sum() == 10 and set(days["source_file"]) == {"f1", "f2"}
    assert np.isnan(expected.set_index("event_type").loc["nps_answer", "value_high"])


def test_a_file_without_events_counts_nothing():
    events = _table(_events())
    days = events.con.execute(day_counts(events.table, "source_file", "duckdb"))
    empty_file = pd.DataFrame({"source_file": ["f3"], "rows": [0]})

    padded = pd.concat([days, empty_file], ignore_index=True)

    pd.testing.assert_frame_equal(
        profile_from_days(padded, "2025-03-02"), profile_from_days(days, "2025-03-02")
    )


def test_only_midnights_are_added_up_and_the_table_asks_the_engine_otherwise():
    frame = _events().drop(columns="source_file")

    def never() -> pd.DataFrame:
        raise AssertionError("day counts asked for a moment that is not a midnight")

    events = EventTable(EventTable.from_frame(frame).table, EventTable.from_frame(frame).con,
                        day_counts=never)  # fmt: skip
    noon = pd.Timestamp("2025-03-02 12:00", tz="UTC")

    assert not is_midnight(noon) and is_midnight("2025-03-02")
    with pytest.raises(ValueError, match="needs a midnight"):
        profile_from_days(pd.DataFrame(), noon)
    assert events.before(noon) == 8  # from the engine: the counts were not asked


def test_the_table_adds_up_its_day_counts_at_midnights_and_slices_forget_them():
    frame = _events()
    plain = EventTable.from_frame(frame)
    asked = []

    def counts() -> pd.DataFrame:
        asked.append(1)
        return plain.con.execute(day_counts(plain.table, "source_file", "duckdb"))

    events = EventTable(plain.table, plain.con, day_counts=counts)
    events.profile_moments([pd.Timestamp("2025-03-02", tz="UTC"), "2025-03-01"])

    assert asked == [1]
    pd.testing.assert_frame_equal(
        _sorted(events.profile("2025-03-02")),
        _sorted(EventTable.from_frame(frame).profile("2025-03-02")),
    )
    assert events.where(events.table.event_type == "login").day_counts is None
    assert events.before("2025-03-02") == 4 and events.after("2025-03-02") == 3  # 3 at it


def test_no_events_give_the_empty_profile_of_the_query():
    none = _events().iloc[:0]
    events = _table(none)
    days = events.con.execute(day_counts(events.table, "source_file", "duckdb"))
    only_empty_files = pd.DataFrame({"source_file": ["f1"], "rows": [0]}).reindex(
        columns=days.columns
    )

    expected = events.profile("2025-03-02")

    assert expected.empty
    pd.testing.assert_frame_equal(profile_from_days(days, "2025-03-02"), expected)
    pd.testing.assert_frame_equal(profile_from_days(only_empty_files, "2025-03-02"), expected)
