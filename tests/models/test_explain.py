"""Reason codes: additivity in score points, concept grouping, text, and shap agreement."""

from __future__ import annotations

import json
import warnings

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from features.spec import FeatureSpec, feature_catalog
from models.bands import score_from_probability
from models.concepts import concept_map
from models.explain import (
    allocate_points,
    explain,
    round_to_total,
    score_from_margin,
    tree_contributions,
)
from models.model import TrainedModel
from models.reason_text import IMPACT_UNIT

INDUSTRIES = ["retail", "software", "health", "finance"]
NUMERIC = [
    "pricing_page_view_count_7d",
    "pricing_page_view_count_30d",
    "pricing_page_view_days_since_last",
    "login_count_30d",
    "login_days_since_last",
    "session_minutes_30d",
    "tenure_days",
]


class LogisticCalibrator:
    """Platt scaling on the margin, exposing ``predict(margin)`` like the real ones."""

    def fit(self, margin: np.ndarray, y: np.ndarray) -> LogisticCalibrator:
        self.model_ = LogisticRegression().fit(margin.reshape(-1, 1), y)
        return self

    def predict(self, margin: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(np.asarray(margin).reshape(-1, 1))[:, 1]


def make_features(n: int, seed: int) -> pd.DataFrame:
    """Feature rows named as in the catalog, with missing values and a category."""
    rng = np.random.default_rng(seed)
    visits_7d = rng.poisson(1.0, n).astype("float64")
    frame = pd.DataFrame(
        {
            "entity_id": [f"e{seed}-{i:05d}" for i in range(n)],
            "pricing_page_view_count_7d": visits_7d,
            "pricing_page_view_count_30d": visits_7d + rng.poisson(2.0, n),
            "pricing_page_view_days_since_last": np.where(
                visits_7d > 0, rng.uniform(0, 7, n), rng.uniform(7, 90, n)
            ),
            "login_count_30d": rng.poisson(3.0, n).astype("float64"),
            "login_days_since_last": rng.exponential(10.0, n),
            "session_minutes_30d": rng.exponential(30.0, n),
            "tenure_days": rng.uniform(1, 700, n),
            "industry": pd.Categorical(rng.choice(INDUSTRIES, n), categories=INDUSTRIES),
        }
    )
    frame.loc[rng.random(n) < 0.15, "login_days_since_last"] = np.nan
    frame.loc[frame["pricing_page_view_count_30d"] == 0, "pricing_page_view_days_since_last"] = (
        np.nan
    )
    return frame


def make_labels(frame: pd.DataFrame, seed: int, sign: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    logit = sign * (
        -2.0
        + 0.8 * frame["pricing_page_view_count_7d"]
        + 0.03 * frame["session_minutes_30d"]
        - 0.05 * np.nan_to_num(frame["login_days_since_last"], nan=60.0)
        + (frame["industry"] == "software").to_numpy() * 0.8
    )
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(int)


def make_model(
    target: str = "conversion",
    seed: int = 0,
    n: int = 3000,
    categorical: bool = True,
    rounds: int = 40,
) -> TrainedModel:
    """A small real TrainedModel: LightGBM on a train fold, Platt on a held-out fold."""
    frame = make_features(n, seed)
    y = make_labels(frame, seed, sign=1.0 if target == "conversion" else -1.0)
    names = NUMERIC + (["industry"] if categorical else [])
    levels = {"industry": INDUSTRIES} if categorical else {}
    half = n // 2
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "max_depth": 3,
        "learning_rate": 0.1,
        "min_data_in_leaf": 20,
        "min_data_per_group": 20,
        "num_threads": 1,
        "deterministic": True,
        "seed": seed,
        "verbose": -1,
    }
    model = TrainedModel(target, None, None, names, levels)  # type: ignore[arg-type]
    train = model.prepare(frame.iloc[:half])
    model.booster = lgb.train(params, lgb.Dataset(train, y[:half]), rounds)
    held_out = frame.iloc[half:]
    margin = model.booster.predict(model.prepare(held_out), raw_score=True)
    model.calibrator = LogisticCalibrator().fit(margin, y[half:])
    model.reference_scores = np.sort(model.predict_proba(held_out))
    model.metadata = {"registered_version": "7"}
    return model


def catalog() -> list:
    return feature_catalog(FeatureSpec(), fit_columns={"industry": "category"})


@pytest.fixture(scope="module")
def conversion_model() -> TrainedModel:
    return make_model("conversion", seed=0)


@pytest.fixture(scope="module")
def scored_rows(conversion_model: TrainedModel) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = make_features(400, seed=5)
    concepts = concept_map(
        conversion_model.feature_names, catalog(), conversion_model.categorical_levels
    )
    return frame, explain(conversion_model, frame, "lead", concepts, chunk_rows=150)


def _impacts(raw: str) -> list[int]:
    return [item["impact"] for item in json.loads(raw)]


def test_reasons_add_up_to_the_shown_score(conversion_model, scored_rows) -> None:
    frame, reasons = scored_rows
    shown_score = np.round(
        score_from_probability(
            conversion_model.predict_proba(frame), conversion_model.reference_scores, "lead"
        )
    )
    totals = [
        base + sum(_impacts(up)) + sum(_impacts(down)) + other
        for base, up, down, other in zip(
            reasons["base_score"],
            reasons["reasons_up"],
            reasons["reasons_down"],
            reasons["other_factors_points"],
            strict=True,
        )
    ]
    np.testing.assert_array_equal(totals, shown_score)
    np.testing.assert_allclose(reasons["score_exact"], np.round(reasons["score_exact"]), atol=0.5)
    assert all(IMPACT_UNIT in text for text in reasons["reasons_text"])
    # Three chunks, one column each: the texts come out as Arrow text, in row order.
    assert reasons[["reasons_up", "reasons_down", "reasons_text"]].dtypes.eq("str").all()
    assert reasons.index.equals(frame.index)


def test_exact_points_sum_to_score_change(conversion_model) -> None:
    frame = make_features(200, seed=9)
    contrib = tree_contributions(conversion_model, conversion_model.prepare(frame))
    margin = conversion_model.booster.predict(conversion_model.prepare(frame), raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1), margin, atol=1e-9)
    concepts = concept_map(
        conversion_model.feature_names, catalog(), conversion_model.categorical_levels
    )
    logodds = contrib[:, :-1] @ concepts.membership
    score = score_from_margin(conversion_model, margin, "lead")
    base = float(score_from_margin(conversion_model, contrib[:1, -1], "lead")[0])
    points = allocate_points(logodds, score, base)
    np.testing.assert_allclose(base + points.sum(axis=1), score, atol=1e-9)
    # Same sign as the log-odds contribution for a lead score (monotone increasing).
    assert np.all(points * logodds >= -1e-12)


def test_concept_groups_sum_its_features(conversion_model) -> None:
    concepts = concept_map(
        conversion_model.feature_names, catalog(), conversion_model.categorical_levels
    )
    pricing = concepts.concepts.index("pricing page visits")
    members = [
        conversion_model.feature_names[i]
        for i in np.flatnonzero(concepts.feature_concept == pricing)
    ]
    assert members == NUMERIC[:3]
    assert concepts.groups[concepts.concepts.index("industry")] == "fit"
    assert concepts.groups[concepts.concepts.index("tenure")] == "fit"
    assert concepts.groups[pricing] == "engagement"
    frame = make_features(50, seed=3)
    contrib = tree_contributions(conversion_model, conversion_model.prepare(frame))
    grouped = contrib[:, :-1] @ concepts.membership
    np.testing.assert_allclose(grouped[:, pricing], contrib[:, :3].sum(axis=1))
    assert grouped.shape[1] == len(set(concepts.concepts)) < len(conversion_model.feature_names)


def test_each_concept_appears_once_per_entity(scored_rows) -> None:
    _, reasons = scored_rows
    for up, down in zip(reasons["reasons_up"], reasons["reasons_down"], strict=True):
        items = json.loads(up) + json.loads(down)
        concepts = [item["concept"] for item in items]
        assert len(concepts) == len(set(concepts))
        assert len(json.loads(up)) <= 3 and len(json.loads(down)) <= 3
        assert all(item["impact"] > 0 for item in json.loads(up))
        assert all(item["impact"] < 0 for item in json.loads(down))
        assert all(item["group"] in ("fit", "engagement") for item in items)


def test_reason_text_uses_the_entitys_own_value(conversion_model, scored_rows) -> None:
    frame, reasons = scored_rows
    seen_pricing = 0
    for row, up in zip(frame.itertuples(), reasons["reasons_up"], strict=True):
        for item in json.loads(up):
            if item["concept"] != "pricing page visits":
                continue
            seen_pricing += 1
            week, month = row.pricing_page_view_count_7d, row.pricing_page_view_count_30d
            days = row.pricing_page_view_days_since_last
            expected = {
                f"{week:.0f} pricing page {'visit' if week == 1 else 'visits'} in the last 7 days",
                f"{month:.0f} pricing page {'visit' if month == 1 else 'visits'} "
                "in the last 30 days",
                f"Last of the pricing page visits {days:.0f} "
                f"{'day' if round(days) == 1 else 'days'} ago",
                "Pricing page visits: never",
            }
            sentence = item["text"].split(" pts: ", 1)[1]
            assert item["text"].startswith(f"{item['impact']:+d} pts: ")
            assert sentence in expected
    assert seen_pricing > 20


def test_unseen_category_and_missing_values_are_explained(conversion_model) -> None:
    frame = make_features(30, seed=11)
    frame["industry"] = pd.Categorical(["aerospace"] * 30)
    frame["login_days_since_last"] = np.nan
    concepts = concept_map(
        conversion_model.feature_names, catalog(), conversion_model.categorical_levels
    )
    # Every row shares these values on purpose: keep them as reasons (no shared base).
    reasons = explain(conversion_model, frame, "lead", concepts, top_k=20, shared_share=2.0)
    texts = [item["text"] for raw in reasons["reasons_down"] for item in json.loads(raw)]
    texts += [item["text"] for raw in reasons["reasons_up"] for item in json.loads(raw)]
    assert any("Industry: Aerospace (new value, scored as unknown)" in t for t in texts)
    assert any(t.endswith("Logins: never") for t in texts)
    assert not any("nan" in t for t in texts)


def test_customer_health_score_flips_signs() -> None:
    churn = make_model("churn", seed=2)
    frame = make_features(200, seed=4)
    concepts = concept_map(churn.feature_names, catalog(), churn.categorical_levels)
    contrib = tree_contributions(churn, churn.prepare(frame))
    logodds = contrib[:, :-1] @ concepts.membership
    score = score_from_margin(churn, contrib.sum(axis=1), "customer")
    base = float(score_from_margin(churn, contrib[:1, -1], "customer")[0])
    points = allocate_points(logodds, score, base)
    # Churn risk (positive log-odds) lowers the health score.
    assert np.all(points * logodds <= 1e-12)
    assert (points * logodds < 0).any()
    reasons = explain(churn, frame, "customer", concepts)
    shown = score_from_probability(churn.predict_proba(frame), churn.reference_scores, "customer")
    totals = [
        b + sum(_impacts(u)) + sum(_impacts(d)) + o
        for b, u, d, o in zip(
            reasons["base_score"],
            reasons["reasons_up"],
            reasons["reasons_down"],
            reasons["other_factors_points"],
            strict=True,
        )
    ]
    np.testing.assert_array_equal(totals, np.round(shown))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=0, max_value=10_000),
)
def test_largest_remainder_rounding_hits_the_rounded_total(
    n_concepts: int, n_rows: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    points = rng.normal(scale=15, size=(n_rows, n_concepts))
    base = rng.uniform(0, 100)
    score = base + points.sum(axis=1)
    total = np.round(score) - round(base)
    rounded = round_to_total(points, total)
    np.testing.assert_array_equal(rounded.sum(axis=1), total)
    assert np.all(np.abs(rounded - points) < 1.0 + 1e-9)


def test_shap_own_tree_shap_agrees_with_pred_contrib() -> None:
    """shap's own C++ TreeSHAP (not LightGBM's) must give the same exact values.

    ``shap.TreeExplainer(booster)`` simply calls LightGBM's ``pred_contrib`` for a
    LightGBM booster, so it is rebuilt from shap's internal trees (parsed from the
    model dump) to force shap's own path-dependent algorithm. shap's tree parser does
    not understand LightGBM categorical splits, so the check uses a numeric model.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import shap

    model = make_model("conversion", seed=1, categorical=False, rounds=30)
    frame = make_features(300, seed=8)
    prepared = model.prepare(frame)
    expected = tree_contributions(model, prepared)
    wrapper = shap.TreeExplainer(model.booster)
    own = shap.TreeExplainer(wrapper.model.trees)
    assert own.model.model_type == "internal"
    values = own.shap_values(prepared.to_numpy(dtype="float64"))
    np.testing.assert_allclose(values, expected[:, :-1], atol=1e-6)
    np.testing.assert_allclose(np.ravel(own.expected_value)[0], expected[0, -1], atol=1e-6)
