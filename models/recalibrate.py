"""Recalibrate a rule score: learn new points and bands from labelled snapshots.

:func:`recalibrate` splits by time, learns, compares on the holdout and returns a
:class:`RecalibrationResult` (side-by-side table, Markdown report, new rule file,
metrics; MLflow logging is the caller's, through ``models.tracking``).
:func:`fit_rules` is its learning half alone, for callers that hold data out themselves.

Method (every step is deterministic for a given seed):

1. **Temporal holdout.** The latest ``holdout_fraction_by_time`` of the distinct cutoffs
   (at least one) are held out; the rest train. With ``label_horizon_days``, training
   cutoffs whose label window ends after the first holdout cutoff are dropped too, so
   no training label looks into the holdout period.
2. **Model.** An L2-regularised logistic regression of the *engagement* outcome
   ("stayed" for churn, "converted" for conversion) on the signal units of the rule
   file (same signals, same caps in units). Units are standardised before the penalty
   (``l2`` is the ridge strength per standardised coefficient; the intercept is free).
   Unless given, ``l2`` is picked from :data:`L2_GRID` by an inner temporal split of
   the training cutoffs (the latest quarter validates): the strength whose clipped
   score ranks the validation cutoffs best (ROC AUC), the stronger one on near-ties.
   The final fit is *clip-aware*: the rule score has no base points and is clipped at
   0, so every row whose points sum below 0 ties at 0. Starting from the linear fit,
   the log-odds are modelled as ``a + max(units @ v, 0)``, what the clipped score can
   express. (On the known-weights simulation a purely linear fit recovered the signal
   order but ranked slightly worse than the default rules, as more rows fell to 0.)
3. **Signs.** A first bootstrap of the unconstrained fit (with a weak ridge,
   ``min(l2, 1)``) gives each coefficient a standard error. A signal keeps the sign of
   its old points unless its coefficient is on the other side of 0 by more than the
   Bonferroni-corrected critical value (``confidence`` shared over all signals: z > 2.73
   for 8 signals at 95%): only then does the sign flip. Signals worth 0 points get no
   sign constraint. The final fit bounds every coefficient to its sign (0 allowed). A
   signal that ``excludes`` another (daily over weekly login) is fitted as "the other's
   points plus a non-negative extra", so it stays worth at least as much.
4. **Points.** Coefficients are multiplied by one factor so that the most points
   any row can collect from positive signals equals the old rules' maximum (150 for
   the engagement rules), then rounded to whole points. Signals nobody (or everybody)
   had in the training rows cannot be estimated and keep their old points.
5. **Uncertainty.** A second bootstrap of the constrained fit, resampling entities
   (all of an entity's snapshots together) when ``entity_id`` is present, gives the
   interval of each new point value on the same scale.
6. **Bands.** New thresholds put the same share of training rows in each band as the
   old rules did, so team workloads stay the same and only who lands where changes.
7. **Holdout comparison.** ROC AUC, PR AUC, top-decile lift and per-band outcome rates
   of the old rules, the new rules and optionally a model's scores (banded with the
   new rules' band shares), all at predicting the target outcome.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from models.evaluate import evaluate, flat_metrics
from models.rules import (
    Band,
    RuleSet,
    assign_bands,
    atomic_write_text,
    load_rules,
    save_rules,
    score_points,
    signal_units,
)

logger = logging.getLogger(__name__)

Target = Literal["churn", "conversion"]
#: Ridge strengths tried when ``l2`` is not given; used without a validation split.
L2_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
DEFAULT_L2 = 1.0
OUTCOME_VERB = {"churn": "churned", "conversion": "converted"}


@dataclass
class _Design:
    """Signal units re-expressed so that bounds encode signs and "excludes" orderings."""

    mixing: np.ndarray  # points = mixing @ theta
    bounds: list[tuple[float | None, float | None]]


@dataclass
class RecalibrationResult:
    """Everything a recalibration produced (the lead logs it through ``models.tracking``).

    Attributes:
        target: ``churn`` or ``conversion``.
        old_rules: The rules as given.
        rules: The recalibrated rules (same signals and caps, new points and bands).
        table: One row per signal: ``signal``, ``description``, ``old_points``,
            ``new_points``, ``ci_low``, ``ci_high``, ``status`` (kept, changed, flipped,
            zeroed, not estimable), holdout ``n_with_signal``, ``rate_with``,
            ``rate_without`` and a plain-English ``evidence`` sentence.
        metrics: ``{"old_rules" | "recalibrated_rules" | "model": evaluate(...) dict}``
            on the holdout, for the target outcome.
        split: Training and holdout cutoffs and row counts.
        settings: The parameters used (seed, bootstrap size, ridge strength, ...).
    """

    target: str
    old_rules: RuleSet
    rules: RuleSet
    table: pd.DataFrame
    metrics: dict[str, dict[str, Any]]
    split: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def flat_metrics(self) -> dict[str, float]:
        """Holdout metrics as flat ``{name: float}`` (e.g. ``old_rules_roc_auc``)."""
        out: dict[str, float] = {}
        for name, metrics in self.metrics.items():
            out |= flat_metrics(metrics, prefix=f"{name}_")
        return out

    def to_markdown(self) -> str:
        """The report for marketers: what changed, by how much, why, and does it help."""
        return _render_markdown(self)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the table (CSV), report (Markdown), new rule file (YAML) and metrics (JSON).

        Args:
            out_dir: Folder to write to (created if needed); every file is written
                atomically.

        Returns:
            ``{"table" | "report" | "rules" | "metrics": path}``.
        """
        folder = Path(out_dir)
        stem = f"recalibration_{self.old_rules.name}_{self.target}"
        paths = {
            "table": folder / f"{stem}.csv",
            "report": folder / f"{stem}.md",
            "rules": folder / f"{self.old_rules.name}_recalibrated_{self.target}.yaml",
            "metrics": folder / f"{stem}_metrics.json",
        }
        atomic_write_text(paths["table"], self.table.to_csv(index=False))
        atomic_write_text(paths["report"], self.to_markdown())
        save_rules(self.rules, paths["rules"])
        payload = {
            "target": self.target,
            "metrics": self.metrics,
            "split": self.split,
            "settings": self.settings,
        }
        atomic_write_text(paths["metrics"], json.dumps(payload, indent=2, default=_json_default))
        return paths


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON.")


def recalibrate(
    snapshots: pd.DataFrame,
    labels: pd.Series | np.ndarray,
    as_of: pd.Series | np.ndarray,
    rules: str | Path | RuleSet = "engagement",
    target: Target = "churn",
    *,
    seed: int = 42,
    holdout_fraction_by_time: float = 0.25,
    n_bootstrap: int = 200,
    l2: float | None = None,
    confidence: float = 0.95,
    label_horizon_days: int | None = None,
    model_scores: pd.Series | np.ndarray | None = None,
) -> RecalibrationResult:
    """Learn new points and band thresholds for a rule file from point-in-time snapshots.

    See the module docstring for the method.

    Args:
        snapshots: Stacked feature tables (one row per entity and cutoff) with every
            column the rules read; ``entity_id``, when present, groups the bootstrap.
        labels: Target outcome per row (1 = churned / converted), aligned by position.
        as_of: Cutoff of each row, aligned by position.
        rules: Built-in rule file name, path, or RuleSet to recalibrate.
        target: ``churn`` (engagement = not churned) or ``conversion``.
        seed: Seed of the bootstraps.
        holdout_fraction_by_time: Share of the latest cutoffs held out for evaluation.
        n_bootstrap: Bootstrap replicates (each of the two bootstraps).
        l2: Ridge strength on standardised coefficients; ``None`` picks it from
            :data:`L2_GRID` on the latest training cutoffs (see the module docstring).
        confidence: Coverage of the intervals (and of the sign-flip test).
        label_horizon_days: Label window; training cutoffs whose window reaches the
            holdout are dropped.
        model_scores: Optional model probability of the target per row, aligned by
            position, compared on the holdout.

    Returns:
        The recalibration result.

    Raises:
        ValueError: If the inputs are inconsistent or too small to split by time.
    """
    if target not in OUTCOME_VERB:
        raise ValueError(f"Target must be 'churn' or 'conversion', not {target!r}.")
    old = load_rules(rules)
    frame = snapshots.reset_index(drop=True)
    y = _checked_labels(labels, len(frame))
    cutoffs = pd.to_datetime(pd.Series(np.asarray(as_of)), utc=True)
    if len(cutoffs) != len(frame):
        raise ValueError(f"as_of has {len(cutoffs)} values for {len(frame)} snapshot rows.")
    train, holdout, split = _time_split(cutoffs, holdout_fraction_by_time, label_horizon_days)
    for part, mask in (("training", train), ("holdout", holdout)):
        if y[mask].min() == y[mask].max():
            raise ValueError(
                f"The {part} rows ({_dates(split[f'{part}_cutoffs'])}) all have label "
                f"{int(y[mask][0])}; recalibration needs both outcomes in each part."
            )
    units = signal_units(old, frame)
    engaged = 1.0 - y if target == "churn" else y
    learned = _learn(
        old, units[train], engaged[train], cutoffs[train], _groups(frame)[train],
        seed=seed, n_bootstrap=n_bootstrap, l2=l2, confidence=confidence,
        label_horizon_days=label_horizon_days,
    )  # fmt: skip
    fit, l2 = learned.fit, learned.l2
    new = _describe(learned.rules, old, target, split)
    metrics = _holdout_metrics(old, new, units[holdout], y[holdout], target, model_scores, holdout)
    table = _signal_table(old, new, fit, units[holdout], y[holdout], target, confidence)
    settings = {
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "l2": l2,
        "l2_validation_auc": {str(k): v for k, v in learned.l2_aucs.items()},
        "confidence": confidence,
        "holdout_fraction_by_time": holdout_fraction_by_time,
        "label_horizon_days": label_horizon_days,
        "rules_source": old.source,
    }
    logger.info("Recalibrated %s rules for %s: %s", old.name, target, fit.points)
    return RecalibrationResult(target, old, new, table, metrics, split, settings)


def fit_rules(
    features: pd.DataFrame,
    labels: pd.Series | np.ndarray,
    rules: str | Path | RuleSet = "engagement",
    target: Target = "churn",
    *,
    as_of: pd.Series | np.ndarray | None = None,
    seed: int = 42,
    n_bootstrap: int = 50,
    l2: float | None = None,
    confidence: float = 0.95,
    label_horizon_days: int | None = None,
) -> RuleSet:
    """New points and bands learned on all the rows given: no holdout, no report.

    The training half of :func:`recalibrate`, for callers that hold data out
    themselves (e.g. ``models.train`` comparing a refitted rule score with the model:
    ``RuleScore(fit_rules(x_train, y_train, ...))``).

    Args:
        features: Feature rows with every column the rules read.
        labels: Target outcome per row (1 = churned / converted), aligned by position.
        rules: Built-in rule file name, path, or RuleSet.
        target: ``churn`` or ``conversion``.
        as_of: Cutoff per row; needed to pick ``l2`` by time (else ``l2`` defaults to 1).
        seed: Seed of the sign-test bootstrap.
        n_bootstrap: Replicates of the sign test (0: signs never flip).
        l2: Ridge strength; ``None`` picks it on the latest cutoffs.
        confidence: Confidence of the sign test.
        label_horizon_days: Label window, for the inner time split.

    Returns:
        The rules with new points and band thresholds (same signals and caps).
    """
    if target not in OUTCOME_VERB:
        raise ValueError(f"Target must be 'churn' or 'conversion', not {target!r}.")
    old = load_rules(rules)
    frame = features.reset_index(drop=True)
    y = _checked_labels(labels, len(frame))
    if y.min() == y.max():
        raise ValueError(f"All {len(y)} labels are {int(y[0])}; fitting needs both outcomes.")
    moments = pd.Series(pd.Timestamp(0, tz="UTC"), index=frame.index) if as_of is None else (
        pd.to_datetime(pd.Series(np.asarray(as_of)), utc=True)
    )  # fmt: skip
    engaged = 1.0 - y if target == "churn" else y
    return _learn(
        old, signal_units(old, frame), engaged, moments, _groups(frame), seed=seed,
        n_bootstrap=n_bootstrap, l2=l2, confidence=confidence,
        label_horizon_days=label_horizon_days,
    ).rules  # fmt: skip


@dataclass
class _Learned:
    rules: RuleSet
    fit: _PointFit
    l2: float
    l2_aucs: dict[float, float]


def _learn(
    old: RuleSet, units: pd.DataFrame, engaged: np.ndarray, cutoffs: pd.Series,
    groups: np.ndarray, *, seed: int, n_bootstrap: int, l2: float | None, confidence: float,
    label_horizon_days: int | None,
) -> _Learned:  # fmt: skip
    """Points (signs, ridge, bootstrap) and matched bands from training rows."""
    aucs: dict[float, float] = {}
    # Hundreds of small fits: BLAS threads only add spin-waiting (6x slower on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        if l2 is None:
            l2, aucs = _choose_l2(old, units, engaged, cutoffs, label_horizon_days)
        fit = _fit_points(
            old, units, engaged, groups, np.random.default_rng(seed),
            n_bootstrap=n_bootstrap, l2=l2, confidence=confidence,
        )  # fmt: skip
    interim = old.with_points(fit.points)
    bands = _matched_bands(old, score_points(old, units), score_points(interim, units))
    return _Learned(old.with_points(fit.points, bands), fit, l2, aucs)


def _checked_labels(labels: object, n_rows: int) -> np.ndarray:
    values = pd.to_numeric(pd.Series(np.asarray(labels)), errors="coerce").to_numpy("float64")
    if values.size != n_rows:
        raise ValueError(f"labels has {values.size} values for {n_rows} snapshot rows.")
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        rows = np.flatnonzero(bad)[:3].tolist()
        raise ValueError(f"labels must be 0 or 1; rows {rows} hold {values[bad][:3].tolist()}.")
    return values


def _groups(frame: pd.DataFrame) -> np.ndarray:
    if "entity_id" in frame.columns:
        return pd.factorize(frame["entity_id"], sort=True)[0]
    return np.arange(len(frame))


def _time_split(
    cutoffs: pd.Series, holdout_fraction: float, horizon_days: int | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
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


def _choose_l2(
    rules: RuleSet, units: pd.DataFrame, y: np.ndarray, cutoffs: pd.Series,
    horizon_days: int | None,
) -> tuple[float, dict[float, float]]:  # fmt: skip
    """Ridge strength whose clipped score ranks the latest training cutoffs best."""
    try:
        inner, valid, _ = _time_split(cutoffs.reset_index(drop=True), 0.25, horizon_days)
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
class _PointFit:
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
    if len(draws) < 2:
        return {name: float(np.sign(rules.signal(name).points)) for name in fitted}
    # Bonferroni: among many signals, one looks "significant" by chance.
    critical = norm.ppf(1.0 - (1.0 - confidence) / (2.0 * len(fitted)))
    z_scores = draws.mean(axis=0) / np.maximum(draws.std(axis=0), 1e-12)
    signs: dict[str, float] = {}
    for name, z in zip(fitted, z_scores, strict=True):
        old_sign = float(np.sign(rules.signal(name).points))
        signs[name] = -old_sign if old_sign * z < -critical else old_sign
    return signs


def _fit_points(
    rules: RuleSet, units: pd.DataFrame, y: np.ndarray, groups: np.ndarray,
    rng: np.random.Generator, *, n_bootstrap: int, l2: float, confidence: float,
) -> _PointFit:  # fmt: skip
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
    return _PointFit(
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


def _matched_bands(
    rules: RuleSet, old_scores: np.ndarray, new_scores: np.ndarray
) -> tuple[Band, ...]:
    """New band minimums giving the same share of rows per band as the old ones."""
    upper = [b for b in rules.bands if b.min > 0]  # highest band first
    chosen: list[Band] = []
    ceiling = rules.max_score
    candidates_scores = np.sort(new_scores)
    for k, band in enumerate(upper):
        wanted = float(np.mean(old_scores >= band.min))
        floor = len(upper) - k  # leave one score per lower band
        thresholds = np.arange(floor, ceiling + 1)
        shares = 1.0 - np.searchsorted(candidates_scores, thresholds, side="left") / len(new_scores)
        best = int(thresholds[np.argmin(np.abs(shares - wanted))])
        chosen.append(Band(band.name, best))
        ceiling = best - 1
    return (*chosen, rules.bands[-1])


def _describe(new: RuleSet, old: RuleSet, target: str, split: dict[str, Any]) -> RuleSet:
    note = (
        f"Points recalibrated against {target} on {split['n_training']} snapshots "
        f"(cutoffs {_dates(split['training_cutoffs'])})."
    )
    return replace(new, description=f"{old.description} {note}".strip(), source="<recalibrated>")


def _bands_by_share(engagement: np.ndarray, shares: dict[str, float], rules: RuleSet) -> np.ndarray:
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


def _holdout_metrics(
    old: RuleSet,
    new: RuleSet,
    units: pd.DataFrame,
    y: np.ndarray,
    target: str,
    model_scores: object,
    holdout: np.ndarray,
) -> dict[str, dict[str, Any]]:
    # Rule points measure engagement; churn risk is their opposite.
    direction = -1.0 if target == "churn" else 1.0
    metrics: dict[str, dict[str, Any]] = {}
    for name, rules in (("old_rules", old), ("recalibrated_rules", new)):
        points = score_points(rules, units)
        bands = assign_bands(rules, points)
        metrics[name] = evaluate(y, direction * points, bands, probabilities=False)
    if model_scores is not None:
        scores = np.asarray(model_scores, dtype="float64").ravel()
        if scores.size != holdout.size:
            raise ValueError(f"model_scores has {scores.size} values for {holdout.size} rows.")
        scores = scores[holdout]
        new_bands = assign_bands(new, score_points(new, units))
        shares = pd.Series(new_bands).value_counts(normalize=True).to_dict()
        bands = _bands_by_share(direction * scores, shares, new)
        is_probability = bool(np.nanmin(scores) >= 0 and np.nanmax(scores) <= 1)
        metrics["model"] = evaluate(y, scores, bands, probabilities=is_probability)
    return metrics


def _label(description: str, name: str) -> str:
    """Short name of a signal: its description up to the colon, else its name."""
    head, colon, _ = description.partition(":")
    if colon and 0 < len(head.strip()) <= 40:
        return head.strip()
    return name.replace("_", " ").capitalize()


def _status(fit: _PointFit, name: str, old: int, new: int) -> str:
    if name not in fit.points:
        return "not estimable"
    if new * old < 0:
        return "flipped"
    if new == 0 and old != 0:
        return "zeroed"
    return "kept" if new == old else "changed"


def _signal_table(
    old: RuleSet, new: RuleSet, fit: _PointFit, units: pd.DataFrame, y: np.ndarray,
    target: str, confidence: float,
) -> pd.DataFrame:  # fmt: skip
    """One row per signal: old and new points, interval, holdout rates, evidence sentence."""
    noun, verb = old.entity_noun, OUTCOME_VERB[target]
    rows = []
    for signal in old.signals:
        new_points = new.signal(signal.name).points
        has = units[signal.name].to_numpy() > 0
        rate_with = float(y[has].mean()) if has.any() else float("nan")
        rate_without = float(y[~has].mean()) if (~has).any() else float("nan")
        low, high = fit.intervals.get(signal.name, (float("nan"), float("nan")))
        status = _status(fit, signal.name, signal.points, new_points)
        per = ""
        if signal.kind == "per_unit":
            per = f" per {signal.unit_label or f'step of {signal.unit:g}'}"
        label = _label(signal.description, signal.name)
        sentence = f"{label}: {signal.points} -> {new_points} points{per}."
        if has.any() and (~has).any():
            sentence += (
                f" {noun.capitalize()} with this signal {verb} {rate_with:.1%} of the time "
                f"against {rate_without:.1%} for the rest (holdout: {int(has.sum()):,} of "
                f"{has.size:,} {noun} scored),"
            )
        else:
            sentence += f" In the holdout {'all' if has.all() else 'no'} {noun} had this signal,"
        if status == "not estimable":
            who = f"every one of the {noun}" if fit.unvarying.get(signal.name) else f"no {noun}"
            sentence += (
                f" and in the training data {who} had it, so the data cannot judge it and its "
                "points are kept."
            )
        else:
            sentence += " " + _verdict(status, signal.points, new_points, (low, high), confidence)
        rows.append({
            "signal": signal.name, "description": signal.description,
            "old_points": signal.points, "new_points": new_points,
            "ci_low": round(low, 1), "ci_high": round(high, 1), "status": status,
            "n_with_signal": int(has.sum()), "rate_with": rate_with,
            "rate_without": rate_without, "evidence": sentence,
        })  # fmt: skip
    return pd.DataFrame(rows)


def _verdict(
    status: str, old: int, new: int, interval: tuple[float, float], confidence: float
) -> str:
    """Why the points moved, in one clause (the sentence before gives the rates)."""
    if status == "flipped":
        text = "and the data clearly contradicts the old rule's direction, so it changes sign."
    elif status == "zeroed":
        text = "but with the other signals counted it makes no clear difference: it now scores 0."
    elif status == "kept":
        text = "which agrees with the old rule, so its points stay."
    else:
        more = new > old
        if old > 0:
            text = f"so it is worth {'more' if more else 'less'} than the old rule said."
        elif old < 0:
            cost = "costs fewer points" if more else "should cost more points"
            text = f"so it {cost} than the old rule said."
        else:
            text = f"so it now {'adds' if more else 'takes off'} points."
    low, high = interval
    if np.isfinite(low) and low <= 0 <= high and new != 0:
        text += (
            f" Its likely range ({low:.0f} to {high:.0f}, {confidence:.0%}) includes 0: "
            "treat this one with caution."
        )
    return text


def _dates(dates: list[str]) -> str:
    return dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}, {len(dates)} dates"


def _fmt(value: object, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None or not np.isfinite(float(value)) else pattern.format(value)


def _band_ranges(rules: RuleSet) -> dict[str, str]:
    out, top = {}, rules.max_score
    for band in rules.bands:
        out[band.name] = f"{band.min}-{top}"
        top = band.min - 1
    return out


def _render_markdown(result: RecalibrationResult) -> str:
    old, new, split = result.old_rules, result.rules, result.split
    noun, verb = old.entity_noun, OUTCOME_VERB[result.target]
    riskiest = "lowest-scoring" if result.target == "churn" else "highest-scoring"
    lines = [
        f"# Recalibrated {old.name} rules (target: {result.target})",
        "",
        f"The points below were learned from {split['n_training']:,} snapshots of {noun} "
        f"(scoring dates {_dates(split['training_cutoffs'])}) and then checked on the "
        f"{split['n_holdout']:,} most recent snapshots (scoring dates "
        f"{_dates(split['holdout_cutoffs'])}), which the learning never saw. The score still adds "
        f"up the points of each signal and stays between 0 and {new.max_score}; what each "
        "signal measures and how many units it can count are unchanged.",
        "",
        "## What changed and why",
        "",
    ]
    lines += [f"- {row.evidence}" for row in result.table.itertuples()]
    lines += [
        "",
        "## Side by side",
        "",
        "| Signal | Old points | New points | Likely range | Status |",
        "|---|---:|---:|---|---|",
    ]
    for row in result.table.itertuples():
        likely = "n/a" if np.isnan(row.ci_low) else f"{row.ci_low:.0f} to {row.ci_high:.0f}"
        label = _label(row.description, row.signal)
        lines.append(f"| {label} | {row.old_points} | {row.new_points} | {likely} | {row.status} |")
    confidence = result.settings.get("confidence", 0.95)
    lines += [
        "",
        f"Likely range: where {confidence:.0%} of {result.settings.get('n_bootstrap')} "
        f"re-fits on resampled {noun} put the points.",
        "",
        "## Bands",
        "",
        "| Band | Old scores | New scores |",
        "|---|---|---|",
    ]
    old_ranges, new_ranges = _band_ranges(old), _band_ranges(new)
    lines += [f"| {b.name} | {old_ranges[b.name]} | {new_ranges[b.name]} |" for b in old.bands]
    lines += [
        "",
        f"The new thresholds put the same share of {noun} in each band as the old ones "
        "did (on the training snapshots): the bands stay the same size, but who is in "
        "them changes.",
        "",
        "## Does it work better? (holdout)",
        "",
    ]
    columns = [("old_rules", "Old rules"), ("recalibrated_rules", "New rules"), ("model", "Model")]
    columns = [(key, title) for key, title in columns if key in result.metrics]
    lines += [
        "| Measure | " + " | ".join(t for _, t in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    m = result.metrics
    measures = [
        ("roc_auc", f"Ranks who {verb} (ROC AUC; 0.5 = chance, 1 = perfect)", "{:.3f}"),
        ("pr_auc", f"Precision-recall AUC (chance = the {verb} rate)", "{:.3f}"),
        ("lift_top_decile", f"Top-10% lift: {verb} rate of the 10% {riskiest} / average", "{:.2f}"),
    ]
    for key, title, pattern in measures:
        lines.append(
            f"| {title} | " + " | ".join(_fmt(m[c].get(key), pattern) for c, _ in columns) + " |"
        )
    for band in old.bands:
        cells = []
        for c, _ in columns:
            stats = m[c].get("band_rates", {}).get(band.name)
            cells.append(f"{stats['rate']:.1%} of {int(stats['n'])}" if stats else "none")
        lines.append(f"| Band {band.name}: share who {verb} | " + " | ".join(cells) + " |")
    if "model" in m:
        lines += ["", "The model's bands hold as many " + noun + " as the new rules' bands, "
                  "taken in the model's order, so the rates compare like with like."]  # fmt: skip
    base = m["old_rules"].get("base_rate", float("nan"))
    old_auc, new_auc = m["old_rules"]["roc_auc"], m["recalibrated_rules"]["roc_auc"]
    better = "better than" if new_auc > old_auc else "no better than"
    lines += [
        "",
        f"Overall, {base:.1%} of the holdout {noun} {verb}. The new rules rank {noun} "
        f"{better} the old ones (ROC AUC {_fmt(new_auc)} against {_fmt(old_auc)}).",
        "",
        "## How this was computed",
        "",
        "A logistic regression with a mild penalty (ridge) learned how much each signal "
        f"changes the odds that one of the {noun} is engaged; a signal keeps the direction "
        "of its old points unless the data clearly says otherwise (a large effect in "
        "the other direction, allowing for the number of signals tested); the strength "
        "of the penalty was chosen on the most recent training dates. Because the "
        "score cannot go below 0, the fit takes that floor into account. The learned "
        "weights were scaled so that the highest possible score from positive signals is "
        "the same as before, and rounded to whole points. Full method: "
        "`models/recalibrate.py`.",
        "",
    ]
    return "\n".join(lines)
