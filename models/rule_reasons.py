"""The rule score's own reasons and bands, for entities scored without a model.

When a target has no champion (too few labels, switched off, not trained yet), its
entities get the rule score. They still get reasons and a band with the meaning
model-scored rows have:

* Reasons: each signal's points, in words and in points of the 0-100 score
  (``+33 pts: Form submissions: 1 form submission (+50 rule points)``); the score is
  ``100 x clip(sum of points, 0, max) / rule_points_max``, so the impacts start from a
  base score of 0 and ``other_factors_points`` holds the signals not shown, rounding
  and the effect of the clip.
* Bands: ``high`` means a lead most likely to convert and ``at-risk`` a customer most
  likely to churn, whatever scored them. A lead in the rule file's top band is
  ``high``; a customer in its bottom band (least engaged) is ``at-risk``; everyone
  else is ``medium`` (the lead rule file's ``low`` band is not a model band).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from features.targets import Target
from models.bands import MEDIUM
from models.explain import REASON_COLUMNS
from models.reason_text import listed_reasons, reasons_text, signal_sentence
from models.rules import Band, RuleSet, signal_units

log = logging.getLogger(__name__)


def _edge_band(rule_set: RuleSet, target: Target) -> tuple[Band, int | None]:
    """The rule band that maps to the target's band, and the next band's minimum."""
    ordered = sorted(rule_set.bands, key=lambda band: band.min)
    if target.rule_sign > 0:
        return ordered[-1], None
    return ordered[0], ordered[1].min if len(ordered) > 1 else None


def fallback_bands(rule_bands: np.ndarray, rule_set: RuleSet, target: Target) -> np.ndarray:
    """The model bands of rule-scored entities (see the module docstring).

    Args:
        rule_bands: Each entity's band in the rule file.
        rule_set: The rule file that scored them.
        target: Their target.

    Returns:
        ``target.band`` or ``medium`` per entity.
    """
    edge, _ = _edge_band(rule_set, target)
    return np.where(np.asarray(rule_bands, dtype=object) == edge.name, target.band, MEDIUM)


def fallback_band_sentence(rule_set: RuleSet, target: Target) -> str:
    """How rule-scored entities of a target are banded, for the board's band sentence."""
    edge, upper = _edge_band(rule_set, target)
    points = f"{rule_set.name} rule points"
    where = f"at {edge.min} or more {points}" if upper is None else f"under {upper} {points}"
    return f"{target.kind}s without a {target.name} model: {target.band} {where}"


def rule_reasons(
    rule_set: RuleSet,
    features: pd.DataFrame,
    score: np.ndarray,
    rule_points_max: float = 150.0,
    top_k: int = 3,
) -> pd.DataFrame:
    """Reason columns for rule-scored rows: points per signal, in words.

    Args:
        rule_set: The rule file that scores the rows.
        features: Their feature rows.
        score: Their rounded 0-100 scores (the impacts shown and
            ``other_factors_points`` add up to them).
        rule_points_max: Rule points mapped to a score of 100.
        top_k: Reasons per direction.

    Returns:
        A frame on ``features.index`` with :data:`models.explain.REASON_COLUMNS`.
    """
    absent = sorted({s.column for s in rule_set.signals} - set(features.columns))
    if absent:
        log.warning(
            "The feature table lacks column(s) %s of rule file %s; its reasons count them "
            "as empty.", ", ".join(absent), rule_set.source,
        )  # fmt: skip
        features = features.assign(**dict.fromkeys(absent, np.nan))
    units = signal_units(rule_set, features)
    names = list(rule_set.points.index)
    unit_values = units[names].to_numpy("float64")
    points = unit_values * rule_set.points.to_numpy("float64")
    impact = np.round(points * 100 / rule_points_max).astype(np.int64)
    n_rows = len(features)
    k = min(top_k, len(names))
    lines: dict[str, np.ndarray] = {}
    shown = np.zeros(n_rows, dtype=np.int64)
    for direction, sign in (("up", 1.0), ("down", -1.0)):
        order = np.argsort(-sign * points, axis=1, kind="stable")[:, :k]
        picked_points = np.take_along_axis(points, order, axis=1)
        valid = sign * picked_points > 0
        picked_units = np.take_along_axis(unit_values, order, axis=1)
        picked_impact = np.take_along_axis(impact, order, axis=1)
        concepts = np.empty(order.shape, dtype=object)
        texts = np.empty(order.shape, dtype=object)
        for s, name in enumerate(names):
            signal = rule_set.signal(name)
            at = (order == s) & valid
            for value in np.unique(picked_units[at]):
                cells = at & (picked_units == value)
                texts[cells] = (
                    f"{signal_sentence(signal, float(value))} "
                    f"({value * signal.points:+g} rule points)"
                )
            concepts[at] = signal.label
        lines[direction], lines[f"{direction}_line"] = listed_reasons(
            picked_impact, valid, concepts, texts
        )
        shown += np.where(valid, picked_impact, 0).sum(axis=1)
    other = np.nan_to_num(np.asarray(score, dtype="float64")).astype(np.int64) - shown
    columns = {
        "reasons_up": lines["up"],
        "reasons_down": lines["down"],
        "reasons_text": reasons_text(lines["up_line"], lines["down_line"], 0, other),
        "base_score": np.zeros(n_rows, dtype=np.int64),
        "other_factors_points": other,
    }
    assert set(columns) == set(REASON_COLUMNS)
    return pd.DataFrame(columns, index=features.index)
