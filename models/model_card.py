"""What is logged with every training run: the model card and the report files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluate import calibration_curve_figure, lift_chart_figure
from models.train import RULE_FIT_ROWS, TrainResult


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
        if key == "roc_auc":
            cells = [
                f"{float(metrics[n].get('roc_auc_ci_low', np.nan)):.3f}-"
                f"{float(metrics[n].get('roc_auc_ci_high', np.nan)):.3f}"
                for n in names
            ]
            lines.append("| roc_auc 95% CI (bootstrap) | " + " | ".join(cells) + " |")
    positives = [f"{float(metrics[n].get('positives', np.nan)):.0f}" for n in names]
    lines.append("| validation positives | " + " | ".join(positives) + " |")
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
    held_out = "none: a held-out share of the training entities"
    validation_kind = split["reason"]
    if split["out_of_time"]:
        validation_kind += (
            f". Validation cutoffs {', '.join(split['cutoffs']['validation'])}, each at least "
            f"{split['gap_days']} days after the cutoffs its model trained on"
        )
    else:
        validation_kind += (
            ". **Not out-of-time**: the metrics say how the model ranks similar entities, "
            "not how it holds up on a later period"
        )
    sample = meta.get("training_sample") or {}
    weighting = "no class reweighting"
    if sample.get("sampled"):
        weighting += (
            f"; {sample['description']} (sampled rows weighted by the inverse of their "
            "sampling rate, so the scores keep the full population's scale)"
        )
    lines = [
        title,
        "",
        "## Data",
        "",
        f"- Training cutoffs: {', '.join(split['cutoffs']['train']) or 'n/a (snapshot)'}",
        f"- Calibration cutoffs: {', '.join(split['cutoffs']['calibration']) or held_out}",
        f"- Evaluation: {validation_kind}.",
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
        f"fold), {weighting}; {meta.get('calibration_method')} calibration fitted "
        "on the calibration fold, which the trees did not train on.",
        "",
        "## Validation metrics",
        "",
        "Rule baselines are mapped to probabilities by a sigmoid fitted on the calibration "
        "fold; `rule_recalibrated` has its points refitted on the training fold (a seeded "
        f"uniform sample of {RULE_FIT_ROWS:,} of its rows when it has more). ECE uses "
        "10 equal-frequency bins. AUC intervals are percentile bootstraps (500 resamples) "
        "of the validation rows; few positives make them wide.",
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
