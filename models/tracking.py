"""Every MLflow call of the project: runs, artifacts, registry and champion/challenger.

* One experiment per target (``leadscore-conversion``, ``leadscore-churn``), one
  registered model per target (``conversion``, ``churn``).
* A run logs parameters, the feature-set version and data fingerprint, all metrics
  of the model and of the rule baselines, and artifacts: calibration curve, lift
  chart, global SHAP summary, feature importance, model card, metrics and split.
* The model is a ``pyfunc`` (calibrated probabilities) with a signature and a made-up
  input example, and it carries the pickled :class:`~models.model.TrainedModel` so
  scoring gets the booster back for ``pred_contrib``. No artifact holds entity ids.
* Promotion uses aliases: ``@champion`` only when the new version is at least as good
  as the champion on the same out-of-time rows and beats the rule baseline;
  otherwise it becomes ``@challenger``. The decision and its numbers are logged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from models.evaluate import evaluate, flat_metrics
from models.model import TrainedModel, write_report_files
from models.train import TrainResult

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "trained_model.pkl"
#: Metrics shown by ``leadscore models`` and compared for promotion.
KEY_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")
_state: dict[str, str | None] = {"artifact_root": None}


def registered_name(target: str) -> str:
    """Registered model name of a target (``conversion`` or ``churn``)."""
    if target not in ("conversion", "churn"):
        raise ValueError(f"Unknown target {target!r}; use conversion or churn.")
    return target


def experiment_name(target: str) -> str:
    """Experiment holding the training runs of a target."""
    return f"leadscore-{registered_name(target)}"


def configure(tracking_uri: str) -> None:
    """Point MLflow (tracking and registry) at a URI and keep its logging quiet.

    For a local ``sqlite:///path/mlflow.db`` store the folder is created and artifacts
    go to ``path/mlartifacts`` (not the working directory); a server decides itself.

    Args:
        tracking_uri: E.g. ``Settings.tracking_uri`` or ``http://127.0.0.1:5000``.
    """
    for name in ("mlflow", "alembic", "urllib3.connectionpool"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parsed = urlparse(tracking_uri)
    _state["artifact_root"] = None
    if parsed.scheme == "sqlite":
        db_path = Path(tracking_uri.removeprefix("sqlite:///"))
        db_path.parent.mkdir(parents=True, exist_ok=True)
        _state["artifact_root"] = (db_path.parent / "mlartifacts").resolve().as_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def _experiment_id(target: str) -> str:
    name = experiment_name(target)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = _state["artifact_root"]
    location = f"{root}/{name}" if root else None
    return mlflow.create_experiment(name, artifact_location=location)


class CalibratedModel(mlflow.pyfunc.PythonModel):
    """MLflow ``pyfunc`` wrapper: ``predict`` returns calibrated probabilities."""

    def load_context(self, context: Any) -> None:  # noqa: D102 - MLflow hook
        with open(context.artifacts["trained_model"], "rb") as handle:
            self.model: TrainedModel = pickle.load(handle)  # noqa: S301 - our own registry

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:  # noqa: D102
        return self.model.predict_proba(model_input)


def _pip_requirements() -> list[str]:
    requirements = []
    for package in ("lightgbm", "numpy", "pandas", "scikit-learn", "cloudpickle"):
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)[:500]
    return flat


#: Models-from-code script: MLflow runs it at load time instead of unpickling a class.
_MODEL_SCRIPT = """import mlflow
from models.tracking import CalibratedModel

mlflow.models.set_model(CalibratedModel())
"""


def _log_pyfunc(
    folder: Path,
    pickled: Path,
    example: pd.DataFrame,
    model: TrainedModel,
    target: str,
    register: bool,
) -> Any:
    script = folder / "calibrated_model.py"
    script.write_text(_MODEL_SCRIPT)
    # MLflow prints registration notices straight to stderr; keep them in the debug log.
    with contextlib.redirect_stderr(io.StringIO()) as notices, warnings.catch_warnings():
        # MLflow's own pandas-3 deprecation noise while it saves the input example.
        warnings.filterwarnings("ignore", message="Operation with range is deprecated")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(script),
            artifacts={"trained_model": str(pickled)},
            signature=infer_signature(example, model.predict_proba(example)),
            input_example=example,
            pip_requirements=_pip_requirements(),
            registered_model_name=registered_name(target) if register else None,
        )
    log.debug("mlflow: %s", notices.getvalue().strip())
    return info


def log_training_run(
    result: TrainResult,
    run_settings: Mapping[str, Any] | None = None,
    *,
    register: bool = True,
    shap_rows: int = 500,
    seed: int = 42,
) -> tuple[str, str | None]:
    """Log one training run with all metrics and artifacts, and register its model.

    Args:
        result: What :func:`models.train.train_model` returned.
        run_settings: Settings worth recording (nested dicts are flattened with dots).
        register: Register the model under the target's name.
        shap_rows: Validation rows sampled for the SHAP summary.
        seed: Seed of that sample.

    Returns:
        The run id and the registered version (``None`` when not registered).
    """
    model, split = result.model, result.split.describe()
    with mlflow.start_run(
        experiment_id=_experiment_id(result.target),
        run_name=f"{result.target}-{'-'.join(model.metadata.get('validation_window', []))}",
    ) as run:
        mlflow.set_tags(
            {
                "target": result.target,
                "feature_set_version": model.feature_set_version,
                "data_fingerprint": result.data_fingerprint,
                "out_of_time": str(split["out_of_time"]).lower(),
            }
        )
        params = {f"lgbm.{k}": str(v) for k, v in result.params.items()}
        params.update(_flatten(run_settings or {}, "settings."))
        params.update(
            {
                "feature_set_version": model.feature_set_version,
                "data_fingerprint": result.data_fingerprint,
                "horizon_days": str(model.metadata.get("horizon_days")),
                "calibration_method": model.metadata.get("calibration_method"),
                "best_iteration": str(model.metadata.get("best_iteration")),
                "out_of_time": str(split["out_of_time"]),
                "n_features": str(len(model.feature_names)),
                "train_window": " to ".join(model.metadata.get("train_window", [])),
                "validation_window": " to ".join(model.metadata.get("validation_window", [])),
                "label_definition": model.metadata.get("label_definition", "")[:500],
            }
        )
        mlflow.log_params(params)
        metrics = flat_metrics(result.metrics["model"])
        for name, values in result.metrics.items():
            if name != "model":
                metrics.update(flat_metrics(values, f"{name}_"))
        metrics.update({f"rows_{k}": float(v) for k, v in split["rows"].items()})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_report_files(result, folder, shap_rows, seed)
            mlflow.log_artifacts(str(folder))
            pickled = folder / MODEL_ARTIFACT
            pickled.write_bytes(pickle.dumps(model))
            example = model.example_input(3)
            # MLflow schemas have no categorical type: the example carries plain strings,
            # and TrainedModel.prepare turns them back into categories.
            example = example.astype({c: object for c in model.categorical_levels})
            info = _log_pyfunc(folder, pickled, example, model, result.target, register)
    registered = info.registered_model_version
    version_id = str(registered) if registered is not None else None
    log.info("logged %s run %s (model version %s)", result.target, run.info.run_id, version_id)
    return run.info.run_id, version_id


@dataclass
class PromotionDecision:
    """Outcome of champion/challenger for one new version, with its numbers."""

    target: str
    version: str
    promoted: bool
    alias: str
    previous_champion: str | None
    reasons: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        verdict = "promoted to @champion" if self.promoted else "kept as @challenger"
        return f"{self.target} v{self.version} {verdict}: " + "; ".join(self.reasons)


def _champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def load_version(target: str, version_id: str) -> TrainedModel:
    """The :class:`TrainedModel` of a registered version (booster included)."""
    name = registered_name(target)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version_id}", dst_path=tmp
        )
        with open(Path(local) / "artifacts" / MODEL_ARTIFACT, "rb") as handle:
            model: TrainedModel = pickle.load(handle)  # noqa: S301 - our own registry
    model.metadata = {**model.metadata, "registered_version": version_id}
    return model


def load_champion(target: str) -> TrainedModel | None:
    """The ``@champion`` of a target, or ``None`` (scoring then uses the rule score)."""
    version_id = _champion_version(MlflowClient(), registered_name(target))
    if version_id is None:
        log.warning("no @champion for %s: scoring falls back to the rule score", target)
        return None
    model = load_version(target, version_id)
    model.metadata["alias"] = CHAMPION
    return model


def decide_promotion(
    result: TrainResult,
    champion: TrainedModel | None,
    *,
    max_auc_drop: float = 0.0,
    max_ece_increase: float = 0.005,
) -> tuple[bool, list[str], dict[str, float]]:
    """Compare a new model with the champion on the new validation rows and with the rules.

    Args:
        result: The new model's training result (its validation fold is the yardstick).
        champion: The current champion, re-scored on that fold; ``None`` when none.
        max_auc_drop: Largest AUC loss against the champion still accepted.
        max_ece_increase: Largest ECE increase against the champion still accepted.

    Returns:
        Whether to promote, the reasons as sentences, and the numbers compared.
    """
    new = result.metrics["model"]
    numbers = {"new_roc_auc": new["roc_auc"], "new_ece": new["ece"]}
    reasons: list[str] = []
    promote = True
    for name in ("rule", "rule_recalibrated"):
        if name not in result.metrics:
            continue
        rule_auc = result.metrics[name]["roc_auc"]
        numbers[f"{name}_roc_auc"] = rule_auc
        beats = new["roc_auc"] > rule_auc
        promote &= beats
        verb = "beats" if beats else "does not beat"
        reasons.append(f"AUC {new['roc_auc']:.4f} {verb} the {name} score's {rule_auc:.4f}")
    if champion is None:
        reasons.append("there is no champion yet")
        return promote, reasons, numbers
    y = result.validation["label"].to_numpy()
    old = evaluate(y, champion.predict_proba(result.validation_features))
    numbers.update({"champion_roc_auc": old["roc_auc"], "champion_ece": old["ece"]})
    auc_ok = new["roc_auc"] >= old["roc_auc"] - max_auc_drop
    ece_ok = new["ece"] <= old["ece"] + max_ece_increase
    promote &= auc_ok and ece_ok
    reasons.append(
        f"AUC {new['roc_auc']:.4f} against the champion's {old['roc_auc']:.4f} on the same "
        f"rows ({'within' if auc_ok else 'beyond'} the allowed drop {max_auc_drop:g})"
    )
    reasons.append(
        f"ECE {new['ece']:.4f} against {old['ece']:.4f} "
        f"({'within' if ece_ok else 'beyond'} the allowed increase {max_ece_increase:g})"
    )
    return promote, reasons, numbers


def register_and_promote(
    result: TrainResult,
    run_id: str,
    version_id: str,
    *,
    max_auc_drop: float = 0.0,
    max_ece_increase: float = 0.005,
) -> PromotionDecision:
    """Champion/challenger for a newly registered version, with aliases.

    Args:
        result: The new version's training result.
        run_id: Its run (the decision is logged there).
        version_id: Its registered version.
        max_auc_drop: ``model.champion_max_auc_drop``.
        max_ece_increase: ``model.champion_max_ece_increase``.

    Returns:
        The decision; ``@champion`` or ``@challenger`` now points at the version.
    """
    client = MlflowClient()
    name = registered_name(result.target)
    previous = _champion_version(client, name)
    champion = load_version(result.target, previous) if previous not in (None, version_id) else None
    promote, reasons, numbers = decide_promotion(
        result, champion, max_auc_drop=max_auc_drop, max_ece_increase=max_ece_increase
    )
    alias = CHAMPION if promote else CHALLENGER
    client.set_registered_model_alias(name, alias, version_id)
    decision = PromotionDecision(
        result.target, version_id, promote, alias, previous, reasons, numbers
    )
    client.set_model_version_tag(name, version_id, "decision", alias)
    client.set_tag(run_id, "promotion", alias)
    for key, value in numbers.items():
        client.log_metric(run_id, f"promotion_{key}", float(value))
    client.log_dict(run_id, asdict(decision), "promotion.json")
    log.info("%s", decision.summary())
    return decision


def list_models(targets: tuple[str, ...] = ("conversion", "churn")) -> pd.DataFrame:
    """Registered versions with their aliases and key validation metrics, newest first.

    Returns:
        Columns ``model``, ``version``, ``aliases``, ``created``, ``run_id``,
        ``feature_set_version``, ``out_of_time``, the :data:`KEY_METRICS` and
        ``rule_roc_auc``.
    """
    client = MlflowClient()
    rows = []
    for target in targets:
        name = registered_name(target)
        try:
            versions = client.search_model_versions(f"name = '{name}'")
            aliases = client.get_registered_model(name).aliases or {}
        except MlflowException:
            continue
        for mv in versions:
            run = client.get_run(mv.run_id) if mv.run_id else None
            metrics = run.data.metrics if run else {}
            tags = run.data.tags if run else {}
            row = {
                "model": name,
                "version": int(mv.version),
                "aliases": ", ".join(
                    sorted(a for a, v in aliases.items() if str(v) == str(mv.version))
                ),
                "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
                "run_id": mv.run_id,
                "feature_set_version": tags.get("feature_set_version", ""),
                "out_of_time": tags.get("out_of_time", ""),
            }
            row.update({k: metrics.get(k, np.nan) for k in KEY_METRICS})
            row["rule_roc_auc"] = metrics.get("rule_roc_auc", np.nan)
            rows.append(row)
    columns = [
        "model",
        "version",
        "aliases",
        "created",
        "run_id",
        "feature_set_version",
        "out_of_time",
        *KEY_METRICS,
        "rule_roc_auc",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["model", "version"], ascending=[True, False], ignore_index=True)
