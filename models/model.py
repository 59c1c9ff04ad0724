"""The trained-model object shared by training, scoring and explanations.

Also its input schema (:func:`feature_frame`, :func:`prepare_features`) and the
training-fold profile of each feature behind the made-up input examples; the model
card and report files are :mod:`models.model_card`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd

#: Columns of a feature or training table that are never model inputs.
ID_COLUMNS = ("entity_id", "as_of", "label", "target", "crm_id")


class Calibrator(Protocol):
    """Maps the booster's raw margin (log-odds) to a calibrated probability."""

    def predict(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw margins."""
        ...


@dataclass
class TrainedModel:
    """A LightGBM booster plus its calibration and the schema it was trained on.

    Attributes:
        target: ``conversion`` or ``churn``.
        booster: The fitted LightGBM booster (raw margin = log-odds).
        calibrator: Fitted on data the booster did not train on.
        feature_names: Columns the booster reads, in order.
        categorical_levels: Levels seen in training per categorical column; unseen
            values become missing at prediction time.
        feature_set_version: ``FeatureSpec.version`` of the training features.
        reference_scores: Sorted calibrated probabilities on the validation fold;
            the 0-100 score is a percentile against them.
        metadata: Anything else worth keeping with the model (thresholds, windows).
    """

    target: str
    booster: lgb.Booster
    calibrator: Calibrator
    feature_names: list[str]
    categorical_levels: dict[str, list[str]] = field(default_factory=dict)
    feature_set_version: str = ""
    reference_scores: np.ndarray = field(default_factory=lambda: np.array([]))
    metadata: dict = field(default_factory=dict)

    def prepare(self, features: pd.DataFrame) -> pd.DataFrame:
        """Select the model's columns and align categories with training.

        Missing columns are added as missing values; unseen category levels become
        missing (LightGBM routes them like NaN), so new data never fails to score.
        """
        return prepare_features(features, self.feature_names, self.categorical_levels)

    def inputs(self, features: pd.DataFrame) -> ModelInput:
        """The booster's input columns of ``features``, to take rows from (:class:`ModelInput`)."""
        return ModelInput(self, features)

    def predict_margin(self, features: pd.DataFrame) -> np.ndarray:
        """Raw log-odds from the booster."""
        inputs = self.inputs(features)
        if not inputs.exact:
            return self.booster.predict(self.prepare(features), raw_score=True)
        return self.booster.predict(inputs.rows(np.arange(len(features))), raw_score=True)

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive outcome."""
        return np.clip(self.calibrator.predict(self.predict_margin(features)), 0.0, 1.0)

    def example_input(self, n_rows: int = 3) -> pd.DataFrame:
        """A few made-up rows in the model's input schema (never real entities).

        Numeric columns take the training median, lower and upper quartile in turn;
        categorical columns cycle through their most common training levels. Used as
        the MLflow input example so no artifact carries a real row or id.

        Args:
            n_rows: Number of rows.

        Returns:
            A frame with :attr:`feature_names` as columns, prepared like real input.
        """
        profile: dict = self.metadata.get("feature_profile", {})
        rows: dict[str, list] = {}
        for name in self.feature_names:
            stats = profile.get(name, {})
            if name in self.categorical_levels:
                levels = stats.get("top_levels") or self.categorical_levels[name] or [None]
                rows[name] = [levels[i % len(levels)] for i in range(n_rows)]
            else:
                anchors = [stats.get(k, np.nan) for k in ("median", "q25", "q75")]
                rows[name] = [anchors[i % len(anchors)] for i in range(n_rows)]
        return self.prepare(pd.DataFrame(rows))


class ModelInput:
    """A feature table as the booster reads it: one float64 array per model column.

    The values LightGBM itself derives from :func:`prepare_features`' frame (numbers as
    float64, a category as its code in the booster's ``pandas_categorical``, missing as
    NaN), per column: plain numeric columns are the table's own arrays (no copy),
    others are converted once; :meth:`rows` gathers any rows into the matrix the
    booster predicts from (laid out by feature). Predictions are the same, bit for
    bit, as from the prepared frame, without a frame per batch nor LightGBM's
    per-call pandas conversion. A category value is converted once per distinct value.

    Attributes:
        exact: False when the booster's stored categories do not match the model's
            categorical columns (then predict from :meth:`TrainedModel.prepare`, which
            lets LightGBM raise its own error).
    """

    def __init__(self, model: TrainedModel, features: pd.DataFrame) -> None:
        self.size = len(features)
        names, levels = model.feature_names, model.categorical_levels
        categorical = [name for name in names if name in levels]
        stored = getattr(model.booster, "pandas_categorical", None)
        stored = [levels[name] for name in categorical] if stored is None else stored
        self.exact = len(stored) == len(categorical)
        self.columns: list[np.ndarray] = []
        if not self.exact:
            return
        booster_levels = dict(zip(categorical, stored, strict=True))
        for name in names:
            if name not in features:
                self.columns.append(np.full(self.size, np.nan))
            elif name in levels:
                self.columns.append(
                    _category_codes(features[name], levels[name], booster_levels[name])
                )
            elif features[name].dtype.kind in "fiub" and isinstance(features[name].dtype, np.dtype):
                # The table's own array, no copy: writing it into the float64 matrix is
                # the same cast as astype("float64").
                self.columns.append(features[name].to_numpy())
            else:
                column = pd.to_numeric(features[name], errors="coerce").astype("float64")
                self.columns.append(column.to_numpy())

    def rows(self, positions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The ``(len(positions), features)`` float64 matrix of those rows, by feature.

        The matrix is laid out column after column (Fortran order): each column's values
        are gathered into contiguous memory, and the kernels of :mod:`models.treeshap`,
        which read the input a feature at a time, take its transpose without a copy.
        LightGBM reads either order. A row-major matrix took 3 times as long to gather
        (0.7 s against 0.2 s for 574,000 rows of 144 columns).

        Args:
            positions: Rows of the feature table.
            out: A buffer this method returned before, of at least that many rows, to
                fill (its memory is reused); fresh memory is slow to touch, so callers
                predicting batch after batch reuse one.
        """
        positions = np.asarray(positions, dtype=np.intp)
        width, size = len(self.columns), len(positions)
        fits = out is not None and len(out) >= size and out.shape[1:] == (width,)
        if not fits or not out.flags.f_contiguous:
            out = np.empty((width, size), dtype="float64").T
        # The buffer's memory as a contiguous (features, rows) block of this many rows.
        by_feature = out.T.reshape(-1)[: width * size].reshape(width, size)
        for j, column in enumerate(self.columns):
            if column.dtype == np.float64:
                np.take(column, positions, out=by_feature[j])
            else:
                by_feature[j] = column[positions]
        return by_feature.T


def _category_codes(column: pd.Series, levels: list, booster_levels: list) -> np.ndarray:
    """LightGBM's float code of each value of a categorical column (NaN when unseen).

    The exact steps of :func:`prepare_features` and LightGBM's pandas conversion, on the
    column's distinct values only.
    """
    codes, uniques = pd.factorize(column, use_na_sentinel=False)
    values = pd.Series(uniques).astype("string")
    values = values.where(values.isin(levels))
    category = pd.Series(pd.Categorical(values, categories=levels))
    if list(category.cat.categories) != list(booster_levels):
        category = category.cat.set_categories(booster_levels)
    per_unique = category.cat.codes.to_numpy().astype("float64")
    per_unique[per_unique < 0] = np.nan
    if not len(per_unique):
        return np.full(len(column), np.nan)
    return per_unique[codes]


def prepare_features(
    features: pd.DataFrame, feature_names: list[str], categorical_levels: dict[str, list[str]]
) -> pd.DataFrame:
    """The model input frame: given columns in order, numeric as float64, categories aligned.

    Training and scoring both go through this function, so the booster always sees the
    same encoding. Missing columns become NaN; category values outside the training
    levels become missing.

    Args:
        features: Any frame holding (some of) the feature columns.
        feature_names: Columns the booster reads, in order.
        categorical_levels: Training levels of each categorical column.

    Returns:
        A new frame with exactly ``feature_names`` as columns, same index.
    """
    columns: dict[str, object] = {}
    for name in feature_names:
        column = features[name] if name in features else pd.Series(np.nan, index=features.index)
        if name in categorical_levels:
            levels = categorical_levels[name]
            values = column.astype("string")
            values = values.where(values.isin(levels))
            columns[name] = pd.Categorical(values, categories=levels)
        else:
            columns[name] = pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()
    return pd.DataFrame(columns, index=features.index, columns=feature_names)


def feature_frame(features: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Model columns of a feature table: ids dropped, strings as categories.

    Returns:
        The frame (numeric columns float64, others ``category`` of strings) and the
        kind of each column (``numeric``/``categorical``). Datetime columns are dropped.
    """
    columns: dict[str, pd.Series] = {}
    kinds: dict[str, str] = {}
    for name in features.columns:
        column = features[name]
        if name in ID_COLUMNS or pd.api.types.is_datetime64_any_dtype(column):
            continue
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            columns[name] = column.astype("float64")
            kinds[name] = "numeric"
        else:
            columns[name] = column.astype("string").astype("category")
            kinds[name] = "categorical"
    if not columns:
        raise ValueError("The feature table has no feature columns besides ids and dates.")
    return pd.DataFrame(columns, index=features.index), kinds


def feature_profile(train: pd.DataFrame, kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Aggregate statistics per column: quartiles, or the most common levels.

    Kept in the model metadata for :meth:`TrainedModel.example_input`; holds no row.
    """
    profile: dict[str, dict[str, Any]] = {}
    for name, kind in kinds.items():
        column = train[name]
        if kind == "numeric":
            q = column.quantile([0.25, 0.5, 0.75])
            profile[name] = {"q25": float(q[0.25]), "median": float(q[0.5]), "q75": float(q[0.75])}
        else:
            top = column.value_counts().head(3)
            profile[name] = {"top_levels": [str(v) for v in top.index[top > 0]]}
    return profile


def absent_columns_warning(target: str, model: TrainedModel, columns: Iterable[str]) -> str:
    """A sentence naming the columns the model reads that a feature table lacks; "" if none.

    Those columns are scored as missing. A renamed or dropped source column does this,
    and so does a text column that has become different for most entities (no longer a
    fit attribute, see :func:`features.table.fit_columns`).
    """
    present = set(columns)
    absent = [name for name in model.feature_names if name not in present]
    if not absent:
        return ""
    return (
        f"The {target} model reads {len(absent)} {'column' if len(absent) == 1 else 'columns'} "
        f"this run's feature table lacks ({', '.join(absent[:5])}), scored as missing. A "
        "renamed or dropped source column does this, or a text column now unique per entity."
    )
