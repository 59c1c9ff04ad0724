"""The recalibration report: the side-by-side signal table and the Markdown for marketers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from models.point_fit import PointFit
from models.rulefile import signal_label
from models.rules import RuleSet

OUTCOME_VERB = {"churn": "churned", "conversion": "converted"}


def _status(fit: PointFit, name: str, old: int, new: int) -> str:
    if name not in fit.points:
        return "not estimable"
    if new * old < 0:
        return "flipped"
    if new == 0 and old != 0:
        return "zeroed"
    return "kept" if new == old else "changed"


def signal_table(
    old: RuleSet, new: RuleSet, fit: PointFit, units: pd.DataFrame, y: np.ndarray,
    target: str, confidence: float,
) -> pd.DataFrame:  # fmt: skip
    """One row per signal: old and new points, interval, holdout rates, evidence sentence."""
    noun, verb = old.entity_noun, OUTCOME_VERB[target]
    rows = []
    for signal in old.signals:
        new_points = new.signal(signal.name).points
        has = units[signal.name].to_numpy() > 0
        rate_with = float(y[has].mean()) if has.any() else float("nan")
        rate_without = float(y[~has].mean()) if (~has).any() else float("nan")
        low, high = fit.intervals.get(signal.name, (float("nan"), float("nan")))
        status = _status(fit, signal.name, signal.points, new_points)
        per = ""
        if signal.kind == "per_unit":
            per = f" per {signal.unit_label or f'step of {signal.unit:g}'}"
        label = signal.label
        sentence = f"{label}: {signal.points} -> {new_points} points{per}."
        if has.any() and (~has).any():
            sentence += (
                f" {noun.capitalize()} with this signal {verb} {rate_with:.1%} of the time "
                f"against {rate_without:.1%} for the rest (holdout: {int(has.sum()):,} of "
                f"{has.size:,} {noun} scored),"
            )
        else:
            sentence += f" In the holdout {'all' if has.all() else 'no'} {noun} had this signal,"
        if status == "not estimable":
            who = f"every one of the {noun}" if fit.unvarying.get(signal.name) else f"no {noun}"
            sentence += (
                f" and in the training data {who} had it, so the data cannot judge it and its "
                "points are kept."
            )
        else:
            sentence += " " + _verdict(status, signal.points, new_points, (low, high), confidence)
        rows.append({
            "signal": signal.name, "description": signal.description,
            "old_points": signal.points, "new_points": new_points,
            "ci_low": round(low, 1), "ci_high": round(high, 1), "status": status,
            "n_with_signal": int(has.sum()), "rate_with": rate_with,
            "rate_without": rate_without, "evidence": sentence,
        })  # fmt: skip
    return pd.DataFrame(rows)


def _verdict(
    status: str, old: int, new: int, interval: tuple[float, float], confidence: float
) -> str:
    """Why the points moved, in one clause (the sentence before gives the rates)."""
    if status == "flipped":
        text = "and the data clearly contradicts the old rule's direction, so it changes sign."
    elif status == "zeroed":
        text = "but with the other signals counted it makes no clear difference: it now scores 0."
    elif status == "kept":
        text = "which agrees with the old rule, so its points stay."
    else:
        more = new > old
        if old > 0:
            text = f"so it is worth {'more' if more else 'less'} than the old rule said."
        elif old < 0:
            cost = "costs fewer points" if more else "should cost more points"
            text = f"so it {cost} than the old rule said."
        else:
            text = f"so it now {'adds' if more else 'takes off'} points."
    low, high = interval
    if np.isfinite(low) and low <= 0 <= high and new != 0:
        text += (
            f" Its likely range ({low:.0f} to {high:.0f}, {confidence:.0%}) includes 0: "
            "treat this one with caution."
        )
    return text


def format_dates(dates: list[str]) -> str:
    """``first to last, N dates`` (or the one date)."""
    return dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}, {len(dates)} dates"


def _fmt(value: object, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None or not np.isfinite(float(value)) else pattern.format(value)


def _band_ranges(rules: RuleSet) -> dict[str, str]:
    out, top = {}, rules.max_score
    for band in rules.bands:
        out[band.name] = f"{band.min}-{top}"
        top = band.min - 1
    return out


def render_markdown(
    target: str,
    old: RuleSet,
    new: RuleSet,
    table: pd.DataFrame,
    metrics: dict[str, dict[str, Any]],
    split: dict[str, Any],
    settings: dict[str, Any],
) -> str:
    """The report for marketers: what changed, by how much, why, and does it help.

    Args:
        target: ``churn`` or ``conversion``.
        old: The rules as given.
        new: The recalibrated rules.
        table: The signal table (:func:`signal_table`).
        metrics: Holdout metrics per scorer (``old_rules``, ``recalibrated_rules``,
            optionally ``model``).
        split: Training and holdout cutoffs and row counts.
        settings: The parameters used (``confidence``, ``n_bootstrap``...).
    """
    noun, verb = old.entity_noun, OUTCOME_VERB[target]
    riskiest = "lowest-scoring" if target == "churn" else "highest-scoring"
    lines = [
        f"# Recalibrated {old.name} rules (target: {target})",
        "",
        f"The points below were learned from {split['n_training']:,} snapshots of {noun} "
        f"(scoring dates {format_dates(split['training_cutoffs'])}) and then checked on the "
        f"{split['n_holdout']:,} most recent snapshots (scoring dates "
        f"{format_dates(split['holdout_cutoffs'])}), which the learning never saw. "
        "The score still adds up the points of each signal and stays between 0 and "
        f"{new.max_score}; what each signal measures and how many units it can count "
        "are unchanged.",
        "",
        "## What changed and why",
        "",
    ]
    lines += [f"- {row.evidence}" for row in table.itertuples()]
    lines += [
        "",
        "## Side by side",
        "",
        "| Signal | Old points | New points | Likely range | Status |",
        "|---|---:|---:|---|---|",
    ]
    for row in table.itertuples():
        likely = "n/a" if np.isnan(row.ci_low) else f"{row.ci_low:.0f} to {row.ci_high:.0f}"
        label = signal_label(row.description, row.signal)
        lines.append(f"| {label} | {row.old_points} | {row.new_points} | {likely} | {row.status} |")
    confidence = settings.get("confidence", 0.95)
    lines += [
        "",
        f"Likely range: where {confidence:.0%} of {settings.get('n_bootstrap')} "
        f"re-fits on resampled {noun} put the points.",
        "",
        "## Bands",
        "",
        "| Band | Old scores | New scores |",
        "|---|---|---|",
    ]
    old_ranges, new_ranges = _band_ranges(old), _band_ranges(new)
    lines += [f"| {b.name} | {old_ranges[b.name]} | {new_ranges[b.name]} |" for b in old.bands]
    lines += [
        "",
        f"The new thresholds put the same share of {noun} in each band as the old ones "
        "did (on the training snapshots): the bands stay the same size, but who is in "
        "them changes.",
        "",
        "## Does it work better? (holdout)",
        "",
    ]
    columns = [("old_rules", "Old rules"), ("recalibrated_rules", "New rules"), ("model", "Model")]
    columns = [(key, title) for key, title in columns if key in metrics]
    lines += [
        "| Measure | " + " | ".join(t for _, t in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    m = metrics
    measures = [
        ("roc_auc", f"Ranks who {verb} (ROC AUC; 0.5 = chance, 1 = perfect)", "{:.3f}"),
        ("pr_auc", f"Precision-recall AUC (chance = the {verb} rate)", "{:.3f}"),
        ("lift_top_decile", f"Top-10% lift: {verb} rate of the 10% {riskiest} / average", "{:.2f}"),
    ]
    for key, title, pattern in measures:
        lines.append(
            f"| {title} | " + " | ".join(_fmt(m[c].get(key), pattern) for c, _ in columns) + " |"
        )
    for band in old.bands:
        cells = []
        for c, _ in columns:
            stats = m[c].get("band_rates", {}).get(band.name)
            cells.append(f"{stats['rate']:.1%} of {int(stats['n'])}" if stats else "none")
        lines.append(f"| Band {band.name}: share who {verb} | " + " | ".join(cells) + " |")
    if "model" in m:
        lines += ["", "The model's bands hold as many " + noun + " as the new rules' bands, "
                  "taken in the model's order, so the rates compare like with like."]  # fmt: skip
    base = m["old_rules"].get("base_rate", float("nan"))
    old_auc, new_auc = m["old_rules"]["roc_auc"], m["recalibrated_rules"]["roc_auc"]
    better = "better than" if new_auc > old_auc else "no better than"
    lines += [
        "",
        f"Overall, {base:.1%} of the holdout {noun} {verb}. The new rules rank {noun} "
        f"{better} the old ones (ROC AUC {_fmt(new_auc)} against {_fmt(old_auc)}).",
        "",
        "## How this was computed",
        "",
        "A logistic regression with a mild penalty (ridge) learned how much each signal "
        f"changes the odds that one of the {noun} is engaged; a signal keeps the direction "
        "of its old points unless the data clearly says otherwise (a large effect in "
        "the other direction, allowing for the number of signals tested); the strength "
        "of the penalty was chosen on the most recent training dates. Because the "
        "score cannot go below 0, the fit takes that floor into account. The learned "
        "weights were scaled so that the highest possible score from positive signals is "
        "the same as before, and rounded to whole points. Full method: "
        "`models/recalibrate.py`.",
        "",
    ]
    return "\n".join(lines)
