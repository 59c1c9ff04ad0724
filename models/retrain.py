"""When to retrain: the pure decision the nightly run asks each target.

The pipeline reads the champion, this run's score drift and any earlier training for
the date; this module decides, and says why in words for the run summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from features.timeutil import as_utc


@dataclass(frozen=True)
class RetrainPolicy:
    """Limits that make a champion due for retraining.

    Attributes:
        max_age_days: Retrain a champion older than this (age in run dates).
        psi_warn: Retrain when the score PSI of this run is above this.
    """

    max_age_days: int
    psi_warn: float


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain one target on this run, and why, in words."""

    due: bool
    reason: str


def retrain_due(
    policy: RetrainPolicy,
    champion_metadata: Mapping[str, Any] | None,
    as_of: pd.Timestamp,
    *,
    drift_psi: float | None = None,
    trained_already: str | None = None,
) -> RetrainDecision:
    """Whether a target's model must be retrained on this run, and why.

    Retrain when there is no champion, when it is older than ``policy.max_age_days``
    (age in run dates, from its ``trained_at``), or when drift is flagged: the PSI of
    this run's scores against the champion's reference is above ``policy.psi_warn``.
    A target already trained for this run date, or whose champion was trained as of
    this date or later, is not trained again, so running a date twice gives the same
    models and outputs.

    Args:
        policy: The age limit and the PSI warning threshold.
        champion_metadata: The ``@champion``'s metadata, or ``None`` without one.
        as_of: The run date (midnight UTC).
        drift_psi: PSI of this run's champion scores, or ``None`` when not measured yet.
        trained_already: The summary text of an earlier training for this date, if any
            (returned as the reason, unchanged).

    Returns:
        The decision and its reason.
    """
    if trained_already is not None:
        # Word for word as the run that trained said it: a rerun's summary is the same.
        return RetrainDecision(False, trained_already)
    if champion_metadata is None:
        return RetrainDecision(True, "no champion yet")
    trained = champion_metadata.get("trained_at")
    if trained is None:
        age = None
        described = "champion of unknown age"
    else:
        trained_at = as_utc(trained)
        age = (as_of - trained_at).days
        if age < 0:
            return RetrainDecision(
                False, f"champion trained as of {trained_at.date()}, after this run date; kept"
            )
        described = f"champion is {age} days old"
        if age > policy.max_age_days:
            return RetrainDecision(True, f"{described} (limit {policy.max_age_days})")
    warn = policy.psi_warn
    if drift_psi is not None and drift_psi > warn:
        if age == 0:
            return RetrainDecision(
                False, f"{described}; score PSI {drift_psi:.3f} above {warn} but trained today"
            )
        return RetrainDecision(
            True, f"drift flagged: score PSI {drift_psi:.3f} above {warn}; {described}"
        )
    return RetrainDecision(False, f"{described}; no retrain")
