from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from features.synthetic import TargetModel, generate, source_paths, true_weights

SMALL = {"n_leads": 300, "n_customers": 200, "months": 5, "chunk_entities": 200}
LEAD_EVENT_TYPES = {
    "page_view", "pricing_page_view", "form_submit", "form_error", "content_download",
    "webinar_registered", "webinar_attended", "demo_request",
}  # fmt: skip
PRODUCT_EVENT_TYPES = {
    "login", "feature_use", "session", "nps_answer", "ticket_opened", "ticket_resolved",
    "purchase",
}  # fmt: skip


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    generate(folder, seed=5, **SMALL)
    return folder


@pytest.fixture(scope="module")
def small_data(small) -> dict[str, pd.DataFrame]:
    return read(small)


@pytest.fixture(scope="module")
def moderate(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """Large enough for base rates and AUCs to be measured to about +-0.02 (read once)."""
    folder = tmp_path_factory.mktemp("moderate")
    generate(folder, n_leads=4_000, n_customers=3_000, seed=11, chunk_entities=4_000)
    return read(folder)


def read(folder: Path) -> dict[str, pd.DataFrame]:
    return {
        "events": pd.read_parquet(folder / "events"),
        "entities": pd.read_parquet(folder / "entities.parquet"),
        "outcomes": pd.read_parquet(folder / "outcomes.parquet"),
        "truth": pd.read_parquet(folder / "true_probabilities.parquet"),
    }


def drawn_labels(truth: pd.DataFrame, outcomes: pd.DataFrame, target: str) -> pd.Series:
    """Label of every truth row, from the outcomes: one in (as_of, as_of + horizon]."""
    outcome, horizon = {"conversion": ("converted", 30), "churn": ("churned", 60)}[target]
    occurred = outcomes[outcomes["outcome"] == outcome].set_index("entity_id")["occurred_at"]
    at = truth["entity_id"].map(occurred)
    return ((at > truth["as_of"]) & (at <= truth["as_of"] + pd.Timedelta(days=horizon))).astype(int)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# --- reproducibility and files --------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate(tmp_path / name, seed=seed, **SMALL)
    first, again, other = (file_bytes(tmp_path / n) for n in "abc")
    assert first == again
    assert first.keys() == other.keys()
    assert first["events/part-00000.parquet"] != other["events/part-00000.parquet"]
    assert first["outcomes.parquet"] != other["outcomes.parquet"]


def test_files_follow_the_data_contract(small, small_data):
    schema = pq.read_schema(small / "events" / "part-00000.parquet")
    assert schema.names == ["entity_id", "event_time", "event_type", "value", "item"]
    assert schema.field("entity_id").type == pa.string()
    assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("value").type == pa.float64()
    data = small_data
    entities = data["entities"]
    assert list(entities.columns) == [
        "entity_id", "created_at", "crm_id", "consent", "kind",
        "industry", "company_size", "country", "lead_source", "job_level",
    ]  # fmt: skip
    assert entities["entity_id"].is_unique
    assert str(entities["created_at"].dtype) == "datetime64[us, UTC]"
    assert entities["consent"].dtype == bool
    assert entities["kind"].value_counts().to_dict() == {"lead": 300, "customer": 200}
    assert set(data["outcomes"]["outcome"]) <= {"converted", "churned"}
    assert str(data["outcomes"]["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert list(data["truth"].columns) == ["entity_id", "as_of", "target", "p_true"]
    assert data["truth"]["p_true"].between(0, 1, inclusive="neither").all()
    events = data["events"]
    assert set(events["event_type"]) >= LEAD_EVENT_TYPES | PRODUCT_EVENT_TYPES
    assert set(events["entity_id"]) <= set(entities["entity_id"])
    assert not list(small.rglob("*.tmp"))


def test_values_and_items_are_where_the_contract_puts_them(small_data):
    events = small_data["events"]
    by_type = {name: group for name, group in events.groupby("event_type")}
    assert by_type["session"]["value"].ge(1).all()
    assert by_type["nps_answer"]["value"].between(0, 10).all()
    assert by_type["purchase"]["value"].gt(0).all()
    assert by_type["login"]["value"].isna().all()
    assert set(by_type["feature_use"]["item"]) <= {f"f{i:02d}" for i in range(1, 13)}
    assert by_type["page_view"]["item"].str.startswith("/").all()
    opened = by_type["ticket_opened"].set_index("item")["event_time"]
    resolved = by_type["ticket_resolved"].set_index("item")["event_time"]
    assert opened.index.is_unique and resolved.index.is_unique
    assert resolved.index.isin(opened.index).all()
    assert (resolved > opened.reindex(resolved.index)).all()
    assert len(resolved) < len(opened)  # some tickets stay open


def test_entities_have_no_event_before_they_exist(small_data):
    data = small_data
    created = data["entities"].set_index("entity_id")["created_at"]
    events = data["events"]
    assert (events["event_time"] > events["entity_id"].map(created)).all()


def test_generator_json_holds_the_true_weights_and_draw_dates(small, small_data):
    weights = true_weights(small)
    assert weights["seed"] == 5
    assert (weights["n_leads"], weights["n_customers"]) == (300, 200)
    assert weights["churn_signal_weights"] == {
        "daily_login": -1.6, "weekly_login": -0.9, "key_features": -0.25,
        "session_time": -0.12, "inactive_30d": 1.3, "nps_promoter": -0.6,
        "nps_detractor": 0.75, "open_ticket": 0.35,
    }  # fmt: skip
    sizes = [abs(w) for w in weights["churn_signal_weights"].values()]
    assert len(set(sizes)) == len(sizes)
    assert weights["conversion_signal_weights"]
    truth = small_data["truth"]
    for target in ("conversion", "churn"):
        drawn = sorted(truth.loc[truth["target"] == target, "as_of"].unique())
        assert drawn == [pd.Timestamp(d) for d in weights["draw_dates"][target]]
    # 5 months from 2025-01-01 = 151 days: conversion draws on days 60, 90, 120.
    assert len(weights["draw_dates"]["conversion"]) == 3
    assert len(weights["draw_dates"]["churn"]) == 1


def test_true_weights_explains_a_folder_without_generator_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="not written by the synthetic generator"):
        true_weights(tmp_path)


def test_bad_arguments_are_explained(tmp_path):
    with pytest.raises(ValueError, match="midnight UTC"):
        generate(tmp_path, n_leads=10, n_customers=10, start="2025-01-01 12:00")
    with pytest.raises(ValueError, match="need some entities"):
        generate(tmp_path, n_leads=0, n_customers=0)


# --- the generating model ------------------------------------------------------------


def test_outcomes_fall_in_the_window_of_a_draw_the_entity_was_at_risk_for(small_data):
    data = small_data
    truth, outcomes = data["truth"], data["outcomes"]
    for target, outcome in (("conversion", "converted"), ("churn", "churned")):
        rows = truth[truth["target"] == target]
        labels = drawn_labels(rows, outcomes, target)
        happened = outcomes[outcomes["outcome"] == outcome]
        assert labels.sum() == len(happened) > 0
        assert happened["entity_id"].is_unique


def test_truth_population_is_the_label_population(small, small_data):
    from features.labels import make_labels

    data = small_data
    weights = true_weights(small)
    consenting = data["entities"].loc[data["entities"]["consent"], "entity_id"]
    for target, horizon in (("conversion", 30), ("churn", 60)):
        cutoffs = weights["draw_dates"][target]
        labels = make_labels(data["outcomes"], data["entities"], cutoffs, target, horizon)
        truth = data["truth"][data["truth"]["target"] == target]
        truth = truth[truth["entity_id"].isin(consenting)]
        merged = labels.merge(truth, on=["entity_id", "as_of"], how="outer", indicator=True)
        assert (merged["_merge"] == "both").all()
        expected = drawn_labels(merged, data["outcomes"], target)
        assert (merged["label"] == expected).all()


def test_churned_customers_have_no_event_after_churning(small_data):
    data = small_data
    churned = data["outcomes"][data["outcomes"]["outcome"] == "churned"]
    at = data["events"]["entity_id"].map(churned.set_index("entity_id")["occurred_at"])
    assert at.notna().any()
    assert not (data["events"]["event_time"] >= at).any()


def test_converted_leads_stop_lead_activity_and_become_customers(moderate):
    data = moderate
    converted = data["outcomes"][data["outcomes"]["outcome"] == "converted"]
    at = data["events"]["entity_id"].map(converted.set_index("entity_id")["occurred_at"])
    events = data["events"][at.notna()]
    after = events["event_time"] >= at[at.notna()]
    assert not events.loc[after, "event_type"].isin(LEAD_EVENT_TYPES).any()
    assert events.loc[~after, "event_type"].isin(LEAD_EVENT_TYPES).any()
    assert events.loc[after, "event_type"].isin(PRODUCT_EVENT_TYPES).any()
    assert not events.loc[~after, "event_type"].isin(PRODUCT_EVENT_TYPES).any()


def test_base_rates_are_in_range(moderate):
    data = moderate
    rates = {}
    for target in ("conversion", "churn"):
        truth = data["truth"][data["truth"]["target"] == target]
        rates[target] = drawn_labels(truth, data["outcomes"], target).mean()
        # p_true is calibrated: the mean probability matches the drawn rate.
        assert abs(truth["p_true"].mean() - rates[target]) < 0.006
    assert 0.01 <= rates["conversion"] <= 0.05
    assert 0.02 <= rates["churn"] <= 0.10
    consent_off = 1 - data["entities"]["consent"].mean()
    assert 0.002 < consent_off < 0.03


def test_best_achievable_auc_is_informative_but_not_perfect(moderate):
    data = moderate
    for target in ("conversion", "churn"):
        truth = data["truth"][data["truth"]["target"] == target]
        labels = drawn_labels(truth, data["outcomes"], target)
        assert 0.75 <= roc_auc_score(labels, truth["p_true"]) <= 0.9, target


def test_opens_are_noisy_because_proxies_open_nearly_everything(moderate):
    data = moderate
    lead_ids = data["entities"].loc[data["entities"]["kind"] == "lead", "entity_id"]
    events = data["events"][data["events"]["entity_id"].isin(lead_ids)]
    counts = pd.crosstab(events["entity_id"], events["event_type"])
    mailed = counts[counts["email_delivered"] >= 8]
    open_rate = mailed["email_opened"] / mailed["email_delivered"]
    click_rate = mailed["email_clicked"] / mailed["email_delivered"]
    proxied = open_rate >= 0.9
    assert 0.15 <= proxied.mean() <= 0.25
    assert open_rate[proxied].mean() > 0.95
    assert open_rate[~proxied].median() < 0.5
    # Proxies open, people click: clicks do not follow the proxy opens.
    assert abs(click_rate[proxied].mean() - click_rate[~proxied].mean()) < 0.03


def test_p_true_ranks_the_drawn_churn(moderate):
    data = moderate
    truth = data["truth"][data["truth"]["target"] == "churn"]
    labels = drawn_labels(truth, data["outcomes"], "churn")
    p_true = truth["p_true"]
    top, bottom = p_true >= p_true.quantile(0.8), p_true <= p_true.quantile(0.2)
    assert labels[top].mean() > 4 * labels[bottom].mean()


# --- against the feature table ------------------------------------------------------


def test_p_true_is_the_true_model_applied_to_the_feature_table(small, small_data):
    build = pytest.importorskip("features.build")
    data = small_data
    weights = true_weights(small)
    draws = weights["draw_dates"]
    cutoffs = sorted({*draws["conversion"], *draws["churn"]})
    features = build.build_snapshots(small / "events", data["entities"], cutoffs)
    consenting = data["entities"].set_index("entity_id")["consent"]
    for target in ("conversion", "churn"):
        truth = data["truth"][data["truth"]["target"] == target]
        merged = truth.merge(features, on=["entity_id", "as_of"], how="inner")
        # Every consenting entity at risk has a feature row (the others are never profiled).
        assert len(merged) == truth["entity_id"].map(consenting).sum() > 0
        recomputed = TargetModel.from_json(weights["models"][target]).probability(merged)
        np.testing.assert_allclose(recomputed, merged["p_true"], rtol=0, atol=1e-12)


# --- chunking and memory -------------------------------------------------------------


def test_event_parts_grow_with_entities_and_stale_parts_are_removed(tmp_path):
    sizes = {"months": 3, "chunk_entities": 100}
    bigger = generate(tmp_path, n_leads=300, n_customers=150, **sizes)
    assert len(bigger.event_files) == 5
    smaller = generate(tmp_path, n_leads=100, n_customers=50, **sizes)
    assert len(smaller.event_files) == 2
    assert sorted((tmp_path / "events").iterdir()) == list(smaller.event_files)
    assert pd.read_parquet(tmp_path / "events").shape[0] == smaller.n_events
    assert pd.read_parquet(tmp_path / "entities.parquet").shape[0] == 150


def test_memory_is_bounded_by_the_chunk_not_the_population(tmp_path):
    def peak(n_entities: int) -> int:
        tracemalloc.start()
        generate(tmp_path / str(n_entities), n_leads=n_entities // 2,
                 n_customers=n_entities // 2, months=3, chunk_entities=100)  # fmt: skip
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    assert peak(800) < 1.5 * peak(200)


def test_progress_reports_every_chunk(tmp_path):
    seen: list[tuple[int, int]] = []
    result = generate(tmp_path, n_leads=120, n_customers=80, months=3, chunk_entities=75,
                      progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert seen == [(75, 200), (150, 200), (200, 200)]
    assert result.n_events == sum(pq.read_metadata(p).num_rows for p in result.event_files)


def test_source_paths_name_the_generated_inputs(small):
    sources = source_paths(small)
    assert set(sources) == {"events", "entities", "outcomes"}
    assert Path(sources["events"]).is_dir() and any(Path(sources["events"]).glob("*.parquet"))
    assert Path(sources["entities"]).is_file() and Path(sources["outcomes"]).is_file()
