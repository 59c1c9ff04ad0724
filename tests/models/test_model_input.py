"""The booster's input matrix (``ModelInput``) predicts and explains exactly as the frame does."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.spec import FeatureSpec, feature_catalog
from models.concepts import concept_map
from models.explain import explain, score_from_margin, tree_contributions
from models.reason_text import entity_values
from models.treeshap import contributions, margins
from tests.models.test_explain import make_features, make_model


def _awkward(n: int, seed: int) -> pd.DataFrame:
    """Rows with an unseen category, a missing one, a category as text and an int column."""
    frame = make_features(n, seed)
    industry = frame["industry"].astype(object)
    industry.iloc[::7] = "mining"  # never seen in training
    industry.iloc[3::11] = None
    frame["industry"] = industry
    frame["login_count_30d"] = frame["login_count_30d"].astype("int64")
    return frame.drop(columns=["tenure_days"])  # a model column the table lacks


def test_matrix_predictions_equal_the_prepared_frame_bit_for_bit():
    for target, seed in (("conversion", 1), ("churn", 2)):
        model = make_model(target, seed=seed)
        for frame in (make_features(500, seed=9), _awkward(500, seed=10)):
            inputs = model.inputs(frame)
            assert inputs.exact
            expected = model.booster.predict(model.prepare(frame), raw_score=True)
            rows = np.arange(len(frame))
            assert np.array_equal(
                model.booster.predict(inputs.rows(rows), raw_score=True), expected
            )
            assert np.array_equal(model.predict_margin(frame), expected)
            picked = np.array([5, 0, 499, 17, 17])
            contrib = tree_contributions(model, inputs.rows(picked))  # models.treeshap
            # LightGBM's own pred_contrib of the prepared frame: the same to rounding.
            np.testing.assert_allclose(
                contrib,
                tree_contributions(model, model.prepare(frame.iloc[picked])),
                rtol=1e-12,
                atol=1e-12,
            )


def test_rows_reuse_a_buffer_of_enough_rows():
    model = make_model("conversion", seed=1)
    frame = make_features(100, seed=3)
    inputs = model.inputs(frame)
    buffer = inputs.rows(np.arange(60))
    again = inputs.rows(np.arange(40, 80), out=buffer)
    assert np.shares_memory(again, buffer)
    fresh = model.inputs(frame.iloc[40:80]).rows(np.arange(40))
    assert np.array_equal(again, fresh, equal_nan=True)
    assert not np.shares_memory(inputs.rows(np.arange(100), out=buffer), buffer)


def _chosen_rows_to_explain():
    """A model, an awkward table, its concepts and some rows in no order."""
    model = make_model("conversion", seed=1)
    frame = _awkward(400, seed=4)
    catalog = feature_catalog(FeatureSpec(), fit_columns={"industry": "category"})
    concepts = concept_map(model.feature_names, catalog, model.categorical_levels)
    return model, frame, concepts, np.array([399, 3, 10, 11, 250, 7, 0])


def test_explain_of_chosen_rows_with_given_scores_equals_explaining_their_copy():
    model, frame, concepts, rows = _chosen_rows_to_explain()
    copied = explain(model, frame.iloc[rows], "lead", concepts, chunk_rows=3)
    score = score_from_margin(model, model.predict_margin(frame), "lead")[rows]
    inputs = model.inputs(frame)
    chosen = explain(model, frame, "lead", concepts, chunk_rows=3, rows=rows, score=score,
                     inputs=inputs)  # fmt: skip
    pd.testing.assert_frame_equal(chosen, copied)


def test_rows_laid_out_by_feature_score_and_explain_as_their_row_major_copy():
    for target, seed in (("conversion", 1), ("churn", 2)):
        model = make_model(target, seed=seed)
        inputs = model.inputs(_awkward(300, seed=4))
        buffer = inputs.rows(np.arange(300))
        matrix = inputs.rows(np.arange(299, 0, -2), out=buffer)  # a reused buffer
        assert matrix.flags.f_contiguous and np.shares_memory(matrix, buffer)
        row_major = np.ascontiguousarray(matrix)
        expected = model.booster.predict(row_major, raw_score=True)
        assert np.array_equal(margins(model.booster, matrix), expected)
        assert np.array_equal(margins(model.booster, row_major), expected)
        assert np.array_equal(
            contributions(model.booster, matrix), contributions(model.booster, row_major)
        )


def test_reason_values_read_from_the_input_matrix_equal_those_of_the_rows():
    model = make_model("conversion", seed=1)
    frame = _awkward(300, seed=5)  # an int column, a missing one, unseen categories
    catalog = feature_catalog(FeatureSpec(), fit_columns={"industry": "category"})
    concepts = concept_map(model.feature_names, catalog, model.categorical_levels)
    rows = np.array([299, 4, 4, 150, 0, 77])
    matrix = model.inputs(frame).rows(rows)
    from_matrix = entity_values(frame, concepts, rows, matrix)
    matrix[:] = -1.0  # the caller's buffer is reused: the values must not follow it
    for ours, theirs in zip(from_matrix, entity_values(frame.iloc[rows], concepts), strict=True):
        assert ours.dtype == theirs.dtype
        assert pd.Series(ours).equals(pd.Series(theirs))


def test_explain_without_an_exact_matrix_gives_the_reasons_of_the_matrix_path():
    """The fallback (a frame LightGBM converts itself) reads the same values and reasons."""
    model, frame, concepts, rows = _chosen_rows_to_explain()
    exact = explain(model, frame, "lead", concepts, chunk_rows=3, rows=rows,
                    inputs=model.inputs(frame))  # fmt: skip
    fallback = model.inputs(frame)
    fallback.exact = False  # as when the booster's stored categories do not match
    framed = explain(model, frame, "lead", concepts, chunk_rows=3, rows=rows, inputs=fallback)
    pd.testing.assert_frame_equal(framed, exact)
