"""Matching the feature table's rows to the entities: by the rows it was built from, or by id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.entity_rows import aligned_rows, unique_ids
from models.previous_run import positions
from tests.models.test_scoring import make_inputs, run


def _by_id(entities: pd.DataFrame, features: pd.DataFrame) -> np.ndarray:
    return positions(unique_ids(entities, "entities"), unique_ids(features, "features"))


def test_rows_the_features_were_built_from_match_as_the_ids_do() -> None:
    features, entities, _ = make_inputs()
    entities = entities.sample(frac=1.0, random_state=1).reset_index(drop=True)
    entities["entity_id"] = entities["entity_id"].astype("str")
    features["entity_id"] = features["entity_id"].astype("str")
    rows = unique_ids(entities, "entities").get_indexer(features["entity_id"])
    got = aligned_rows(entities["entity_id"], features, rows)
    assert got is not None
    np.testing.assert_array_equal(got, _by_id(entities, features))


@pytest.mark.parametrize("spoil", ["shuffled", "repeated", "out of range", "short", "objects"])
def test_rows_that_do_not_hold_are_not_used(spoil: str) -> None:
    features, entities, _ = make_inputs()
    entities["entity_id"] = entities["entity_id"].astype("str")
    features["entity_id"] = features["entity_id"].astype("str")
    rows = unique_ids(entities, "entities").get_indexer(features["entity_id"])
    if spoil == "shuffled":
        rows = rows[::-1].copy()
    elif spoil == "repeated":  # a feature row named twice, with its id twice
        rows[1] = rows[0]
        features.loc[1, "entity_id"] = features.loc[0, "entity_id"]
    elif spoil == "out of range":
        rows[0] = len(entities)
    elif spoil == "short":
        rows = rows[:-1]
    else:  # ids as Python objects: matched by id
        features["entity_id"] = features["entity_id"].astype(object)
    assert aligned_rows(entities["entity_id"], features, rows) is None


@pytest.fixture(scope="module")
def models() -> dict:
    from tests.models.test_explain import make_model

    return {
        "conversion": make_model("conversion", seed=0, n=2000),
        "churn": make_model("churn", seed=1, n=2000),
    }


def test_scoring_with_the_feature_rows_gives_the_rows_it_gives_by_id(models) -> None:
    features, entities, rules = make_inputs()
    entities["entity_id"] = entities["entity_id"].astype("str")
    features["entity_id"] = features["entity_id"].astype("str")
    rows = unique_ids(entities, "entities").get_indexer(features["entity_id"])
    inputs = (features, entities, rules)
    by_id = run(models, inputs=inputs)
    pd.testing.assert_frame_equal(run(models, inputs=inputs, feature_rows=rows), by_id)
    # Rows that do not hold are noticed: the ids decide, with the same result.
    pd.testing.assert_frame_equal(run(models, inputs=inputs, feature_rows=rows[::-1]), by_id)
    doubled = pd.concat([features, features.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="features frame holds 1 duplicate entity_id"):
        run(models, inputs=(doubled, entities, rules), feature_rows=np.append(rows, rows[0]))
