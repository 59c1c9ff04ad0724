"""The run summary: what a nightly run read, scored, decided and how stable it was.

Published as a Prefect Markdown artifact and as ``summary.json`` beside the outputs.
Built from plain values so it can be tested without running a flow. The wall clock of
the run (``started_at``, ``finished_at``) is in the Markdown artifact and the log only:
``summary.json``, like every other output, is byte-identical when a date is run again
on the same inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from models.model import TrainedModel
    from pipelines.settings_sections import ScheduleSettings
    from pipelines.sources import Inputs
    from pipelines.step_timing import StepTiming

BANDS = ("high", "medium", "at-risk")


@dataclass
class RunSummary:
    """Everything the nightly run reports about itself.

    ``started_at`` and ``finished_at`` (ISO 8601, UTC) are the wall clock of the run:
    shown by :meth:`to_markdown`, left out of :meth:`to_dict` (``summary.json``).
    """

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
    #: Targets scored with the rule score, and why (switched off, too few labels, ...).
    rule_scored: dict[str, str] = field(default_factory=dict)
    #: Positive labels each untrainable target still needs before a model is trained.
    positives_needed: dict[str, int] = field(default_factory=dict)
    #: What the start-of-run recovery cleaned or repaired (``pipelines.recovery``).
    recovered: dict[str, int] = field(default_factory=dict)
    #: The feed checks (:class:`features.feed_checks.FeedReport`): events before the run
    #: date, quarantined rows with samples, undeclared event types.
    feeds: dict[str, Any] = field(default_factory=dict)
    #: Entities per kind when the entities have no ``kind`` column (inferred kinds).
    kinds_inferred: dict[str, int] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    #: Wall time and peak memory per step (:mod:`pipelines.step_timing`): in the
    #: Markdown and ``timings/DATE.json``, never in ``summary.json`` (they vary).
    timings: list[StepTiming] = field(default_factory=list)

    @property
    def counts_match(self) -> bool:
        """Every input entity has exactly one output row."""
        return self.entities_in == self.rows_out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, without the wall clock (the same for a rerun of the date)."""
        out = asdict(self)
        del out["started_at"], out["finished_at"], out["timings"]
        out["counts_match"] = self.counts_match
        return out

    def to_markdown(self) -> str:
        """A short Markdown report for the Prefect UI and for people."""
        lines = [f"# leadscore nightly run, {self.as_of}", ""]
        if self.started_at:
            lines.append(f"- Ran: {self.started_at} to {self.finished_at or '?'} (UTC)")
        check = "yes" if self.counts_match else "**NO**"
        lines += [
            f"- Entities in: {self.entities_in:,}; rows out: {self.rows_out:,} "
            f"(every entity accounted for: {check})",
            f"- Scored: {self.scored:,}; not scored: "
            + (", ".join(f"{n:,} {why}" for why, n in self.not_scored.items()) or "none"),
            "- Inputs: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.inputs.items()),
        ]
        if self.kinds_inferred:
            lines.append(
                "- Kind inferred (no kind column; a conversion or a purchase makes a "
                "customer): " + ", ".join(f"{n:,} {k}s" for k, n in self.kinds_inferred.items())
            )
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
        if self.timings:
            lines += ["", "## Steps", "", "| step | seconds | peak memory (GB) |"]
            lines.append("|---|---:|---:|")
            lines += [
                f"| {t.step} | {t.seconds:.1f} | {t.peak_rss_bytes / 1e9:.2f} |"
                for t in self.timings
            ]
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
    # Each distinct (previous band, band) pair is compared and named once: a million
    # rows of object comparisons and label strings took 0.2 s of a nightly at 1M.
    band, band_levels = pd.factorize(scored["band"])  # missing: -1
    previous, previous_levels = pd.factorize(scored["previous_band"])
    has_band = band >= 0
    width = len(band_levels) + 1
    pairs, counts = np.unique((previous[has_band] + 1) * width + band[has_band],
                              return_counts=True)  # fmt: skip
    moves: dict[str, int] = {}
    for pair, n in zip(pairs.tolist(), counts.tolist(), strict=True):
        before, after = divmod(pair, width)
        was = "new" if before == 0 else previous_levels[before - 1]
        now = band_levels[after]
        if was != now:
            label = f"{was} -> {now}"
            moves[label] = moves.get(label, 0) + int(n)
    return dict(sorted(moves.items()))


def summarise(
    inputs: Inputs,
    features: pd.DataFrame,
    scored: pd.DataFrame,
    champions: Mapping[str, TrainedModel | None],
    decisions: Mapping[str, str],
    retention: Mapping[str, int],
    as_of: pd.Timestamp,
    schedule: ScheduleSettings,
    positives_needed: Mapping[str, int] | None = None,
    first_scored: Collection[str] = (),
) -> RunSummary:
    """The run summary (counts, bands, moves, champions, PSI, warnings).

    Args:
        inputs: The run's inputs and their report.
        features: The feature table scored.
        scored: One row per entity.
        champions: ``{target: champion or None}`` used for scoring.
        decisions: Retrain decision per target, in words.
        retention: Rows purged by event retention.
        as_of: The run date.
        schedule: The PSI warning and failure thresholds.
        positives_needed: More positive labels each target refused for too few needs.
        first_scored: Targets whose champion scores for the first time: their drift
            warns instead of failing (:func:`models.drift.first_scorings`).

    Returns:
        The summary, ready to publish.
    """
    from features.input_report import duplicates_warning
    from models.drift import drift_status, score_psi
    from models.model import absent_columns_warning

    status = scored["status"].astype(str)
    report = inputs.report.to_dict()
    summary = RunSummary(
        as_of=str(as_of.date()),
        inputs={k: v for k, v in report.items() if isinstance(v, int)},
        entities_in=len(inputs.entities),
        rows_out=len(scored),
        scored=int((status == "scored").sum()),
        not_scored={k: int(v) for k, v in status[status != "scored"].value_counts().items()},
        bands={k: int(v) for k, v in scored["band"].value_counts().items()},
        band_moves=band_moves(scored),
        champions={t: _champion_text(m) for t, m in champions.items()},
        retrain=dict(decisions),
        rule_scored={
            t: decisions.get(t, "no @champion yet") for t, m in champions.items() if m is None
        },
        positives_needed=dict(positives_needed or {}),
        retention=dict(retention),
    )
    values = {f"{t} probability": v for t, v in score_psi(references(champions), scored).items()}
    summary.psi = values
    summary.psi_status, summary.warnings = drift_status(
        values, schedule.psi_warn, schedule.psi_fail, first_scored
    )
    for target, model in champions.items():
        absent = "" if model is None else absent_columns_warning(target, model, features.columns)
        if absent:
            summary.warnings.append(absent)
    if "kind" not in inputs.entities and "kind" in scored:
        counts = scored["kind"].astype(str).value_counts()
        summary.kinds_inferred = {k: int(counts.get(k, 0)) for k in ("lead", "customer")}
    duplicates = duplicates_warning(inputs.report)
    if duplicates:
        summary.warnings.append(duplicates)
    if inputs.feed is not None:
        summary.feeds = inputs.feed.to_dict()
        summary.warnings += inputs.feed.warnings()
    summary.warnings += [
        f"{target} is scored with the rule score: {n:,} more positive labels are needed "
        "to train a model (model.min_positive_labels)."
        for target, n in summary.positives_needed.items()
    ]
    erased = inputs.report.entities_forgotten_earlier
    if erased:
        summary.warnings.append(
            f"{erased:,} entities erased earlier with `leadscore forget` are in the sources "
            "again; their rows were dropped. Erase them in the source systems too."
        )
    return summary


def _champion_text(model: TrainedModel | None) -> str:
    """``v3, validated by rolling origin (out-of-time, pooled folds)``, or the fallback."""
    if model is None:
        return "none: rule score used"
    scheme = (model.metadata.get("split") or {}).get("scheme_name")
    version = f"v{model.metadata.get('registered_version', '?')}"
    return f"{version}, validated by {scheme}" if scheme else version


def references(champions: Mapping[str, TrainedModel | None]) -> dict[str, Any]:
    """Each champion's validation probabilities, the reference its drift is measured on."""
    return {t: m.reference_scores for t, m in champions.items() if m is not None}
