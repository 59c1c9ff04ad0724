"""Population stability index (PSI) of scores and features against a reference.

A shift above the failure threshold fails a run, except on the first scoring of a
champion (no previous run, or a version no earlier row was scored by): the model has
not seen this population yet, so the shift is a warning (:func:`drift_status`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping

import numpy as np
import pandas as pd

#: Share given to an empty bin so that log(0) never appears.
_EMPTY_BIN_SHARE = 1e-4


def psi(
    reference: pd.Series | np.ndarray, current: pd.Series | np.ndarray, bins: int = 10
) -> float:
    """Population stability index of ``current`` against ``reference``.

    Numeric values are cut at the reference's deciles (``bins`` quantile bins, ties
    merged); non-numeric values are compared level by level. Missing values form a
    bin of their own, so a feature that suddenly goes missing shows as drift.
    PSI = sum((cur - ref) * ln(cur / ref)) over bins; below 0.1 is usually read as
    stable, 0.1-0.25 as a moderate shift and above 0.25 as a major one.

    Args:
        reference: Values the model was trained or validated on.
        current: Values of this run.
        bins: Number of quantile bins for numeric values.

    Returns:
        The PSI (0 when both are empty).
    """
    ref = pd.Series(reference)
    cur = pd.Series(current)
    if ref.empty or cur.empty:
        return 0.0
    if pd.api.types.is_numeric_dtype(ref) and pd.api.types.is_numeric_dtype(cur):
        ref_labels, cur_labels = _numeric_bins(ref.astype("float64"), cur.astype("float64"), bins)
    else:
        ref_labels = ref.astype("object").where(ref.notna(), "<missing>")
        cur_labels = cur.astype("object").where(cur.notna(), "<missing>")
    ref_share = ref_labels.value_counts(normalize=True)
    cur_share = cur_labels.value_counts(normalize=True)
    levels = ref_share.index.union(cur_share.index)
    r = ref_share.reindex(levels, fill_value=0.0).to_numpy().clip(_EMPTY_BIN_SHARE, None)
    c = cur_share.reindex(levels, fill_value=0.0).to_numpy().clip(_EMPTY_BIN_SHARE, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _numeric_bins(ref: pd.Series, cur: pd.Series, bins: int) -> tuple[pd.Series, pd.Series]:
    edges = np.unique(np.nanquantile(ref.dropna(), np.linspace(0, 1, bins + 1)[1:-1]))
    if ref.notna().sum() == 0:
        edges = np.array([])

    def label(values: pd.Series) -> pd.Series:
        codes = np.searchsorted(edges, values.to_numpy(), side="right").astype("int64")
        return pd.Series(np.where(values.isna(), -1, codes), index=values.index)

    return label(ref), label(cur)


def psi_table(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], bins: int = 10
) -> pd.DataFrame:
    """PSI per column, largest first.

    Args:
        reference: Reference frame (e.g. the training features).
        current: This run's frame.
        columns: Columns present in both to compare.
        bins: Quantile bins for numeric columns.

    Returns:
        A frame with ``column`` and ``psi``, sorted by ``psi`` descending.
    """
    rows = [
        {"column": c, "psi": psi(reference[c], current[c], bins)}
        for c in columns
        if c in reference and c in current
    ]
    return pd.DataFrame(rows, columns=["column", "psi"]).sort_values("psi", ascending=False)


def score_psi(
    references: Mapping[str, pd.Series | np.ndarray], scored: pd.DataFrame
) -> dict[str, float]:
    """PSI of each target's probabilities in this run against its validation reference.

    Args:
        references: ``{target: reference probabilities}`` of the targets with a
            champion (its validation scores).
        scored: The scored frame with ``{target}_probability`` columns.

    Returns:
        ``{target: psi}`` for the targets with a non-empty reference and scored rows.
    """
    values = {}
    for target, reference in references.items():
        column = f"{target}_probability"
        if not len(reference) or column not in scored:
            continue
        current = scored[column].dropna()
        if len(current):
            values[target] = psi(reference, current)
    return values


def psi_status(values: Mapping[str, float], warn: float, fail: float) -> tuple[str, list[str]]:
    """Classify PSI values against the warning and failure thresholds.

    Args:
        values: ``{what: psi}``.
        warn: PSI above which a value is a warning.
        fail: PSI above which a value fails the run.

    Returns:
        ``("ok" | "warning" | "failed", messages)``, one message per value above a
        threshold.
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


def first_scorings(current: str, previous: Iterable[object] | None) -> set[str]:
    """Targets whose champion scores for the first time in this run.

    Args:
        current: This run's ``model_versions`` JSON (``{target: version or "rules"}``).
        previous: The ``model_versions`` of the previous run's rows, ``None`` when
            there is no previous run.

    Returns:
        The targets with a champion (not ``rules``) that no previous row was scored by.
    """
    versions = {t: v for t, v in json.loads(current).items() if v != "rules"}
    seen: set[tuple[str, str]] = set()
    rows = previous if previous is not None else ()
    # Distinct values first: one per model release, not one per row (a million rows).
    for raw in rows.unique() if isinstance(rows, pd.Series) else set(rows):
        if isinstance(raw, str) and raw:
            seen |= {(t, str(v)) for t, v in json.loads(raw).items()}
    return {t for t, v in versions.items() if (t, str(v)) not in seen}


def drift_status(
    values: Mapping[str, float], warn: float, fail: float, first_scored: Collection[str] = ()
) -> tuple[str, list[str]]:
    """:func:`psi_status`, where a champion's first scoring only warns.

    Args:
        values: ``{what: psi}``; a key is a target name, optionally followed by a
            space and what was measured (``conversion probability``).
        warn: PSI above which a value is a warning.
        fail: PSI above which a value fails the run (on a later scoring).
        first_scored: Targets whose champion scores this population for the first
            time (:func:`first_scorings`).

    Returns:
        ``("ok" | "warning" | "failed", messages)``.
    """
    first = {k: v for k, v in values.items() if k.split(" ")[0] in first_scored}
    status, messages = psi_status({k: v for k, v in values.items() if k not in first}, warn, fail)
    for name, value in first.items():
        if value > min(warn, fail):
            status = "warning" if status == "ok" else status
            limit = f"failure threshold {fail}" if value > fail else f"warning threshold {warn}"
            messages.append(
                f"PSI of {name} is {value:.3f}, above the {limit}: its model scores this "
                "population for the first time, so the shift is a warning, not a failure; "
                "check the inputs and the spread of the scores."
            )
    return status, messages
