"""Reasons a salesperson can act on: no raw identifiers, no shared reasons, plain words."""

from __future__ import annotations

import hashlib
import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.spec import FeatureSpec, feature_catalog, fit_feature, per_type_features
from features.wording import humanised, looks_like_an_id
from models.concepts import concept_map
from models.explain import explain
from models.model import TrainedModel
from models.reason_text import reasons_text, sentence
from tests.models.test_explain import LogisticCalibrator

CAMPAIGNS = [f"campaign {i:03d}" for i in range(300)]
SOURCES = [hashlib.sha256(str(i).encode()).hexdigest()[:24] for i in range(6)]


def _frame(n: int, seed: int, nps: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pricing_page_view_count_7d": rng.poisson(1.0, n).astype("float64"),
            "login_count_30d": rng.poisson(3.0, n).astype("float64"),
            "nps_latest": rng.integers(0, 11, n).astype("float64") if nps else np.nan,
            "campaign": pd.Categorical(rng.choice(CAMPAIGNS, n), categories=CAMPAIGNS),
            "lead_source_id": pd.Categorical(rng.choice(SOURCES, n), categories=SOURCES),
        }
    )


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    """A model that splits on a 300-level category and a hash-valued one."""
    frame = _frame(4000, 0, nps=True)
    rng = np.random.default_rng(1)
    logit = (
        -1.5
        + 0.8 * frame["pricing_page_view_count_7d"]
        + 1.2 * frame["campaign"].cat.codes.isin(range(0, 300, 3))
        + 1.2 * (frame["lead_source_id"] == SOURCES[0])
        - 0.2 * frame["nps_latest"].fillna(5)
    )
    y = (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(int)
    names = list(frame.columns)
    levels = {"campaign": CAMPAIGNS, "lead_source_id": SOURCES}
    trained = TrainedModel("conversion", None, None, names, levels)  # type: ignore[arg-type]
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 10, "verbose": -1,
              "num_threads": 1, "deterministic": True, "seed": 0,
              "max_cat_to_onehot": 8}  # fmt: skip
    half = len(frame) // 2
    trained.booster = lgb.train(
        params, lgb.Dataset(trained.prepare(frame.iloc[:half]), y[:half]), 60
    )
    margin = trained.booster.predict(trained.prepare(frame.iloc[half:]), raw_score=True)
    trained.calibrator = LogisticCalibrator().fit(margin, y[half:])
    trained.reference_scores = np.sort(trained.predict_proba(frame.iloc[half:]))
    trained.metadata = {"registered_version": "1"}
    return trained


def _concepts(model: TrainedModel, labels: dict | None = None):  # noqa: ANN202
    catalog = feature_catalog(
        FeatureSpec(), fit_columns={"campaign": "category", "lead_source_id": "category"}
    )
    return concept_map(model.feature_names, catalog, model.categorical_levels, labels)


def _texts(reasons: pd.DataFrame) -> list[str]:
    return [
        item["text"]
        for column in ("reasons_up", "reasons_down")
        for raw in reasons[column]
        for item in json.loads(raw)
    ]


def test_identifiers_and_huge_categories_never_appear_raw(model) -> None:
    frame = _frame(300, 7)
    reasons = explain(model, frame, "lead", _concepts(model), top_k=5)
    texts = _texts(reasons) + list(reasons["reasons_text"])
    assert any("Campaign: one of 300 values" in t for t in texts)
    assert any("Lead source id: one of 6 values" in t for t in texts)
    raw = [*CAMPAIGNS, *SOURCES]
    assert not [t for t in texts if any(value in t for value in raw)]


def test_a_lookup_table_names_identifier_values(model) -> None:
    labels = {"lead_source_id": {source: f"Partner {i}" for i, source in enumerate(SOURCES)}}
    reasons = explain(model, _frame(300, 8), "lead", _concepts(model, labels), top_k=5)
    texts = _texts(reasons)
    assert any("Lead source id: Partner 0" in t for t in texts)
    assert not [t for t in texts if any(source in t for source in SOURCES)]


def test_a_reason_every_entity_shares_is_part_of_the_base(model) -> None:
    frame = _frame(300, 9)  # nobody has an NPS answer
    kept = explain(model, frame, "lead", _concepts(model), shared_share=2.0)
    assert sum("No NPS answer yet" in t for t in _texts(kept)) >= 0.99 * len(frame)
    reasons = explain(model, frame, "lead", _concepts(model))
    assert not any("NPS" in t for t in _texts(reasons))
    assert (reasons["base_score"] != kept["base_score"]).any()
    for row in reasons.itertuples():
        shown = sum(item["impact"] for c in (row.reasons_up, row.reasons_down)
                    for item in json.loads(c))  # fmt: skip
        assert row.base_score + shown + row.other_factors_points == round(row.score_exact)
        assert f"base {row.base_score}, other factors {row.other_factors_points:+d})" in (
            row.reasons_text
        )
    # The board and the CRM read the base from the text: per row, as in base_score.
    assert len(reasons["base_score"].unique()) > 1
    assert reasons["reasons_up"].map(lambda raw: len(json.loads(raw))).max() == 3


def test_a_few_entities_never_share_a_reason(model) -> None:
    reasons = explain(model, _frame(10, 9), "lead", _concepts(model))
    assert any("No NPS answer yet" in t for t in _texts(reasons))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("c_level", "C-level"),
        ("vp", "VP"),
        ("it", "IT"),
        ("saas", "SaaS"),
        ("director_of_it", "Director of IT"),
        ("e_commerce", "E-commerce"),
        ("software", "Software"),
        ("McKinsey & Co", "McKinsey & Co"),
        ("SaaS_startup", "SaaS_startup"),
    ],
)
def test_category_values_are_humanised(value: str, words: str) -> None:
    assert humanised(value) == words


def test_job_level_reads_in_plain_words() -> None:
    definition = fit_feature("job_level", "category")
    assert sentence(definition, "c_level", frozenset({"c_level", "vp"})) == "Job level: C-level"
    assert sentence(definition, "vp", frozenset({"c_level", "vp"})) == "Job level: VP"


def test_no_nps_answer_reads_as_a_sentence() -> None:
    by_name = {d.name: d for d in feature_catalog(FeatureSpec())}
    assert sentence(by_name["nps_latest"], None, None) == "No NPS answer yet"
    assert sentence(by_name["nps_latest"], 9.0, None) == "Latest NPS answer: 9 out of 10"
    classes = frozenset({"none", "promoter"})
    assert sentence(by_name["nps_class"], "none", classes) == "No NPS answer yet"
    assert sentence(by_name["nps_class"], "promoter", classes) == "Latest NPS class: Promoter"


def test_recency_weighted_uses_read_in_plain_words() -> None:
    spec = FeatureSpec()
    decayed = {d.name: d for d in per_type_features(spec, "feature_use")}["feature_use_decayed"]
    assert sentence(decayed, 0.4, None) == "Used key features recently (0.4 recent feature uses)"
    assert sentence(decayed, 0.0, None) == "No feature uses recently"
    other = {d.name: d for d in per_type_features(spec, "chat_message")}["chat_message_decayed"]
    assert sentence(other, 2.25, None).startswith("Had chat message events recently (2.2")
    assert "half-life" not in sentence(other, 2.25, None)


@pytest.mark.parametrize(
    ("value", "is_id"),
    [
        ("3f9a8c0d1e2b4a6f", True),
        ("123e4567-e89b-12d3-a456-426614174000", True),
        ("00012345678", True),
        ("00Q5e00000AbCdEF", True),
        ("c_level", False),
        ("spring_webinar_2024", False),
        ("Germany", False),
        ("2024", False),
    ],
)
def test_identifier_like_values(value: str, is_id: bool) -> None:
    assert looks_like_an_id(value) is is_id


def test_reasons_text_takes_a_base_per_row() -> None:
    text = reasons_text(
        np.array(["a", ""], dtype=object), np.array(["", "b"], dtype=object),
        np.array([30, 34]), np.array([2, -1]),
    )  # fmt: skip
    assert text[0].endswith("base 30, other factors +2)")
    assert text[1].endswith("base 34, other factors -1)")
