"""Training: time split, leakage guard, LightGBM with early stopping, calibration.

The flow of :func:`train_model`:

1. refuse targets with fewer positives than the configured minimum
   (:class:`~models.train_guards.InsufficientLabelsError`; scoring then falls back to
   the rule score);
2. choose the evaluation the cutoffs allow with :func:`models.splits.choose_split`: a
   time split with horizon-wide gaps, a rolling origin over few cutoffs (pooled
   out-of-time folds, the scoring model refit on all cutoffs), or a stated stratified
   split for one cutoff; the scheme and why go into the metadata;
3. refuse any single feature whose own AUC on the training fold exceeds the leakage
   threshold (:func:`models.train_guards.check_leakage`);
4. fit LightGBM on the training fold (categoricals native, no class reweighting)
   with early stopping on the calibration fold, then fit the calibrator on the
   calibration fold's margins;
5. evaluate on the validation fold(s), side by side with the rule score and the
   rule score recalibrated on the training fold (:func:`models.recalibrate.fit_rules`
   for a :class:`~models.rules.RuleScore`, on at most :data:`RULE_FIT_ROWS` of its
   rows), both mapped to probabilities by a sigmoid
   fitted on the calibration fold (:func:`models.baselines.rule_baselines`; for churn
   the rule points are negated first, see :func:`models.baselines.rule_direction`);
   every AUC carries its bootstrap 95% interval (:func:`models.fold_metrics.pooled_metrics`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.timeutil import as_utc
from models.bands import BAND_METADATA_KEY, choose_thresholds
from models.baselines import RuleModel, rule_baselines
from models.calibration import fit_calibrator
from models.fold_metrics import pooled_metrics, rank_metrics
from models.model import Calibrator, TrainedModel, feature_frame, feature_profile, prepare_features
from models.sampling import TrainingSample, bound_training_rows, uniform_rows
from models.splits import Split, choose_split
from models.train_guards import check_leakage, check_positive_labels, resolve_params

log = logging.getLogger(__name__)

#: Most training-fold rows the rule score is refitted on for its baseline: beyond it a
#: seeded uniform sample (its sign test and intervals refit it 100 times, so its cost
#: grows with the rows; the points of a few signals need far fewer).
RULE_FIT_ROWS = 100_000


@dataclass
class TrainResult:
    """Everything training produced; tracking logs it, scoring uses ``model``.

    Attributes:
        model: The calibrated model.
        metrics: ``{"model" | "rule" | "rule_recalibrated": evaluate(...) dict}`` on
            the validation fold.
        split: The folds.
        validation: ``as_of``, ``label``, ``p_model``, ``fold`` (its position in
            ``split.fold_splits()``; rank metrics are within a fold) and
            ``p_<baseline>`` per validation row (no entity ids).
        validation_features: Every feature column of the validation fold (no ids), so
            the champion can be re-scored on exactly the same rows.
        importance: ``feature``, ``gain``, ``splits``, largest gain first.
        leakage_aucs: Each feature's own AUC on the training fold, largest first.
        data_fingerprint: Hash of the training frame (features, labels, cutoffs).
        params: LightGBM parameters used.
    """

    model: TrainedModel
    metrics: dict[str, dict[str, Any]]
    split: Split
    validation: pd.DataFrame
    validation_features: pd.DataFrame
    importance: pd.DataFrame
    leakage_aucs: pd.Series
    data_fingerprint: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """``conversion`` or ``churn``."""
        return self.model.target


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Stable short hash of a frame's values and column names (order-sensitive).

    Args:
        frame: Usually the training features with labels and cutoffs.

    Returns:
        16 hex digits.
    """
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _fit_booster(
    x_train, y_train, x_calib, y_calib,  # noqa: ANN001
    params: dict[str, Any],
    weight: np.ndarray | None = None,
) -> lgb.Booster:  # fmt: skip
    booster_params = {
        k: v for k, v in params.items() if k not in ("num_boost_round", "early_stopping_rounds")
    }
    train_set = lgb.Dataset(
        x_train, y_train, weight=weight, categorical_feature="auto", free_raw_data=True
    )
    calib_set = lgb.Dataset(x_calib, y_calib, reference=train_set)
    booster = lgb.train(
        booster_params,
        train_set,
        num_boost_round=int(params["num_boost_round"]),
        valid_sets=[calib_set],
        valid_names=["calibration"],
        callbacks=[lgb.early_stopping(int(params["early_stopping_rounds"]), verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    # Keep only the trees early stopping chose, so every later predict (and pred_contrib)
    # uses them without needing to pass num_iteration.
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


def _fit_calibrated(
    x: pd.DataFrame,
    y: np.ndarray,
    fold: Split,
    params: dict[str, Any],
    method: str,
    max_rows: int | None,
    seed: int,
) -> tuple[lgb.Booster, Calibrator, TrainingSample]:
    """A booster fitted on the fold's training rows, early-stopped and calibrated on the rest.

    The training rows are bounded by ``max_rows`` (:func:`models.sampling.bound_training_rows`,
    weighted); the calibration rows are the fold's own, unsampled: the booster never
    trained on them.
    """
    sample = bound_training_rows(fold.train, y, max_rows, seed)
    booster = _fit_booster(
        x.iloc[sample.rows], y[sample.rows], x.iloc[fold.calibration], y[fold.calibration],
        params, sample.weights,
    )  # fmt: skip
    margin = booster.predict(x.iloc[fold.calibration], raw_score=True)
    calibrator = fit_calibrator(margin, y[fold.calibration], method)  # type: ignore[arg-type]
    return booster, calibrator, sample


def _trained_at(given: object | None, cutoffs: pd.Series | None, horizon_days: int) -> str:
    if given is not None:
        moment = pd.Timestamp(given)
    elif cutoffs is not None:
        moment = cutoffs.max() + pd.Timedelta(days=horizon_days)
    else:
        moment = pd.Timestamp.now(tz="UTC")
    return as_utc(moment).isoformat()


def train_model(
    features: pd.DataFrame,
    labels: pd.Series | np.ndarray,
    as_of: pd.Series | None,
    target: str,
    *,
    horizon_days: int,
    params: Mapping[str, Any] | None = None,
    feature_set_version: str = "",
    min_positive_labels: int = 100,
    leakage_auc_threshold: float = 0.95,
    allow_leaky_features: Sequence[str] = (),
    rule_model: RuleModel | None = None,
    calibration: str = "auto",
    validation_cutoffs: int = 1,
    calibration_cutoffs: int = 1,
    label_definition: str = "",
    seed: int = 42,
    trained_at: object | None = None,
    band_share: float = 0.10,
    row_order: np.ndarray | None = None,
    max_training_rows: int | None = None,
) -> TrainResult:
    """Train, calibrate and evaluate one target on a stacked (entity, cutoff) frame.

    Args:
        features: One row per (entity, cutoff); ``entity_id``/``as_of`` are ignored.
        labels: 0/1 label per row.
        as_of: Cutoff per row, or ``None`` for a single snapshot without time (then a
            stratified split, flagged as not out-of-time).
        target: ``conversion`` or ``churn``.
        horizon_days: Label window; also the minimum gap between folds.
        params: LightGBM overrides (``num_boost_round``, ``early_stopping_rounds`` too).
        feature_set_version: ``FeatureSpec.version`` of the features.
        min_positive_labels: Fewer positives than this refuses to train.
        leakage_auc_threshold: A single feature above this AUC stops training.
        allow_leaky_features: Features exempt from the leakage guard.
        rule_model: Rule score to compare against (``models.rules.RuleScore``); its
            points are negated for churn (see the module docstring).
        calibration: ``auto``, ``sigmoid`` or ``isotonic``.
        validation_cutoffs: Latest cutoffs held out for validation.
        calibration_cutoffs: Cutoffs for early stopping and calibration.
        label_definition: Human sentence on the label, kept in the model metadata.
        seed: Seed of LightGBM and of the stratified split.
        trained_at: The training as-of date (the run date), kept in the metadata as ISO
            UTC for the retrain schedule. Default: the end of the latest label window
            (latest cutoff + horizon, the date outcomes are known until), or the current
            time for a snapshot without cutoffs.
        band_share: Share of validation rows the band threshold flags (``high`` for
            conversion, ``at-risk`` for churn); stored in the metadata under
            ``models.bands.BAND_METADATA_KEY`` with its validation precision and lift.
        row_order: Each row's position in a snapshot file declared in time order:
            validated on later rows (:func:`models.splits.row_order_split`).
        max_training_rows: Bound on each fold's booster-training rows: beyond it, every
            positive and a seeded sample of the negatives weighted by the inverse
            sampling rate (:func:`models.sampling.bound_training_rows`); early stopping,
            calibration and validation rows are never sampled. ``None``: no bound.

    Returns:
        The :class:`TrainResult`.

    Raises:
        InsufficientLabelsError: Too few positive labels.
        LeakageError: A feature predicts the label suspiciously well.
        ValueError: Bad inputs (lengths, labels, too few cutoffs, forbidden params).
    """
    y = np.asarray(labels, dtype="float64").ravel()
    if y.size != len(features):
        raise ValueError(f"{len(features)} feature rows but {y.size} labels.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("Labels must be 0 or 1 (no missing labels).")
    check_positive_labels(y, min_positive_labels, target)
    run_params = resolve_params(params, seed)
    x_all, kinds = feature_frame(features.reset_index(drop=True))
    cutoffs = None
    if as_of is not None:
        cutoffs = pd.Series(pd.to_datetime(pd.Series(as_of), utc=True)).reset_index(drop=True)
    split = choose_split(
        cutoffs,
        y,
        horizon_days,
        groups=features["entity_id"].to_numpy() if "entity_id" in features else None,
        validation_cutoffs=validation_cutoffs,
        calibration_cutoffs=calibration_cutoffs,
        seed=seed,
        row_order=row_order,
    )
    log.log(logging.INFO if split.out_of_time else logging.WARNING, "%s: %s", target, split.reason)

    x_train_raw = x_all.iloc[split.train]
    leakage = check_leakage(
        x_train_raw, y[split.train], leakage_auc_threshold, allow_leaky_features
    )
    levels = {
        n: sorted(str(v) for v in x_train_raw[n].dropna().unique())
        for n, kind in kinds.items()
        if kind == "categorical"
    }
    names = list(kinds)
    x_prepared = prepare_features(x_all, names, levels)
    booster, calibrator, sample = _fit_calibrated(
        x_prepared, y, split, run_params, calibration, max_training_rows, seed
    )
    if sample.sampled:
        split = replace(split, reason=f"{split.reason}; {sample.description}")
        log.info("%s: %s", target, sample.description)
    # Validation predictions of each fold (the scoring model's own when there is one
    # fold), pooled in fold order: split.validation is their concatenation.
    p_parts: list[np.ndarray] = []
    baseline_parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for fold in split.fold_splits():
        fold_booster, fold_calibrator, _ = (
            (booster, calibrator, sample)
            if not split.folds
            else _fit_calibrated(
                x_prepared, y, fold, run_params, calibration, max_training_rows, seed
            )
        )
        margin = fold_booster.predict(x_prepared.iloc[fold.validation], raw_score=True)
        p_parts.append(np.clip(fold_calibrator.predict(margin), 0.0, 1.0))
        rule_fold = replace(fold, train=uniform_rows(fold.train, RULE_FIT_ROWS, seed))
        for name, (calib_points, valid_points) in rule_baselines(
            rule_model, features.reset_index(drop=True), y, rule_fold, target, cutoffs,
            horizon_days, seed,
        ).items():  # fmt: skip
            to_probability = fit_calibrator(calib_points, y[fold.calibration], "sigmoid")
            baseline_parts.setdefault(name, []).append(
                (to_probability.predict(valid_points), valid_points)
            )
    y_valid = y[split.validation]
    p_valid = np.concatenate(p_parts)

    metrics = {"model": pooled_metrics(y_valid, p_parts)}
    validation = pd.DataFrame({"label": y_valid.astype("int64"), "p_model": p_valid})
    validation["fold"] = np.repeat(np.arange(len(p_parts)), [len(p) for p in p_parts])
    if cutoffs is not None:
        validation.insert(0, "as_of", cutoffs.iloc[split.validation].array)
    for name, parts in baseline_parts.items():
        p_rule = np.concatenate([p for p, _ in parts])
        metrics[name] = pooled_metrics(y_valid, [p for p, _ in parts])
        points = rank_metrics(y_valid, [points for _, points in parts])
        metrics[name].update({f"points_{k}": v for k, v in points.items()})
        validation[f"p_{name}"] = p_rule

    fingerprint_frame = x_all.assign(__label=y)
    if cutoffs is not None:
        # The datetime array, not to_numpy(): that is one Python Timestamp per row.
        fingerprint_frame["__as_of"] = cutoffs.array
    importance = pd.DataFrame(
        {
            "feature": names,
            "gain": booster.feature_importance("gain"),
            "splits": booster.feature_importance("split"),
        }
    ).sort_values("gain", ascending=False, ignore_index=True)

    def window(rows: np.ndarray) -> list[str]:
        if cutoffs is None:
            return []
        chosen = cutoffs.iloc[rows]
        return [chosen.min().strftime("%Y-%m-%d"), chosen.max().strftime("%Y-%m-%d")]

    model = TrainedModel(
        target=target,
        booster=booster,
        calibrator=calibrator,
        feature_names=names,
        categorical_levels=levels,
        feature_set_version=feature_set_version,
        reference_scores=np.sort(p_valid),
        metadata={
            "trained_at": _trained_at(trained_at, cutoffs, horizon_days),
            "horizon_days": horizon_days,
            "label_definition": label_definition,
            "calibration_method": calibrator.method,
            "best_iteration": booster.current_iteration(),
            "split": split.describe(),
            "training_sample": sample.to_dict(),
            "train_window": window(split.train),
            "validation_window": window(split.validation),
            "feature_profile": feature_profile(x_train_raw, kinds),
            "validation_metrics": {k: v for k, v in metrics["model"].items() if k != "band_rates"},
            # The band threshold is chosen here, on labelled validation data, and travels
            # with the model version so batch, notebook and report band alike.
            BAND_METADATA_KEY: choose_thresholds(y_valid, p_valid, band_share).to_dict(),
        },
    )
    log.info(
        "%s: %d trees, validation AUC %.3f, ECE %.4f",
        target,
        booster.current_iteration(),
        metrics["model"]["roc_auc"],
        metrics["model"]["ece"],
    )
    return TrainResult(
        model=model,
        metrics=metrics,
        split=split,
        validation=validation,
        validation_features=x_all.iloc[split.validation].reset_index(drop=True),
        importance=importance,
        leakage_aucs=leakage,
        data_fingerprint=data_fingerprint(fingerprint_frame),
        params=run_params,
    )
