"""rows_by_kind and scores_of_kinds: rule rows from feature rows, the same as looking ids up."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.targets import TARGETS
from models.previous_run import positions
from models.rulefile import load_rules
from models.rules import rows_by_kind, rule_scores_by_kind, scores_of_kinds


def _case() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.Index]:
    rng = np.random.default_rng(3)
    entity_ids = pd.Index([f"e{i}" for i in rng.permutation(40)], dtype="str")
    features = pd.DataFrame({"entity_id": pd.Series(entity_ids[5:][rng.permutation(35)])})
    features.loc[len(features)] = ["stray"]  # a feature row of no entity
    feature_row = positions(entity_ids, pd.Index(features["entity_id"]))
    kinds = np.array([t.kind for t in TARGETS] + [None], dtype=object)
    feature_kind = kinds[rng.integers(0, len(kinds), len(features))]
    return features, feature_row, feature_kind, entity_ids


def test_rows_by_kind_equal_the_lookup() -> None:
    features, feature_row, feature_kind, entity_ids = _case()
    taken = np.concatenate([np.flatnonzero(feature_kind == t.kind) for t in TARGETS])
    rules = pd.DataFrame({"entity_id": features["entity_id"].to_numpy()[taken]})
    found = rows_by_kind(features, feature_row, feature_kind, rules)
    assert found is not None
    np.testing.assert_array_equal(found, positions(entity_ids, pd.Index(rules["entity_id"])))
    assert (found >= 0).sum() == len(rules) - int("stray" in set(rules["entity_id"]))


def test_rows_by_kind_declines_other_frames() -> None:
    features, feature_row, feature_kind, _ = _case()
    taken = np.concatenate([np.flatnonzero(feature_kind == t.kind) for t in TARGETS])
    shuffled = pd.DataFrame({"entity_id": features["entity_id"].to_numpy()[taken[::-1]]})
    assert rows_by_kind(features, feature_row, feature_kind, shuffled) is None
    assert rows_by_kind(features, feature_row, feature_kind, shuffled.iloc[1:]) is None
    assert rows_by_kind(features, feature_row, feature_kind, None) is None


def test_scores_of_kinds_equal_scoring_the_kinds_by_id() -> None:
    features, feature_row, feature_kind, entity_ids = _case()
    rng = np.random.default_rng(4)
    columns = {s.column for t in TARGETS for s in load_rules(t.rules).signals}
    for column in sorted(columns):  # every column the rule files read, small counts
        features[column] = rng.integers(0, 5, len(features)).astype("float64")
    kind = np.full(len(entity_ids), "lead", dtype=object)  # entities with no feature row
    kind[feature_row >= 0] = feature_kind[feature_row[feature_row >= 0]]
    by_id = pd.Series(kind, index=entity_ids)  # the stray feature row has no kind

    rules, rows = scores_of_kinds(features, feature_row, kind)

    expected = rule_scores_by_kind(features, by_id)
    pd.testing.assert_frame_equal(rules, expected)
    assert rules["rule_score"].gt(0).any()
    np.testing.assert_array_equal(rows, positions(entity_ids, pd.Index(expected["entity_id"])))
