"""Which evaluation scheme a training frame allows, and why, in words.

Three schemes, chosen by :func:`choose_split` from the cutoffs the data has:

* ``out_of_time``: enough cutoffs for training, calibration and validation folds, each
  boundary at least one horizon apart, so no label window of an earlier fold reaches
  into a later one (:func:`out_of_time_split`).
* ``rolling_origin``: too few cutoffs for that, but at least one cutoff lies a horizon
  or more after another. Each fold trains on the cutoffs at least a horizon before a
  later validation cutoff (an expanding window), stops early and calibrates on a
  held-out fifth of its training entities, and predicts that validation cutoff; the
  validation predictions of all folds are pooled. The model used for scoring is refit
  on every cutoff by the same procedure (:func:`rolling_origin_split`).
* ``stratified``: one cutoff (or none a horizon apart, or a snapshot without time): a
  random split stratified by label, seeded (:func:`stratified_split`). Its metrics say
  how the model ranks similar entities, never how it holds up on a later period, and it
  is never called out-of-time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

Scheme = Literal["out_of_time", "rolling_origin", "stratified"]

#: How each scheme is named to people (model card, summary, CLI).
SCHEME_NAMES: dict[str, str] = {
    "out_of_time": "out-of-time split",
    "rolling_origin": "rolling origin (out-of-time, pooled folds)",
    "stratified": "stratified random split (not out-of-time)",
}

#: Share of the training entities held out for early stopping and calibration.
HOLDOUT_SHARE = 0.2
#: Blocks a snapshot in time order is cut into by :func:`row_order_split`.
ROW_BLOCKS = 5


@dataclass(frozen=True)
class Split:
    """Row positions of the folds, the scheme and why it was chosen.

    ``train`` and ``calibration`` are the rows the scoring model learns and calibrates
    on; ``validation`` the rows its metrics are computed on. For ``rolling_origin`` the
    metrics come from ``folds`` (one single-fold :class:`Split` per validation cutoff,
    pooled in that order, so ``validation`` is their concatenation).
    """

    train: np.ndarray
    calibration: np.ndarray
    validation: np.ndarray
    scheme: Scheme
    reason: str = ""
    gap_days: int = 0
    train_cutoffs: tuple[pd.Timestamp, ...] = ()
    calibration_cutoffs: tuple[pd.Timestamp, ...] = ()
    validation_cutoffs: tuple[pd.Timestamp, ...] = ()
    folds: tuple[Split, ...] = ()

    @property
    def out_of_time(self) -> bool:
        """Whether every validation row lies at least a horizon after its training rows."""
        return self.scheme != "stratified"

    def fold_splits(self) -> tuple[Split, ...]:
        """The folds whose validation predictions make the metrics (itself when one)."""
        return self.folds or (self,)

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary: scheme and why, sizes, cutoffs, out-of-time or not."""

        def days(values: tuple[pd.Timestamp, ...]) -> list[str]:
            return [v.strftime("%Y-%m-%d") for v in values]

        return {
            "scheme": self.scheme,
            "scheme_name": SCHEME_NAMES[self.scheme],
            "reason": self.reason,
            "out_of_time": self.out_of_time,
            "gap_days": self.gap_days,
            "folds": len(self.fold_splits()),
            "rows": {
                "train": len(self.train),
                "calibration": len(self.calibration),
                "validation": len(self.validation),
            },
            "cutoffs": {
                "train": days(self.train_cutoffs),
                "calibration": days(self.calibration_cutoffs),
                "validation": days(self.validation_cutoffs),
            },
        }


def _stamps(as_of: pd.Series | Sequence[object]) -> pd.Series:
    # The datetime array itself: ``to_numpy()`` of a zoned column is one Python
    # Timestamp per row (seconds per million rows).
    return pd.Series(pd.to_datetime(pd.Series(as_of), utc=True).array)


def _day(value: object) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d")


def cutoffs_needed(
    step_days: int, horizon_days: int, validation_cutoffs: int = 1, calibration_cutoffs: int = 1
) -> int:
    """Cutoffs ``step_days`` apart that a time split with horizon-wide gaps needs."""
    gap_steps = math.ceil(horizon_days / max(step_days, 1))
    return validation_cutoffs + calibration_cutoffs + 2 * gap_steps - 1


def out_of_time_split(
    as_of: pd.Series | Sequence[object],
    horizon_days: int,
    *,
    validation_cutoffs: int = 1,
    calibration_cutoffs: int = 1,
) -> Split:
    """Split rows by cutoff: oldest to train, then calibration, latest to validation.

    Each boundary keeps a gap of at least ``horizon_days``: a calibration cutoff ``c``
    needs ``c + horizon <= first validation cutoff`` and a training cutoff needs
    ``c + horizon <= first calibration cutoff``. Cutoffs inside a gap are left out.

    Args:
        as_of: Cutoff of every row.
        horizon_days: Label window in days.
        validation_cutoffs: Number of latest cutoffs in the validation fold.
        calibration_cutoffs: Number of cutoffs in the calibration fold.

    Returns:
        The split (scheme ``out_of_time``).

    Raises:
        ValueError: When there are not enough cutoffs for three separated folds.
    """
    stamps = _stamps(as_of)
    cutoffs = sorted(stamps.dropna().unique())
    gap = pd.Timedelta(days=horizon_days)
    valid = cutoffs[-validation_cutoffs:] if len(cutoffs) >= validation_cutoffs else []
    calib = [c for c in cutoffs if valid and c + gap <= valid[0]][-calibration_cutoffs:]
    train = [c for c in cutoffs if calib and c + gap <= calib[0]]
    if not (train and calib and valid):
        shown = ", ".join(_day(c) for c in cutoffs) or "none"
        raise ValueError(
            f"A time split needs cutoffs for training, calibration and validation, each at "
            f"least the {horizon_days}-day horizon apart; the data has cutoffs {shown}."
        )

    def rows(chosen: list) -> np.ndarray:
        return np.flatnonzero(stamps.isin(chosen).to_numpy())

    reason = (
        f"out-of-time split: {len(cutoffs)} cutoffs, enough for training, calibration "
        f"and validation folds each at least the {horizon_days}-day horizon apart"
    )
    return Split(
        rows(train), rows(calib), rows(valid), "out_of_time", reason, horizon_days,
        tuple(map(pd.Timestamp, train)), tuple(map(pd.Timestamp, calib)),
        tuple(map(pd.Timestamp, valid)),
    )  # fmt: skip


def _holdout(
    positions: np.ndarray, y: np.ndarray, groups: np.ndarray | None, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions kept and held out: a share of the groups, stratified by label when possible.

    An entity (group) is never on both sides; a group is positive when any of its rows is.
    """
    keys = positions if groups is None else groups[positions]
    # Sorted codes, as np.unique gives, from a hash table rather than a sort of strings.
    inverse, unique = pd.factorize(keys, sort=True)
    group_label = np.zeros(unique.size, dtype="int64")
    np.maximum.at(group_label, inverse, y[positions].astype("int64"))
    counts = np.bincount(group_label, minlength=2)
    stratify = group_label if counts.min() >= 2 else None
    kept, held = train_test_split(
        np.arange(unique.size), test_size=share, stratify=stratify, random_state=seed
    )
    held_rows = np.isin(inverse, held)
    return np.sort(positions[~held_rows]), np.sort(positions[held_rows])


def stratified_split(
    y: np.ndarray | pd.Series,
    *,
    groups: np.ndarray | pd.Series | None = None,
    calibration_fraction: float = 0.2,
    validation_fraction: float = 0.2,
    seed: int = 42,
    reason: str = "",
) -> Split:
    """Random split stratified by label, for data without a usable order in time.

    With ``groups`` (entity ids), an entity seen at several cutoffs stays in one fold.

    Args:
        y: Labels (0/1).
        groups: Optional group per row.
        calibration_fraction: Share for calibration and early stopping.
        validation_fraction: Share for validation.
        seed: Random seed.
        reason: Why this scheme, in words.

    Returns:
        The split (scheme ``stratified``, not out-of-time).
    """
    labels = np.asarray(y).astype("int64")
    positions = np.arange(labels.size)
    keys = None if groups is None else np.asarray(pd.Series(groups).astype("string"))
    if keys is not None and pd.Series(keys).is_unique:
        keys = None  # one row per entity: the plain row split
    if keys is None:
        rest, valid = train_test_split(
            positions, test_size=validation_fraction, stratify=labels, random_state=seed
        )
        share = calibration_fraction / (1.0 - validation_fraction)
        train, calib = train_test_split(
            rest, test_size=share, stratify=labels[rest], random_state=seed + 1
        )
    else:
        rest, valid = _holdout(positions, labels, keys, validation_fraction, seed)
        share = calibration_fraction / (1.0 - validation_fraction)
        train, calib = _holdout(rest, labels, keys, share, seed + 1)
    return Split(np.sort(train), np.sort(calib), np.sort(valid), "stratified", reason)


def rolling_origin_split(
    as_of: pd.Series | Sequence[object],
    y: np.ndarray | pd.Series,
    horizon_days: int,
    *,
    groups: np.ndarray | pd.Series | None = None,
    seed: int = 42,
) -> Split | None:
    """Expanding-window folds: train before ``v - horizon``, validate on cutoff ``v``.

    Every cutoff ``v`` with at least one cutoff a horizon or more before it is a fold.
    Each fold and the final refit hold out :data:`HOLDOUT_SHARE` of their training
    entities (stratified by label, seeded) for early stopping and calibration.

    Returns:
        The split, or ``None`` when no cutoff lies a horizon after another.
    """
    stamps = _stamps(as_of)
    labels = np.asarray(y).astype("int64")
    keys = None if groups is None else np.asarray(pd.Series(groups).astype("string"))
    cutoffs = sorted(stamps.dropna().unique())
    gap = pd.Timedelta(days=horizon_days)
    folds: list[Split] = []
    for number, v in enumerate(cutoffs):
        before = [c for c in cutoffs if c + gap <= v]
        if not before:
            continue
        rows = np.flatnonzero(stamps.isin(before).to_numpy())
        train, calib = _holdout(rows, labels, keys, HOLDOUT_SHARE, seed + number)
        valid = np.flatnonzero((stamps == v).to_numpy())
        folds.append(
            Split(
                train,
                calib,
                valid,
                "rolling_origin",
                gap_days=horizon_days,
                train_cutoffs=tuple(map(pd.Timestamp, before)),
                validation_cutoffs=(pd.Timestamp(v),),
            )
        )
    if not folds:
        return None
    train, calib = _holdout(np.arange(labels.size), labels, keys, HOLDOUT_SHARE, seed)
    return Split(
        train, calib, np.concatenate([f.validation for f in folds]), "rolling_origin", "",
        horizon_days, tuple(map(pd.Timestamp, cutoffs)), (),
        tuple(v for f in folds for v in f.validation_cutoffs), tuple(folds),
    )  # fmt: skip


def row_order_split(
    order: np.ndarray, y: np.ndarray | pd.Series, *, blocks: int = ROW_BLOCKS, seed: int = 42
) -> Split:
    """Expanding-window folds over a file's row order, for a snapshot in time order.

    The rows are cut into ``blocks`` equal blocks by ``order``; each block after the
    first is a fold validated on it and trained on every earlier block (early stopping
    and calibration on a held-out :data:`HOLDOUT_SHARE` of those rows). The scoring
    model is refit on all rows the same way.
    """
    labels = np.asarray(y).astype("int64")
    n = labels.size
    block = np.empty(n, dtype="int64")
    block[np.argsort(np.asarray(order), kind="stable")] = np.arange(n) * blocks // n
    folds = []
    for number in range(1, blocks):
        train, calib = _holdout(np.flatnonzero(block < number), labels, None, HOLDOUT_SHARE,
                                seed + number)  # fmt: skip
        folds.append(Split(train, calib, np.flatnonzero(block == number), "rolling_origin"))
    train, calib = _holdout(np.arange(n), labels, None, HOLDOUT_SHARE, seed)
    reason = (
        f"rolling origin over the file's row order (declared in time order): {n} rows in "
        f"{blocks} blocks of about {n // blocks}; {blocks - 1} folds each train on the rows "
        "before a block and validate on it, their validation predictions pooled; early "
        f"stopping and calibration on a held-out {HOLDOUT_SHARE:.0%} of the training rows; "
        "the scoring model is refit on all rows the same way"
    )
    validation = np.concatenate([f.validation for f in folds])
    return Split(train, calib, validation, "rolling_origin", reason, folds=tuple(folds))


def choose_split(
    as_of: pd.Series | Sequence[object] | None,
    y: np.ndarray | pd.Series,
    horizon_days: int,
    *,
    groups: np.ndarray | pd.Series | None = None,
    validation_cutoffs: int = 1,
    calibration_cutoffs: int = 1,
    seed: int = 42,
    row_order: np.ndarray | None = None,
) -> Split:
    """The strongest evaluation the cutoffs allow, with the reason in words.

    Args:
        as_of: Cutoff per row, or ``None`` for one snapshot without time.
        y: Labels (0/1).
        horizon_days: Label window; the smallest gap between training and validation.
        groups: Entity per row, so a held-out entity is held out at every cutoff.
        validation_cutoffs: Latest cutoffs validated on by the time split.
        calibration_cutoffs: Cutoffs calibrated on by the time split.
        seed: Seed of every random holdout.
        row_order: Position of each row in a snapshot file declared in time order
            (one cutoff): then :func:`row_order_split`.

    Returns:
        The split; ``reason`` names the scheme's evidence (e.g. ``"rolling origin: 4
        cutoffs, too few for ... which needs 5"``).
    """
    if row_order is not None:
        return row_order_split(row_order, y, seed=seed)
    if as_of is None:
        why = "one snapshot without dates, so no later period to validate on"
        return stratified_split(y, groups=groups, seed=seed, reason=_stratified(why, seed))
    stamps = _stamps(as_of)
    cutoffs = sorted(stamps.dropna().unique())
    shown = ", ".join(_day(c) for c in cutoffs)
    if len(cutoffs) == 1:
        why = f"one usable cutoff ({shown}), so no later cutoff to validate on"
        split = stratified_split(y, groups=groups, seed=seed, reason=_stratified(why, seed))
        return replace(split, train_cutoffs=(pd.Timestamp(cutoffs[0]),))
    try:
        return out_of_time_split(
            stamps,
            horizon_days,
            validation_cutoffs=validation_cutoffs,
            calibration_cutoffs=calibration_cutoffs,
        )
    except ValueError:
        pass
    step = int(min(np.diff(cutoffs)) / pd.Timedelta(days=1))
    needed = cutoffs_needed(step, horizon_days, validation_cutoffs, calibration_cutoffs)
    too_few = (
        f"{len(cutoffs)} cutoffs {step} days apart ({shown}), too few for a train/calibration/"
        f"validation time split with {horizon_days}-day gaps, which needs {needed}"
    )
    rolling = rolling_origin_split(stamps, y, horizon_days, groups=groups, seed=seed)
    if rolling is None:
        why = f"{too_few}, and none is {horizon_days} days after another"
        split = stratified_split(y, groups=groups, seed=seed, reason=_stratified(why, seed))
        return replace(split, train_cutoffs=tuple(map(pd.Timestamp, cutoffs)))
    folds = len(rolling.folds)
    why = (
        f"rolling origin: {too_few}; {folds} fold{'s' if folds > 1 else ''} each train on "
        f"the cutoffs at least {horizon_days} days before a later validation cutoff, their "
        f"validation predictions pooled; early stopping and calibration on a held-out "
        f"{HOLDOUT_SHARE:.0%} of the training entities; the scoring model is refit on all "
        "cutoffs the same way"
    )
    return replace(rolling, reason=why)


def _stratified(why: str, seed: int) -> str:
    return (
        f"stratified random split: {why}; 60/20/20 by label (seed {seed}), entities kept "
        "in one fold; the metrics are not out-of-time"
    )
