"""The rule score: signal units, points clipped to 0..max_score, bands, and the estimator.

The rule file format (signals, points, caps, bands) is described in
:mod:`models.rulefile`; this module applies a rule file to a feature table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from features.targets import CONVERSION, TARGETS
from models.rulefile import (
    BUILTIN_RULE_FILES,
    OPERATORS,
    Band,
    RuleFileError,
    RuleSet,
    Signal,
    atomic_write_text,
    load_rules,
    parse_rules,
    rule_file_path,
    save_rules,
)

__all__ = [
    "BUILTIN_RULE_FILES", "OPERATORS", "Band", "RuleFileError", "RuleScore", "RuleSet",
    "Signal", "assign_bands", "atomic_write_text", "load_rules", "parse_rules",
    "rule_file_path", "rule_scores_by_kind", "save_rules", "score_points", "signal_units",
]  # fmt: skip


def signal_units(rule_set: RuleSet, features: pd.DataFrame) -> pd.DataFrame:
    """Units of every signal per row (already capped), so ``score = units @ points``.

    Args:
        rule_set: The rules.
        features: A feature frame with (at least) every column the rules read.

    Returns:
        One float column per signal, same index as ``features``.

    Raises:
        RuleFileError: If a column is missing or a numeric column holds text.
    """
    absent = sorted({s.column for s in rule_set.signals} - set(features.columns))
    if absent:
        users = [s.name for s in rule_set.signals if s.column in absent]
        raise RuleFileError(
            f"Rule file {rule_set.source} reads column(s) {', '.join(absent)} (signals "
            f"{', '.join(users)}), which the feature frame does not have; it has "
            f"{features.shape[1]} columns such as {', '.join(map(str, features.columns[:8]))}."
        )
    units = {s.name: _units(s, features[s.column], rule_set.source) for s in rule_set.signals}
    frame = pd.DataFrame(units, index=features.index, dtype="float64")
    for signal in rule_set.signals:
        fired = frame[signal.name] > 0
        for other in signal.excludes:
            frame.loc[fired, other] = 0.0
    return frame


def _numeric(signal: Signal, column: pd.Series, source: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        sample = column[bad].head(3).tolist()
        raise RuleFileError(
            f"Rule file {source}, signal {signal.name!r}: column {signal.column!r} must be "
            f"numeric, but rows {column.index[bad][:3].tolist()} hold {sample}."
        )
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _units(signal: Signal, column: pd.Series, source: str) -> np.ndarray:
    if signal.kind == "category_equals":
        # isin treats missing values as "no match", whatever the dtype (category, str).
        return column.isin([signal.value]).to_numpy(dtype="float64")
    values = _numeric(signal, column, source)
    empty = np.isnan(values)
    if signal.kind == "flag":
        with np.errstate(invalid="ignore"):
            fired = OPERATORS[signal.op](values, float(signal.value))
        return np.where(empty, float(bool(signal.missing)), fired.astype("float64"))
    units = np.floor(np.clip(np.nan_to_num(values, nan=0.0), 0.0, None) / signal.unit + 1e-9)
    if signal.max_units is not None:
        units = np.minimum(units, signal.max_units)
    fill = float(signal.max_units) if signal.missing == "max" else 0.0
    return np.where(empty, fill, units)


def score_points(rule_set: RuleSet, units: pd.DataFrame) -> np.ndarray:
    """Clipped score from a unit matrix: ``clip(units @ points, 0, max_score)``."""
    raw = units[list(rule_set.points.index)].to_numpy() @ rule_set.points.to_numpy("float64")
    return np.clip(raw, 0, rule_set.max_score)


def assign_bands(rule_set: RuleSet, scores: np.ndarray) -> np.ndarray:
    """Band name per score: the highest band whose ``min`` the score reaches."""
    minimums = np.array([b.min for b in rule_set.bands][::-1], dtype="float64")
    names = np.array([b.name for b in rule_set.bands][::-1], dtype="object")
    position = np.searchsorted(minimums, np.asarray(scores, dtype="float64"), side="right") - 1
    return names[np.clip(position, 0, None)]


class RuleScore(BaseEstimator):
    """Weighted-rule score as a scikit-learn style estimator.

    The points come from the rule file, so ``fit`` only parses it (labels are
    ignored; learning new points is :func:`models.recalibrate.recalibrate`), and
    ``predict`` on an unfitted estimator parses the file on the fly.

    Args:
        rules: Built-in rule file name, path to a YAML/TOML rule file, or a RuleSet.

    Attributes:
        rules_: The parsed :class:`RuleSet`.
        weights_: Points per unit of each signal (a Series indexed by signal name).
    """

    def __init__(self, rules: str | Path | RuleSet = "engagement") -> None:
        self.rules = rules

    def fit(self, X: pd.DataFrame, y: object = None) -> RuleScore:  # noqa: N803
        """Parse the rule file and check that ``X`` has every column it reads.

        Args:
            X: Feature frame.
            y: Ignored (kept for the scikit-learn contract).

        Returns:
            The fitted estimator.
        """
        rule_set = load_rules(self.rules)
        signal_units(rule_set, X.head(0))
        self.rules_ = rule_set
        self.weights_ = rule_set.points
        return self

    def _rule_set(self) -> RuleSet:
        return getattr(self, "rules_", None) or load_rules(self.rules)

    def signal_matrix(self, X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803
        """Units of each signal per row (capped), so ``predict = clip(units @ weights_)``."""
        return signal_units(self._rule_set(), X)

    def signal_points(self, X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803
        """Points each signal gives each row (before the 0..max clip), for reason text."""
        rule_set = self._rule_set()
        return self.signal_matrix(X) * rule_set.points.astype("float64")

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Score per row: the sum of points, clipped to ``0..max_score`` (0..150)."""
        rule_set = self._rule_set()
        return score_points(rule_set, signal_units(rule_set, X))

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Alias of :meth:`predict` (higher = more engaged)."""
        return self.predict(X)

    def predict_band(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Band name per row (engagement: ``high`` 100-150, ``medium`` 50-99, ``at-risk`` 0-49)."""
        rule_set = self._rule_set()
        return assign_bands(rule_set, self.predict(X))


def rule_scores_by_kind(
    features: pd.DataFrame, kinds: pd.Series | np.ndarray | None
) -> pd.DataFrame | None:
    """Rule points and band per entity, each kind scored by its target's rule file.

    Leads get the conversion target's rules, customers the churn target's (see
    :mod:`features.targets`). Without kinds, every entity is scored as a lead.

    Args:
        features: Feature table with ``entity_id``.
        kinds: ``kind`` per entity id (``lead`` / ``customer``), an array of the kind
            of each row of ``features`` (``None`` where unknown), or ``None``.

    Returns:
        ``entity_id, rule_score, rule_band`` for the entities scored, or ``None`` when
        no entity is.
    """
    frames = []
    # One lookup of the kinds, and per target only the columns its rules read (a copy of
    # every feature column of each kind's rows cost seconds at 1M entities).
    if isinstance(kinds, np.ndarray):
        mapped = pd.Series(kinds, dtype=object)
    else:
        mapped = None if kinds is None else features["entity_id"].map(kinds)
    ids = features["entity_id"]  # taken as it is (Arrow text stays Arrow), not as objects
    for target in TARGETS:
        if mapped is None:
            if target is not CONVERSION:
                continue
            mask = np.ones(len(features), dtype=bool)
        else:
            mask = mapped.eq(target.kind).fillna(False).to_numpy(bool)
        if not mask.any():
            continue
        estimator = RuleScore(target.rules).fit(features)
        rule_set = estimator.rules_
        columns = list(dict.fromkeys(signal.column for signal in rule_set.signals))
        rows = features.loc[mask, columns] if not mask.all() else features[columns]
        points = score_points(rule_set, signal_units(rule_set, rows))
        frames.append(
            pd.DataFrame(
                {
                    "entity_id": (
                        ids if mask.all() else ids.iloc[np.flatnonzero(mask)]
                    ).reset_index(drop=True),
                    "rule_score": points,
                    "rule_band": assign_bands(rule_set, points),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else None


def rows_by_kind(
    features: pd.DataFrame,
    feature_row: np.ndarray,
    feature_kind: np.ndarray,
    rules_scores: pd.DataFrame | None,
) -> np.ndarray | None:
    """Each entity's row of :func:`rule_scores_by_kind`'s frame, from its feature row.

    That frame holds, target by target, the feature rows of the target's kind in order.
    When ``rules_scores`` holds exactly those ids, an entity's rule row follows from
    its feature row without hashing a million ids again.

    Args:
        features: The feature table the rule scores were computed from.
        feature_row: Per entity, its row of ``features`` (-1: none).
        feature_kind: The kinds given to :func:`rule_scores_by_kind` (per feature row).
        rules_scores: What it returned.

    Returns:
        Per entity, its row of ``rules_scores`` (-1: none); ``None`` when the frame is
        not made that way (the caller then looks the ids up).
    """
    if rules_scores is None or "entity_id" not in rules_scores:
        return None
    kinds = [np.flatnonzero(feature_kind == target.kind) for target in TARGETS]
    taken = np.concatenate(kinds)
    if len(taken) != len(rules_scores):
        return None
    expected = features["entity_id"].iloc[taken].reset_index(drop=True)
    if not expected.equals(rules_scores["entity_id"].reset_index(drop=True)):
        return None
    at = np.full(len(features) + 1, -1)  # the extra -1 is the row of "no feature row"
    at[taken] = np.arange(len(taken))
    return at[feature_row]


def scores_of_kinds(
    features: pd.DataFrame, feature_row: np.ndarray, kind: np.ndarray
) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """:func:`rule_scores_by_kind` from the entities' kinds, and each entity's row of it.

    Args:
        features: The feature table.
        feature_row: Per entity, its row of ``features`` (-1: none).
        kind: Per entity, its kind (as scoring finds it: leads converted by the run
            date count as customers).

    Returns:
        The rule scores, and :func:`rows_by_kind` of them.
    """
    feature_kind = np.full(len(features), None, dtype=object)
    found = feature_row >= 0
    feature_kind[feature_row[found]] = kind[found]
    rules_scores = rule_scores_by_kind(features, feature_kind)
    return rules_scores, rows_by_kind(features, feature_row, feature_kind, rules_scores)
