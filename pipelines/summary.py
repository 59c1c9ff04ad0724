"""The run summary: what a nightly run read, scored, decided and how stable it was.

Published as a Prefect Markdown artifact and as ``summary.json`` beside the outputs.
Built from plain values so it can be tested without running a flow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

BANDS = ("high", "medium", "at-risk")


@dataclass
class RunSummary:
    """Everything the nightly run reports about itself."""

    as_of: str
    inputs: dict[str, int] = field(default_factory=dict)
    entities_in: int = 0
    rows_out: int = 0
    scored: int = 0
    not_scored: dict[str, int] = field(default_factory=dict)
    bands: dict[str, int] = field(default_factory=dict)
    band_moves: dict[str, int] = field(default_factory=dict)
    champions: dict[str, str] = field(default_factory=dict)
    retrain: dict[str, str] = field(default_factory=dict)
    psi: dict[str, float] = field(default_factory=dict)
    psi_status: str = "ok"
    warnings: list[str] = field(default_factory=list)
    retention: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def counts_match(self) -> bool:
        """Every input entity has exactly one output row."""
        return self.entities_in == self.rows_out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["counts_match"] = self.counts_match
        return out

    def to_markdown(self) -> str:
        """A short Markdown report for the Prefect UI and for people."""
        lines = [f"# leadscore nightly run, {self.as_of}", ""]
        check = "yes" if self.counts_match else "**NO**"
        lines += [
            f"- Entities in: {self.entities_in:,}; rows out: {self.rows_out:,} "
            f"(every entity accounted for: {check})",
            f"- Scored: {self.scored:,}; not scored: "
            + (", ".join(f"{n:,} {why}" for why, n in self.not_scored.items()) or "none"),
            "- Inputs: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.inputs.items()),
        ]
        if self.retention:
            lines.append(
                "- Retention purge: "
                + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.retention.items())
            )
        lines += ["", "## Bands", "", "| band | leads |", "|---|---:|"]
        lines += [f"| {b} | {self.bands.get(b, 0):,} |" for b in BANDS]
        if self.band_moves:
            lines += ["", "## Band moves since the last run", "", "| move | leads |", "|---|---:|"]
            lines += [f"| {m} | {n:,} |" for m, n in self.band_moves.items()]
        lines += ["", "## Models", ""]
        for target, version in self.champions.items():
            decision = self.retrain.get(target, "")
            lines.append(f"- {target}: {version}" + (f" ({decision})" if decision else ""))
        if self.psi:
            lines += [
                "",
                f"## Stability (PSI against the training reference): {self.psi_status}",
                "",
            ]
            lines += ["| what | PSI |", "|---|---:|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in self.psi.items()]
        if self.warnings:
            lines += ["", "## Warnings", ""] + [f"- {w}" for w in self.warnings]
        if self.outputs:
            lines += ["", "## Outputs", ""] + [f"- {k}: `{v}`" for k, v in self.outputs.items()]
        return "\n".join(lines) + "\n"


def band_moves(scored: pd.DataFrame) -> dict[str, int]:
    """Counts of ``previous band -> band`` for entities whose band changed.

    Args:
        scored: Scored frame with ``band`` and ``previous_band`` columns.

    Returns:
        Mapping like ``{"medium -> high": 12}``, new entities as ``new -> band``.
    """
    if scored.empty or "previous_band" not in scored:
        return {}
    have_band = scored[scored["band"].notna()]
    previous = (
        have_band["previous_band"].astype("object").where(have_band["previous_band"].notna(), "new")
    )
    moved = have_band[previous != have_band["band"].astype("object")]
    labels = previous[moved.index].astype(str) + " -> " + moved["band"].astype(str)
    return {k: int(v) for k, v in labels.value_counts().sort_index().items()}


def psi_status(values: dict[str, float], warn: float, fail: float) -> tuple[str, list[str]]:
    """Classify PSI values against the warning and failure thresholds.

    Returns:
        ``("ok" | "warning" | "failed", messages)``.
    """
    messages = []
    status = "ok"
    for name, value in values.items():
        if value > fail:
            status = "failed"
            messages.append(f"PSI of {name} is {value:.3f}, above the failure threshold {fail}.")
        elif value > warn:
            status = "warning" if status == "ok" else status
            messages.append(f"PSI of {name} is {value:.3f}, above the warning threshold {warn}.")
    return status, messages
