"""Reason sentences: each feature's description rendered with the entity's own value.

Rendering is the slow part of reason codes for millions of rows, so every distinct
value is rendered once and impacts are formatted through a lookup table.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.spec import FeatureDef

if TYPE_CHECKING:
    from models.explain import ConceptMap

_EMPTY_NOTE = re.compile(r"\s*\(empty:\s*([^)]*)\)")
#: Closing part of one reason's JSON object.
JSON_TAIL = '", "impact": {:d}}}'
#: Impacts formatted through a lookup table within [-RANGE, RANGE], one by one beyond.
_IMPACT_RANGE = 300


def _decimals(description: str) -> int | None:
    """Decimals the description shows of ``{value}`` (``.0f`` -> 0, ``.1%`` -> 3)."""
    for _, name, spec, _ in string.Formatter().parse(description):
        if name == "value" and spec:
            match = re.search(r"\.(\d+)([f%])", spec)
            if match:
                return int(match.group(1)) + (2 if match.group(2) == "%" else 0)
    return None


def sentence(definition: FeatureDef, value: object, levels: frozenset[str] | None) -> str:
    """The feature's description with ``value``; a missing or unseen value says so."""
    missing = value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
    if missing:
        note = _EMPTY_NOTE.search(definition.description)
        return f"{definition.concept.capitalize()}: {note.group(1) if note else 'no value'}"
    text = _EMPTY_NOTE.sub("", definition.describe(value))
    if levels is not None and str(value) not in levels:
        text += " (new value, scored as unknown)"
    return text


def entity_values(block: pd.DataFrame, concepts: ConceptMap) -> list[np.ndarray]:
    """Per feature, the rows' own values: floats rounded as the sentence shows them."""
    values = []
    for name, definition in zip(concepts.feature_names, concepts.definitions, strict=True):
        if name not in block:
            values.append(np.full(len(block), np.nan))
        elif name in concepts.categorical_levels or definition.dtype == "category":
            values.append(block[name].to_numpy(dtype=object))
        else:
            numbers = pd.to_numeric(block[name], errors="coerce").to_numpy(dtype="float64")
            decimals = _decimals(definition.description)
            # Rounding first lets equal-looking values share one rendered sentence.
            values.append(numbers if decimals is None else np.round(numbers, decimals))
    return values


def sentences(
    rows: np.ndarray, features: np.ndarray, values: list[np.ndarray], concepts: ConceptMap
) -> tuple[np.ndarray, np.ndarray]:
    """Sentence per (row, feature) pair, plain and JSON-escaped; each value rendered once."""
    plain = np.empty(len(rows), dtype=object)
    escaped = np.empty(len(rows), dtype=object)
    for feature in np.unique(features):
        chosen = np.flatnonzero(features == feature)
        codes, uniques = pd.factorize(values[feature][rows[chosen]], use_na_sentinel=True)
        definition = concepts.definitions[feature]
        levels = concepts.categorical_levels.get(concepts.feature_names[feature])
        rendered = [sentence(definition, u, levels) for u in [*uniques, None]]
        # Code -1 (missing) picks the last entry, the sentence for a missing value.
        plain[chosen] = np.array(rendered, dtype=object)[codes]
        escaped[chosen] = np.array([json.dumps(t)[1:-1] for t in rendered], dtype=object)[codes]
    return plain, escaped


def joined(parts: np.ndarray, valid: np.ndarray, separator: str) -> np.ndarray:
    """Row-wise join of the valid entries of an ``(rows, k)`` object array."""
    joined = np.full(len(parts), "", dtype=object)
    seen = np.zeros(len(parts), dtype=bool)
    for j in range(parts.shape[1]):
        sep = np.where(valid[:, j] & seen, separator, "")
        joined = joined + sep + np.where(valid[:, j], parts[:, j], "")
        seen |= valid[:, j]
    return joined


@functools.cache
def _impact_table(template: str) -> np.ndarray:
    values = range(-_IMPACT_RANGE, _IMPACT_RANGE + 1)
    return np.array([template.format(i) for i in values], dtype=object)


def impact_text(impact: np.ndarray, template: str) -> np.ndarray:
    """``template.format(i)`` for each integer (formatting millions one by one is slow)."""
    impact = np.asarray(impact, dtype=np.int64)
    inside = np.abs(impact) <= _IMPACT_RANGE
    text = _impact_table(template)[np.where(inside, impact, 0) + _IMPACT_RANGE]
    if not inside.all():
        text[~inside] = [template.format(int(i)) for i in impact[~inside]]
    return text
