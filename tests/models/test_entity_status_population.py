"""Who is scored: inferred kinds without a ``kind`` column, ended and churned entities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.entity_status import CHURNED, ENDED, INACTIVE, SCORED, entity_status, kinds_as_of
from tests.models.test_scoring import AS_OF, make_inputs, score

DAY = pd.Timedelta(days=1)


def people(ids: list[str], **columns) -> pd.DataFrame:  # noqa: ANN003
    return pd.DataFrame({"entity_id": ids, "created_at": AS_OF - 100 * DAY, **columns})


def outcomes(rows: list[tuple[str, str, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["entity_id", "outcome", "occurred_at"])


def test_without_kind_a_conversion_or_a_purchase_makes_a_customer():
    entities = people(["converted", "bought", "converts_later", "lead"])
    done = outcomes(
        [("converted", "converted", AS_OF - DAY), ("converts_later", "converted", AS_OF + DAY)]
    )
    features = pd.DataFrame(
        {
            "entity_id": ["converted", "bought", "converts_later", "lead"],
            "purchases_total": [0, 2, 0, 0],
        }  # fmt: skip
    )
    kind, status = entity_status(entities, np.ones(4, bool), AS_OF, done, features)
    assert kind.tolist() == ["customer", "customer", "lead", "lead"]
    assert (status == SCORED).all()
    assert kinds_as_of(entities, done, AS_OF, features).to_dict() == dict(
        zip(entities["entity_id"], kind, strict=True)
    )


def test_a_given_kind_is_kept_and_purchases_do_not_override_it():
    entities = people(["a", "b"], kind=["lead", "Customer"])
    features = pd.DataFrame({"entity_id": ["a", "b"], "purchases_total": [3, 0]})
    kind, _ = entity_status(entities, np.ones(2, bool), AS_OF, None, features)
    assert kind.tolist() == ["lead", "customer"]


def test_ended_disqualified_and_churned_entities_are_not_scored():
    entities = people(
        ["ended_at", "ended", "disqualified", "churned_lead", "ends_later", "active"],
        kind=["customer", "customer", "lead", "lead", "customer", "lead"],
        ended_at=pd.to_datetime([AS_OF - DAY, None, None, None, AS_OF + DAY, None], utc=True),
    )
    done = outcomes(
        [
            ("ended", "ended", AS_OF - 2 * DAY),
            ("disqualified", "disqualified", AS_OF - DAY),
            ("churned_lead", "churned", AS_OF - DAY),
        ]
    )
    _, status = entity_status(entities, np.ones(6, bool), AS_OF, done)
    assert status.tolist() == [ENDED, ENDED, ENDED, CHURNED, SCORED, SCORED]


def test_with_churn_from_inactivity_silent_customers_have_churned_already():
    entities = people(["recent", "silent", "never", "lead"],
                      kind=["customer", "customer", "customer", "lead"])  # fmt: skip
    features = pd.DataFrame(
        {
            "entity_id": ["recent", "silent", "never", "lead"],
            "days_since_last_event": [12.0, 61.0, np.nan, 400.0],
        }  # fmt: skip
    )
    _, status = entity_status(entities, np.ones(4, bool), AS_OF, None, features, 60)
    # Training's churn population is "active in the horizon before the cutoff"; leads
    # are scored for conversion whatever their silence.
    assert status.tolist() == [SCORED, INACTIVE, INACTIVE, SCORED]
    _, status = entity_status(entities, np.ones(4, bool), AS_OF, None, features)
    assert (status == SCORED).all()


@pytest.fixture(scope="module")
def models() -> dict:
    from tests.models.test_explain import make_model

    return {"conversion": None, "churn": make_model("churn", seed=1, n=1500)}


def test_without_kind_inferred_customers_get_the_churn_probability(models):
    features, entities, rules = make_inputs()
    entities = entities.drop(columns="kind")
    buyers = features["entity_id"].iloc[::4]
    features["purchases_total"] = features["entity_id"].isin(buyers).astype("int64")
    scored = score(models, inputs=(features, entities, rules)).frame.set_index("entity_id")
    customers = scored["kind"] == "customer"
    assert set(scored.loc[customers].index) == set(buyers)
    churn = scored.loc[customers & (scored["status"] == SCORED), "churn_probability"]
    assert len(churn) > 20 and churn.notna().all()
    assert scored.loc[~customers, "churn_probability"].isna().all()


def test_repeated_ids_and_unknown_ids_give_the_same_answers_as_unique_ones():
    """Unique ids are looked up once per call; repeated ids go the ``reindex`` way."""
    ids = ["a", "b", "c", "d"]
    done = outcomes(
        [("a", "converted", AS_OF - DAY), ("b", "ended", AS_OF - DAY), ("x", "churned", AS_OF)]
    )
    features = pd.DataFrame(
        {
            "entity_id": ["d", "c", "a", "y"],
            "purchases_total": [1, 0, 0, 5],
            "days_since_last_event": [3.0, 200.0, 1.0, 1.0],
        }  # fmt: skip
    )
    unique = entity_status(people(ids), np.ones(4, bool), AS_OF, done, features, 90)
    repeated = entity_status(people(ids + ["a"]), np.ones(5, bool), AS_OF, done, features, 90)
    assert unique[0].tolist() == ["customer", "lead", "lead", "customer"]
    assert unique[1].tolist() == [SCORED, ENDED, SCORED, SCORED]
    assert repeated[0].tolist() == [*unique[0], "customer"]
    assert repeated[1].tolist() == [*unique[1], SCORED]
    customers = people(ids, kind="customer")
    silent = entity_status(customers, np.ones(4, bool), AS_OF, None, features, 90)
    assert silent[1].tolist() == [SCORED, INACTIVE, INACTIVE, SCORED]
