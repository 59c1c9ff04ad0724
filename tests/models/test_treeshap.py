"""models.treeshap: LightGBM's pred_contrib (to rounding) and raw scores (bit for bit)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from models import treeshap
from models.explain import tree_contributions

ZERO = treeshap.ZERO


def _data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "count": rng.poisson(2, n).astype(float),
            "ratio": rng.normal(0, 1, n),
            "sparse": np.where(rng.random(n) < 0.6, 0.0, rng.exponential(3, n)),
            "gappy": np.where(rng.random(n) < 0.3, np.nan, rng.normal(5, 2, n)),
            "plan": pd.Categorical(rng.choice(list("abcdefghij"), n)),
            "region": pd.Categorical(rng.choice(["n", "s", "e", "w", None], n)),
        }
    )
    frame["same"] = frame["count"]  # one feature split twice on a path
    return frame


def _label(frame: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logit = (
        0.5 * frame["count"] - frame["ratio"] + 0.3 * frame["sparse"]
        + frame["gappy"].fillna(0) * 0.2 + frame["plan"].cat.codes * 0.1
    )  # fmt: skip
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-logit + 2))).astype(int)


def _booster(params: dict, frame: pd.DataFrame, rounds: int = 60) -> lgb.Booster:
    base = {"objective": "binary", "num_leaves": 15, "max_depth": 5, "verbose": -1,
            "min_data_in_leaf": 5, "seed": 1, "num_threads": 1}  # fmt: skip
    data = lgb.Dataset(frame, _label(frame, 7))
    return lgb.train({**base, **params}, data, num_boost_round=rounds)


def _matrix(booster: lgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """The booster's input matrix of the frame (categories as their codes)."""
    columns = []
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy().astype(float)
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(column.to_numpy(float))
    return np.ascontiguousarray(np.column_stack(columns))


def _edges(matrix: np.ndarray) -> np.ndarray:
    """Rows with the values decisions treat specially: NaN, +-0, tiny, huge, negative codes."""
    edges = matrix[:40].copy()
    specials = [np.nan, 0.0, -0.0, ZERO, -ZERO, 1e-300, -1e-40, 1e300, -1e300, -1.0, -0.5,
                0.5, 3.0e9, 1e-35]  # fmt: skip
    for i, value in enumerate(specials):
        edges[i, :] = value
        edges[len(specials) + i, i % matrix.shape[1]] = value
    return edges


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


def _assert_lightgbm_s(mine: np.ndarray | None, booster: lgb.Booster, rows: np.ndarray) -> None:
    """LightGBM's pred_contrib to the rounding of per-feature sums; rows add up to the margin."""
    expected = booster.predict(rows, pred_contrib=True)
    assert mine is not None and mine.shape == expected.shape
    np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        mine.sum(axis=1), booster.predict(rows, raw_score=True), rtol=1e-12, atol=1e-12
    )
    assert (mine[:, -1] == expected[:, -1]).all()  # the base value: the same additions


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"use_missing": True, "zero_as_missing": True},
        {"use_missing": False},
        {"num_leaves": 7, "max_depth": 3, "learning_rate": 0.3},
        {"num_leaves": 17, "max_depth": -1, "min_data_in_leaf": 2},
        {"max_cat_to_onehot": 16},
    ],
)
def test_contributions_are_lightgbm_s(params: dict) -> None:
    frame = _data(3000, 1)
    booster = _booster(params, frame)
    matrix = _matrix(booster, _data(4000, 2))
    rows = np.vstack([matrix, _edges(matrix)])
    _assert_lightgbm_s(treeshap.contributions(booster, rows, num_threads=2), booster, rows)


def test_duplicated_rows_get_the_values_of_one_row() -> None:
    """Rows explained together get what each gets alone (patterns are shared)."""
    booster = _booster({}, _data(2000, 3))
    matrix = _matrix(booster, _data(300, 4))
    doubled = np.vstack([matrix, matrix[::-1], matrix[:7]])
    together = treeshap.contributions(booster, doubled)
    assert together is not None
    alone = np.vstack(
        [treeshap.contributions(booster, doubled[i : i + 1]) for i in range(0, len(doubled), 37)]
    )
    assert _same_bits(together[::37], alone)
    assert _same_bits(together[: len(matrix)], together[len(matrix) : 2 * len(matrix)][::-1])


def test_chunks_and_threads_do_not_change_a_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    booster = _booster({}, _data(2000, 5))
    matrix = _matrix(booster, _data(5000, 6))
    whole = treeshap.contributions(booster, matrix, num_threads=1)
    monkeypatch.setattr(treeshap, "CHUNK_ROWS", 777)
    assert _same_bits(treeshap.contributions(booster, matrix, num_threads=2), whole)


def test_best_iteration_and_single_leaf_trees() -> None:
    frame = _data(2000, 8)
    booster = _booster({"min_gain_to_split": 1e9}, frame, rounds=5)  # stumps: one leaf each
    matrix = _matrix(booster, frame)
    _assert_lightgbm_s(treeshap.contributions(booster, matrix), booster, matrix)
    booster = _booster({}, frame, rounds=30)
    booster.best_iteration = 12
    _assert_lightgbm_s(treeshap.contributions(booster, matrix), booster, matrix)


def test_what_is_not_covered_goes_to_lightgbm() -> None:
    frame = _data(3000, 9)
    wide = _booster({"num_leaves": 40, "max_depth": -1, "min_data_in_leaf": 2}, frame)
    matrix = _matrix(wide, frame)
    assert treeshap.forest(wide) is None
    assert treeshap.contributions(wide, matrix) is None

    class Model:
        booster = wide

    assert _same_bits(tree_contributions(Model(), matrix), wide.predict(matrix, pred_contrib=True))


def test_explain_gives_the_same_reasons_as_through_lightgbm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reasons, scores and text are identical with LightGBM's own pred_contrib; and an
    entity explained beside copies of itself gets what it gets alone."""
    from models import explain as explain_module
    from models.concepts import concept_map
    from tests.models.test_explain import catalog, make_features, make_model

    model = make_model("conversion", seed=3, rounds=60)
    frame = make_features(600, seed=11)
    frame = pd.concat([frame, frame.iloc[:50], frame.iloc[:50]], ignore_index=True)
    concepts = concept_map(model.feature_names, catalog(), model.categorical_levels)
    ours = explain_module.explain(model, frame, "lead", concepts, chunk_rows=170)
    monkeypatch.setattr(explain_module, "contributions", lambda *args: None)
    theirs = explain_module.explain(model, frame, "lead", concepts, chunk_rows=170)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    head, copies = ours.iloc[:50].reset_index(drop=True), ours.iloc[600:650]
    pd.testing.assert_frame_equal(head, copies.reset_index(drop=True), check_exact=True)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"use_missing": True, "zero_as_missing": True},
        {"use_missing": False},
        {"num_leaves": 17, "max_depth": -1, "min_data_in_leaf": 2},
        {"max_cat_to_onehot": 16},
        {"min_gain_to_split": 1e9},  # stumps: one leaf each
    ],
)
def test_margins_are_lightgbm_raw_scores_bit_for_bit(params: dict) -> None:
    booster = _booster(params, _data(3000, 1))
    matrix = _matrix(booster, _data(4000, 2))
    rows = np.vstack([matrix, _edges(matrix)])
    expected = booster.predict(rows, raw_score=True)
    assert _same_bits(treeshap.margins(booster, rows, num_threads=2), expected)
    assert _same_bits(treeshap.margins(booster, rows, num_threads=1), expected)
    booster.best_iteration = 12
    assert _same_bits(treeshap.margins(booster, rows), booster.predict(rows, raw_score=True))


def test_margins_of_what_is_not_covered_are_lightgbm_s() -> None:
    frame = _data(3000, 9)
    wide = _booster({"num_leaves": 40, "max_depth": -1, "min_data_in_leaf": 2}, frame)
    matrix = _matrix(wide, frame)
    assert treeshap.forest(wide) is None
    assert _same_bits(treeshap.margins(wide, matrix), wide.predict(matrix, raw_score=True))


def test_scoring_probabilities_are_the_same_as_through_lightgbm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """score_entities' probabilities are the bits of LightGBM's own raw scores, calibrated."""
    from models import scoring
    from tests.models.test_explain import make_features, make_model

    model = make_model("conversion", seed=3, rounds=60)
    frame = make_features(900, seed=12)
    inputs = model.inputs(frame)
    rows = np.arange(len(frame))[::-1].copy()
    monkeypatch.setattr(scoring, "PREDICT_BATCH", 256)
    ours = scoring._probability(model, inputs, frame, rows)
    monkeypatch.setattr(
        scoring,
        "margins",
        lambda booster, block, num_threads=None: booster.predict(block, raw_score=True),
    )
    theirs = scoring._probability(model, inputs, frame, rows)
    assert inputs.exact
    assert _same_bits(ours, theirs)
    assert _same_bits(ours, model.predict_proba(frame.iloc[rows]))
