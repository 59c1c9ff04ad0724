"""Synthetic lead and customer histories with known outcome probabilities.

:func:`generate` writes ``events/part-*.parquet``, ``entities.parquet``,
``outcomes.parquet``, ``true_probabilities.parquet`` and ``generator.json`` to a
folder; :func:`true_weights` reads ``generator.json`` back, and
``TargetModel.from_json(true_weights(folder)["models"][target])`` is the true
model of a target, whose ``probability`` applies to any feature table.
"""

from features.synthetic.generator import GeneratedData, generate
from features.synthetic.output import source_paths, true_weights
from features.synthetic.truth import TargetModel

__all__ = [
    "GeneratedData",
    "TargetModel",
    "generate",
    "source_paths",
    "true_weights",
]
