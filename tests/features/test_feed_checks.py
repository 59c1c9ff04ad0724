"""The pure feed checks: feed size against the previous run, value ranges, unknown types."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.feed_checks import (
    HUGE,
    NOT_FINITE,
    SAMPLE_ROWS,
    VALUE_RANGES,
    FeedReport,
    events_before,
    feed_size_problem,
    quarantine_events,
    unknown_event_types,
)


def events(rows: list[tuple[str, float]]) -> pd.DataFrame:
    times = pd.date_range("2025-01-01", periods=len(rows), freq="D", tz="UTC")
    return pd.DataFrame(
        {
            "entity_id": [f"e{i}" for i in range(len(rows))],
            "event_time": times,
            "event_type": [t for t, _ in rows],
            "value": pd.Series([v for _, v in rows], dtype="float64"),
        }
    )


def test_an_empty_feed_is_a_problem_with_or_without_a_previous_run():
    assert feed_size_problem("ev/", 0, None, 0.5, window="at all") == (
        "The events feed ev/ has no events at all."
    )
    sentence = feed_size_problem("ev/", 0, 1200, 0.5, window="before 2025-12-01")
    assert sentence == (
        "The events feed ev/ has no events before 2025-12-01 "
        "(the previous run had 1,200 before 2025-12-01)."
    )
    assert feed_size_problem("ev/", 0, 0, 0.5, window="before 2025-12-01") is None


def test_a_shrink_beyond_the_setting_is_a_problem_naming_both_counts_and_the_setting():
    sentence = feed_size_problem("ev/", 400, 1000, 0.5, window="before 2025-12-01")
    assert "shrank from 1,000 to 400 events before 2025-12-01" in sentence
    assert "60% fewer" in sentence and "sources.max_feed_shrink = 0.5" in sentence
    assert feed_size_problem("ev/", 500, 1000, 0.5, window="before 2025-12-01") is None
    assert feed_size_problem("ev/", 1500, 1000, 0.5, window="before 2025-12-01") is None
    assert feed_size_problem("ev/", 10, None, 0.5, window="at all") is None


def test_events_before_counts_strictly_earlier_events():
    frame = events([("page_view", math.nan)] * 5)
    assert events_before(frame, "2025-01-03") == 2
    assert events_before(frame, pd.Timestamp("2025-01-03", tz="UTC")) == 2


def test_out_of_range_values_are_quarantined_by_reason_with_samples():
    frame = events(
        [
            ("nps_answer", 9.0),
            ("nps_answer", 99.0),
            ("nps_answer", -1.0),
            ("session", -5.0),
            ("session", 12.5),
            ("purchase", 1e308),
            ("purchase", math.inf),
            ("page_view", -math.inf),
            ("page_view", math.nan),
            ("purchase", -20.0),  # a refund: finite, kept
        ]
    )
    kept, quarantine = quarantine_events(frame)
    nps, minutes = VALUE_RANGES["nps_answer"].describe(), VALUE_RANGES["session"].describe()
    assert quarantine.counts == {nps: 2, NOT_FINITE: 2, minutes: 1, HUGE: 1}
    assert quarantine.rows == 6
    assert nps == "NPS score outside 0 to 10" and minutes == "session minutes below 0"
    assert kept["value"].tolist()[:2] == [9.0, 12.5]
    assert len(kept) == 4 and kept.index.tolist() == [0, 1, 2, 3]
    assert len(quarantine.samples) == SAMPLE_ROWS
    assert quarantine.samples[0] == {
        "event_type": "nps_answer",
        "event_time": "2025-01-02T00:00:00+00:00",
        "value": 99.0,
        "reason": nps,
    }
    assert all("entity_id" not in sample for sample in quarantine.samples)


def test_events_in_range_or_without_values_are_all_kept():
    frame = events([("nps_answer", 0.0), ("nps_answer", 10.0), ("session", 0.0)])
    kept, quarantine = quarantine_events(frame)
    assert kept is frame and quarantine.rows == 0 and quarantine.samples == []
    no_value = frame.drop(columns=["value"])
    assert quarantine_events(no_value)[0] is no_value


def test_unknown_event_types_are_counted_most_frequent_first_top_ten():
    rows = [("page_view", math.nan)] + [("page_vi", math.nan)] * 3 + [("webinar_x", math.nan)]
    rows += [(f"t{i:02d}", math.nan) for i in range(12)]
    unknown = unknown_event_types(events(rows), ["page_view"])
    assert list(unknown.items())[:2] == [("page_vi", 3), ("t00", 1)]
    assert len(unknown) == 10 and "page_view" not in unknown


@pytest.mark.parametrize("forced", [[], ["The events feed ev/ has no events at all."]])
def test_the_feed_report_gives_summary_fields_and_warnings(forced):
    frame = events([("nps_answer", 99.0), ("mystery", 1.0)])
    _, quarantine = quarantine_events(frame)
    report = FeedReport(2, quarantine, unknown_event_types(frame, ["nps_answer"]), forced)
    data = report.to_dict()
    assert data["events_before_as_of"] == 2
    assert data["quarantined"] == {"NPS score outside 0 to 10": 1}
    assert data["quarantine_samples"][0]["value"] == 99.0
    assert data["unknown_event_types"] == {"mystery": 1}
    warnings = report.warnings()
    assert warnings[: len(forced)] == forced
    assert "1 event rows were quarantined" in warnings[len(forced)]
    assert "mystery (1)" in warnings[-1]
