"""What the pipeline predicts: one definition per target.

A target ties together the outcome that makes a positive label, the kind of entity
it is scored for, the rule file that scores that kind when there is no model, the
sign that turns rule points (engagement) into "higher means likelier", its default
label horizon and the band its riskiest or most promising entities land in. Every
place that used to spell out ``("conversion", "churn")``, the kind -> rules mapping
or a ``-1.0 if target == "churn"`` flip reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TargetName = Literal["conversion", "churn"]
EntityKind = Literal["lead", "customer"]


@dataclass(frozen=True)
class Target:
    """One prediction target.

    Attributes:
        name: ``conversion`` or ``churn`` (also the registered model's name).
        outcome: The outcome value that makes a positive label.
        kind: The kind of entity scored for this target.
        rules: Built-in rule file that scores this kind without a model.
        rule_sign: Multiplies rule points (engagement) so that higher means the
            outcome is likelier: engagement goes with conversion, against churn.
        default_horizon_days: Default label window (cutoff, cutoff + horizon].
        band: The band this target's top share of probabilities lands in.
        outcome_verb: The outcome in words, for reports (``converted``).
    """

    name: TargetName
    outcome: str
    kind: EntityKind
    rules: str
    rule_sign: float
    default_horizon_days: int
    band: str
    outcome_verb: str

    def __str__(self) -> str:
        return self.name


CONVERSION = Target(
    name="conversion",
    outcome="converted",
    kind="lead",
    rules="lead",
    rule_sign=1.0,
    default_horizon_days=30,
    band="high",
    outcome_verb="converted",
)
CHURN = Target(
    name="churn",
    outcome="churned",
    kind="customer",
    rules="engagement",
    rule_sign=-1.0,
    default_horizon_days=60,
    band="at-risk",
    outcome_verb="churned",
)

#: Every target, in the order runs train, score and report them.
TARGETS: tuple[Target, ...] = (CONVERSION, CHURN)
#: Their names, in the same order.
TARGET_NAMES: tuple[TargetName, ...] = tuple(t.name for t in TARGETS)


def target(name: str) -> Target:
    """The target called ``name``.

    Raises:
        ValueError: If ``name`` is not a target, with the valid names.
    """
    for candidate in TARGETS:
        if candidate.name == name:
            return candidate
    raise ValueError(f"Unknown target {name!r}; use {' or '.join(TARGET_NAMES)}.")


def target_for_kind(kind: str) -> Target:
    """The target that scores entities of ``kind`` (``lead`` or ``customer``).

    Raises:
        ValueError: If no target scores that kind.
    """
    for candidate in TARGETS:
        if candidate.kind == kind:
            return candidate
    kinds = " or ".join(t.kind for t in TARGETS)
    raise ValueError(f"No target scores entities of kind {kind!r}; kinds are {kinds}.")
