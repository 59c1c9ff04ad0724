"""CSV events are parsed by the engine and give the rows pandas (the reference) gives.

The engine path (:func:`pipelines.engine_events.read_checked_events`) and the pandas
path (:func:`pipelines.source_files.read_source`) read the same awkward exports: ids
with leading zeros and spaces, pandas' missing-value markers, quoted commas and line
breaks, a byte-order mark, Windows line ends, blank lines, time zone offsets, numbers
with spaces, gzip, ``key=value`` folders and files with different columns, and a
user's column names, values and timestamp format. Broken rows are still worded by
pandas, with the file, line and rows.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from features.column_checks import ContractError
from features.mapping import InputMapping
from pipelines import engine_sources
from pipelines.engine_events import (
    _through_pandas,
    engine_connection,
    read_checked_events,
    read_events,
)

AWKWARD = (
    "\ufeffentity_id,event_time,event_type,value,item\r\n"
    '007 ,2025-01-01T00:00:00Z,email_open,1.5,""\r\n'
    "\r\n"
    "NA,2025-01-02,web_visit, 2,a\r\n"
    '"x,y",2025-01-03 10:00:00+02:00,form_submit,NaN,"two\nlines"\r\n'
    '" 8",2025-01-04,demo_request,1e3,None\r\n'
    "8,2025-01-02,web_visit, 2,a\r\n"
    "8,2025-01-02,web_visit, 2,a\r\n"
)


def staged_sets() -> list[str]:
    """The event sets staged by this process so far (removed ones excepted)."""
    return sorted(path.name for path in engine_sources._staging_root().glob("events-*"))


def _both(source: Path, mapping: InputMapping | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The events read by the engine and by pandas, in one order; asserts the engine read them."""
    before = staged_sets()
    engine, _ = read_checked_events(str(source), mapping, engine_connection(1.0))
    assert len(staged_sets()) == len(before) + 1, "not parsed by the engine"
    reference = _through_pandas(str(source), mapping, engine_connection(1.0))

    def rows(events) -> pd.DataFrame:  # noqa: ANN001
        # Column order aside (the engine puts the contract's columns first).
        frame = events.to_pandas(sorted(events.table.columns))
        key = list(frame.columns)
        return frame.sort_values(key, kind="stable", na_position="first").reset_index(drop=True)

    return rows(engine), rows(reference)


def test_an_awkward_export_gives_the_reference_rows_and_counts_duplicates(tmp_path):
    source = tmp_path / "events.csv"
    source.write_text(AWKWARD.replace("NA,", "9,", 1), encoding="utf-8", newline="")

    engine, reference = _both(source)
    events, _ = read_checked_events(str(source), None, engine_connection(1.0))

    pd.testing.assert_frame_equal(engine, reference)
    assert "007" in engine["entity_id"].tolist() and "x,y" in engine["entity_id"].tolist()
    assert engine["event_time"].dt.tz is not None and len(engine) == 6
    assert events.duplicates is not None and events.duplicates.count == 1


def test_gzip_files_in_key_value_folders_with_different_columns(tmp_path):
    root = tmp_path / "events"
    for day, text in {
        "2025-01-01": "entity_id,event_time,event_type\n1,2025-01-01T10:00:00Z,login\n",
        "2025-01-02": "entity_id,event_time,event_type,value,channel\n"
        "2,2025-01-02T10:00:00Z,purchase,12.5,web\n1,2025-01-02T11:00:00Z,login,,\n",
    }.items():
        folder = root / f"day={day}"
        folder.mkdir(parents=True)
        with gzip.open(folder / "part.csv.gz", "wt", encoding="utf-8") as out:
            out.write(text)

    engine, reference = _both(root)

    pd.testing.assert_frame_equal(engine, reference)
    assert sorted(engine["day"].unique()) == ["2025-01-01", "2025-01-02"]
    assert 12.5 in engine["value"].tolist() and engine["value"].isna().sum() == 2


def test_a_users_column_names_values_and_time_format(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text(
        "Lead ID,When,Activity,Amount\n"
        "00042,03/01/2025 09:30,Opened Email,\n"
        "00043,04/01/2025 17:05,Filled Form,\n"
        "00042,05/01/2025 08:00,Bought,99.9\n",
        encoding="utf-8",
    )
    mapping = InputMapping(
        columns={"Lead ID": "entity_id", "When": "event_time", "Activity": "event_type",
                 "Amount": "value"},
        values={"event_type": {"Opened Email": "email_open", "Filled Form": "form_submit",
                               "Bought": "purchase"}},
        timestamp_format="%d/%m/%Y %H:%M",
    )  # fmt: skip

    engine, reference = _both(source, mapping)

    pd.testing.assert_frame_equal(engine, reference)
    assert engine["entity_id"].tolist().count("00042") == 2
    assert set(engine["event_type"]) == {"email_open", "form_submit", "purchase"}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("5,yesterday,login,", "not a timestamp"),
        ("5,2025-01-05,login,lots", "not a number"),
        ("5,2025-01-05", "fields"),  # a row cut short: the file and line are named
        ("NA,2025-01-05,login,", "empty"),  # pandas' missing-value marker as an id
    ],
)
def test_broken_rows_are_worded_with_the_file_and_rows_as_before(tmp_path, line, problem):
    source = tmp_path / "events.csv"
    source.write_text(
        f"entity_id,event_time,event_type,value\n1,2025-01-01,login,\n{line}\n", encoding="utf-8"
    )

    con, before = engine_connection(1.0), staged_sets()
    with pytest.raises(ContractError) as engine:
        read_checked_events(str(source), None, con)
    with pytest.raises(ContractError) as reference:
        _through_pandas(str(source), None, engine_connection(1.0))

    assert str(engine.value) == str(reference.value)
    assert problem in str(engine.value) and str(source) in str(engine.value)
    assert staged_sets() == before, "the declined events' staged files were not removed"


def test_rollups_see_a_csv_file_rewritten_in_the_past(tmp_path):
    """Roll-ups keep the CSV files' sizes and times, so a rewritten file rebuilds them."""
    from pipelines.engine_events import event_files
    from pipelines.rollups import file_stats

    source = tmp_path / "events.csv"
    source.write_text("entity_id,event_time,event_type\n1,2025-01-01,login\n", encoding="utf-8")
    before = file_stats(event_files(str(source))[1])
    source.write_text("entity_id,event_time,event_type\n1,2025-01-02,login\n", encoding="utf-8")
    os.utime(source, ns=(0, 10**18))  # a rewrite, whatever the clock's resolution

    assert list(before) == [str(source.resolve())]
    assert file_stats(event_files(str(source))[1]) != before


def test_the_checks_of_unchanged_csv_files_are_remembered(tmp_path, monkeypatch):
    source = tmp_path / "events.csv"
    source.write_text("entity_id,event_time,event_type\n 1,2025-01-01,login\n", encoding="utf-8")
    checks = tmp_path / "out" / "checks" / "events.json"
    checked = []
    real = engine_sources.check_events

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        checked.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_sources, "check_events", counted)

    first = read_events(str(source), None, engine_connection(1.0), checks)
    memo = json.loads(checks.read_text())
    again = read_events(str(source), None, engine_connection(1.0), checks)
    os.utime(source, ns=(0, 10**18))  # the same file written again: checked again
    read_events(str(source), None, engine_connection(1.0), checks)

    assert memo["duplicates"] == 0 and memo["rewrites"]["entity_id"] is True
    assert first.to_pandas()["entity_id"].tolist() == ["1"]
    assert again.to_pandas()["entity_id"].tolist() == ["1"]  # rewritten as remembered
    assert again.duplicates is not None and again.duplicates.count == 0
    assert len(checked) == 2
