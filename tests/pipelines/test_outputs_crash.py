"""Score outputs on a crash or an interrupt: every output stays as the last good run left it."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from pipelines import crm_export
from pipelines.output_commit import write_outputs
from pipelines.outputs import list_partitions
from tests.pipelines.test_board import make_scored
from tests.pipelines.test_outputs import DAY1, DAY2, duckdb_url, next_day, read_table


def assert_left_at_day1(out: Path, url: str) -> None:
    """A failed or interrupted second run left every output as the first one wrote it."""
    assert set(read_table(url, "lead_score_history")["as_of"].dt.date) == {DAY1}
    assert set(read_table(url, "lead_scores")["as_of"].dt.date) == {DAY1}
    assert list(list_partitions(out)) == [DAY1]
    assert sorted(p.name for p in (out / "crm").iterdir()) == ["as_of=2025-06-01"]


def test_crash_while_replacing_the_partition_keeps_the_previous_one(tmp_path, monkeypatch):
    url = duckdb_url(tmp_path)
    day2 = make_scored(10, seed=16, as_of="2025-06-02")
    paths = write_outputs(day2, tmp_path, url, crm_batch_size=4, previous=None)
    before = paths.partition.read_bytes()
    crm_before = {p.name: p.read_bytes() for p in paths.crm_batches}

    rerun = next_day(day2, changed=[0, 1, 2])

    def crash(*args, **kwargs):
        raise OSError("injected crash: disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="injected crash"):
        write_outputs(rerun, tmp_path, url, crm_batch_size=4, previous=None)
    monkeypatch.undo()

    assert paths.partition.read_bytes() == before
    assert {p.name: p.read_bytes() for p in paths.crm_dir.iterdir()} == crm_before
    assert list_partitions(tmp_path) == {DAY2: paths.partition}
    leftovers = [p for p in paths.partition.parent.iterdir() if p != paths.partition]
    assert leftovers == []


def test_crash_while_writing_crm_batches_keeps_the_previous_folder(tmp_path, monkeypatch):
    url = duckdb_url(tmp_path)
    day1 = make_scored(20, seed=17)
    paths = write_outputs(day1, tmp_path, url, crm_batch_size=3, previous=None)
    crm_before = {p.name: p.read_bytes() for p in paths.crm_batches}
    real_write_csv = crm_export.write_csv
    written = []

    def crash_on_second_batch(frame, path):
        if written:
            raise OSError("injected crash during the CRM export")
        written.append(path)
        return real_write_csv(frame, path)

    monkeypatch.setattr(crm_export, "write_csv", crash_on_second_batch)
    rerun = next_day(day1, changed=list(range(15)), as_of="2025-06-01")
    with pytest.raises(OSError, match="injected crash"):
        write_outputs(rerun, tmp_path, url, crm_batch_size=3, previous=day1)
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in paths.crm_dir.iterdir()} == crm_before
    assert [p.name for p in paths.crm_dir.parent.iterdir()] == [paths.crm_dir.name]


def test_a_staging_failure_leaves_the_score_tables_and_files_as_they_were(tmp_path, monkeypatch):
    url = duckdb_url(tmp_path)
    day1 = make_scored(20, seed=19)
    write_outputs(day1, tmp_path, url, crm_batch_size=50, previous=None)
    rerun = next_day(day1, changed=list(range(10)))

    def crash(*args, **kwargs):
        raise OSError("injected crash while staging")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
    with pytest.raises(OSError, match="injected crash"):
        write_outputs(rerun, tmp_path, url, crm_batch_size=50, previous=day1)
    monkeypatch.undo()

    assert_left_at_day1(tmp_path, url)
    write_outputs(rerun, tmp_path, url, crm_batch_size=50, previous=day1)  # not left locked
    assert set(read_table(url, "lead_scores")["as_of"].dt.date) == {DAY2}


def test_a_failed_score_table_write_stages_nothing_in(tmp_path):
    import duckdb

    url = duckdb_url(tmp_path)
    day1 = make_scored(20, seed=20)
    write_outputs(day1, tmp_path, url, crm_batch_size=50, previous=None)
    with duckdb.connect(str(tmp_path / "scores.duckdb")) as connection:
        connection.execute("ALTER TABLE lead_scores DROP COLUMN reasons_text")
    with pytest.raises(ValueError, match="exists without column"):
        write_outputs(next_day(day1, changed=[1]), tmp_path, url, crm_batch_size=50, previous=day1)

    assert sorted(p.name for p in (tmp_path / "scores").iterdir()) == ["as_of=2025-06-01"]
    assert_left_at_day1(tmp_path, url)


def test_the_score_tables_commit_only_after_the_files_are_staged(tmp_path, monkeypatch):
    import duckdb

    import pipelines.output_commit as output_commit

    url = duckdb_url(tmp_path)
    day1 = make_scored(20, seed=21)
    write_outputs(day1, tmp_path, url, crm_batch_size=50, previous=None)
    real_write_crm_batches = output_commit.write_crm_batches
    seen = []

    def staging(*args, **kwargs):  # the table write runs meanwhile, in its thread
        with duckdb.connect(str(tmp_path / "scores.duckdb")) as connection:  # committed rows
            query = "SELECT DISTINCT as_of::DATE FROM lead_scores"
            seen.append({row[0] for row in connection.execute(query).fetchall()})
        return real_write_crm_batches(*args, **kwargs)

    monkeypatch.setattr(output_commit, "write_crm_batches", staging)
    write_outputs(next_day(day1, changed=[1]), tmp_path, url, crm_batch_size=50, previous=day1)

    assert seen == [{DAY1}]
    assert set(read_table(url, "lead_scores")["as_of"].dt.date) == {DAY2}


def test_a_failed_crm_export_rolls_the_score_tables_back(tmp_path, monkeypatch):
    import pipelines.output_commit as output_commit

    url = duckdb_url(tmp_path)
    day1 = make_scored(20, seed=22)
    write_outputs(day1, tmp_path, url, crm_batch_size=50, previous=None)

    def crash(*args, **kwargs):
        raise OSError("injected crash while picking the CRM changes")

    monkeypatch.setattr(output_commit, "crm_files", crash)
    rerun = next_day(day1, changed=[1, 2])
    with pytest.raises(OSError, match="injected crash"):
        write_outputs(rerun, tmp_path, url, crm_batch_size=50, previous=day1)
    monkeypatch.undo()

    assert_left_at_day1(tmp_path, url)
    write_outputs(rerun, tmp_path, url, crm_batch_size=50, previous=day1)  # not left locked
    assert set(read_table(url, "lead_scores")["as_of"].dt.date) == {DAY2}


def test_an_interrupt_while_the_rows_are_inserted_rolls_the_score_tables_back(
    tmp_path, monkeypatch
):
    import _thread
    import signal
    import threading
    import time

    import pipelines.output_commit as output_commit

    url = duckdb_url(tmp_path)
    day1 = make_scored(20, seed=23)
    write_outputs(day1, tmp_path, url, crm_batch_size=50, previous=None)
    real_write = output_commit.write_score_tables

    def slow_insert(scored, database_url, before_commit):  # still inserting at Ctrl-C
        def late_gate():
            time.sleep(1.0)
            before_commit()

        real_write(scored, database_url, before_commit=late_gate)

    monkeypatch.setattr(output_commit, "write_score_tables", slow_insert)
    rerun = next_day(day1, changed=[1, 2])
    # Ctrl-C as Python answers it: an earlier test of this process may have left another
    # handler (anyio's runner installs one that cancels its task instead of raising).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, _thread.interrupt_main)  # Ctrl-C during the commit wait
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            write_outputs(rerun, tmp_path, url, crm_batch_size=50, previous=day1)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, handler)
    time.sleep(1.5)  # the thread reached its commit point, and was told to roll back

    assert_left_at_day1(tmp_path, url)
