"""Champion/challenger decision: is a new model good enough to replace the champion?

Pure domain logic, no MLflow: :func:`decide_promotion` compares the new model with
the rule baselines and with the current champion re-scored on the same out-of-time
rows; :mod:`models.tracking_registry` acts on the decision (aliases, logging).

A challenger is never promoted on too little evidence: its validation fold must hold
at least ``min_validation_positives`` positives, and the lower bound of the bootstrap
confidence interval of its validation AUC (:func:`models.auc_interval.auc_interval`)
must beat the rule score's AUC on the same rows (and chance, 0.5). A constant model
(AUC 0.5) or one validated on a single conversion is kept as ``@challenger`` with a
sentence saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.auc_interval import AucInterval, auc_interval
from models.evaluate import evaluate
from models.fold_metrics import within_fold_ranks
from models.model import TrainedModel
from models.train import TrainResult


@dataclass
class PromotionDecision:
    """Outcome of champion/challenger for one new version, with its numbers."""

    target: str
    version: str
    promoted: bool
    alias: str
    previous_champion: str | None
    reasons: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        verdict = "promoted to @champion" if self.promoted else "kept as @challenger"
        return f"{self.target} v{self.version} {verdict}: " + "; ".join(self.reasons)


def decide_promotion(
    result: TrainResult,
    champion: TrainedModel | None,
    *,
    max_auc_drop: float = 0.0,
    max_ece_increase: float = 0.005,
    min_validation_positives: int = 20,
    confidence: float = 0.95,
    resamples: int = 500,
    seed: int = 0,
) -> tuple[bool, list[str], dict[str, float]]:
    """Compare a new model with the champion on the new validation rows and with the rules.

    Args:
        result: The new model's training result (its validation fold is the yardstick).
        champion: The current champion, re-scored on that fold; ``None`` when none.
        max_auc_drop: Largest AUC loss against the champion still accepted.
        max_ece_increase: Largest ECE increase against the champion still accepted.
        min_validation_positives: Fewest validation positives a promotion rests on.
        confidence: Level of the AUC's bootstrap interval whose lower bound must beat
            the rule score (0 compares the bootstrap median, about the AUC itself).
        resamples: Bootstrap resamples of that interval, when training did not record
            it at this level (``roc_auc_ci_low``/``_high``, 95%, in the metrics).
        seed: Seed of that bootstrap.

    Returns:
        Whether to promote, the reasons as sentences, and the numbers compared
        (logged as MLflow metrics): the new AUC with its interval, the validation
        positives and the baselines' AUCs.
    """
    new = result.metrics["model"]
    y = result.validation["label"].to_numpy()
    positives = int(y.sum())
    if "roc_auc_ci_low" in new and confidence == 0.95:
        # Training bootstrapped it already (models.evaluate.with_auc_interval).
        interval = AucInterval(new["roc_auc_ci_low"], new["roc_auc_ci_high"], 0.95, resamples)
    else:
        validation = result.validation
        scores = validation["p_model"].to_numpy()
        if "fold" in validation and validation["fold"].nunique() > 1:
            folds = validation["fold"].to_numpy()
            scores = within_fold_ranks([scores[folds == f] for f in np.unique(folds)])
        interval = auc_interval(y, scores, resamples=resamples, level=confidence, seed=seed)
    numbers = {
        "new_roc_auc": new["roc_auc"],
        "new_roc_auc_ci_low": interval.low,
        "new_roc_auc_ci_high": interval.high,
        "new_ece": new["ece"],
        "validation_positives": float(positives),
        "min_validation_positives": float(min_validation_positives),
    }
    reasons: list[str] = []
    promote = True
    for name in ("rule", "rule_recalibrated"):
        if name not in result.metrics:
            continue
        rule_auc = result.metrics[name]["roc_auc"]
        numbers[f"{name}_roc_auc"] = rule_auc
        if name == "rule":
            # The whole interval must clear the rule score (and chance), not its middle.
            bar, what = max((rule_auc, f"the rule score's {rule_auc:.4f}"), (0.5, "chance (0.5)"))
            beats = bool(interval.low > bar)
            verb = "beats" if beats else "does not beat"
            reasons.append(
                f"AUC {new['roc_auc']:.4f} ({interval.describe()}): its lower bound {verb} "
                f"{what} on the same rows"
            )
        else:
            beats = bool(new["roc_auc"] > rule_auc)
            verb = "beats" if beats else "does not beat"
            reasons.append(f"AUC {new['roc_auc']:.4f} {verb} the {name} score's {rule_auc:.4f}")
        promote &= beats
    noun = "positive" if positives == 1 else "positives"
    if positives < min_validation_positives:
        promote = False
        reasons.append(
            f"not promoted: {positives} validation {noun}, {min_validation_positives} needed "
            "(model.min_validation_positives)"
        )
    else:
        reasons.append(
            f"{positives} validation {noun} (at least {min_validation_positives} needed)"
        )
    if champion is None:
        reasons.append("there is no champion yet")
        return promote, reasons, numbers
    old = evaluate(y, champion.predict_proba(result.validation_features))
    numbers.update({"champion_roc_auc": old["roc_auc"], "champion_ece": old["ece"]})
    auc_ok = new["roc_auc"] >= old["roc_auc"] - max_auc_drop
    ece_ok = new["ece"] <= old["ece"] + max_ece_increase
    promote &= auc_ok and ece_ok
    reasons.append(
        f"AUC {new['roc_auc']:.4f} against the champion's {old['roc_auc']:.4f} on the same "
        f"rows ({'within' if auc_ok else 'beyond'} the allowed drop {max_auc_drop:g})"
    )
    reasons.append(
        f"ECE {new['ece']:.4f} against {old['ece']:.4f} "
        f"({'within' if ece_ok else 'beyond'} the allowed increase {max_ece_increase:g})"
    )
    return promote, reasons, numbers
