"""The Prefect flows end to end on a real server: nightly runs, re-runs, backfill, recalibration."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from mlflow import MlflowClient
from rich.console import Console

from models.tracking import registered_name
from pipelines import flows
from tests.pipelines.test_board import visible_text

FIRST = "2025-12-01"
NEXT = "2025-12-08"
TARGETS = ("conversion", "churn")

# The session's server and history (``prefect_api`` and ``shared_dataset`` of
# tests/conftest.py, which the acceptance tests on the same worker use too) serve the
# module, and so does one nightly run as of ``FIRST`` (which trains and promotes both
# champions). Every other test works on a copy of that run's output folder (scores, SQL
# store, MLflow store), so it starts from "yesterday's outputs and a champion" without
# training again. tests/pipelines/test_flows_faults_and_drift.py imports these fixtures
# (module-scoped, so that module makes its own first run).


@pytest.fixture(scope="module")
def prefect_harness(prefect_api):
    """The flows of this module report to the session's Prefect server (as under
    ``prefect_test_harness``, whose own server would be a second start-up per worker)."""
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: prefect_api[0]}),
        _temporary_global_settings_context(get_settings_context()),
    ):
        yield
        # Logs and events reach the server before the settings change back.
        APILogWorker.drain_all()
        EventsWorker.drain_all()


@pytest.fixture(scope="module")
def dataset(shared_dataset):
    # The smallest history on which both targets train and beat the rule score (read only).
    return shared_dataset


def run_env(dataset, out: Path, **extra: str) -> dict[str, str]:
    env = {
        "LEADSCORE_SOURCES__EVENTS": str(dataset.events_dir),
        "LEADSCORE_SOURCES__ENTITIES": str(dataset.entities_path),
        "LEADSCORE_SOURCES__OUTCOMES": str(dataset.outcomes_path),
        "LEADSCORE_OUTPUT__DIR": str(out),
        "LEADSCORE_MODEL__MIN_POSITIVE_LABELS": "30",
        "LEADSCORE_MODEL__RETRAIN_MAX_AGE_DAYS": "30",
        # Small data: promote on the AUC itself (the 95% lower bound has its own tests).
        "LEADSCORE_MODEL__PROMOTION_CONFIDENCE": "0",
        # Small samples drift a lot; drift-triggered retraining has its own test.
        "LEADSCORE_SCHEDULE__PSI_WARN": "10",
        "LEADSCORE_SCHEDULE__PSI_FAIL": "10",
    }
    env.update({f"LEADSCORE_{k.upper()}": v for k, v in extra.items()})
    return env


def use_env(monkeypatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def first_run(prefect_harness, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "output"
    with pytest.MonkeyPatch.context() as patch:
        use_env(patch, run_env(dataset, out))
        state = flows.nightly(as_of=FIRST, return_state=True)
        result = state.result().to_dict()
    return out, result, state.state_details.flow_run_id


@pytest.fixture
def after_first_run(first_run, tmp_path, monkeypatch, dataset):
    """A private copy of the first run's outputs, with the environment pointing at it."""
    out = tmp_path / "output"
    shutil.copytree(first_run[0], out)
    use_env(monkeypatch, run_env(dataset, out))
    return out


# --- what a run leaves behind -------------------------------------------------------


def file_hashes(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.parts[len(out.parts)] in {"scores", "crm", "board", "summary.json"}
    }


def score_tables(out: Path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(out / "leadscore.duckdb"), read_only=True) as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY entity_id, as_of").df()
            for table in ("lead_scores", "lead_score_history")
        }


def champion_versions(out: Path) -> dict[str, str]:
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return {t: str(client.get_model_version_by_alias(registered_name(t), "champion").version)
            for t in TARGETS}  # fmt: skip


def snapshot(out: Path) -> dict:
    return {
        "files": file_hashes(out),
        "tables": score_tables(out),
        "champions": champion_versions(out),
    }


def assert_same(before: dict, after: dict) -> None:
    assert after["files"] == before["files"]
    assert after["champions"] == before["champions"]
    for name in ("tables", "history"):
        if name in before:
            left, right = before[name], after[name]
            for table in left if isinstance(left, dict) else [None]:
                pd.testing.assert_frame_equal(
                    left[table] if table else left, right[table] if table else right
                )


# --- the nightly flow end to end ------------------------------------------------------


@pytest.mark.slow
def test_nightly_scores_everyone_writes_every_output_and_promotes_champions(first_run, dataset):
    out, result, _ = first_run
    entities = pd.read_parquet(dataset.entities_path)
    assert result["entities_in"] == result["rows_out"] == len(entities)
    scores = pd.read_parquet(out / "scores" / f"as_of={FIRST}")
    assert sorted(scores["entity_id"]) == sorted(entities["entity_id"])
    refused = scores[scores["entity_id"].isin(entities.loc[~entities["consent"], "entity_id"])]
    assert len(refused) and (refused["status"] == "not scored: no consent").all()
    assert refused["score"].isna().all()
    scored = scores[scores["status"] == "scored"]
    assert set(scored["band"]) <= {"high", "medium", "at-risk"}
    assert scored["reasons_up"].notna().all()
    assert set(scored["model_versions"].map(json.loads).map(str)) == {
        str({"churn": "1", "conversion": "1"})
    }
    tables = score_tables(out)
    assert len(tables["lead_scores"]) == len(entities)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads((out / "summaries" / f"{FIRST}.json").read_text())
    assert summary["as_of"] == FIRST and summary["counts_match"] is True
    for target in TARGETS:
        assert summary["retrain"][target].startswith("no champion yet; ")
        assert "promoted to @champion" in summary["retrain"][target]
    assert champion_versions(out) == {"conversion": "1", "churn": "1"}
    assert (out / "board" / "index.html").exists() and (out / "board" / f"{FIRST}.html").exists()
    assert list((out / "crm" / f"as_of={FIRST}").glob("batch-*.csv"))
    page = visible_text((out / "board" / f"{FIRST}.html").read_text(encoding="utf-8"))
    assert re.search(
        r"Band rule: at-risk: the \d+% of this run's customers most likely to churn; high: the "
        r"\d+% of this run's leads most likely to convert; medium: everyone else scored "
        r"\(thresholds from [^)]+\)\. Score: 50 is as likely as the average at validation",
        page,
    ), page
    assert "Models: churn v1, conversion v1 · " in page
    assert "{'" not in page and '{"' not in page


@pytest.mark.slow
def test_nightly_publishes_the_summary_as_a_markdown_artifact(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["leadscore-run-summary"]))
        )
    assert any(f"nightly run, {FIRST}" in (a.data or "") for a in artifacts)
    assert all(a.type == "markdown" for a in artifacts)


@pytest.mark.slow
def test_running_a_date_twice_gives_identical_outputs_without_duplicates(after_first_run):
    out = after_first_run
    first = flows.nightly(as_of=NEXT).to_dict()
    once = snapshot(out)
    partition = pd.read_parquet(out / "scores" / f"as_of={NEXT}")
    summary = json.loads((out / "summary.json").read_text())

    second = flows.nightly(as_of=NEXT).to_dict()

    assert second == first == summary
    assert "no retrain" in first["retrain"]["conversion"]
    twice = snapshot(out)
    # Byte for byte: partition, CRM export, board pages and summary.json; rows of both
    # score tables, the clock columns included (scored_at is the run date).
    assert_same(once, twice)
    assert any(name.startswith("crm/") for name in once["files"])
    assert (partition["scored_at"] == pd.Timestamp(NEXT, tz="UTC")).all()
    history = twice["tables"]["lead_score_history"]
    assert not history.duplicated(["entity_id", "as_of"]).any()
    assert not twice["tables"]["lead_scores"].duplicated(["entity_id"]).any()
    assert set(history["as_of"].dt.strftime("%Y-%m-%d")) == {FIRST, NEXT}
    assert (history["as_of"].dt.strftime("%Y-%m-%d") == NEXT).sum() == len(partition)


# --- backfill ---------------------------------------------------------------------------


@pytest.mark.slow
def test_backfill_over_three_dates_writes_three_partitions_and_band_moves(
    first_run, dataset, tmp_path, monkeypatch
):
    from pipelines import commands

    out = tmp_path / "output"
    out.mkdir()
    # Yesterday's champions but no scores yet: the first backfilled date has no previous.
    shutil.copy(first_run[0] / "mlflow.db", out / "mlflow.db")
    use_env(monkeypatch, run_env(dataset, out))
    console = Console(file=io.StringIO(), width=200)

    commands.backfill(None, "2025-12-08", "2025-12-22", 7, console)

    days = ["2025-12-08", "2025-12-15", "2025-12-22"]
    assert sorted(p.name for p in (out / "scores").iterdir()) == [f"as_of={d}" for d in days]
    history = score_tables(out)["lead_score_history"]
    assert not history.duplicated(["entity_id", "as_of"]).any()
    by_day = {d: history[history["as_of"].dt.strftime("%Y-%m-%d") == d] for d in days}
    assert by_day[days[0]]["previous_band"].isna().all()
    for day in days[1:]:
        rows = by_day[day]
        # Scored both nights: a previous band (unscored rows, e.g. churned, have none).
        assert rows.loc[rows["band"].notna(), "previous_band"].notna().mean() > 0.9
        moved = (
            rows["previous_band"].notna()
            & rows["band"].notna()
            & (rows["previous_band"] != rows["band"])
        )
        assert moved.any()
        summary = json.loads((out / "summaries" / f"{day}.json").read_text())
        assert sum(
            n for move, n in summary["band_moves"].items() if not move.startswith("new")
        ) == (moved.sum())
    printed = console.file.getvalue()
    assert all(day in printed for day in days)


@pytest.mark.parametrize(
    ("start", "end", "every", "words"),
    [
        ("2025-12-08", "2025-12-01", 1, "is after --to"),
        ("2025-12-01", "2025-12-08", 0, "at least 1 day"),
        ("yesterday-ish", "2025-12-08", 1, "not written YYYY-MM-DD"),
    ],
)
def test_backfill_refuses_dates_it_cannot_walk_with_a_sentence(start, end, every, words):
    from pipelines import commands

    console = Console(file=io.StringIO())
    with pytest.raises(ValueError, match=words):
        commands.backfill(None, start, end, every, console)
    assert console.file.getvalue() == ""


@pytest.mark.slow
def test_recalibrate_flow_writes_the_report_and_logs_to_mlflow(after_first_run):
    from mlflow import MlflowClient

    result = flows.recalibrate_flow(rules="engagement", target="churn", as_of=NEXT)

    assert result.paths["report"].is_file()
    assert set(result.table["signal"]) >= {"daily_login", "inactive_30d"}
    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags["rules"] == "engagement"
    assert run.data.metrics["old_rules_roc_auc"] == result.metrics["old_rules_roc_auc"]


# --- the wall clock is in the log and the Markdown summary, never in an output -------


@pytest.mark.slow
def test_the_wall_clock_of_a_run_is_in_its_markdown_summary_only(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    out, _, flow_run_id = first_run
    # This module's first run only (the server also serves the acceptance tests' runs).
    only_ours = ArtifactFilter(
        key=ArtifactFilterKey(any_=["leadscore-run-summary"]),
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
    )
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=only_ours)
    ran = [a.data for a in artifacts if f"nightly run, {FIRST}" in (a.data or "")]
    assert ran and re.search(r"- Ran: 20\d\d-\d\d-\d\dT[\d:]+\+00:00 to 20[^ ]+ \(UTC\)", ran[0])
    summary = (out / "summary.json").read_text()
    assert "started_at" not in summary and "finished_at" not in summary
    scores = pd.read_parquet(out / "scores" / f"as_of={FIRST}")
    assert (scores["scored_at"] == pd.Timestamp(FIRST, tz="UTC")).all()
