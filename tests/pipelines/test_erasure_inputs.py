"""Consent on input: suppression lists and the list of entities erased earlier."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from models.privacy import PseudonymKeyError, pseudonymise_one
from pipelines.erasure import forget
from pipelines.forgotten import forgotten_list_text
from pipelines.settings import load_settings
from pipelines.sources import apply_suppression, load_inputs, read_suppression_list
from tests.pipelines.test_erasure import KEY


def test_suppression_list_from_csv_parquet_and_duckdb_table(tmp_path):
    ids = ["a1", "00042", "b2"]
    pd.DataFrame({"entity_id": ids, "note": "x"}).to_csv(tmp_path / "list.csv", index=False)
    pd.DataFrame({"person": ids}).to_parquet(tmp_path / "list.parquet")
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        con.execute("CREATE TABLE optout AS SELECT unnest(?) AS entity_id", [ids])
    assert read_suppression_list(str(tmp_path / "list.csv")) == set(ids)
    assert read_suppression_list(str(tmp_path / "list.parquet"), {"person": "entity_id"}) == set(
        ids
    )
    url = f"duckdb:///{tmp_path / 'db.duckdb'}?table=optout"
    assert read_suppression_list(url) == set(ids)


def test_suppression_list_without_entity_id_names_the_file_and_columns(tmp_path):
    pd.DataFrame({"email": ["x@example.com"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv.*no entity_id column.*'email'"):
        read_suppression_list(str(tmp_path / "bad.csv"))


def test_apply_suppression_sets_consent_false_and_counts(event_history):
    _, entities = event_history(seed=1, n_entities=30)
    listed = set(entities["entity_id"].iloc[[2, 4]]) | {"stranger"}
    out, count = apply_suppression(entities, listed)
    assert count == 2
    on_list = out["entity_id"].isin(listed)
    assert not out.loc[on_list, "consent"].any()
    pd.testing.assert_series_equal(out.loc[~on_list, "consent"], entities.loc[~on_list, "consent"])


def _file_sources(folder: Path, **overrides: str) -> dict[str, str]:
    """Sources of ``events.parquet`` and ``entities.parquet`` in ``folder``, no outcomes."""
    return {
        "events": str(folder / "events.parquet"),
        "entities": str(folder / "entities.parquet"),
        "outcomes": str(folder / "missing.parquet"),
    } | overrides


def test_load_inputs_applies_the_suppression_list(tmp_path, event_history):
    events, entities = event_history(seed=2, n_entities=30)
    events.to_parquet(tmp_path / "events.parquet")
    entities.assign(consent=True).to_parquet(tmp_path / "entities.parquet")
    pd.DataFrame({"entity_id": ["e003", "e005"]}).to_csv(tmp_path / "optout.csv", index=False)
    settings = load_settings(
        None,
        sources=_file_sources(tmp_path, suppression_list=str(tmp_path / "optout.csv")),
    )
    inputs = load_inputs(settings, "2025-03-15", outcomes_required=False)
    refused = set(inputs.entities.loc[~inputs.entities["consent"], "entity_id"])
    assert refused == {"e003", "e005"}
    assert inputs.report.entities_without_consent == 2
    assert inputs.report.entities_on_suppression_list == 2


def _inputs_with_forgotten(tmp_path, event_history, key: str | None):
    """Inputs of 30 entities, two of them on the list of entities erased earlier."""
    events, entities = event_history(seed=3, n_entities=30)
    events.to_parquet(tmp_path / "events.parquet")
    entities.to_parquet(tmp_path / "entities.parquet")
    outcomes = pd.DataFrame(
        {
            "entity_id": ["e003", "e004"],
            "outcome": "converted",
            "occurred_at": pd.Timestamp("2025-03-01", tz="UTC"),
        }
    )
    outcomes.to_parquet(tmp_path / "outcomes.parquet")
    erasure = tmp_path / "output" / "erasure"
    erasure.mkdir(parents=True)
    hashes = [pseudonymise_one(i, KEY.encode()) for i in ("e003", "e007", "gone-from-sources")]
    (erasure / "forgotten.txt").write_text(forgotten_list_text(set(hashes), KEY.encode()))
    settings = load_settings(
        None,
        sources=_file_sources(tmp_path, outcomes=str(tmp_path / "outcomes.parquet")),
        output={"dir": tmp_path / "output"},
        pseudonym_key=key,
    )
    return settings, events


def test_entities_erased_earlier_are_dropped_from_every_input(tmp_path, event_history):
    settings, events = _inputs_with_forgotten(tmp_path, event_history, KEY)
    inputs = load_inputs(settings, "2025-03-15")
    for table in (inputs.events.to_pandas(), inputs.entities, inputs.outcomes):
        assert not table["entity_id"].isin(["e003", "e007"]).any()
    assert inputs.report.entities_forgotten_earlier == 2
    assert inputs.report.entities == 28
    assert list(inputs.outcomes["entity_id"]) == ["e004"]
    assert events["entity_id"].isin(["e003", "e007"]).any()  # they were in the sources


def test_a_forgotten_list_without_its_key_stops_the_run(tmp_path, event_history, monkeypatch):
    monkeypatch.delenv("LEADSCORE_PSEUDONYM_KEY", raising=False)
    settings, _ = _inputs_with_forgotten(tmp_path, event_history, None)
    with pytest.raises(
        PseudonymKeyError, match=r"3 entities were erased earlier.*forgotten\.txt, but .* not set"
    ):
        load_inputs(settings, "2025-03-15")


def test_a_forgotten_list_with_another_key_stops_the_run_and_forget(tmp_path, event_history):
    other_key = "another-key-0123456789abcdef"
    settings, _ = _inputs_with_forgotten(tmp_path, event_history, other_key)
    listing = tmp_path / "output" / "erasure" / "forgotten.txt"
    before = listing.read_text()
    with pytest.raises(PseudonymKeyError, match=r"is not the key in use when they were erased"):
        load_inputs(settings, "2025-03-15")
    with pytest.raises(PseudonymKeyError, match=r"is not the key in use when they were erased"):
        forget(settings, ["e010"], collect_garbage=False)
    assert listing.read_text() == before
