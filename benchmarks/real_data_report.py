"""The real-data results table: its rows, one dataset's result, and the Markdown report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEED = 42
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")


@dataclass
class Row:
    """One line of the results table."""

    score: str
    metrics: dict[str, float]
    n: int = 0
    note: str = ""


@dataclass
class DatasetResult:
    """The rows, notes and timing of one dataset."""

    name: str
    split: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pick_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The table's metrics out of an evaluation dict (NaN where one is missing)."""
    return {k: float(metrics.get(k, np.nan)) for k in METRICS}


def model_rows(result: Any, model_label: str = "model (LightGBM, calibrated)") -> list[Row]:
    """Table rows of a :class:`models.train.TrainResult`: model, rules, recalibrated rules."""
    n = int(result.metrics["model"]["n"])
    labels = {"model": model_label, "rule": "rule score (default points)",
              "rule_recalibrated": "rule score (recalibrated on the training fold)"}  # fmt: skip
    return [Row(labels.get(k, k), pick_metrics(v), n) for k, v in result.metrics.items()]


def _cell(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def render_markdown(results: list[DatasetResult], total_seconds: float) -> str:
    """The results table and its notes."""
    lines = [
        "# Real-data results",
        "",
        "Produced by `benchmarks/real_data.py`; every number is on the validation fold named "
        "under each dataset. ECE: 10 equal-frequency bins. Lift: outcome rate of the top "
        "10% of scores over the overall rate. `–`: not applicable (rank-only scores have "
        "no probability metrics; published baselines report AUC only).",
        "",
        "| dataset | score | n | ROC AUC | PR AUC | log loss | Brier | ECE | lift top 10% |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for row in result.rows:
            m = row.metrics
            lines.append(
                f"| {result.name} | {row.score} | {row.n or '–'} | {_cell(m['roc_auc'])} | "
                f"{_cell(m['pr_auc'])} | {_cell(m['log_loss'])} | {_cell(m['brier'])} | "
                f"{_cell(m['ece'], 4)} | {_cell(m['lift_top_decile'], 2)} |"
            )
    for result in results:
        lines += ["", f"## {result.name}", "", f"Split: {result.split}.", ""]
        lines += [f"- {note}" for note in result.notes if note]
        notes = {row.score: row.note for row in result.rows if row.note}
        lines += [f"- {score}: {note}." for score, note in notes.items()]
        lines.append(f"- Run time {result.seconds:.0f} s.")
    lines += ["", f"Total run time {total_seconds:.0f} s (2 cores).", ""]
    return "\n".join(lines)
