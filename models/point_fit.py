"""How :mod:`models.recalibrate` learns points: signs, ridge, clip-aware fit, bootstrap, bands.

The method is described in the docstring of :mod:`models.recalibrate`; these are its
numerical parts, kept apart so the orchestration reads in one screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from models.rules import Band, RuleSet

#: Ridge strengths tried when ``l2`` is not given; used without a validation split.
L2_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
DEFAULT_L2 = 1.0


def holdout_by_time(
    cutoffs: pd.Series, holdout_fraction: float, horizon_days: int | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Training and holdout masks: the latest cutoffs held out, label windows kept apart.

    Returns:
        ``(train, holdout, split)`` where ``split`` names the cutoffs and row counts.
    """
    distinct = np.sort(cutoffs.unique())
    if len(distinct) < 2:
        raise ValueError(
            f"Recalibration needs snapshots at 2 or more cutoffs to hold the latest out; "
            f"got {len(distinct)}."
        )
    n_holdout = min(max(1, round(holdout_fraction * len(distinct))), len(distinct) - 1)
    first_holdout = distinct[-n_holdout]
    holdout = (cutoffs >= first_holdout).to_numpy()
    train_end = cutoffs
    if horizon_days is not None:
        train_end = cutoffs + pd.Timedelta(days=horizon_days)
    train = ((cutoffs < first_holdout) & (train_end <= first_holdout)).to_numpy()
    if not train.any():
        raise ValueError(
            f"No training cutoff has its {horizon_days}-day label window closed before the "
            f"first holdout cutoff {pd.Timestamp(first_holdout).date()}; add earlier snapshots."
        )
    dates = [str(pd.Timestamp(c).date()) for c in distinct]
    split = {
        "training_cutoffs": sorted({str(c.date()) for c in cutoffs[train]}),
        "holdout_cutoffs": dates[-n_holdout:],
        "n_training": int(train.sum()),
        "n_holdout": int(holdout.sum()),
    }
    return train, holdout, split


@dataclass
class _Design:
    """Signal units re-expressed so that bounds encode signs and "excludes" orderings."""

    mixing: np.ndarray  # points = mixing @ theta
    bounds: list[tuple[float | None, float | None]]


def choose_l2(
    rules: RuleSet, units: pd.DataFrame, y: np.ndarray, cutoffs: pd.Series,
    horizon_days: int | None,
) -> tuple[float, dict[float, float]]:  # fmt: skip
    """Ridge strength whose clipped score ranks the latest training cutoffs best."""
    try:
        inner, valid, _ = holdout_by_time(cutoffs.reset_index(drop=True), 0.25, horizon_days)
    except ValueError:  # a single training cutoff: nothing to validate on
        return DEFAULT_L2, {}
    if len(np.unique(y[inner])) < 2 or len(np.unique(y[valid])) < 2:
        return DEFAULT_L2, {}
    varying = units[inner].nunique() > 1
    fitted = [name for name in units.columns if varying[name]]
    signs = {name: float(np.sign(rules.signal(name).points)) for name in fitted}
    design = _design(rules, fitted, signs)
    u_inner, u_valid = units[inner][fitted].to_numpy(), units[valid][fitted].to_numpy()
    aucs = {}
    for l2 in L2_GRID:
        weights = _fit_weights(u_inner, y[inner], np.ones(int(inner.sum())), design, l2, True)
        aucs[l2] = float(roc_auc_score(y[valid], np.maximum(u_valid @ weights, 0.0)))
    # Near-ties go to the stronger ridge: the simpler, more stable points.
    best = max(aucs.values())
    return max(l2 for l2, auc in aucs.items() if auc >= best - 1e-3), aucs


def _loss(
    theta: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    """Weighted ridge logistic loss and its gradient; ``theta[0]`` is the intercept."""
    eta = theta[0] + z @ theta[1:]
    p = expit(eta)
    loss = np.sum(w * (np.logaddexp(0.0, eta) - y * eta)) + 0.5 * l2 * theta[1:] @ theta[1:]
    resid = w * (p - y)
    grad = np.concatenate([[resid.sum()], z.T @ resid + l2 * theta[1:]])
    return loss, grad


def _bootstrap_weights(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n_groups = groups.max() + 1
    counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
    return counts[groups].astype("float64")


def _design(rules: RuleSet, fitted: list[str], signs: dict[str, float]) -> _Design:
    """Mixing matrix: points = mixing @ theta; an excluding signal = excluded + extra."""
    index = {name: i for i, name in enumerate(fitted)}
    mixing = np.eye(len(fitted))
    for name in fitted:
        excludes = [x for x in rules.signal(name).excludes if x in index]
        if len(excludes) == 1 and signs[name] != 0 and signs[name] == signs[excludes[0]]:
            mixing[index[name], index[excludes[0]]] = 1.0
    bounds = [
        (0.0, None) if signs[n] > 0 else (None, 0.0) if signs[n] < 0 else (None, None)
        for n in fitted
    ]
    return _Design(mixing, bounds)


def _clipped_loss(
    theta: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    # logit = a + max(z @ v, 0): the log-odds follow the rule score, which is clipped at 0.
    raw = z @ theta[1:]
    above = raw > 0
    eta = theta[0] + np.where(above, raw, 0.0)
    p = expit(eta)
    loss = np.sum(w * (np.logaddexp(0.0, eta) - y * eta)) + 0.5 * l2 * theta[1:] @ theta[1:]
    resid = w * (p - y)
    grad = np.concatenate([[resid.sum()], z.T @ (resid * above) + l2 * theta[1:]])
    return loss, grad


def _fit_weights(
    units: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    design: _Design,
    l2: float,
    clip_aware: bool = False,
) -> np.ndarray:
    """Coefficients per unit of each fitted signal (the engagement log-odds)."""
    x = units @ design.mixing
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    center = x.mean(axis=0)
    start = np.zeros(x.shape[1] + 1)
    fit = minimize(
        _loss,
        start,
        args=((x - center) / scale, y, w, l2),
        jac=True,
        method="L-BFGS-B",
        bounds=[(None, None), *design.bounds],
    )
    theta = fit.x
    if clip_aware:
        # Start from the linear fit (its intercept moved back to the uncentred scale).
        start = np.concatenate([[theta[0] - (center / scale) @ theta[1:]], theta[1:]])
        fit = minimize(
            _clipped_loss,
            start,
            args=(x / scale, y, w, l2),
            jac=True,
            method="L-BFGS-B",
            bounds=[(None, None), *design.bounds],
        )
        theta = fit.x
    return design.mixing @ (theta[1:] / scale)


@dataclass
class PointFit:
    """New points of the estimable signals, their intervals and the fitted weights."""

    points: dict[str, int]
    intervals: dict[str, tuple[float, float]]
    weights: dict[str, float]
    scale_factor: float
    #: Signals that could not be estimated: True when every row had them, False when none.
    unvarying: dict[str, bool] = field(default_factory=dict)


def _bootstrap(
    u: np.ndarray, y: np.ndarray, groups: np.ndarray, rng: np.random.Generator,
    design: _Design, l2: float, n_bootstrap: int, *, clip_aware: bool,
) -> np.ndarray:  # fmt: skip
    """Weights refitted on ``n_bootstrap`` resamples of the groups: (n_bootstrap, signals)."""
    draws = [
        _fit_weights(u, y, _bootstrap_weights(groups, rng), design, l2, clip_aware=clip_aware)
        for _ in range(n_bootstrap)
    ]
    return np.array(draws).reshape(n_bootstrap, u.shape[1])


def _signs(
    rules: RuleSet, fitted: list[str], draws: np.ndarray, confidence: float
) -> dict[str, float]:
    """Old sign of each signal, flipped only where the data clearly says the opposite."""
    if len(draws) < 2 or not fitted:
        return {name: float(np.sign(rules.signal(name).points)) for name in fitted}
    # Bonferroni: among many signals, one looks "significant" by chance.
    critical = norm.ppf(1.0 - (1.0 - confidence) / (2.0 * len(fitted)))
    z_scores = draws.mean(axis=0) / np.maximum(draws.std(axis=0), 1e-12)
    signs: dict[str, float] = {}
    for name, z in zip(fitted, z_scores, strict=True):
        old_sign = float(np.sign(rules.signal(name).points))
        signs[name] = -old_sign if old_sign * z < -critical else old_sign
    return signs


def fit_points(
    rules: RuleSet, units: pd.DataFrame, y: np.ndarray, groups: np.ndarray,
    rng: np.random.Generator, *, n_bootstrap: int, l2: float, confidence: float,
) -> PointFit:  # fmt: skip
    """Sign test, constrained clip-aware fit, scaling to points, bootstrap intervals."""
    varying = units.nunique() > 1
    fitted = [name for name in units.columns if varying[name]]
    u = units[fitted].to_numpy()
    groups = pd.factorize(groups)[0]  # contiguous codes over the training rows only
    free = _Design(np.eye(len(fitted)), [(None, None)] * len(fitted))
    # The sign test uses a weak ridge: a strong one moves weight between correlated
    # signals (form errors and form submissions) and would flip signs on its own.
    weak = min(l2, DEFAULT_L2)
    draws = _bootstrap(u, y, groups, rng, free, weak, n_bootstrap, clip_aware=False)
    design = _design(rules, fitted, _signs(rules, fitted, draws, confidence))
    weights = _fit_weights(u, y, np.ones(len(y)), design, l2, clip_aware=True)
    factor = _scale_factor(rules, fitted, weights, units)
    points = {name: int(round(factor * weights[i])) for i, name in enumerate(fitted)}
    boot = _bootstrap(u, y, groups, rng, design, l2, n_bootstrap, clip_aware=True) * factor
    tail = (1.0 - confidence) / 2.0
    bounds = np.full((2, len(fitted)), np.nan)
    if n_bootstrap:
        bounds = np.quantile(boot, [tail, 1 - tail], axis=0)
    return PointFit(
        points=_enforce_excludes(rules, points),
        intervals={n: (float(bounds[0, i]), float(bounds[1, i])) for i, n in enumerate(fitted)},
        weights={n: float(weights[i]) for i, n in enumerate(fitted)},
        scale_factor=factor,
        unvarying={n: bool(units[n].iloc[0] > 0) for n in units.columns if n not in fitted},
    )


def _max_positive(rules: RuleSet, points: dict[str, float], units: pd.DataFrame) -> float:
    """Most points a row can collect from positive signals (excluded ones do not stack)."""
    total = 0.0
    for name, value in points.items():
        signal = rules.signal(name)
        excluded_by = [s for s in rules.signals if name in s.excludes and s.name in points]
        if value <= 0 or any(points[s.name] >= value for s in excluded_by):
            continue
        most_units = signal.max_units_or_one
        if not np.isfinite(most_units):  # an uncapped count: its largest value in the data
            most_units = float(units[name].max())
        total += value * most_units
    return total


def _scale_factor(
    rules: RuleSet, fitted: list[str], weights: np.ndarray, units: pd.DataFrame
) -> float:
    old_points = {n: float(rules.signal(n).points) for n in fitted}
    new_points = dict(zip(fitted, weights.tolist(), strict=True))
    old_top, new_top = (
        _max_positive(rules, old_points, units),
        _max_positive(rules, new_points, units),
    )
    if old_top > 0 and new_top > 0:
        return old_top / new_top
    # No positive signal on one side: match the largest single weight instead.
    old_abs = max((abs(v) for v in old_points.values()), default=0.0)
    new_abs = max((abs(v) for v in new_points.values()), default=0.0)
    return old_abs / new_abs if new_abs > 0 else 0.0


def _enforce_excludes(rules: RuleSet, points: dict[str, int]) -> dict[str, int]:
    """Make every excluding signal worth at least as much as what it excludes (after rounding)."""
    out = dict(points)
    for signal in rules.signals:
        for other in signal.excludes:
            top = out.get(signal.name, signal.points)
            low = out.get(other, rules.signal(other).points)
            if top * low < 0:
                out[other] = 0
            elif abs(low) > abs(top):
                out[other] = top
    return out


def matched_bands(
    rules: RuleSet, old_scores: np.ndarray, new_scores: np.ndarray
) -> tuple[Band, ...]:
    """New band minimums giving the same share of rows per band as the old ones."""
    upper = [b for b in rules.bands if b.min > 0]  # highest band first
    wanted = [float(np.mean(old_scores >= band.min)) for band in upper]
    return _bands_at_shares(rules, new_scores, wanted)


def share_bands(rules: RuleSet, scores: np.ndarray, shares: list[float]) -> tuple[Band, ...]:
    """Band minimums putting ``shares`` of the rows in each band above the lowest.

    Args:
        rules: Rules whose band names (highest first) are kept.
        scores: Scores of the rows.
        shares: Share of rows per band, highest band first; bands beyond them share
            what is left equally.

    Returns:
        The bands, highest first, the lowest starting at 0.
    """
    n_upper = len(rules.bands) - 1
    given = list(shares[:n_upper])
    rest = max(0.0, 1.0 - sum(given)) / (n_upper - len(given) + 1)
    given += [rest] * (n_upper - len(given))
    return _bands_at_shares(rules, scores, np.cumsum(given).tolist())


def _bands_at_shares(rules: RuleSet, scores: np.ndarray, wanted: list[float]) -> tuple[Band, ...]:
    """Band minimums whose share of rows at or above them is nearest ``wanted``."""
    upper = rules.bands[:-1]  # highest band first
    chosen: list[Band] = []
    ceiling = rules.max_score
    candidates_scores = np.sort(scores)
    for k, (band, share) in enumerate(zip(upper, wanted, strict=True)):
        floor = len(upper) - k  # leave one score per lower band
        thresholds = np.arange(floor, ceiling + 1)
        shares = 1.0 - np.searchsorted(candidates_scores, thresholds, side="left") / len(scores)
        best = int(thresholds[np.argmin(np.abs(shares - share))])
        chosen.append(Band(band.name, best))
        ceiling = best - 1
    return (*chosen, rules.bands[-1])


def bands_by_rank_share(
    engagement: np.ndarray, shares: dict[str, float], rules: RuleSet
) -> np.ndarray:
    """Band per row from ranks, giving each band (lowest first) its share of rows."""
    order = np.argsort(engagement, kind="stable")
    bands = np.empty(len(engagement), dtype="object")
    start = 0
    names = [b.name for b in rules.bands][::-1]
    for i, name in enumerate(names):
        stop = (
            len(order) if i == len(names) - 1 else start + round(shares.get(name, 0.0) * len(order))
        )
        bands[order[start:stop]] = name
        start = stop
    return bands
