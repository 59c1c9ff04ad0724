"""The trained-model object shared by training, scoring and explanations.

Also what describes a model: its input schema (:func:`feature_frame`,
:func:`prepare_features`), made-up input examples, the model card and the report
files logged with every training run.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.evaluate import calibration_curve_figure, lift_chart_figure

if TYPE_CHECKING:
    from models.train import TrainResult

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

    def predict_margin(self, features: pd.DataFrame) -> np.ndarray:
        """Raw log-odds from the booster."""
        return self.booster.predict(self.prepare(features), raw_score=True)

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


def _metric_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    names = list(metrics)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in (
        "roc_auc",
        "pr_auc",
        "log_loss",
        "brier",
        "ece",
        "lift_top_decile",
        "capture_top_decile",
    ):
        cells = [f"{float(metrics[n].get(key, np.nan)):.4f}" for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def model_card_markdown(result: TrainResult, version_id: str | None = None) -> str:
    """A Markdown model card: data window, label, metrics side by side, known limits.

    Args:
        result: The training result.
        version_id: Registered version, when known.

    Returns:
        The card's Markdown text (holds no entity ids).
    """
    model, split = result.model, result.split.describe()
    meta = model.metadata
    valid = result.metrics["model"]
    title = f"# Model card: {result.target}" + (f" v{version_id}" if version_id else "")
    if split["out_of_time"]:
        validation_kind = (
            f"out-of-time: validation cutoffs {', '.join(split['cutoffs']['validation'])}, "
            f"at least {split['gap_days']} days after the last calibration cutoff"
        )
    else:
        validation_kind = (
            "**not out-of-time**: the data is one snapshot without timestamps, so the "
            "split is random (stratified by label). The metrics say how the model ranks "
            "similar entities, not how it holds up on a later period"
        )
    lines = [
        title,
        "",
        "## Data",
        "",
        f"- Training cutoffs: {', '.join(split['cutoffs']['train']) or 'n/a (snapshot)'}",
        f"- Calibration cutoffs: {', '.join(split['cutoffs']['calibration']) or 'n/a'}",
        f"- Validation: {validation_kind}.",
        f"- Rows: {split['rows']['train']} train, {split['rows']['calibration']} "
        f"calibration, {split['rows']['validation']} validation; validation outcome rate "
        f"{valid['base_rate']:.3f} ({valid['positives']:.0f} positives).",
        f"- Feature set `{model.feature_set_version or 'unversioned'}`, "
        f"{len(model.feature_names)} features; data fingerprint `{result.data_fingerprint}`.",
        "",
        "## Label",
        "",
        meta.get("label_definition") or f"Horizon {meta.get('horizon_days')} days.",
        "",
        "## Model",
        "",
        f"LightGBM, {meta.get('best_iteration')} trees (early stopping on the calibration "
        f"fold), no class reweighting; {meta.get('calibration_method')} calibration fitted "
        "on the calibration fold, which the trees did not train on.",
        "",
        "## Validation metrics",
        "",
        "Rule baselines are mapped to probabilities by a sigmoid fitted on the calibration "
        "fold; `rule_recalibrated` has its points refitted on the training fold. ECE uses "
        "10 equal-frequency bins.",
        "",
        *_metric_table(result.metrics),
        "",
        "## Most important features (gain)",
        "",
        *[f"- {row.feature}" for row in result.importance.head(10).itertuples()],
        "",
        "## Known limits",
        "",
        "- Scores are correlations learned from past behaviour, not causes: a reason code "
        "says what the model saw, not what to change.",
        "- Probabilities are calibrated on the calibration period; a shift in the "
        "population, the product or data collection (see PSI) can bias them.",
        "- Entities without consent are never trained on or scored.",
        "- Outcomes are only known up to the data end; the last label window must close "
        "before a cutoff can be used.",
    ]
    if not split["out_of_time"]:
        lines.append("- The validation is not out-of-time (see Data).")
    return "\n".join(lines) + "\n"


def _shap_summary(result: TrainResult, folder: Path, sample_rows: int, seed: int) -> None:
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shap's import warns about matplotlib deprecations
        import shap

    features = result.model.prepare(result.validation_features)
    if len(features) > sample_rows:
        features = features.sample(sample_rows, random_state=seed)
    contributions = result.model.booster.predict(features, pred_contrib=True)[:, :-1]
    shown = features.apply(lambda c: c.cat.codes.where(c.notna()) if c.dtype == "category" else c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shap.summary_plot(contributions, shown.astype("float64"), show=False, max_display=20)
        figure = plt.gcf()
        figure.suptitle(f"{result.target}: SHAP values on {len(features)} validation rows")
        figure.savefig(folder / "shap_summary.png", dpi=110, bbox_inches="tight")
        plt.close(figure)


def write_report_files(
    result: TrainResult, folder: Path, shap_rows: int = 500, seed: int = 42
) -> None:
    """Write the run's report files: charts, SHAP summary, importance, metrics, card.

    Files: ``calibration_curve.png``, ``lift_chart.png``, ``shap_summary.png``,
    ``feature_importance.csv``, ``feature_aucs.csv``, ``metrics.json``, ``split.json``
    and ``model_card.md``. None holds an entity id.

    Args:
        result: The training result.
        folder: Existing folder to write into.
        shap_rows: Validation rows sampled for the SHAP summary.
        seed: Seed of that sample.
    """
    y = result.validation["label"].to_numpy()
    probabilities = {
        name.removeprefix("p_"): result.validation[name]
        for name in result.validation.columns
        if name.startswith("p_")
    }
    for figure, file in (
        (
            calibration_curve_figure(y, probabilities, title=f"{result.target}: calibration"),
            "calibration_curve.png",
        ),
        (lift_chart_figure(y, probabilities, title=f"{result.target}: lift"), "lift_chart.png"),
    ):
        figure.savefig(folder / file, dpi=110)
    _shap_summary(result, folder, shap_rows, seed)
    result.importance.to_csv(folder / "feature_importance.csv", index=False)
    result.leakage_aucs.rename("auc").rename_axis("feature").to_csv(folder / "feature_aucs.csv")
    (folder / "metrics.json").write_text(json.dumps(result.metrics, indent=2, default=float))
    (folder / "split.json").write_text(json.dumps(result.split.describe(), indent=2))
    (folder / "model_card.md").write_text(model_card_markdown(result))
