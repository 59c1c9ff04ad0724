"""Metrics and charts for probability scores and rank-only baselines.

Conventions used throughout:

* **Expected calibration error (ECE)** uses *equal-frequency* bins (10 by default):
  bin edges are the deciles of the predicted probabilities (tied scores stay in one
  bin, so bins are of nearly equal size);
  ECE is the row-weighted mean of ``|mean(p) - mean(y)|`` over bins. Equal-frequency
  bins keep every bin populated even when scores pile up near zero, which equal-width
  bins do not (``strategy="uniform"`` is available for comparison).
* **Top decile** is the first ``ceil(n / 10)`` rows when sorted by score, highest
  first (ties broken by the original row order, so results are deterministic).
  ``lift_top_decile`` is its outcome rate over the overall rate;
  ``capture_top_decile`` is the share of all positives that fall in it.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from models.auc_interval import auc_interval

BinStrategy = Literal["quantile", "uniform"]

#: Metrics that need calibrated probabilities (not defined for raw rule points).
PROBABILITY_METRICS = ("log_loss", "brier", "ece")
#: Metrics that only depend on the order of the scores.
RANK_METRICS = ("roc_auc", "pr_auc", "lift_top_decile", "capture_top_decile")


def _as_arrays(y: object, score: object) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype="float64").ravel()
    s_arr = np.asarray(score, dtype="float64").ravel()
    if y_arr.shape != s_arr.shape:
        raise ValueError(
            f"Labels and scores differ in length ({y_arr.size} labels, {s_arr.size} scores)."
        )
    if np.isnan(s_arr).any():
        raise ValueError(
            f"{int(np.isnan(s_arr).sum())} of {s_arr.size} scores are missing; "
            "every evaluated row needs a score."
        )
    if not np.isin(y_arr, (0.0, 1.0)).all():
        raise ValueError("Labels must be 0 or 1.")
    return y_arr, s_arr


def _bin_ids(p: np.ndarray, n_bins: int, strategy: BinStrategy) -> np.ndarray:
    if strategy == "uniform":
        return np.minimum((p * n_bins).astype("int64"), n_bins - 1)
    if p.size == 0:
        return np.zeros(0, dtype="int64")
    # Edges at the quantiles, so tied scores share a bin (isotonic calibration makes many
    # ties); bins are then only nearly equal in size.
    edges = np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, p, side="right").astype("int64")


def calibration_table(
    y: object, p: object, n_bins: int = 10, strategy: BinStrategy = "quantile"
) -> pd.DataFrame:
    """Predicted against observed outcome rate per probability bin.

    Args:
        y: Outcomes (0/1).
        p: Predicted probabilities.
        n_bins: Number of bins.
        strategy: ``quantile`` (equal-frequency, default) or ``uniform`` (equal-width).

    Returns:
        One row per non-empty bin: ``bin``, ``n``, ``mean_predicted``, ``observed_rate``.
    """
    y_arr, p_arr = _as_arrays(y, p)
    frame = pd.DataFrame({"bin": _bin_ids(p_arr, n_bins, strategy), "y": y_arr, "p": p_arr})
    grouped = frame.groupby("bin", sort=True)
    return pd.DataFrame(
        {
            "n": grouped.size(),
            "mean_predicted": grouped["p"].mean(),
            "observed_rate": grouped["y"].mean(),
        }
    ).reset_index()


def expected_calibration_error(
    y: object, p: object, n_bins: int = 10, strategy: BinStrategy = "quantile"
) -> float:
    """Row-weighted mean gap between predicted and observed rates over bins.

    Args:
        y: Outcomes (0/1).
        p: Predicted probabilities.
        n_bins: Number of bins.
        strategy: ``quantile`` (equal-frequency, default) or ``uniform`` (equal-width).

    Returns:
        The ECE, between 0 and 1.
    """
    table = calibration_table(y, p, n_bins, strategy)
    if table.empty:
        return float("nan")
    gaps = (table["mean_predicted"] - table["observed_rate"]).abs()
    return float(np.average(gaps, weights=table["n"]))


def lift_table(y: object, score: object, n_bins: int = 10) -> pd.DataFrame:
    """Outcome rate, lift and cumulative capture per score bin, best bin first.

    Args:
        y: Outcomes (0/1).
        score: Any score where higher means more likely (probability or points).
        n_bins: Number of equal-size bins (10: deciles).

    Returns:
        Rows ``bin`` (1 = highest scores), ``n``, ``positives``, ``rate``, ``lift``,
        ``cumulative_capture``.
    """
    y_arr, s_arr = _as_arrays(y, score)
    order = np.argsort(-s_arr, kind="stable")
    ranked = y_arr[order]
    bins = np.arange(ranked.size) * n_bins // max(ranked.size, 1) + 1
    frame = pd.DataFrame({"bin": bins, "y": ranked})
    table = frame.groupby("bin").agg(n=("y", "size"), positives=("y", "sum")).reset_index()
    base_rate = y_arr.mean() if y_arr.size else float("nan")
    table["rate"] = table["positives"] / table["n"]
    table["lift"] = table["rate"] / base_rate if base_rate > 0 else float("nan")
    total = y_arr.sum()
    table["cumulative_capture"] = table["positives"].cumsum() / total if total else float("nan")
    return table


def _top_decile(y_arr: np.ndarray, s_arr: np.ndarray) -> tuple[float, float]:
    top_n = math.ceil(y_arr.size / 10)
    order = np.argsort(-s_arr, kind="stable")[:top_n]
    base_rate = y_arr.mean()
    positives = y_arr.sum()
    top_rate = y_arr[order].mean() if top_n else float("nan")
    lift = top_rate / base_rate if base_rate > 0 else float("nan")
    capture = y_arr[order].sum() / positives if positives > 0 else float("nan")
    return float(lift), float(capture)


def band_outcome_rates(y: object, bands: object) -> dict[str, dict[str, float]]:
    """Rows and outcome rate per band.

    Args:
        y: Outcomes (0/1).
        bands: Band label per row (e.g. ``high``/``medium``/``low``).

    Returns:
        ``{band: {"n": rows, "rate": outcome rate}}``, bands in sorted order.
    """
    frame = pd.DataFrame({"y": np.asarray(y, dtype="float64"), "band": np.asarray(bands)})
    frame["band"] = frame["band"].astype("object").where(frame["band"].notna(), "<none>")
    out: dict[str, dict[str, float]] = {}
    for band, group in frame.groupby("band", sort=True):
        out[str(band)] = {"n": float(len(group)), "rate": float(group["y"].mean())}
    return out


def evaluate(
    y: object,
    p: object,
    bands: object | None = None,
    *,
    probabilities: bool = True,
    n_bins: int = 10,
) -> dict[str, object]:
    """All evaluation metrics of one score on one fold.

    Args:
        y: Outcomes (0/1).
        p: Calibrated probabilities, or any score when ``probabilities`` is false.
        bands: Optional band label per row; outcome rates per band are added under
            ``band_rates``. Without bands, the rates per score decile are given
            (``decile_01`` = highest scores).
        probabilities: When false (raw rule points), the probability metrics
            (log loss, Brier, ECE) are reported as NaN rather than computed on
            numbers that are not probabilities.
        n_bins: Bins of the ECE.

    Returns:
        ``n``, ``positives``, ``base_rate``, ``roc_auc``, ``pr_auc``, ``log_loss``,
        ``brier``, ``ece``, ``lift_top_decile``, ``capture_top_decile`` (floats) and
        ``band_rates`` (``{band: {"n", "rate"}}``). AUCs are NaN when only one class
        is present.
    """
    y_arr, p_arr = _as_arrays(y, p)
    both_classes = 0 < y_arr.sum() < y_arr.size
    metrics: dict[str, object] = {
        "n": float(y_arr.size),
        "positives": float(y_arr.sum()),
        "base_rate": float(y_arr.mean()) if y_arr.size else float("nan"),
        "roc_auc": float(roc_auc_score(y_arr, p_arr)) if both_classes else float("nan"),
        "pr_auc": float(average_precision_score(y_arr, p_arr)) if both_classes else float("nan"),
    }
    if probabilities:
        if (p_arr < 0).any() or (p_arr > 1).any():
            raise ValueError("Probabilities must lie between 0 and 1; pass probabilities=False.")
        metrics["log_loss"] = float(log_loss(y_arr, p_arr, labels=[0, 1]))
        metrics["brier"] = float(brier_score_loss(y_arr, p_arr))
        metrics["ece"] = expected_calibration_error(y_arr, p_arr, n_bins)
    else:
        metrics.update(dict.fromkeys(PROBABILITY_METRICS, float("nan")))
    lift, capture = _top_decile(y_arr, p_arr)
    metrics["lift_top_decile"] = lift
    metrics["capture_top_decile"] = capture
    if bands is not None:
        metrics["band_rates"] = band_outcome_rates(y_arr, bands)
    else:
        deciles = lift_table(y_arr, p_arr, 10)
        metrics["band_rates"] = {
            f"decile_{int(row.bin):02d}": {"n": float(row.n), "rate": float(row.rate)}
            for row in deciles.itertuples()
        }
    return metrics


def with_auc_interval(
    metrics: dict[str, object], y: object, score: object, *, seed: int = 0
) -> dict[str, object]:
    """The metrics of :func:`evaluate` with the bootstrap 95% interval of their ROC AUC.

    One bootstrap for the whole project (:func:`models.auc_interval.auc_interval`, with
    its default resamples and this seed, so the promotion guard finds the same bounds).

    Args:
        metrics: A result of :func:`evaluate` on ``y`` and ``score``.
        y: Outcomes (0/1).
        score: The scores evaluated.
        seed: Seed of the bootstrap.

    Returns:
        The same dict with ``roc_auc_ci_low`` and ``roc_auc_ci_high`` (NaN with one class).
    """
    interval = auc_interval(y, score, seed=seed)
    metrics.update({"roc_auc_ci_low": interval.low, "roc_auc_ci_high": interval.high})
    return metrics


def describe_auc(metrics: dict[str, object]) -> str:
    """``AUC 0.733 (95% CI 0.61-0.84, 7 positives)``, for the CLI and the decision text."""
    positives = int(float(metrics.get("positives", 0)))  # type: ignore[arg-type]
    noun = "positive" if positives == 1 else "positives"
    low, high = metrics.get("roc_auc_ci_low"), metrics.get("roc_auc_ci_high")
    interval = (
        f"95% CI {low:.2f}-{high:.2f}, "
        if isinstance(low, float) and isinstance(high, float) and math.isfinite(low)
        else ""
    )
    return f"AUC {float(metrics['roc_auc']):.3f} ({interval}{positives} {noun})"  # type: ignore[arg-type]


def flat_metrics(metrics: dict[str, object], prefix: str = "") -> dict[str, float]:
    """Numeric metrics as one flat ``{name: value}`` dict (band rates included).

    Args:
        metrics: A result of :func:`evaluate`.
        prefix: Prepended to every name (e.g. ``"rule_"``).

    Returns:
        Finite floats only, names like ``roc_auc`` or ``band_high_rate``.
    """
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "band_rates" and isinstance(value, dict):
            for band, stats in value.items():
                for stat, number in stats.items():
                    flat[f"{prefix}band_{band}_{stat}"] = float(number)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return {k: v for k, v in flat.items() if math.isfinite(v)}


def calibration_curve_figure(
    y: object, probabilities: dict[str, object], n_bins: int = 10, title: str = ""
) -> Figure:
    """Reliability diagram: observed rate against mean predicted probability per bin.

    Args:
        y: Outcomes (0/1).
        probabilities: ``{name: probabilities}`` of each model to draw.
        n_bins: Equal-frequency bins per curve.
        title: Figure title.

    Returns:
        A matplotlib figure (not attached to pyplot, so no GUI backend is needed).
    """
    figure = Figure(figsize=(5.5, 5))
    axes = figure.add_subplot()
    upper = 0.0
    for name, p in probabilities.items():
        table = calibration_table(y, p, n_bins)
        ece = expected_calibration_error(y, p, n_bins)
        axes.plot(
            table["mean_predicted"],
            table["observed_rate"],
            marker="o",
            label=f"{name} (ECE {ece:.3f})",
        )
        upper = max(upper, table["mean_predicted"].max(), table["observed_rate"].max())
    upper = min(1.0, upper * 1.05 + 1e-3)
    axes.plot([0, upper], [0, upper], linestyle="--", color="grey", label="perfect calibration")
    axes.set_xlim(0, upper)
    axes.set_ylim(0, upper)
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed outcome rate")
    axes.set_title(title or "Calibration (equal-frequency bins)")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def lift_chart_figure(y: object, scores: dict[str, object], title: str = "") -> Figure:
    """Cumulative capture (gains) and lift per decile for each score.

    Args:
        y: Outcomes (0/1).
        scores: ``{name: score}``; any score where higher means more likely.
        title: Figure title.

    Returns:
        A matplotlib figure with two panels (lift per decile, cumulative capture).
    """
    figure = Figure(figsize=(10, 4.5))
    lift_axes, gain_axes = figure.subplots(1, 2)
    width = 0.8 / max(len(scores), 1)
    for i, (name, score) in enumerate(scores.items()):
        table = lift_table(y, score, 10)
        lift_axes.bar(
            table["bin"] + (i - (len(scores) - 1) / 2) * width,
            table["lift"],
            width=width,
            label=name,
        )
        gain_axes.plot(
            np.r_[0, table["bin"] * 10],
            np.r_[0, table["cumulative_capture"]],
            marker="o",
            label=name,
        )
    lift_axes.axhline(1.0, color="grey", linestyle="--")
    lift_axes.set_xlabel("decile (1 = highest scores)")
    lift_axes.set_ylabel("lift")
    lift_axes.set_xticks(range(1, 11))
    lift_axes.legend(fontsize="small")
    gain_axes.plot([0, 100], [0, 1], color="grey", linestyle="--", label="random")
    gain_axes.set_xlabel("% of entities contacted (highest scores first)")
    gain_axes.set_ylabel("share of outcomes captured")
    gain_axes.legend(fontsize="small")
    figure.suptitle(title or "Lift and capture")
    figure.tight_layout()
    return figure
