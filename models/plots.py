"""Charts for notebooks and reports: ROC, band moves, PSI, rule points and SHAP input.

Every chart is a :class:`matplotlib.figure.Figure` that is not attached to pyplot (as
in :mod:`models.evaluate`, which holds the calibration and lift charts), so no GUI
backend is needed and nothing stays open after a figure is dropped. The tables the
charts draw (:func:`band_transition_table`) are returned by their own functions so
they can be read as numbers too.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from models.model import TrainedModel

if TYPE_CHECKING:  # shap is slow to import and only needed when called
    import shap

#: Band order of every band chart; entities without a previous band come in as ``new``.
BAND_ORDER = ("high", "medium", "at-risk")
NEW_BAND = "new"
#: PSI colours by stability: stable, moderate shift, major shift.
PSI_COLOURS = ("tab:green", "tab:orange", "tab:red")


def _labels_and_score(y: object, score: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype="float64").ravel()
    s_arr = np.asarray(score, dtype="float64").ravel()
    if y_arr.shape != s_arr.shape:
        raise ValueError(
            f"Score {name!r} has {s_arr.size} values for {y_arr.size} labels; "
            "pass one score per labelled row."
        )
    if not np.isin(y_arr, (0.0, 1.0)).all() or not 0 < y_arr.sum() < y_arr.size:
        raise ValueError("A ROC curve needs 0/1 labels with both outcomes present.")
    if np.isnan(s_arr).any():
        raise ValueError(f"Score {name!r} has {int(np.isnan(s_arr).sum())} missing values.")
    return y_arr, s_arr


def roc_curve_figure(y: object, scores: Mapping[str, object], title: str = "") -> Figure:
    """ROC curve of each score on the same labels, AUC in the legend.

    Args:
        y: Outcomes (0/1), both present.
        scores: ``{name: score}``; any score where higher means more likely
            (probabilities or rule points).
        title: Figure title.

    Returns:
        A matplotlib figure with one curve per score and the chance diagonal.

    Raises:
        ValueError: On labels without both outcomes, or a score of another length.
    """
    figure = Figure(figsize=(5.5, 5))
    axes = figure.add_subplot()
    for name, score in scores.items():
        y_arr, s_arr = _labels_and_score(y, score, name)
        false_positive, true_positive, _ = roc_curve(y_arr, s_arr)
        auc = roc_auc_score(y_arr, s_arr)
        axes.plot(false_positive, true_positive, label=f"{name} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title or "ROC")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def band_transition_table(previous: object, current: object) -> pd.DataFrame:
    """Entities per (previous band, current band) pair.

    Args:
        previous: Band per entity in the earlier run; missing means the entity had
            no band then (shown as ``new``).
        current: Band per entity in the later run, aligned with ``previous``;
            entities without a current band (not scored) are left out.

    Returns:
        Counts with previous bands as rows (``new`` last) and current bands as
        columns, in :data:`BAND_ORDER` followed by any other band seen.
    """
    before = pd.Series(np.asarray(previous, dtype=object)).astype(object)
    after = pd.Series(np.asarray(current, dtype=object)).astype(object)
    if len(before) != len(after):
        raise ValueError(
            f"{len(before)} previous bands but {len(after)} current bands; align them by entity."
        )
    kept = after.notna()
    before = before[kept].where(before[kept].notna(), NEW_BAND).astype(str)
    after = after[kept].astype(str)
    others = sorted((set(before) | set(after)) - {*BAND_ORDER, NEW_BAND})
    columns = [*BAND_ORDER, *others]
    table = pd.crosstab(before, after).reindex(
        index=[*columns, NEW_BAND], columns=columns, fill_value=0
    )
    table.index.name, table.columns.name = "previous band", "band"
    return table.astype("int64")


def band_moves_figure(table: pd.DataFrame, title: str = "") -> Figure:
    """Heat map of a :func:`band_transition_table`; counts of moved entities in bold.

    Args:
        table: Counts, previous bands as rows and current bands as columns.
        title: Figure title.

    Returns:
        A matplotlib figure, one annotated cell per band pair.
    """
    figure = Figure(figsize=(5.5, 4.5))
    axes = figure.add_subplot()
    counts = table.to_numpy(dtype="float64")
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, label="entities")
    upper = counts.max() if counts.size else 0.0
    for i, row in enumerate(table.index):
        for j, column in enumerate(table.columns):
            value = int(counts[i, j])
            colour = "white" if upper and value > upper / 2 else "black"
            weight = "normal" if row == column else "bold"
            axes.text(j, i, f"{value:,}", ha="center", va="center", color=colour, weight=weight)
    axes.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
    axes.set_yticks(range(len(table.index)), [str(r) for r in table.index])
    axes.set_xlabel(table.columns.name or "band")
    axes.set_ylabel(table.index.name or "previous band")
    moved = int(counts.sum() - sum(counts[i, j] for i, j in _same_cells(table)))
    axes.set_title(title or f"Band moves ({moved:,} of {int(counts.sum()):,} entities moved)")
    figure.tight_layout()
    return figure


def _same_cells(table: pd.DataFrame) -> list[tuple[int, int]]:
    columns = list(table.columns)
    return [(i, columns.index(row)) for i, row in enumerate(table.index) if row in columns]


def psi_figure(
    values: Mapping[str, float] | pd.Series | pd.DataFrame,
    warn: float = 0.1,
    fail: float = 0.25,
    top: int = 20,
    title: str = "",
) -> Figure:
    """Horizontal PSI bars, largest first, coloured by stability, thresholds drawn.

    Args:
        values: ``{name: psi}``, a Series, or a :func:`models.drift.psi_table` frame
            (``column``, ``psi``).
        warn: PSI above which a shift is moderate (orange).
        fail: PSI above which a shift is major (red).
        top: Largest values shown.
        title: Figure title.

    Returns:
        A matplotlib figure.
    """
    if isinstance(values, pd.DataFrame):
        series = values.set_index("column")["psi"]
    else:
        series = pd.Series(values, dtype="float64")
    series = series.astype("float64").sort_values(ascending=False).head(top)[::-1]
    colours = [
        PSI_COLOURS[2] if v > fail else PSI_COLOURS[1] if v > warn else PSI_COLOURS[0]
        for v in series
    ]
    figure = Figure(figsize=(7, 1.2 + 0.3 * max(len(series), 1)))
    axes = figure.add_subplot()
    axes.barh([str(i) for i in series.index], series.to_numpy(), color=colours)
    axes.axvline(warn, color=PSI_COLOURS[1], linestyle="--", label=f"warn {warn:g}")
    axes.axvline(fail, color=PSI_COLOURS[2], linestyle="--", label=f"fail {fail:g}")
    axes.set_xlabel("population stability index")
    axes.set_title(title or "PSI against the reference")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def points_comparison_figure(table: pd.DataFrame, title: str = "") -> Figure:
    """Old against new points per rule signal, with the new points' interval.

    Args:
        table: ``RecalibrationResult.table``: ``signal``, ``old_points``,
            ``new_points`` and optionally ``ci_low``/``ci_high``.
        title: Figure title.

    Returns:
        A matplotlib figure with paired horizontal bars per signal.
    """
    missing = {"signal", "old_points", "new_points"} - set(table.columns)
    if missing:
        raise ValueError(
            f"The points table lacks column(s) {sorted(missing)}; it has {list(table.columns)}."
        )
    rows = table.reset_index(drop=True)
    positions = np.arange(len(rows))
    figure = Figure(figsize=(7, 1.5 + 0.45 * max(len(rows), 1)))
    axes = figure.add_subplot()
    old = rows["old_points"].to_numpy(dtype="float64")
    new = rows["new_points"].to_numpy(dtype="float64")
    axes.barh(positions + 0.2, old, height=0.4, color="lightgrey", label="old points")
    error = None
    if {"ci_low", "ci_high"} <= set(rows.columns):
        low = rows["ci_low"].to_numpy(dtype="float64")
        high = rows["ci_high"].to_numpy(dtype="float64")
        # Intervals may be missing for signals that could not be estimated.
        error = np.nan_to_num(np.vstack([new - low, high - new]).clip(min=0))
    axes.barh(positions - 0.2, new, height=0.4, xerr=error, color="tab:blue", label="new points")
    axes.set_yticks(positions, rows["signal"].astype(str).tolist())
    axes.invert_yaxis()
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("points")
    axes.set_title(title or "Rule points: old against recalibrated")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def shap_explanation(
    model: TrainedModel, features: pd.DataFrame, max_rows: int = 500, seed: int = 0
) -> shap.Explanation:
    """SHAP values of a model on some rows, as a ``shap.Explanation`` for shap's plots.

    The values are LightGBM's exact TreeSHAP contributions (``pred_contrib``), the
    same numbers the reason codes are built from, in log-odds. Categorical columns are
    shown by their category code (shap colours need numbers).

    Args:
        model: A :class:`models.model.TrainedModel`.
        features: Unprepared feature rows (e.g. ``TrainResult.validation_features``).
        max_rows: Rows sampled when there are more (beeswarms saturate anyway).
        seed: Seed of that sample.

    Returns:
        The explanation; ``values.sum(1) + base_values`` equals the raw margin.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shap's import warns about matplotlib deprecations
        import shap

    prepared = model.prepare(features)
    if len(prepared) > max_rows:
        prepared = prepared.sample(max_rows, random_state=seed)
    contributions = np.asarray(model.booster.predict(prepared, pred_contrib=True))
    shown = prepared.apply(
        lambda c: c.cat.codes.where(c.notna()) if isinstance(c.dtype, pd.CategoricalDtype) else c
    ).astype("float64")
    return shap.Explanation(
        values=contributions[:, :-1],
        base_values=contributions[:, -1],
        data=shown.to_numpy(),
        feature_names=list(model.feature_names),
    )


def event_mix_table(events: pd.DataFrame, freq: str = "MS", top: int | None = None) -> pd.DataFrame:
    """Events per period and event type (columns largest first, the rest as ``other``).

    Args:
        events: Events with ``event_time`` and ``event_type``.
        freq: Pandas period start alias (``MS`` months, ``W-MON`` weeks).
        top: Event types kept apart; ``None`` keeps all.

    Returns:
        Counts indexed by period start (UTC), one column per event type.
    """
    missing = {"event_time", "event_type"} - set(events.columns)
    if missing:
        raise ValueError(f"The events frame lacks column(s) {sorted(missing)}.")
    counts = (
        events.groupby([pd.Grouper(key="event_time", freq=freq), "event_type"], observed=True)
        .size()
        .unstack(fill_value=0)
    )
    order = counts.sum().sort_values(ascending=False).index
    counts = counts[order]
    if top is not None and counts.shape[1] > top:
        counts = counts.iloc[:, :top].assign(other=counts.iloc[:, top:].sum(axis=1))
    counts.columns = [str(c) for c in counts.columns]
    return counts.astype("int64")


def stacked_area_figure(table: pd.DataFrame, title: str = "", ylabel: str = "events") -> Figure:
    """Stacked areas of a wide table (index on the x axis, one layer per column).

    Args:
        table: E.g. :func:`event_mix_table`.
        title: Figure title.
        ylabel: Label of the y axis.

    Returns:
        A matplotlib figure.
    """
    figure = Figure(figsize=(10, 4.5))
    axes = figure.add_subplot()
    axes.stackplot(table.index, table.to_numpy(dtype="float64").T, labels=list(table.columns))
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.tight_layout()
    return figure
