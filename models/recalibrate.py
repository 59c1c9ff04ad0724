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
from threadpoolctl import threadpool_limits

from models.evaluate import evaluate, flat_metrics
from models.point_fit import (
    L2_GRID,
    PointFit,
    bands_by_rank_share,
    choose_l2,
    fit_points,
    holdout_by_time,
    matched_bands,
)
from models.recalibration_report import OUTCOME_VERB, format_dates, render_markdown, signal_table
from models.rules import (
    RuleSet,
    assign_bands,
    atomic_write_text,
    load_rules,
    save_rules,
    score_points,
    signal_units,
)
from models.starter_rules import matches_data, starter_rules

logger = logging.getLogger(__name__)

__all__ = ["L2_GRID", "RecalibrationResult", "fit_rules", "recalibrate"]

Target = Literal["churn", "conversion"]


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
        starter = self.settings.get("starter_rules")
        return (f"> {starter}\n\n" if starter else "") + render_markdown(
            self.target, self.old_rules, self.rules, self.table, self.metrics, self.split,
            self.settings,
        )  # fmt: skip

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
    train, holdout, split = holdout_by_time(cutoffs, holdout_fraction_by_time, label_horizon_days)
    for part, mask in (("training", train), ("holdout", holdout)):
        if y[mask].min() == y[mask].max():
            raise ValueError(
                f"The {part} rows ({format_dates(split[f'{part}_cutoffs'])}) all have label "
                f"{int(y[mask][0])}; recalibration needs both outcomes in each part."
            )
    old, starter = _fitting_rules(old, frame[train], y[train], target)
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
    table = signal_table(old, new, fit, units[holdout], y[holdout], target, confidence)
    settings = {
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "l2": l2,
        "l2_validation_auc": {str(k): v for k, v in learned.l2_aucs.items()},
        "confidence": confidence,
        "holdout_fraction_by_time": holdout_fraction_by_time,
        "label_horizon_days": label_horizon_days,
        "rules_source": old.source,
        "starter_rules": starter,
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
    frame = features.reset_index(drop=True)
    y = _checked_labels(labels, len(frame))
    if y.min() == y.max():
        raise ValueError(f"All {len(y)} labels are {int(y[0])}; fitting needs both outcomes.")
    old, _ = _fitting_rules(load_rules(rules), frame, y, target)
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
    fit: PointFit
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
            l2, aucs = choose_l2(old, units, engaged, cutoffs, label_horizon_days)
        fit = fit_points(
            old, units, engaged, groups, np.random.default_rng(seed),
            n_bootstrap=n_bootstrap, l2=l2, confidence=confidence,
        )  # fmt: skip
    interim = old.with_points(fit.points)
    bands = matched_bands(old, score_points(old, units), score_points(interim, units))
    return _Learned(old.with_points(fit.points, bands), fit, l2, aucs)


def _fitting_rules(
    rules: RuleSet, frame: pd.DataFrame, y: np.ndarray, target: str
) -> tuple[RuleSet, str]:
    """The rules, or a starter set from the data when none of their signals occurs in it."""
    if matches_data(rules, frame):
        return rules, ""
    starter = starter_rules(frame, 1.0 - y if target == "churn" else y, rules)
    logger.warning(starter.sentence())
    return starter.rules, starter.sentence()


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


def _describe(new: RuleSet, old: RuleSet, target: str, split: dict[str, Any]) -> RuleSet:
    note = (
        f"Points recalibrated against {target} on {split['n_training']} snapshots "
        f"(cutoffs {format_dates(split['training_cutoffs'])})."
    )
    return replace(new, description=f"{old.description} {note}".strip(), source="<recalibrated>")


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
        bands = bands_by_rank_share(direction * scores, shares, new)
        is_probability = bool(np.nanmin(scores) >= 0 and np.nanmax(scores) <= 1)
        metrics["model"] = evaluate(y, scores, bands, probabilities=is_probability)
    return metrics
