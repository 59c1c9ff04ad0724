"""Same inputs and date, same result: ``leadscore nightly`` as a user runs it, twice.

Running a date again rewrites every output with the same bytes: the Parquet
partition, the CRM export, the lead board pages, ``summary.json`` and the rows of
both score tables (``scored_at`` is the run date, not the wall clock, which goes to
the log and the Prefect Markdown artifact only), whose reason texts DuckDB stores
with zstd. The one run that trains a model
for the date changes the registry, so only the runs after it share every byte; its
scores, CRM files and board are already the same. An input that breaks the contract
fails the run at the first attempt of ``load inputs``, with its one sentence naming
the file and the column, and is not retried.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from tests.acceptance.conftest import BIN
from tests.pipelines.test_flows import score_tables

pytestmark = [pytest.mark.slow, pytest.mark.service]

FIRST, NEXT = "2025-12-01", "2025-12-08"
#: Output folders and files a rerun of a date must reproduce byte for byte.
REPRODUCED = ("scores", "crm", "board", "summaries", "summary.json")


def output_bytes(out: Path) -> dict[str, str]:
    """SHA-256 of every reproduced output file, by path under ``out``."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.relative_to(out).parts[0] in REPRODUCED
    }


def test_running_a_date_again_rewrites_every_output_with_the_same_bytes(workspace, tmp_path):
    out = workspace.out
    workspace.run(tmp_path, "nightly", "--as-of", FIRST)
    workspace.run(tmp_path, "nightly", "--as-of", NEXT)  # trains for NEXT: no champion wins
    trained, rows_trained = output_bytes(out), score_tables(out)
    workspace.run(tmp_path, "nightly", "--as-of", NEXT)  # the registry is now as it stays
    once, rows_once = output_bytes(out), score_tables(out)
    partition = out / "scores" / f"as_of={NEXT}" / "part-0.parquet"
    written = partition.stat().st_ino

    workspace.run(tmp_path, "nightly", "--as-of", NEXT)

    assert partition.stat().st_ino != written  # rewritten, not skipped
    assert output_bytes(out) == once
    for folder in ("scores", "crm", "board", "summaries"):
        assert any(name.startswith(f"{folder}/") for name in once), folder
    assert "summary.json" in once
    rows = score_tables(out)
    for table, frame in rows_once.items():
        pd.testing.assert_frame_equal(rows[table], frame)
        pd.testing.assert_frame_equal(rows_trained[table], frame)
    # The run that trained differs only in its summary's retrain decision: the reruns
    # say the date was trained already (and what was decided then).
    summaries = {"summary.json", f"summaries/{NEXT}.json"}
    assert {k: v for k, v in trained.items() if k not in summaries} == {
        k: v for k, v in once.items() if k not in summaries
    }
    history = rows["lead_score_history"]
    assert set(history["as_of"].dt.strftime("%Y-%m-%d")) == {FIRST, NEXT}
    assert (history["scored_at"] == history["as_of"]).all()
    crm = pd.concat(pd.read_csv(p) for p in (out / "crm" / f"as_of={NEXT}").glob("batch-*.csv"))
    assert (crm["Leadscore_Scored_At__c"] == f"{NEXT}T00:00:00Z").all()
    # The reason texts, most of the bytes, are stored with zstd in both tables.
    with duckdb.connect(str(out / "leadscore.duckdb"), read_only=True) as connection:
        for table in rows:
            stored = connection.execute(
                "SELECT DISTINCT column_name, compression FROM pragma_storage_info(?) "
                "WHERE segment_type = 'VARCHAR' AND column_name LIKE 'reasons_%'",
                [table],
            ).fetchall()
            assert {c for _, c in stored} == {"ZSTD"}, (table, stored)
            assert {n for n, _ in stored} == {"reasons_up", "reasons_down", "reasons_text"}


def test_a_contract_error_fails_at_the_first_attempt_with_its_sentence(workspace, tmp_path):
    events = tmp_path / "events"
    shutil.copytree(workspace.data / "events", events)
    broken = sorted(events.glob("*.parquet"))[0]
    pd.read_parquet(broken).drop(columns=["event_type"]).to_parquet(broken)
    settings = yaml.safe_load(workspace.config.read_text())
    settings["sources"]["events"] = str(events)
    settings["output"]["dir"] = str(tmp_path / "out")
    config = tmp_path / "leadscore.yaml"
    config.write_text(yaml.safe_dump(settings))

    # --verbose: Prefect's own task-run log is shown, so each attempt would be.
    done = subprocess.run(
        [str(BIN / "leadscore"), "--verbose", "nightly", "--config", str(config), "--as-of", FIRST],
        cwd=tmp_path, env=workspace.env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip

    log = done.stdout + done.stderr
    assert done.returncode == 1, log
    assert (
        f"Error: Step 'load inputs' failed: events ({events}): missing required column(s) "
        "'event_type'"
    ) in log
    # One attempt of "load inputs": Prefect logs "Task run failed with ... - Retry n/3
    # will start ..." for each retry and "... - Retries are exhausted" with a traceback
    # after the last one; the task's final state is logged once.
    assert "Task run failed with" not in log, log
    assert log.count("Task run encountered an exception ContractError") == 1, log
    assert log.count("Traceback (most recent call last)") <= 2, log  # the flow's, chained
    assert "step build features" not in log
