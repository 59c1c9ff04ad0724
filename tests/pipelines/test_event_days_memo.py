"""The events' day counts are remembered per Parquet file: only new or changed files are read.

Each read is a fresh engine connection, as each run is. The profile with remembered
counts must equal the grouped query over the events as they are now.
"""

from __future__ import annotations

import os

import pandas as pd

from features.event_table import EventTable
from pipelines.checks_memo import remember_checks
from pipelines.engine_events import engine_connection, read_checked_events
from pipelines.event_days_memo import KEY, days_file

MIDNIGHTS = [pd.Timestamp("2025-01-03", tz="UTC"), pd.Timestamp("2025-01-02", tz="UTC")]


def _events(start: str, n: int, kind: str = "login") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": [f"e{i % 3}" for i in range(n)],
            "event_time": pd.date_range(start, periods=n, freq="7h", tz="UTC"),
            "event_type": kind,
            "value": [float(i) for i in range(n)],
        }
    )


def _read(source, checks):  # noqa: ANN001, ANN202
    events, memo = read_checked_events(str(source), None, engine_connection(), checks)
    events.profile_moments(MIDNIGHTS)
    return events, memo


def _query_profile(events: EventTable, moment: pd.Timestamp) -> pd.DataFrame:
    plain = EventTable(events.table, events.con)  # no day counts: the grouped query
    return plain.profile(moment).sort_values("event_type").reset_index(drop=True)


def _profile(events: EventTable, moment: pd.Timestamp) -> pd.DataFrame:
    return events.profile(moment).sort_values("event_type").reset_index(drop=True)


def test_a_new_file_is_counted_and_the_others_are_remembered(tmp_path):
    source = tmp_path / "events"
    source.mkdir()
    _events("2024-12-20", 40).to_parquet(source / "part-0.parquet")
    _events("2024-12-28", 30, "session").to_parquet(source / "part-1.parquet")
    checks = tmp_path / "out" / "checks" / "events.json"

    first, memo = _read(source, checks)
    assert first.day_counts.counted_files == 2 and not days_file(checks).exists()
    remember_checks(memo)  # what a run does once it has written its outputs
    again, memo = _read(source, checks)
    remember_checks(memo)
    _events("2025-01-02", 12, "purchase").to_parquet(source / "part-2.parquet")
    grown, memo = _read(source, checks)
    remember_checks(memo)

    assert days_file(checks).exists()
    assert again.day_counts.counted_files == 0  # nothing read for the profile
    assert grown.day_counts.counted_files == 1
    for moment in MIDNIGHTS:
        pd.testing.assert_frame_equal(_profile(first, moment), _query_profile(first, moment))
        pd.testing.assert_frame_equal(_profile(again, moment), _profile(first, moment))
        pd.testing.assert_frame_equal(_profile(grown, moment), _query_profile(grown, moment))
    assert grown.rows == 82 and grown.after(MIDNIGHTS[0]) > 0


def test_a_changed_file_is_counted_again_and_a_removed_one_forgotten(tmp_path):
    source = tmp_path / "events"
    source.mkdir()
    _events("2024-12-20", 40).to_parquet(source / "part-0.parquet")
    _events("2024-12-28", 30, "session").to_parquet(source / "part-1.parquet")
    checks = tmp_path / "checks" / "events.json"
    _, memo = _read(source, checks)
    remember_checks(memo)

    part = source / "part-0.parquet"
    _events("2024-12-25", 50).to_parquet(part)
    stat = part.stat()
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    (source / "part-1.parquet").unlink()
    changed, memo = _read(source, checks)
    remember_checks(memo)

    assert changed.day_counts.counted_files == 1
    for moment in MIDNIGHTS:
        pd.testing.assert_frame_equal(_profile(changed, moment), _query_profile(changed, moment))
    kept = pd.read_parquet(days_file(checks))
    assert kept[KEY].nunique() == 1 and kept["rows"].sum() == 50  # part-1's counts are gone


def test_a_run_that_fails_writes_no_counts_and_an_unreadable_memo_is_counted_again(tmp_path):
    source = tmp_path / "events.parquet"
    _events("2024-12-20", 10).to_parquet(source)
    checks = tmp_path / "checks" / "events.json"

    _read(source, checks)  # never remembered: the run failed before its outputs
    assert not days_file(checks).exists()
    days_file(checks).parent.mkdir(parents=True, exist_ok=True)
    days_file(checks).write_bytes(b"not parquet")
    events, memo = _read(source, checks)
    remember_checks(memo)

    assert events.day_counts.counted_files == 1
    pd.testing.assert_frame_equal(
        _profile(events, MIDNIGHTS[0]), _query_profile(events, MIDNIGHTS[0])
    )
    assert pd.read_parquet(days_file(checks))["rows"].sum() == 10
