"""Batch scoring: one row per entity, statuses, rule fallback, change and kept reasons."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.bands import AT_RISK, BANDS, HIGH, band_rule_for_models, score_from_probability
from models.entity_status import CHURNED, NO_CONSENT, NOT_YET_CREATED, SCORED
from models.scoring import MODEL_SOURCE, RULE_SOURCE, ScoreResult, score_entities
from tests.models.test_explain import catalog, make_features, make_model

AS_OF = pd.Timestamp("2025-06-01", tz="UTC")
N = 240
#: Row of the entity that has no events at all (still scored: it exists).
NO_EVENTS_ROW = 1


@pytest.fixture(scope="module")
def models() -> dict:
    return {
        "conversion": make_model("conversion", seed=0, n=2000),
        "churn": make_model("churn", seed=1, n=2000),
    }


def make_inputs(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Entities of every kind of case, their features as of AS_OF and rule scores."""
    rng = np.random.default_rng(seed)
    features = make_features(N, seed=20)
    ids = features["entity_id"].tolist()
    entities = pd.DataFrame(
        {
            "entity_id": ids,
            "created_at": AS_OF - pd.to_timedelta(rng.integers(1, 500, N), unit="D"),
            "crm_id": [f"crm-{i}" for i in range(N)],
            "consent": pd.array(rng.random(N) > 0.1, dtype="boolean"),
            "kind": np.where(np.arange(N) % 3 == 0, "customer", "lead"),
        }
    )
    entities.loc[5, ["consent", "kind"]] = [True, "Partner"]
    entities.loc[6, "consent"] = None  # missing consent counts as consent (data contract)
    entities.loc[7, ["consent", "kind"]] = [True, "lead"]
    # An entity with no events at all: counts 0, recencies missing.
    no_events = NO_EVENTS_ROW
    entities.loc[no_events, ["consent", "kind"]] = [True, "lead"]
    features.loc[no_events, features.columns[1:-1]] = 0.0
    features.loc[no_events, ["pricing_page_view_days_since_last", "login_days_since_last"]] = np.nan
    features["industry"] = features["industry"].astype("string")
    features.loc[7, "industry"] = "aerospace"  # never seen in training
    features["as_of"] = AS_OF
    # Two entities created after the cutoff: in the input, no feature row.
    late = pd.DataFrame(
        {
            "entity_id": ["late-1", "late-2"],
            "created_at": [AS_OF + pd.Timedelta(days=1), AS_OF],
            "crm_id": ["crm-late-1", None],
            "consent": [True, True],
            "kind": ["lead", "customer"],
        }
    )
    entities = pd.concat([entities, late], ignore_index=True)
    rules = pd.DataFrame(
        {
            "entity_id": ids,
            "rule_score": rng.integers(0, 151, N).astype("float64"),
            "rule_band": rng.choice(["hot", "warm", "cold"], N),
        }
    )
    return features, entities, rules


def run(models: dict, previous: pd.DataFrame | None = None, **kwargs) -> pd.DataFrame:  # noqa: ANN003
    return score(models, previous, **kwargs).frame


def score(models: dict, previous: pd.DataFrame | None = None, **kwargs) -> ScoreResult:  # noqa: ANN003
    features, entities, rules = kwargs.pop("inputs", None) or make_inputs()
    rule = band_rule_for_models(models, high_share=0.2, at_risk_share=0.2)
    return score_entities(
        features,
        entities,
        models,
        rules,
        rule,
        catalog(),
        previous,
        kwargs.pop("as_of", AS_OF),
        **kwargs,
    )


def test_every_entity_gets_exactly_one_row(models) -> None:
    features, entities, _ = make_inputs()
    scored = run(models)
    assert len(scored) == len(entities)
    assert scored["entity_id"].tolist() == entities["entity_id"].tolist()
    status = scored.set_index("entity_id")["status"]
    assert status["late-1"] == NOT_YET_CREATED and status["late-2"] == NOT_YET_CREATED
    assert status[entities.loc[5, "entity_id"]] == "not scored: unknown kind 'partner'"
    assert status[entities.loc[6, "entity_id"]] == SCORED
    quiet = scored.set_index("entity_id").loc[entities.loc[NO_EVENTS_ROW, "entity_id"]]
    assert quiet["status"] == SCORED and pd.notna(quiet["score"])
    assert quiet["band"] in BANDS and len(json.loads(quiet["reasons_down"])) > 0
    assert quiet["reasons_text"].startswith(("Up: ", "Down: "))
    no_consent = entities["consent"].eq(False).fillna(False).to_numpy(dtype=bool)
    assert (scored.loc[no_consent, "status"] == NO_CONSENT).all()
    counted = scored["status"].value_counts()
    assert counted[NO_CONSENT] == no_consent.sum()
    assert counted.sum() == len(entities)


def test_no_consent_rows_carry_no_profiling(models) -> None:
    scored = run(models)
    blocked = scored[scored["status"] == NO_CONSENT]
    assert len(blocked) > 5
    for column in (
        "conversion_probability",
        "churn_probability",
        "score",
        "band",
        "rule_score",
        "rule_band",
        "reasons_up",
        "reasons_down",
        "reasons_text",
        "reasons_computed_at",
        "score_delta",
        "model_versions",
    ):
        assert blocked[column].isna().all(), column
    assert blocked["crm_id"].notna().all()


def test_scored_rows_have_probability_score_band_and_reasons(models) -> None:
    features, entities, _ = make_inputs()
    result = score(models)
    scored = result.frame
    ok = scored[scored["status"] == SCORED]
    leads, customers = ok[ok["kind"] == "lead"], ok[ok["kind"] == "customer"]
    assert leads["conversion_probability"].notna().all()
    assert leads["churn_probability"].isna().all()
    assert customers["churn_probability"].notna().all()
    assert customers["conversion_probability"].isna().all()
    assert set(leads["band"]) <= {HIGH, "medium"} and set(customers["band"]) <= {AT_RISK, "medium"}
    assert ok["band"].isin(BANDS).all() and ok["score"].between(0, 100).all()
    assert (ok["score_source"] == MODEL_SOURCE).all()
    assert json.loads(ok["model_versions"].iloc[0]) == {"churn": "7", "conversion": "7"}
    assert ok["reasons_up"].notna().all() and ok["reasons_computed_at"].notna().all()
    # The score is the percentile the bands module defines; customers get health scores.
    model = models["churn"]
    by_id = features.set_index("entity_id")
    expected = score_from_probability(
        model.predict_proba(by_id.loc[customers["entity_id"]]), model.reference_scores, "customer"
    )
    np.testing.assert_array_equal(customers["score"].to_numpy(dtype=float), np.round(expected))
    # Each core calibrates its own share of the rows: the model's own probabilities.
    np.testing.assert_allclose(
        customers["churn_probability"].to_numpy(float),
        model.predict_proba(by_id.loc[customers["entity_id"]]),
        rtol=0, atol=1e-9,
    )  # fmt: skip
    # The band is the stored rule applied to the probabilities, nothing else.
    rule = band_rule_for_models(models, high_share=0.2, at_risk_share=0.2)
    np.testing.assert_array_equal(
        ok["band"].to_numpy(),
        rule.assign(ok["conversion_probability"], ok["churn_probability"]),
    )
    assert result.band_rule == rule


def test_reasons_add_up_and_unseen_category_is_flagged(models) -> None:
    features, _, _ = make_inputs()
    scored = run(models).set_index("entity_id")
    ok = scored[scored["status"] == SCORED]
    for row in ok.itertuples():
        up, down = json.loads(row.reasons_up), json.loads(row.reasons_down)
        total = row.base_score + sum(r["impact"] for r in up + down) + row.other_factors_points
        assert total == row.score
    unseen = scored.loc[features.loc[7, "entity_id"]]
    assert unseen["status"] == SCORED
    assert pd.notna(unseen["conversion_probability"]) and pd.notna(unseen["score"])


def test_no_champion_falls_back_to_the_rule_score(models) -> None:
    _, entities, rules = make_inputs()
    scored = run({"conversion": models["conversion"], "churn": None})
    customers = scored[(scored["status"] == SCORED) & (scored["kind"] == "customer")]
    assert (customers["score_source"] == RULE_SOURCE).all()
    assert customers["churn_probability"].isna().all()
    # Reasons from the rule signals' points, adding up to the score like a model's.
    assert customers["reasons_text"].str.contains("rule points|other factors").all()
    for row in customers.itertuples():
        up, down = json.loads(row.reasons_up), json.loads(row.reasons_down)
        total = row.base_score + sum(r["impact"] for r in up + down) + row.other_factors_points
        assert total == row.score
    points = rules.set_index("entity_id").loc[customers["entity_id"]]
    np.testing.assert_array_equal(
        customers["score"].to_numpy(dtype=float), np.round(points["rule_score"] / 1.5)
    )
    # The same bands as model-scored rows: the least engaged customers are at-risk.
    expected = np.where(points["rule_band"] == "at-risk", "at-risk", "medium")
    np.testing.assert_array_equal(customers["band"], expected)
    assert json.loads(customers["model_versions"].iloc[0])["churn"] == "rules"
    leads = scored[(scored["status"] == SCORED) & (scored["kind"] == "lead")]
    assert (leads["score_source"] == MODEL_SOURCE).all()


def test_second_run_keeps_reasons_of_entities_that_did_not_move(models) -> None:
    first = run(models)
    features, entities, rules = make_inputs()
    moved_ids = set(first.loc[first["status"] == SCORED, "entity_id"].iloc[:20])
    moved = features["entity_id"].isin(moved_ids)
    features.loc[moved, "pricing_page_view_count_7d"] += 6
    features.loc[moved, "session_minutes_30d"] += 200
    second_as_of = AS_OF + pd.Timedelta(days=1)
    features["as_of"] = second_as_of
    unmoved = first.loc[(first["status"] == SCORED) & ~first["entity_id"].isin(moved_ids)]
    new_id = unmoved["entity_id"].iloc[0]
    second = run(
        models,
        previous=first[first["entity_id"] != new_id],
        inputs=(features, entities, rules),
        as_of=second_as_of,
        tolerance=2.0,
    ).set_index("entity_id")
    before = first.set_index("entity_id")
    ok = second[second["status"] == SCORED]
    fresh = ok["reasons_computed_at"] == second_as_of
    kept = ~fresh
    assert kept.sum() > 100
    # Unmoved entities keep their reasons and the date those were computed.
    assert (ok.loc[kept, "reasons_computed_at"] == AS_OF).all()
    pd.testing.assert_series_equal(
        ok.loc[kept, "reasons_up"], before.loc[ok.index[kept], "reasons_up"], check_dtype=False
    )
    assert (ok.loc[kept, "score_delta"].abs() <= 2).all()
    changed = (ok["score_delta"].abs() > 2) | (ok["band"] != ok["previous_band"])
    assert fresh[changed].all() and changed.any()
    # An entity absent from the previous run is new: fresh reasons, no previous band.
    assert fresh[new_id] and pd.isna(ok.loc[new_id, "previous_band"])
    ok = ok.drop(index=new_id)
    np.testing.assert_array_equal(
        ok["score_delta"].to_numpy(dtype=float),
        (ok["score"] - before.loc[ok.index, "score"]).to_numpy(dtype=float),
    )
    assert (ok["previous_band"] == before.loc[ok.index, "band"]).all()


def test_a_score_result_names_each_entity_row_of_the_previous_frame(models) -> None:
    first = run(models)
    previous = first.iloc[::-1].iloc[3:].reset_index(drop=True)  # other order, 3 missing
    second = score(models, previous=previous)
    ids = second.frame["entity_id"].to_numpy()
    rows = second.previous_rows
    assert rows is not None and len(rows) == len(ids)
    assert (rows >= 0).sum() == len(previous)
    found = rows >= 0
    np.testing.assert_array_equal(previous["entity_id"].to_numpy()[rows[found]], ids[found])
    assert score(models).previous_rows is None


def test_previous_reason_texts_read_column_by_column_give_the_same_rows(models) -> None:
    first = run(models)
    # A previous run holding some entity twice (the last row counts), texts left on disk.
    previous = pd.concat([first.iloc[:5].assign(reasons_up="stale"), first], ignore_index=True)
    texts = ["reasons_up", "reasons_down", "reasons_text"]
    asked: list[str] = []

    def read(name: str) -> pd.Series | None:
        asked.append(name)
        return previous[name]

    features, entities, rules = make_inputs()
    features.loc[features.index[:30], "session_minutes_30d"] += 300  # some move
    inputs = (features, entities, rules)
    eager = run(models, previous, inputs=inputs)
    lazy = run(models, previous.drop(columns=texts), inputs=inputs, read_previous=read)
    assert asked == texts and (lazy["reasons_up"] != "stale").all()
    pd.testing.assert_frame_equal(lazy, eager)
    with pytest.raises(ValueError, match="partition changed"):
        run(models, previous.drop(columns=texts), read_previous=lambda name: first[name])


def test_input_errors_are_sentences(models) -> None:
    features, entities, rules = make_inputs()
    doubled = pd.concat([entities, entities.iloc[:2]], ignore_index=True)
    with pytest.raises(ValueError, match="2 duplicate entity_id values"):
        run(models, inputs=(features, doubled, rules))
    with pytest.raises(ValueError, match="computed for another cutoff"):
        run(models, inputs=(features, entities, rules), as_of=AS_OF + pd.Timedelta(days=3))


def test_probabilities_and_bands_only_skip_reasons(models) -> None:
    full = run(models)
    quick = run(models, previous=full, with_reasons=False)
    for column in ("status", "band", "score", "conversion_probability", "churn_probability"):
        pd.testing.assert_series_equal(quick[column], full[column], check_dtype=False)
    scored = quick["status"] == SCORED
    assert quick.loc[scored, "reasons_up"].isna().all()
    assert quick.loc[scored, "reasons_computed_at"].isna().all()
    assert (quick.loc[scored, "score_delta"] == 0).all()
    assert (quick.loc[scored, "previous_band"] == quick.loc[scored, "band"]).all()


def test_converted_leads_become_customers_and_churned_customers_are_not_scored(models) -> None:
    features, entities, rules = make_inputs()
    kinds = entities.set_index("entity_id")["kind"]
    lead = next(i for i in features["entity_id"] if kinds[i] == "lead")
    customer = next(i for i in features["entity_id"] if kinds[i] == "customer")
    later = next(i for i in features["entity_id"] if kinds[i] == "lead" and i != lead)
    outcomes = pd.DataFrame(
        {
            "entity_id": [lead, customer, later],
            "outcome": ["converted", "churned", "converted"],
            # The third outcome lies after the cutoff: not known yet, still a lead.
            "occurred_at": [AS_OF - pd.Timedelta(days=3), AS_OF, AS_OF + pd.Timedelta(days=1)],
        }
    )
    scored = run(models, inputs=(features, entities, rules), outcomes=outcomes)
    rows = scored.set_index("entity_id")
    assert len(scored) == len(entities)
    assert rows.loc[lead, "kind"] == "customer" and rows.loc[lead, "status"] == SCORED
    assert pd.notna(rows.loc[lead, "churn_probability"])
    assert pd.isna(rows.loc[lead, "conversion_probability"])
    assert rows.loc[customer, "status"] == CHURNED and pd.isna(rows.loc[customer, "score"])
    assert pd.isna(rows.loc[customer, "churn_probability"])
    assert rows.loc[later, "kind"] == "lead" and rows.loc[later, "status"] == SCORED
    assert pd.notna(rows.loc[later, "conversion_probability"])


def test_a_model_column_missing_from_the_features_is_named_in_a_warning(models, caplog) -> None:
    features, entities, rules = make_inputs()
    dropped = models["conversion"].feature_names[0]
    with caplog.at_level("WARNING", logger="models.scoring"):
        scored = run(models, inputs=(features.drop(columns=[dropped]), entities, rules))
    assert dropped in caplog.text and "scored as missing" in caplog.text
    assert len(scored) == len(entities)


def test_scoring_a_date_twice_gives_equal_rows_stamped_with_the_run_date(models) -> None:
    first, again = run(models), run(models)
    pd.testing.assert_frame_equal(first, again)
    assert (first["scored_at"] == AS_OF).all()
    fresh = first["reasons_computed_at"].notna()
    assert fresh.any() and (first.loc[fresh, "reasons_computed_at"] == AS_OF).all()


def test_short_text_columns_are_arrow_text_with_missing_values_missing(models) -> None:
    """Made once by scoring, so no writer turns a million Python strings into Arrow again."""
    first = run(models)
    second = run(models, previous=first.iloc[3:].reset_index(drop=True))
    for column in ("kind", "status", "band", "rule_band", "score_source", "model_versions",
                   "previous_band"):  # fmt: skip
        assert second[column].dtype == "str", column
        assert not second[column].isin(["None", "nan"]).any(), column
    assert second["previous_band"].iloc[:3].isna().all()  # not in the previous run
    scored = second["status"] == SCORED
    assert second.loc[scored, "band"].notna().all()
    assert second.loc[~scored, "band"].isna().all()
