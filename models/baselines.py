"""The rule score as a baseline: oriented to the target, and recalibrated on the training fold.

Rule scores measure engagement: higher means likelier to convert and *less* likely to
churn. For the churn target their points are negated before any metric
(:func:`rule_direction`), so a rule AUC above 0.5 always means the rules rank
churners first.
"""

from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import pandas as pd
from sklearn.base import clone

from models.recalibrate import fit_rules
from models.rules import RuleScore, load_rules
from models.splits import Split


class RuleModel(Protocol):
    """A scikit-learn style rule score (``models.rules.RuleScore``): points, higher = likelier."""

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> RuleModel: ...  # noqa: D102, N803
    def predict(self, X: pd.DataFrame) -> np.ndarray: ...  # noqa: D102, N803


def rule_direction(target: str) -> float:
    """Sign that turns rule points into a score where higher means the outcome is likelier.

    Rule scores measure engagement, which goes with conversion and against churn.

    Args:
        target: ``conversion`` or ``churn``.

    Returns:
        ``-1.0`` for churn, ``1.0`` otherwise.
    """
    return -1.0 if target == "churn" else 1.0


def recalibrated_rule_model(
    rule_model: RuleModel,
    features: pd.DataFrame,
    y: np.ndarray,
    target: str,
    *,
    as_of: pd.Series | None = None,
    horizon_days: int | None = None,
    seed: int = 42,
) -> RuleModel:
    """The rule score with its points relearned on the rows given (the training fold).

    A :class:`~models.rules.RuleScore` is recalibrated by
    :func:`models.recalibrate.fit_rules` (its ``fit`` only parses the rule file, so
    refitting it would change nothing); any other rule model is cloned and fitted.

    Args:
        rule_model: The rule score as configured.
        features: Training rows with every column the rules read.
        y: Their labels (1 = converted / churned).
        target: ``conversion`` or ``churn``.
        as_of: Cutoff per row, so the ridge strength is picked by time.
        horizon_days: Label window, for that inner time split.
        seed: Seed of the sign-test bootstrap.

    Returns:
        A fitted rule model.
    """
    if isinstance(rule_model, RuleScore):
        rules = fit_rules(
            features, y, load_rules(rule_model.rules), target,  # type: ignore[arg-type]
            as_of=as_of, seed=seed, label_horizon_days=horizon_days,
        )  # fmt: skip
        return RuleScore(rules).fit(features.head(0))
    try:
        unfitted = clone(rule_model)
    except TypeError:  # not a full scikit-learn estimator: copy it instead
        unfitted = copy.deepcopy(rule_model)
    return unfitted.fit(features, y)


def rule_baselines(
    rule_model: RuleModel | None,
    features: pd.DataFrame,
    y: np.ndarray,
    split: Split,
    target: str,
    cutoffs: pd.Series | None,
    horizon_days: int,
    seed: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Rule scores (oriented to the target) on the calibration and validation folds."""
    if rule_model is None:
        return {}
    fitted = recalibrated_rule_model(
        rule_model, features.iloc[split.train], y[split.train], target,
        as_of=None if cutoffs is None else cutoffs.iloc[split.train],
        horizon_days=horizon_days, seed=seed,
    )  # fmt: skip
    sign = rule_direction(target)
    out = {}
    for name, rule in (("rule", rule_model), ("rule_recalibrated", fitted)):
        calib = sign * np.asarray(rule.predict(features.iloc[split.calibration]), dtype="float64")
        valid = sign * np.asarray(rule.predict(features.iloc[split.validation]), dtype="float64")
        out[name] = (calib, valid)
    return out
