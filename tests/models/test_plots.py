"""Charts of models/plots.py on small seeded data: the numbers drawn are the right ones."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.calibration import fit_calibrator
from models.drift import psi_table
from models.model import TrainedModel, feature_frame, prepare_features
from models.plots import (
    NEW_BAND,
    PSI_COLOURS,
    band_moves_figure,
    band_transition_table,
    event_mix_table,
    points_comparison_figure,
    psi_figure,
    roc_curve_figure,
    shap_explanation,
    stacked_area_figure,
)


@pytest.fixture
def scored_rows():
    rng = np.random.default_rng(7)
    signal = rng.normal(size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-2 * signal))).astype(int)
    return y, {"model": signal + rng.normal(scale=0.5, size=400), "noise": rng.normal(size=400)}


def test_roc_figure_draws_one_curve_per_score_with_its_auc(scored_rows):
    y, scores = scored_rows
    figure = roc_curve_figure(y, scores, title="test")
    axes = figure.axes[0]
    labels = [line.get_label() for line in axes.get_lines()]
    assert labels[-1] == "chance"
    for name, score in scores.items():
        assert f"{name} (AUC {roc_auc_score(y, score):.3f})" in labels
    model_line = axes.get_lines()[0]
    # A ROC curve runs from (0, 0) to (1, 1) and never goes down.
    assert (model_line.get_xdata()[0], model_line.get_ydata()[0]) == (0.0, 0.0)
    assert (model_line.get_xdata()[-1], model_line.get_ydata()[-1]) == (1.0, 1.0)
    assert np.all(np.diff(model_line.get_ydata()) >= 0)


def test_roc_figure_refuses_one_class_and_misaligned_scores(scored_rows):
    y, scores = scored_rows
    with pytest.raises(ValueError, match="both outcomes"):
        roc_curve_figure(np.zeros_like(y), scores)
    with pytest.raises(ValueError, match="'short' has 10 values for 400 labels"):
        roc_curve_figure(y, {"short": scores["model"][:10]})


def test_band_transition_table_counts_every_banded_entity_once():
    rng = np.random.default_rng(1)
    bands = np.array(["high", "medium", "at-risk"], dtype=object)
    previous = bands[rng.integers(0, 3, 300)]
    previous[:20] = None  # new entities
    current = bands[rng.integers(0, 3, 300)]
    current[-10:] = None  # not scored this time
    table = band_transition_table(previous, current)
    assert table.to_numpy().sum() == 290
    assert list(table.index) == ["high", "medium", "at-risk", NEW_BAND]
    assert list(table.columns) == ["high", "medium", "at-risk"]
    expected = pd.crosstab(pd.Series(previous[:-10]).fillna(NEW_BAND), pd.Series(current[:-10]))
    for before in expected.index:
        for after in expected.columns:
            assert table.loc[before, after] == expected.loc[before, after]


def test_band_transition_table_keeps_unexpected_bands_and_checks_lengths():
    table = band_transition_table(["low", "high"], ["high", "low"])
    assert "low" in table.columns and "low" in table.index
    assert table.loc["low", "high"] == 1
    with pytest.raises(ValueError, match="2 previous bands but 1 current"):
        band_transition_table(["high", "low"], ["high"])


def test_band_moves_figure_writes_each_count_in_its_cell():
    table = band_transition_table(
        ["high", "high", "medium", None, "at-risk"], ["high", "medium", "medium", "high", "medium"]
    )
    figure = band_moves_figure(table)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert len(texts) == table.size
    assert texts == [f"{int(v):,}" for v in table.to_numpy().ravel()]
    assert "3 of 5 entities moved" in figure.axes[0].get_title()


def test_psi_figure_colours_bars_by_threshold_largest_on_top():
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"a": rng.normal(size=2000), "b": rng.normal(size=2000)})
    current = pd.DataFrame({"a": rng.normal(size=2000), "b": rng.normal(1.0, size=2000)})
    table = psi_table(reference, current, ["a", "b"])
    figure = psi_figure(table, warn=0.1, fail=0.25)
    bars = figure.axes[0].patches
    heights = [bar.get_width() for bar in bars]
    assert heights == sorted(table["psi"])  # barh draws bottom-up: largest last = on top
    colours = {
        tuple(np.round(bar.get_facecolor()[:3], 3))
        for bar, h in zip(bars, heights, strict=True)
        if h > 0.25
    }
    assert len(colours) == 1
    from matplotlib.colors import to_rgb

    assert colours == {tuple(np.round(to_rgb(PSI_COLOURS[2]), 3))}
    assert heights[0] < 0.1


def test_points_comparison_figure_draws_old_and_new_points():
    table = pd.DataFrame(
        {
            "signal": ["login", "tickets"],
            "old_points": [20, -10],
            "new_points": [25, -5],
            "ci_low": [18, -9],
            "ci_high": [30, np.nan],
        }
    )
    figure = points_comparison_figure(table)
    widths = [bar.get_width() for bar in figure.axes[0].patches]
    assert widths == [20, -10, 25, -5]
    with pytest.raises(ValueError, match="lacks column"):
        points_comparison_figure(table.drop(columns="new_points"))


def test_shap_explanation_adds_up_to_the_margin():
    rng = np.random.default_rng(5)
    n = 600
    raw = pd.DataFrame(
        {
            "visits": rng.poisson(3, n).astype(float),
            "minutes": rng.exponential(10, n),
            "industry": rng.choice(["retail", "software", "health"], n),
        }
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-(raw["visits"] - 3)))).astype(int)
    x, kinds = feature_frame(raw)
    levels = {"industry": sorted(raw["industry"].unique())}
    prepared = prepare_features(x, list(kinds), levels)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 20},
        lgb.Dataset(prepared, y),
        num_boost_round=20,
    )
    margin = booster.predict(prepared, raw_score=True)
    model = TrainedModel(
        "conversion", booster, fit_calibrator(margin, y, "sigmoid"), list(kinds), levels
    )
    explanation = shap_explanation(model, raw, max_rows=200, seed=1)
    assert explanation.values.shape == (200, 3)
    assert list(explanation.feature_names) == ["visits", "minutes", "industry"]
    rows = prepared.sample(200, random_state=1).index
    total = explanation.values.sum(axis=1) + explanation.base_values
    np.testing.assert_allclose(total, margin[rows], rtol=1e-6, atol=1e-9)
    assert np.issubdtype(explanation.data.dtype, np.floating)


def test_event_mix_table_counts_events_per_month_and_type():
    events = pd.DataFrame(
        {
            "event_time": pd.to_datetime(
                ["2025-01-03", "2025-01-20", "2025-02-01", "2025-02-02", "2025-02-03"], utc=True
            ),
            "event_type": ["login", "page_view", "login", "login", "form_submit"],
        }
    )
    table = event_mix_table(events, top=1)
    assert list(table.columns) == ["login", "other"]
    assert table.to_numpy().sum() == len(events)
    assert table.loc[pd.Timestamp("2025-02-01", tz="UTC"), "login"] == 2
    figure = stacked_area_figure(table, title="mix")
    assert len(figure.axes[0].collections) == 2
    with pytest.raises(ValueError, match="event_type"):
        event_mix_table(events.drop(columns="event_type"))
