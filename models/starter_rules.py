"""A starter rule set built from the data's own event types and fit attributes.

A built-in rule file reads the built-in event types (``form_submit_count_90d``...).
When the data has other event types, none of its signals occurs: every entity scores
0 and any model "beats" a rule AUC of 0.500. :func:`starter_rules` then builds rules
that fit the data, for :mod:`models.recalibrate` to learn points on:

* per event type seen (a ``<type>_count_30d`` column with at least one event), a flag
  "at least one in the last 30 days";
* per categorical fit attribute with at most :data:`MAX_LEVELS` values (more is an
  identifier, not a segment), its :data:`LEVELS_PER_ATTRIBUTE` values of largest lift
  that at least :data:`MIN_SHARE` of the rows have.

A signal is kept when its rows' outcome count lies :data:`MIN_Z` standard errors or
more from what the overall rate predicts.

Each signal's points are ``POINTS_PER_LOG_LIFT * ln(lift)``, capped at
:data:`MAX_POINTS` either way, where the lift is the engagement rate (converted, or
stayed for churn) of the rows with the signal over the rate of all rows (smoothed
toward 1 for rare signals). The bands keep the rule file's names and put
:data:`BAND_SHARES` of the rows in each band above the lowest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.point_fit import share_bands
from models.rules import RuleSet, Signal, signal_units

#: Points per unit of log lift: a signal that doubles the rate gives about 17 points.
POINTS_PER_LOG_LIFT = 25.0
#: Most points (either way) a starter signal gives.
MAX_POINTS = 50
#: Least share of rows a signal must have to be a rule.
MIN_SHARE = 0.01
#: Least distance, in standard errors, of a signal's outcome count from the count the
#: overall rate predicts: smaller differences are noise, not rules.
MIN_Z = 2.0
#: Rows of prior weight that pull a rare signal's lift toward 1.
PRIOR_ROWS = 20.0
#: A categorical attribute with more values than this is an identifier.
MAX_LEVELS = 50
LEVELS_PER_ATTRIBUTE = 3
#: Share of rows in each band above the lowest, highest band first.
BAND_SHARES = (0.10, 0.30)
#: Feature table column of an event type's recent count.
RECENT_SUFFIX = "_count_30d"
#: What a signal name may not hold (names become MLflow metric keys).
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_NOT_ATTRIBUTES = {"entity_id", "as_of", "label", "kind", "crm_id"}


@dataclass(frozen=True)
class StarterRules:
    """The starter rule set and what it was built from.

    Attributes:
        rules: The rules (same name, bands and noun as the rule file they replace).
        event_types: Event types with a signal.
        attributes: Fit attributes with at least one signal.
        replaced: Name of the rule file whose signals matched nothing.
    """

    rules: RuleSet
    event_types: tuple[str, ...]
    attributes: tuple[str, ...]
    replaced: str

    def sentence(self) -> str:
        """What happened, for the CLI output and the report."""
        parts = [f"your {len(self.event_types)} event types"]
        if self.attributes:
            parts.append(f"{len(self.attributes)} fit attributes")
        return (
            f"The built-in rules ({self.replaced}) matched no signal in your data; a starter "
            f"rule set was built from {' and '.join(parts)}, with points from their lift."
        )


def matches_data(rules: RuleSet, features: pd.DataFrame) -> bool:
    """Whether a signal giving points varies across the rows.

    Without one, every row scores 0 (the score has no base and is clipped at 0), so
    penalties alone (an inactivity decay) do not make the rules fit. A rule file
    reading a column the rows lack does not fit either.
    """
    if not {s.column for s in rules.signals} <= set(features.columns):
        return False
    varying = signal_units(rules, features).nunique() > 1
    return any(varying[s.name] for s in rules.signals if s.points > 0)


def _label(name: str) -> str:
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _points(with_signal: np.ndarray, engaged: np.ndarray) -> int:
    """Points from the smoothed lift of the engagement rate among rows with the signal."""
    base = float(engaged.mean())
    rate = (float(engaged[with_signal].sum()) + PRIOR_ROWS * base) / (
        float(with_signal.sum()) + PRIOR_ROWS
    )
    lift = max(rate, 1e-6) / max(base, 1e-6)
    return int(np.clip(round(POINTS_PER_LOG_LIFT * np.log(lift)), -MAX_POINTS, MAX_POINTS))


def _supported(with_signal: np.ndarray, engaged: np.ndarray) -> bool:
    """Enough rows have the signal, and their outcome rate differs beyond noise."""
    n = float(with_signal.sum())
    if with_signal.mean() < MIN_SHARE or n < PRIOR_ROWS:
        return False
    base = float(engaged.mean())
    spread = np.sqrt(n * base * (1.0 - base))
    return bool(abs(engaged[with_signal].sum() - n * base) >= MIN_Z * max(spread, 1e-12))


def _event_signals(features: pd.DataFrame, engaged: np.ndarray) -> list[Signal]:
    signals = []
    for column in features.columns:
        if not str(column).endswith(RECENT_SUFFIX):
            continue
        counts = pd.to_numeric(features[column], errors="coerce").fillna(0).to_numpy()
        fired = counts >= 1
        if fired.all() or not _supported(fired, engaged):
            continue
        event = str(column)[: -len(RECENT_SUFFIX)]
        label = _label(event)
        signals.append(
            Signal(
                name=f"{event}_recent",
                description=f"{label}: at least one {label.lower()} event in the last 30 days.",
                column=str(column),
                kind="flag",
                points=_points(fired, engaged),
                op=">=",
                value=1,
            )
        )
    return signals


def _attribute_signals(features: pd.DataFrame, engaged: np.ndarray) -> list[Signal]:
    signals: list[Signal] = []
    taken: set[str] = set()
    for column in features.columns:
        values = features[column]
        is_text = isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object
        if column in _NOT_ATTRIBUTES or not is_text:
            continue
        levels = values.astype("object").dropna().unique()
        if not 1 < len(levels) <= MAX_LEVELS:
            continue
        text = values.astype("object").to_numpy()
        candidates = []
        for level in levels:
            fired = text == level
            if _supported(fired, engaged):
                candidates.append((_points(fired, engaged), level))
        candidates = [c for c in candidates if c[0] != 0]
        for points, level in sorted(candidates, key=lambda c: -abs(c[0]))[:LEVELS_PER_ATTRIBUTE]:
            name = f"{column}_{_SAFE.sub('_', str(level)).strip('_') or 'blank'}"
            while name in taken:  # "1-10" and "1 10" read the same
                name += "_"
            taken.add(name)
            signals.append(
                Signal(
                    name=name,
                    description=f"{column} is {level}: rows whose {column} is {level}.",
                    column=str(column),
                    kind="category_equals",
                    points=points,
                    value=level,
                )
            )
    return signals


def starter_rules(features: pd.DataFrame, engaged: np.ndarray, replaced: RuleSet) -> StarterRules:
    """Rules from the data's event types and fit attributes, points from their lift.

    Args:
        features: Training rows of the feature table (snapshots).
        engaged: 1 where the row converted (conversion) or stayed (churn), aligned by
            position.
        replaced: The rule file whose signals matched nothing: its name, bands and
            entity noun are kept.

    Returns:
        The starter rules and what they were built from.

    Raises:
        ValueError: If no event type or fit attribute gives a signal.
    """
    y = np.asarray(engaged, dtype="float64")
    frame = features.reset_index(drop=True)
    events = [s for s in _event_signals(frame, y) if s.points != 0]
    attributes = _attribute_signals(frame, y)
    signals = tuple(events + attributes)
    if not signals:
        raise ValueError(
            "The rule file's signals match nothing in the data, and no event type or fit "
            "attribute occurs in enough rows to build a starter rule set."
        )
    draft = RuleSet(
        name=replaced.name,
        signals=signals,
        bands=replaced.bands,
        description=(
            f"Starter rules built from the data's event types and fit attributes, replacing "
            f"{replaced.name!r}, whose signals matched nothing."
        ),
        entity_noun=replaced.entity_noun,
        max_score=replaced.max_score,
        source="<starter>",
    )
    scores = np.clip(signal_units(draft, frame).to_numpy() @ draft.points.to_numpy(), 0, None)
    bands = share_bands(draft, np.minimum(scores, draft.max_score), list(BAND_SHARES))
    return StarterRules(
        rules=draft.with_points({}, bands),
        event_types=tuple(s.column[: -len(RECENT_SUFFIX)] for s in events),
        attributes=tuple(dict.fromkeys(s.column for s in attributes)),
        replaced=replaced.name,
    )
