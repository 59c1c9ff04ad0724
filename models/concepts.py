"""Which human concept each model feature belongs to (the unit reasons are given in).

The windows, recency, decay and trend of one event type share a concept
(``FeatureDef.concept``); a category column is one feature and one concept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from features.spec import FeatureDef
from features.wording import capitalised

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConceptMap:
    """Which concept (and group) each model feature belongs to.

    Attributes:
        feature_names: The model's features, in booster order.
        definitions: The :class:`FeatureDef` of each feature.
        concepts: Distinct concepts, in order of first appearance.
        groups: ``fit`` or ``engagement`` per concept.
        feature_concept: Index into ``concepts`` per feature.
        categorical_levels: Training levels of categorical features.
        value_labels: Per feature, labels shown for its values (``reasons.lookups``).
    """

    feature_names: tuple[str, ...]
    definitions: tuple[FeatureDef, ...]
    concepts: tuple[str, ...]
    groups: tuple[str, ...]
    feature_concept: np.ndarray
    categorical_levels: dict[str, frozenset[str]]
    value_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def membership(self) -> np.ndarray:
        """``(features, concepts)`` 0/1 matrix: contributions @ membership sums per concept."""
        matrix = np.zeros((len(self.feature_names), len(self.concepts)))
        matrix[np.arange(len(self.feature_names)), self.feature_concept] = 1.0
        return matrix


def concept_map(
    feature_names: Sequence[str],
    catalog: Sequence[FeatureDef],
    categorical_levels: dict[str, list[str]] | None = None,
    value_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> ConceptMap:
    """Map model features to concepts using the feature catalog.

    Features missing from the catalog (e.g. extra columns a user added) become their
    own concept, named after the column, in the ``engagement`` group unless they are
    categorical (then ``fit``, like the entities table's attributes).

    Args:
        feature_names: The model's features, in booster order.
        catalog: ``features.spec.feature_catalog(...)`` of the feature table.
        categorical_levels: The model's ``categorical_levels``.
        value_labels: Per column, a label for each value (``reasons.lookups``).

    Returns:
        The mapping.
    """
    levels = categorical_levels or {}
    by_name = {d.name: d for d in catalog}
    definitions: list[FeatureDef] = []
    for name in feature_names:
        definition = by_name.get(name)
        if definition is None:
            label = name.replace("_", " ")
            definition = FeatureDef(
                name,
                "category" if name in levels else "float64",
                f"{capitalised(label)}: {{value}}",
                label,
                "fit" if name in levels else "engagement",
            )
        definitions.append(definition)
    concepts: list[str] = []
    groups: list[str] = []
    index: dict[str, int] = {}
    feature_concept = np.empty(len(definitions), dtype=np.int64)
    for i, definition in enumerate(definitions):
        if definition.concept not in index:
            index[definition.concept] = len(concepts)
            concepts.append(definition.concept)
            groups.append(definition.group)
        feature_concept[i] = index[definition.concept]
    missing = [n for n in feature_names if n not in by_name]
    if missing:
        log.info("Features outside the catalog, explained under their own name: %s", missing)
    return ConceptMap(
        tuple(feature_names),
        tuple(definitions),
        tuple(concepts),
        tuple(groups),
        feature_concept,
        {k: frozenset(map(str, v)) for k, v in levels.items()},
        dict(value_labels or {}),
    )
