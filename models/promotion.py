"""Champion/challenger decision: is a new model good enough to replace the champion?

Pure domain logic, no MLflow: :func:`decide_promotion` compares the new model with
the rule baselines and with the current champion re-scored on the same out-of-time
rows; :mod:`models.tracking_registry` acts on the decision (aliases, logging).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.evaluate import evaluate
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
) -> tuple[bool, list[str], dict[str, float]]:
    """Compare a new model with the champion on the new validation rows and with the rules.

    Args:
        result: The new model's training result (its validation fold is the yardstick).
        champion: The current champion, re-scored on that fold; ``None`` when none.
        max_auc_drop: Largest AUC loss against the champion still accepted.
        max_ece_increase: Largest ECE increase against the champion still accepted.

    Returns:
        Whether to promote, the reasons as sentences, and the numbers compared.
    """
    new = result.metrics["model"]
    numbers = {"new_roc_auc": new["roc_auc"], "new_ece": new["ece"]}
    reasons: list[str] = []
    promote = True
    for name in ("rule", "rule_recalibrated"):
        if name not in result.metrics:
            continue
        rule_auc = result.metrics[name]["roc_auc"]
        numbers[f"{name}_roc_auc"] = rule_auc
        beats = new["roc_auc"] > rule_auc
        promote &= beats
        verb = "beats" if beats else "does not beat"
        reasons.append(f"AUC {new['roc_auc']:.4f} {verb} the {name} score's {rule_auc:.4f}")
    if champion is None:
        reasons.append("there is no champion yet")
        return promote, reasons, numbers
    y = result.validation["label"].to_numpy()
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
