"""Reason codes name what really drives the outcome: checked against the generator's truth."""

import json

import pandas as pd
import pytest

from features.synthetic import generate, source_paths, true_weights
from features.targets import CONVERSION
from models.concepts import concept_map
from models.explain import explain
from models.train import train_model
from pipelines import steps, training
from pipelines.context import RunContext
from pipelines.settings import load_settings

AS_OF = pd.Timestamp("2025-11-01", tz="UTC")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    data = generate(folder / "data", n_leads=6_000, n_customers=300, months=11, seed=5)
    settings = load_settings(
        None,
        sources=source_paths(data.out_dir),
        output={"dir": str(folder / "output")},
    )
    ctx = RunContext(settings, AS_OF)
    inputs = steps.load_inputs(ctx)
    frame = training.training_frame(ctx, inputs, CONVERSION)
    result = train_model(
        frame.drop(columns=["label"]),
        frame["label"],
        frame["as_of"],
        "conversion",
        horizon_days=settings.labels.conversion_horizon_days,
        min_positive_labels=30,
        seed=0,
    )
    features = steps.build_features(settings.feature_spec(), inputs, AS_OF)
    return data, inputs, features, result.model


def test_top_reason_of_the_highest_scored_leads_is_a_true_signal(trained):
    data, inputs, table, model = trained
    features, catalog = table.frame, table.catalog
    kinds = inputs.entities.set_index("entity_id")["kind"]
    leads = features[features["entity_id"].map(kinds).eq("lead").to_numpy(bool)]
    concepts = concept_map(model.feature_names, catalog, model.categorical_levels)
    top = leads.assign(p=model.predict_proba(leads)).nlargest(25, "p")
    reasons = explain(model, top, "lead", concepts)

    truth = true_weights(data.out_dir)
    by_name = {d.name: d for d in catalog}
    true_columns = [s["column"] for s in truth["models"]["conversion"]["signals"]]
    true_columns += list(truth["conversion_fit_weights"])
    true_concepts = {by_name[c].concept for c in true_columns if c in by_name}
    assert true_concepts, "the generator's signals must map to catalog concepts"

    first = [json.loads(r)[0] for r in reasons["reasons_up"]]
    named = [reason["concept"] for reason in first]
    wrong = [(r["concept"], r["text"]) for r in first if r["concept"] not in true_concepts]
    assert not wrong, f"top reasons that the generator does not use: {wrong}"
    assert all(reason["impact"] > 0 for reason in first)
    # Several true signals appear, not one concept repeated by construction.
    assert len(set(named)) >= 2
