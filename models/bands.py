"""Bands and the 0-100 score: one rule, applied identically in batch, notebooks and reports.

The band rule (:class:`BandRule`):

* ``at-risk`` when the churn probability is at or above the churn threshold;
* otherwise ``high`` when the conversion probability is at or above the conversion
  threshold;
* otherwise ``medium``.

A band holds a share of the population *scored in this run* (``shares``, from
``bands.high_share``/``bands.at_risk_share``): ``high`` is the top 10% of today's leads
by conversion probability, whatever the cohort, so a band keeps the volume sales
capacity is planned around when the population shifts (thresholds fixed on the
validation fold put 35-62% of a more engaged cohort in a band meant for 10%). A
configured threshold (settings) is a fixed probability instead. The validation
threshold of the same share (:func:`choose_thresholds`, with its precision and lift)
is stored with the model version for reference. A rule is a plain dataclass that
round-trips through :meth:`BandRule.to_dict` / :meth:`BandRule.from_dict`.

The 0-100 score (:func:`score_from_probability`) is the calibrated probability on a
fixed scale relative to the base rate of the model's validation fold (the mean of its
``reference_scores``): ``100 x r / (1 + r)`` with ``r`` the odds of the probability over
the odds of the base rate. 50 is as likely as the average at validation, 67 twice those
odds, 80 four times, 33 half. Customers get a health score, ``100 -`` that of their
churn probability, so a high score is good news for both. The scale does not depend on
who else is scored: a more engaged cohort scores higher but keeps its spread (a
percentile of the validation fold squeezed such a cohort into 71-100), and the score is
a smooth monotone function of the margin, so reason points add up to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

HIGH = "high"
MEDIUM = "medium"
AT_RISK = "at-risk"
BANDS = (HIGH, MEDIUM, AT_RISK)

ScoreKind = Literal["lead", "customer"]
#: Probabilities closer to 0 or 1 than this anchor the scale as if they were this.
_EDGE = 1e-9


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold picked on validation data, with what it does there.

    Attributes:
        threshold: Probability at or above which an entity is flagged.
        share_target: Share of validation rows the threshold aims to flag.
        share_flagged: Share actually flagged (ties can push it above the target).
        precision: Outcome rate among flagged validation rows (NaN without labels).
        base_rate: Outcome rate over all validation rows (NaN without labels).
        lift: ``precision / base_rate``.
        n_validation: Validation rows used.
    """

    threshold: float
    share_target: float
    share_flagged: float
    precision: float = float("nan")
    base_rate: float = float("nan")
    lift: float = float("nan")
    n_validation: int = 0

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain numbers for MLflow and model metadata (NaN as ``None``: strict JSON)."""
        return {
            key: None if isinstance(value, float) and np.isnan(value) else value
            for key, value in asdict(self).items()
        }


def choose_thresholds(y_val: object | None, p_val: object, share: float) -> ThresholdChoice:
    """Threshold flagging the top ``share`` of validation probabilities.

    Rule: the threshold is the smallest probability among the top ``ceil(share x n)``
    validation rows. Chosen by volume rather than by maximising F1 because F1 rewards
    flagging far more leads than sales can call when outcomes are rare, and a fixed
    share keeps the band's size stable from one model version to the next; the
    validation precision and lift at that threshold are reported so the choice can be
    judged.

    Args:
        y_val: Validation outcomes (0/1), or ``None`` when only probabilities are known
            (then precision and lift are NaN).
        p_val: Calibrated validation probabilities.
        share: Target share of validation rows to flag, in (0, 1).

    Returns:
        The threshold and its validation numbers.

    Raises:
        ValueError: On an empty fold, a share outside (0, 1), missing probabilities
            or a label count that does not match.
    """
    p = np.asarray(p_val, dtype="float64").ravel()
    if not 0.0 < share < 1.0:
        raise ValueError(f"The band share must lie strictly between 0 and 1, got {share}.")
    if p.size == 0:
        raise ValueError("No validation probabilities to choose a band threshold on.")
    if np.isnan(p).any():
        raise ValueError(
            f"{int(np.isnan(p).sum())} of {p.size} validation probabilities are missing; "
            "band thresholds need every validation row scored."
        )
    n_flag = max(1, int(np.ceil(share * p.size)))
    threshold = float(np.sort(p)[::-1][n_flag - 1])
    flagged = p >= threshold
    choice: dict[str, Any] = {
        "threshold": threshold,
        "share_target": float(share),
        "share_flagged": float(flagged.mean()),
        "n_validation": int(p.size),
    }
    if y_val is not None:
        y = np.asarray(y_val, dtype="float64").ravel()
        if y.shape != p.shape:
            raise ValueError(
                f"Band thresholds need one label per probability ({p.size} probabilities, "
                f"{y.size} labels)."
            )
        base_rate = float(y.mean())
        precision = float(y[flagged].mean())
        choice |= {
            "precision": precision,
            "base_rate": base_rate,
            "lift": precision / base_rate if base_rate > 0 else float("nan"),
        }
    result = ThresholdChoice(**choice)
    log.info(
        "Band threshold %.4f flags %.1f%% of %d validation rows (target %.1f%%), "
        "precision %.3f, lift %.2f",
        result.threshold,
        100 * result.share_flagged,
        result.n_validation,
        100 * share,
        result.precision,
        result.lift,
    )
    return result


@dataclass(frozen=True)
class BandRule:
    """How calibrated probabilities become ``high`` / ``medium`` / ``at-risk``.

    Attributes:
        conversion_threshold: Conversion probability at or above which a lead is
            ``high``; ``None`` means no lead is ``high``.
        churn_threshold: Churn probability at or above which a customer is
            ``at-risk``; ``None`` means no customer is ``at-risk``.
        source: Where the thresholds came from (``validation``, ``settings``, ...).
        details: Validation numbers of each choice (see :class:`ThresholdChoice`).
        rule_fallback: How this run banded the entities of targets without a model
            (see :mod:`models.rule_reasons`), ``""`` when every target had one; a
            property of the run, not stored with a model version.
        shares: ``{target: share}`` of the targets banded by their share of the
            population scored now (their threshold is then only the validation one).
    """

    conversion_threshold: float | None
    churn_threshold: float | None
    source: str = "validation"
    details: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    rule_fallback: str = ""
    shares: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored with the model version."""
        return {
            "conversion_threshold": self.conversion_threshold,
            "churn_threshold": self.churn_threshold,
            "source": self.source,
            "details": {k: dict(v) for k, v in self.details.items()},
        } | ({"shares": dict(self.shares)} if self.shares else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BandRule:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: If a threshold is not a probability.
        """
        rule = cls(
            conversion_threshold=_optional_probability(data, "conversion_threshold"),
            churn_threshold=_optional_probability(data, "churn_threshold"),
            source=str(data.get("source", "stored")),
            details={k: dict(v) for k, v in (data.get("details") or {}).items()},
            shares={k: float(v) for k, v in (data.get("shares") or {}).items()},
        )
        return rule

    def describe(self) -> str:
        """One sentence for reports and the lead board."""

        def fmt(target: str, value: float | None, who: str, verb: str) -> str:
            if target in self.shares:
                return f"the {self.shares[target]:.0%} of this run's {who} most likely to {verb}"
            return f"{target} probability " + ("never" if value is None else f"{value:.1%} or more")

        fallback = f" With the rule score: {self.rule_fallback}." if self.rule_fallback else ""
        return (
            f"at-risk: {fmt('churn', self.churn_threshold, 'customers', 'churn')}; high: "
            f"{fmt('conversion', self.conversion_threshold, 'leads', 'convert')}; medium: "
            f"everyone else scored (thresholds from {self.source}). Score: 50 is as likely "
            "as the average at validation, 67 twice those odds, 33 half (customers: health, "
            f"100 minus churn).{fallback}"
        )

    def assign(self, conversion_probability: object, churn_probability: object) -> np.ndarray:
        """The band of each entity; missing probabilities never pass a threshold.

        Args:
            conversion_probability: Per entity, NaN where not applicable (customers).
            churn_probability: Per entity, NaN where not applicable (leads).

        Returns:
            An object array of band names, same length as the inputs.
        """
        conversion = np.asarray(conversion_probability, dtype="float64").ravel()
        churn = np.asarray(churn_probability, dtype="float64").ravel()
        if conversion.shape != churn.shape:
            raise ValueError(
                f"Band assignment needs as many conversion ({conversion.size}) as churn "
                f"({churn.size}) probabilities; pass NaN where one does not apply."
            )
        at_risk = self._flagged("churn", churn, self.churn_threshold)
        high = self._flagged("conversion", conversion, self.conversion_threshold)
        # Three shared names, not a million new strings (np.where on them: 0.4 s at 1M).
        return np.array([MEDIUM, HIGH, AT_RISK], dtype=object)[np.where(at_risk, 2, high * 1)]

    def _flagged(self, target: str, p: np.ndarray, threshold: float | None) -> np.ndarray:
        """Who passes: the top share of the scored values, else the fixed threshold."""
        scored = p[~np.isnan(p)]
        if target in self.shares and scored.size:
            threshold = choose_thresholds(None, scored, self.shares[target]).threshold
        if threshold is None:
            return np.zeros(p.shape, dtype=bool)
        return p >= threshold


def _optional_probability(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"Band rule {key} must be a probability in [0, 1], got {value!r}.")
    return number


def band_rule_from_validation(
    conversion: tuple[object | None, object] | None,
    churn: tuple[object | None, object] | None,
    high_share: float = 0.10,
    at_risk_share: float = 0.10,
    conversion_threshold: float | None = None,
    churn_threshold: float | None = None,
) -> BandRule:
    """Build the band rule: configured thresholds win, otherwise chosen on validation.

    Args:
        conversion: ``(y_val, p_val)`` of the conversion model, ``None`` without one.
            ``y_val`` may be ``None`` (e.g. only the model's ``reference_scores`` known).
        churn: ``(y_val, p_val)`` of the churn model, ``None`` without one.
        high_share: Share of validation leads to put in ``high``.
        at_risk_share: Share of validation customers to put in ``at-risk``.
        conversion_threshold: Configured conversion threshold (settings), or ``None``.
        churn_threshold: Configured churn threshold (settings), or ``None``.

    Returns:
        The rule; ``details`` holds each validation choice for logging.
    """
    details: dict[str, dict[str, float | int | None]] = {}
    sources: list[str] = []

    def pick(
        name: str, configured: float | None, fold: tuple[object | None, object] | None, share: float
    ) -> float | None:
        if configured is not None:
            sources.append(f"{name}: settings")
            return float(configured)
        if fold is None or np.asarray(fold[1]).size == 0:
            sources.append(f"{name}: none (no model)")
            return None
        choice = choose_thresholds(fold[0], fold[1], share)
        details[name] = choice.to_dict()
        sources.append(f"{name}: top {share:.0%} of validation")
        return choice.threshold

    conversion_value = pick("conversion", conversion_threshold, conversion, high_share)
    churn_value = pick("churn", churn_threshold, churn, at_risk_share)
    return BandRule(conversion_value, churn_value, "; ".join(sources), details)


def score_from_probability(
    probability: object, reference_scores: object, kind: ScoreKind = "lead"
) -> np.ndarray:
    """The 0-100 score: the probability's odds against the validation base rate's odds.

    Args:
        probability: Calibrated probabilities (NaN stays NaN).
        reference_scores: The model's calibrated validation probabilities; their mean
            is the base rate the scale is anchored on (score 50).
        kind: ``lead`` (score = ``100 r / (1 + r)``, ``r`` the odds ratio of the
            conversion probability to the base rate) or ``customer`` (health score =
            100 minus that of the churn probability).

    Returns:
        Float scores in [0, 100], unrounded.

    Raises:
        ValueError: If the reference is empty or ``kind`` is unknown.
    """
    p = np.asarray(probability, dtype="float64")
    reference = np.asarray(reference_scores, dtype="float64").ravel()
    reference = reference[~np.isnan(reference)]
    if reference.size == 0:
        raise ValueError(
            "The model has no reference_scores (validation probabilities); the 0-100 "
            "score is anchored on their base rate. Retrain the model."
        )
    if kind not in ("lead", "customer"):
        raise ValueError(f"Unknown score kind {kind!r}; use 'lead' or 'customer'.")
    base = np.clip(reference.mean(), _EDGE, 1.0 - _EDGE)
    with np.errstate(divide="ignore"):
        margin = np.log(p) - np.log1p(-p) - np.log(base / (1.0 - base))
    score = 100.0 / (1.0 + np.exp(-margin))  # 100 r / (1 + r), r = exp(margin)
    score = np.where(np.isnan(p), np.nan, score)
    return np.clip(score if kind == "lead" else 100.0 - score, 0.0, 100.0)


#: Key of a model's metadata holding its :class:`ThresholdChoice` (``to_dict`` form).
BAND_METADATA_KEY = "band_threshold"


def band_rule_for_models(
    models: Mapping[str, Any],
    high_share: float = 0.10,
    at_risk_share: float = 0.10,
    conversion_threshold: float | None = None,
    churn_threshold: float | None = None,
) -> BandRule:
    """The band rule in force for a set of champion models.

    Per target: a configured threshold is a fixed probability; otherwise the band is
    the top share of the population scored (``shares``), and the validation threshold
    of that share is kept for reference: the one stored in the model version's metadata
    under :data:`BAND_METADATA_KEY`, else that of its ``reference_scores``.

    Args:
        models: ``{"conversion": TrainedModel | None, "churn": TrainedModel | None}``.
        high_share: Share of the scored leads in ``high``.
        at_risk_share: Share of the scored customers in ``at-risk``.
        conversion_threshold: Configured conversion threshold, or ``None``.
        churn_threshold: Configured churn threshold, or ``None``.

    Returns:
        The rule.
    """
    thresholds: dict[str, float | None] = {
        "conversion": conversion_threshold,
        "churn": churn_threshold,
    }
    details: dict[str, dict[str, float | int | None]] = {}
    sources: list[str] = []
    for target, share in (("conversion", high_share), ("churn", at_risk_share)):
        model = models.get(target)
        if thresholds[target] is not None:
            sources.append(f"{target}: settings")
        elif model is None:
            sources.append(f"{target}: none (no champion)")
        elif BAND_METADATA_KEY in model.metadata:
            stored = dict(model.metadata[BAND_METADATA_KEY])
            thresholds[target] = float(stored["threshold"])
            details[target] = stored
            sources.append(f"{target}: stored with the model version")
        else:
            choice = choose_thresholds(None, model.reference_scores, share)
            thresholds[target] = choice.threshold
            details[target] = choice.to_dict()
            sources.append(f"{target}: top {share:.0%} of validation probabilities")
    # Targets with a champion and no configured threshold: a share of today's population.
    shares = {
        target: share
        for target, share in (("conversion", high_share), ("churn", at_risk_share))
        if models.get(target) is not None and target in details
    }
    return BandRule(
        thresholds["conversion"], thresholds["churn"], "; ".join(sources), details, shares=shares
    )
