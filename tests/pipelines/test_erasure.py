"""Consent, erasure and retention across every store the pipeline writes.

The end-to-end tests score a small generated population (one run with training, one
without), then check consent, MLflow minimisation and ``forget``; they share one
module fixture and are ordered so the read-only checks run before the erasure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.synthetic import generate, source_paths
from features.targets import TARGETS
from pipelines import steps, training
from pipelines.atomic_files import write_parquet_atomic
from pipelines.context import RunContext, parse_as_of
from pipelines.database_writes import sql_delete_rows
from pipelines.databases import sql_read
from pipelines.erasure import forget
from pipelines.output_commit import write_score_tables
from pipelines.outputs import partition_dir
from pipelines.retention import purge_score_history
from pipelines.row_deletes import rows_before
from pipelines.settings import load_settings
from pipelines.summary import summarise

FIRST_RUN, SECOND_RUN, THIRD_RUN = "2025-09-10", "2025-09-20", "2025-09-30"
NO_CONSENT_STATUS = "not scored: no consent"
KEY = "test-key-0123456789abcdef"


def _run_day(settings, day: str, retrain: bool) -> None:
    """The nightly flow's steps without Prefect (its test server is slow to start)."""
    ctx = RunContext(settings, parse_as_of(day))
    inputs = steps.load_inputs(ctx)
    features = steps.build_features(settings.feature_spec(), inputs, ctx.as_of)
    steps.save_features(ctx.output_dir, features.frame, ctx.as_of)
    if retrain:
        for target in TARGETS:
            training.train(ctx, inputs, target)
    champions = steps.load_champions(settings.tracking_uri)
    previous = steps.read_previous(ctx.output_dir, ctx.as_of)
    result = steps.score(inputs, features, champions, previous, ctx.as_of,
                         bands=settings.bands, reason_refresh_tolerance=2.0)  # fmt: skip
    summary = summarise(inputs, features.frame, result.frame, champions, {}, {}, ctx.as_of,
                        settings.schedule)  # fmt: skip
    summary.outputs = steps.write_outputs(ctx, result, previous)
    steps.write_summary(ctx.output_dir, summary)


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """600 leads and 400 customers over 9 months, a unique company name each, scored twice."""
    root = tmp_path_factory.mktemp("erasure")
    data = generate(root / "data", n_leads=600, n_customers=400, months=9, seed=5)
    entities = pd.read_parquet(data.entities_path)
    rng = np.random.default_rng(5)
    entities["company"] = [f"Firma{rng.integers(16**8):08x}" for _ in range(len(entities))]
    refused = str(entities.loc[~entities["consent"], "entity_id"].iloc[0])
    listed = str(entities.loc[entities["consent"], "entity_id"].iloc[7])
    entities.to_parquet(data.entities_path, index=False)
    suppression = root / "suppression.csv"
    pd.DataFrame({"entity_id": [listed, "not-a-customer"]}).to_csv(suppression, index=False)
    settings = load_settings(
        None,
        sources=source_paths(data.out_dir) | {"suppression_list": str(suppression)},
        output={"dir": root / "output"},
        model={"min_positive_labels": 10},
        labels={"cutoff_step_days": 14, "churn_horizon_days": 30},
        pseudonym_key=KEY,
    )
    _run_day(settings, FIRST_RUN, retrain=True)
    _run_day(settings, SECOND_RUN, retrain=False)
    return {"settings": settings, "entities": entities, "refused": refused, "listed": listed}


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _found(root: Path, values: list[str]) -> dict[str, list[str]]:
    """Which values occur (as UTF-8 bytes) in which files under ``root``."""
    pattern = re.compile(b"|".join(re.escape(v.encode()) for v in values))
    hits: dict[str, list[str]] = {}
    for path in _files(root):
        for match in set(pattern.findall(path.read_bytes())):
            hits.setdefault(match.decode(), []).append(str(path.relative_to(root)))
    return hits


@pytest.mark.slow
def test_no_consent_entities_are_never_trained_on_scored_or_shown(population):
    settings, refused, listed = population["settings"], population["refused"], population["listed"]
    ctx = RunContext(settings, parse_as_of(FIRST_RUN))
    inputs = steps.load_inputs(ctx)
    assert inputs.report.entities_on_suppression_list == 1
    for target in TARGETS:
        snapshots = training.training_frame(ctx, inputs, target)
        assert len(snapshots) > 0
        assert not snapshots["entity_id"].isin([refused, listed]).any()
    out = settings.output.dir
    for day in (FIRST_RUN, SECOND_RUN):
        scores = pd.read_parquet(out / "scores" / f"as_of={day}")
        rows = scores.set_index("entity_id").loc[[refused, listed]]
        assert (rows["status"] == NO_CONSENT_STATUS).all()
        assert rows[["score", "band", "conversion_probability", "reasons_up"]].isna().all().all()
        page = (out / "board" / f"{day}.html").read_text()
        assert refused not in page and listed not in page
    table = sql_read(settings.database_url, "lead_scores").set_index("entity_id")
    assert (table.loc[[refused, listed], "status"] == NO_CONSENT_STATUS).all()
    assert table.loc[[refused, listed], "score"].isna().all()


@pytest.mark.slow
def test_no_mlflow_artifact_holds_a_raw_entity_id(population):
    entities = population["entities"]
    artifact_root = population["settings"].output.dir / "mlartifacts"
    files = _files(artifact_root)
    assert {"trained_model.pkl", "input_example.json", "shap_summary.png"} <= {
        p.name for p in files
    }
    assert _found(artifact_root, [*entities["entity_id"], *entities["crm_id"].dropna()]) == {}
    db = (population["settings"].output.dir / "mlflow.db").read_bytes()
    assert not any(v.encode() in db for v in entities["entity_id"])
    # A text attribute unique to each entity is never a fit attribute
    # (features.table.fit_columns), so no model, example, plot or report holds it.
    assert _found(artifact_root, list(entities["company"])) == {}


def _sql(settings, table: str) -> pd.DataFrame:
    return sql_read(settings.database_url, table).sort_values(["entity_id", "as_of"])


def _board_rows(page: Path) -> list[dict]:
    text = page.read_text()
    block = re.search(r'id="board-data">(.*?)</script>', text, re.DOTALL).group(1)
    return json.loads(block)


@pytest.mark.slow
def test_forget_erases_three_entities_from_every_store_and_nothing_else(population):
    settings, entities = population["settings"], population["entities"]
    out = settings.output.dir
    first = pd.read_parquet(out / "scores" / f"as_of={SECOND_RUN}")
    lead = first.loc[first["kind"].eq("lead") & first["status"].eq("scored"), "entity_id"]
    customer = first.loc[first["kind"].eq("customer") & first["status"].eq("scored"), "entity_id"]
    gone = [lead.iloc[0], lead.iloc[5], customer.iloc[3]]
    mine = entities["entity_id"].isin(gone)
    values = [*gone, *entities.loc[mine, "crm_id"], *entities.loc[mine, "company"]]
    assert set(_found(out, values)) >= set(gone)  # they were there to begin with

    def others(frame: pd.DataFrame) -> pd.DataFrame:
        kept = frame[~frame["entity_id"].isin(gone)].reset_index(drop=True)
        return kept.astype({c: str for c in kept.select_dtypes("category").columns})

    before = {
        "scores": {p: others(pd.read_parquet(p)) for p in out.glob("scores/*/*.parquet")},
        "features": {p: others(pd.read_parquet(p)) for p in out.glob("features/*.parquet")},
        "tables": {t: others(_sql(settings, t)) for t in ("lead_scores", "lead_score_history")},
        "crm": {p: pd.read_csv(p, dtype=str) for p in out.glob("crm/*/*.csv")},
        "board": {p: _board_rows(p) for p in out.glob("board/*.html")},
    }
    champion_features = before["features"][out / "features" / f"as_of={SECOND_RUN}.parquet"]
    steps.load_champions(settings.tracking_uri)  # configures MLflow
    from models import tracking_registry

    newest = tracking_registry.list_models().iloc[0]
    champion = tracking_registry.load_version(newest["model"], str(newest["version"]))
    expected = champion.predict_proba(champion_features)

    receipt, path = forget(settings, gone)

    assert _found(out, values) == {}, "forgotten values survive"
    assert path.parent == out / "erasure"
    stores = {s["store"]: s for s in receipt["stores"]}
    assert stores["lead_scores"]["rows_deleted"] == 3
    assert stores["lead_score_history"]["rows_deleted"] == 6
    assert stores["score partitions"]["rows_deleted"] == 6
    assert stores["feature snapshots"]["rows_deleted"] == 6
    assert stores["CRM export files"]["rows_deleted"] >= 3
    assert receipt["entities"]["count"] == 3
    assert receipt["entities"]["unique_attribute_values_replaced"] == 3
    assert receipt["mlflow"]["garbage_collected"] is True
    assert {m["model"] for m in receipt["mlflow"]["models_trained_with_data"]} == {
        "conversion",
        "churn",
    }
    for p, frame in before["scores"].items():
        pd.testing.assert_frame_equal(others(pd.read_parquet(p)), frame)
    for p, frame in before["features"].items():
        pd.testing.assert_frame_equal(others(pd.read_parquet(p)), frame)
    for table, frame in before["tables"].items():
        pd.testing.assert_frame_equal(others(_sql(settings, table)), frame)
    crm_gone = set(entities.loc[mine, "crm_id"])
    for p, frame in before["crm"].items():
        kept = frame[~frame["Id"].isin(crm_gone)].reset_index(drop=True)
        pd.testing.assert_frame_equal(pd.read_csv(p, dtype=str), kept)
    for p, rows in before["board"].items():
        assert _board_rows(p) == [r for r in rows if r["id"] not in gone]
    # The model's forgotten company names were replaced, not removed: same scores.
    scrubbed = tracking_registry.load_version(newest["model"], str(newest["version"]))
    np.testing.assert_array_equal(scrubbed.predict_proba(champion_features), expected)
    con = duckdb.connect(str(out / "leadscore.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM lead_scores").fetchall()[0][0] == len(entities) - 3
    con.close()

    # The sources still hold them: the next run drops them and writes no id back.
    assert receipt["entities"]["reimport_blocked"].startswith("yes")
    listed = (out / "erasure" / "forgotten.txt").read_text().split()
    assert set(receipt["entities"]["pseudonyms"]) <= set(listed)
    _run_day(settings, THIRD_RUN, retrain=False)
    assert _found(out, values) == {}, "a later run wrote forgotten values back"
    summary = json.loads((out / "summaries" / f"{THIRD_RUN}.json").read_text())
    assert summary["inputs"]["entities_forgotten_earlier"] == 3
    assert any("erased earlier" in warning for warning in summary["warnings"])
    third = pd.read_parquet(out / "scores" / f"as_of={THIRD_RUN}")
    assert len(third) == len(entities) - 3


# --- fast tests: retention, the forget command, withdrawn consent ---------------------


def _scored(day: str, ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": ids,
            "status": "scored",
            "score": np.arange(len(ids), dtype=float),
            "as_of": pd.Timestamp(day, tz="UTC"),
        }
    )


@pytest.mark.parametrize("database", ["duckdb", "sqlite"])
def test_purge_score_history_deletes_only_what_is_older_than_the_limit(tmp_path, database):
    out = tmp_path / "output"
    url = (
        f"duckdb:///{out / 'scores.duckdb'}"
        if database == "duckdb"
        else f"sqlite:///{out / 'scores.db'}"
    )
    out.mkdir()
    days = ["2025-01-01", "2025-02-01", "2025-03-01"]
    for i, day in enumerate(days):
        ids = [f"x{i}", "y"]  # x0, x1 stop being scored; y is scored every time
        write_score_tables(_scored(day, ids), url)
        partition = partition_dir(out, pd.Timestamp(day).date()) / "part-0.parquet"
        write_parquet_atomic(_scored(day, ids).drop(columns="as_of"), partition)
        (out / "features").mkdir(parents=True, exist_ok=True)
        (out / "features" / f"as_of={day}.parquet").write_bytes(b"x")
        (out / "crm" / f"as_of={day}").mkdir(parents=True)
        (out / "board").mkdir(exist_ok=True)
        (out / "board" / f"{day}.html").write_text("<html></html>")
    (out / "board" / "index.html").write_text("<html></html>")
    settings = load_settings(
        None, output={"dir": out, "database_url": url}, retention={"max_score_history_days": 40}
    )
    counts = purge_score_history(settings, "2025-03-10")
    # Cutoff 2025-01-29: only the first date is older.
    assert counts == {
        "score_history_rows": 2,
        "current_score_rows": 1,
        "score_partitions": 1,
        "feature_snapshots": 1,
        "crm_exports": 1,
        "board_pages": 1,
    }
    history = sql_read(url, "lead_score_history")
    assert sorted(history["as_of"].dt.strftime("%Y-%m-%d").unique()) == days[1:]
    current = sql_read(url, "lead_scores")
    assert sorted(current["entity_id"]) == ["x1", "x2", "y"]
    assert not (out / "scores" / "as_of=2025-01-01").exists()
    assert (out / "scores" / "as_of=2025-02-01").exists()
    assert (out / "board" / "index.html").exists()
    assert purge_score_history(settings, "2025-03-10") == dict.fromkeys(counts, 0)


def test_purge_score_history_without_a_limit_does_nothing(tmp_path):
    settings = load_settings(None, output={"dir": tmp_path})
    assert purge_score_history(settings, "2025-03-10") == {}


def test_deleting_old_rows_on_a_missing_database_deletes_nothing(tmp_path):
    url = f"duckdb:///{tmp_path / 'none.duckdb'}"
    old = rows_before("lead_score_history", "as_of", pd.Timestamp("2025-01-01"))
    assert sql_delete_rows(url, [old]) == [0]
    assert not (tmp_path / "none.duckdb").exists()


@pytest.mark.parametrize("folder", ["output", "o'; DROP TABLE x; --"])
def test_forget_command_erases_outputs_and_prints_the_receipt(tmp_path, monkeypatch, folder):
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.output_commit import write_outputs
    from tests.pipelines.test_board import make_scored

    out = tmp_path / folder  # a folder named like SQL must not reach any SQL text
    day1 = make_scored(20, seed=3, as_of="2025-06-01", evil_name_at=None)
    day2 = make_scored(20, seed=4, as_of="2025-06-02", evil_name_at=None)
    url = f"duckdb:///{out / 'leadscore.duckdb'}"
    write_outputs(day1, out, url, crm_batch_size=7, previous=None)
    write_outputs(day2, out, url, crm_batch_size=7, previous=day1)
    entities = day1[["entity_id", "crm_id", "name"]].assign(
        created_at=pd.Timestamp("2025-01-01", tz="UTC")
    )
    entities.to_parquet(tmp_path / "entities.parquet")
    monkeypatch.setenv("LEADSCORE_OUTPUT__DIR", str(out))
    monkeypatch.setenv("LEADSCORE_SOURCES__ENTITIES", str(tmp_path / "entities.parquet"))
    monkeypatch.setenv("LEADSCORE_PSEUDONYM_KEY", KEY)
    (tmp_path / "ids.txt").write_text("e0007\n\ne0012\n")
    gone = ["e0001", "e0007", "e0012"]
    values = [*gone, *day1.loc[[1, 7, 12], "crm_id"], *day1.loc[[1, 7, 12], "name"]]
    assert set(_found(out, values)) == set(values)

    result = CliRunner().invoke(app, ["forget", "e0001", "--from-file", str(tmp_path / "ids.txt")])

    assert result.exit_code == 0, result.output
    assert "Forgot 3 entities" in result.output and "Receipt:" in result.output
    assert "Blocked from re-import: yes" in result.output
    assert _found(out, values) == {}
    receipt_path = next((out / "erasure").glob("receipt-*.json"))
    receipt = json.loads(receipt_path.read_text())
    assert receipt["entities"]["pseudonym_key"] == "configured"
    assert len(set(receipt["entities"]["pseudonyms"])) == 3
    assert receipt["mlflow"]["models_trained_with_data"] == []
    assert sql_read(url, "lead_score_history")["entity_id"].isin(gone).sum() == 0
    assert len(sql_read(url, "lead_scores")) == 17
    assert len(_board_rows(out / "board" / "index.html")) == len(
        _board_rows(out / "board" / "2025-06-02.html")
    )


def test_forget_command_without_ids_is_a_usage_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app

    monkeypatch.setenv("LEADSCORE_OUTPUT__DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["forget"])
    assert result.exit_code == 2
    assert not (tmp_path / "erasure").exists()


def test_withdrawn_consent_removes_earlier_scores_from_file_stores(tmp_path):
    from pipelines.output_commit import write_outputs
    from pipelines.retention import purge_withdrawn_consent
    from tests.pipelines.test_board import make_scored

    out = tmp_path / "output"
    url = f"duckdb:///{out / 'leadscore.duckdb'}"
    day1 = make_scored(20, seed=3, as_of="2025-06-01", no_consent=(), evil_name_at=None)
    day2 = make_scored(20, seed=4, as_of="2025-06-02", no_consent=(), evil_name_at=None)
    day2.loc[2, "status"] = NO_CONSENT_STATUS
    write_outputs(day1, out, url, crm_batch_size=50, previous=None)
    write_outputs(day2, out, url, crm_batch_size=50, previous=day1)
    index_before = (out / "board" / "index.html").read_text()
    settings = load_settings(None, output={"dir": out, "database_url": url})

    counts = purge_withdrawn_consent(settings, ["e0002"], "2025-06-02")

    assert counts == {
        "withdrawn_score_rows": 1,
        "withdrawn_feature_rows": 0,
        "withdrawn_crm_rows": 1,
        "withdrawn_board_rows": 1,
    }
    old = pd.read_parquet(out / "scores" / "as_of=2025-06-01")
    assert "e0002" not in set(old["entity_id"]) and len(old) == 19
    assert "e0002" not in (out / "board" / "2025-06-01.html").read_text()
    assert "e0002" not in (out / "crm" / "as_of=2025-06-01" / "batch-0001.csv").read_text()
    today = pd.read_parquet(out / "scores" / "as_of=2025-06-02").set_index("entity_id")
    assert today.loc["e0002", "status"] == NO_CONSENT_STATUS
    assert (out / "board" / "index.html").read_text() == index_before
    assert purge_withdrawn_consent(settings, [], "2025-06-02") == {}
