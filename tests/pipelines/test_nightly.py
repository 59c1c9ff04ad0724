"""End to end: generated data through the nightly flow, under Prefect's test harness."""

import json

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from features.synthetic import generate


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness():
        yield


@pytest.mark.slow
def test_nightly_flow_scores_everyone_and_writes_every_output(tmp_path, monkeypatch, harness):
    data = generate(tmp_path / "data", n_leads=3_000, n_customers=2_000, months=12, seed=3)
    out = tmp_path / "output"
    monkeypatch.setenv("LEADSCORE_SOURCES__EVENTS", str(data.events_dir))
    monkeypatch.setenv("LEADSCORE_SOURCES__ENTITIES", str(data.entities_path))
    monkeypatch.setenv("LEADSCORE_SOURCES__OUTCOMES", str(data.outcomes_path))
    monkeypatch.setenv("LEADSCORE_OUTPUT__DIR", str(out))
    monkeypatch.setenv("LEADSCORE_MODEL__MIN_POSITIVE_LABELS", "30")
    monkeypatch.setenv("LEADSCORE_SCHEDULE__PSI_FAIL", "10")

    from pipelines.flows import nightly

    result = nightly(as_of="2025-12-01")

    entities = pd.read_parquet(data.entities_path)
    assert result["entities_in"] == result["rows_out"] == len(entities)
    assert result["counts_match"] is True
    scores = pd.read_parquet(out / "scores" / "as_of=2025-12-01")
    assert sorted(scores["entity_id"]) == sorted(entities["entity_id"])
    no_consent = set(entities.loc[~entities["consent"].astype(bool), "entity_id"])
    refused = scores[scores["entity_id"].isin(no_consent)]
    assert (refused["status"] == "not scored: no consent").all()
    assert refused["score"].isna().all()
    scored = scores[scores["status"] == "scored"]
    assert set(scored["band"]) <= {"high", "medium", "at-risk"}
    assert scored["reasons_up"].notna().all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["as_of"] == "2025-12-01"
    assert (out / "board" / "index.html").exists()
    for target in ("conversion", "churn"):
        assert "promoted to @champion" in summary["retrain"][target]
