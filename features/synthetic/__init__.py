"""Synthetic lead and customer histories with known outcome probabilities.

:func:`generate` writes ``events/part-*.parquet``, ``entities.parquet``,
``outcomes.parquet``, ``true_probabilities.parquet`` and ``generator.json`` to a
folder; :func:`true_weights` reads the true model back and
:func:`true_probability` applies it to any feature table.
"""

from features.synthetic.generator import GeneratedData, generate
from features.synthetic.output import source_paths, true_weights
from features.synthetic.truth import TargetModel, true_model, true_probability

__all__ = [
    "GeneratedData",
    "TargetModel",
    "generate",
    "source_paths",
    "true_model",
    "true_probability",
    "true_weights",
]
