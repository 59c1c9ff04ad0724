"""MLflow runs: where they go, and logging training and recalibration runs.

* One experiment per target (``leadscore-conversion``, ``leadscore-churn``), one
  registered model per target (``conversion``, ``churn``); the registry and
  champion/challenger are in :mod:`models.tracking_registry`, erasure support in
  :mod:`models.tracking_erasure`. Only ``models/tracking*`` imports mlflow.
* A run logs parameters, the feature-set version and data fingerprint, all metrics
  of the model and of the rule baselines, and artifacts: calibration curve, lift
  chart, global SHAP summary, feature importance, model card, metrics and split.
* The model is a ``pyfunc`` (calibrated probabilities) with a signature and a made-up
  input example (:func:`safe_input_example`), and it carries the pickled
  :class:`~models.model.TrainedModel` so scoring gets the booster back for
  ``pred_contrib``. No artifact holds entity ids; the SHAP summary is drawn on
  decorrelated rows (:func:`models.privacy.decorrelated_rows`), never real ones.
* MLflow's anonymous usage telemetry is off unless the user chose otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import pickle
import tempfile
import warnings
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

# MLflow starts its usage telemetry client when it is imported (``mlflow/__init__``
# calls ``set_telemetry_client``), so the opt-out must be in the environment before
# ``import mlflow``; setdefault keeps a user's explicit choice. The other tracking
# modules import this one before mlflow for the same reason.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from features.targets import target as target_named
from models.bands import BAND_METADATA_KEY
from models.evaluate import flat_metrics
from models.model import TrainedModel
from models.model_card import write_report_files
from models.privacy import decorrelated_rows
from models.train import TrainResult

if TYPE_CHECKING:
    from models.recalibrate import RecalibrationResult

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "trained_model.pkl"
_state: dict[str, str | None] = {"artifact_root": None}
#: Categorical columns with more levels than this may identify people (names, e-mails):
#: their values never appear in an input example.
MAX_EXAMPLE_LEVELS = 50


def registered_name(target: str) -> str:
    """Registered model name of a target (``conversion`` or ``churn``)."""
    return target_named(target).name


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


RECALIBRATION_EXPERIMENT = "leadscore-rule-recalibration"


def _experiment_id(target: str) -> str:
    return _experiment_id_named(experiment_name(target))


def _experiment_id_named(name: str) -> str:
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


def _flatten(params: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
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


def safe_input_example(model: TrainedModel, n_rows: int = 3) -> pd.DataFrame:
    """A made-up input example that holds no value identifying a person.

    Numbers are training quartiles (aggregates). Categorical columns keep their most
    common training levels only when they have at most :data:`MAX_EXAMPLE_LEVELS`
    levels; a column with more (names, e-mails, company names) gets generated
    placeholders instead, which the model reads as missing.

    Args:
        model: The trained model.
        n_rows: Rows in the example.

    Returns:
        The example, categorical columns as plain strings (MLflow schemas have no
        categorical type; ``TrainedModel.prepare`` turns them back).
    """
    example = model.example_input(n_rows)
    example = example.astype({c: object for c in model.categorical_levels})
    for name, levels in model.categorical_levels.items():
        if len(levels) > MAX_EXAMPLE_LEVELS:
            example[name] = [f"example value {i + 1}" for i in range(len(example))]
    return example


def _without_real_rows(result: TrainResult, n_rows: int, seed: int) -> TrainResult:
    # The SHAP summary plots one dot per row: decorrelated rows keep the picture of
    # each feature's effect while no dot is a real person's row.
    real = result.validation_features
    if real.empty:
        return result
    shown = decorrelated_rows(real, min(n_rows, len(real)), seed)
    return dataclasses.replace(result, validation_features=shown)


def log_training_run(
    result: TrainResult,
    params: Mapping[str, object] | None = None,
    *,
    register: bool = True,
    shap_rows: int = 500,
    seed: int = 42,
) -> tuple[str, str | None]:
    """Log one training run with all metrics and artifacts, and register its model.

    Args:
        result: What :func:`models.train.train_model` returned.
        params: Already filtered, safe-to-log run parameters (nested mappings are
            flattened with dots, each logged as ``settings.<key>``).
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
        logged = {f"lgbm.{k}": str(v) for k, v in result.params.items()}
        logged.update(_flatten(params or {}, "settings."))
        logged.update(
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
        mlflow.log_params(logged)
        metrics = flat_metrics(result.metrics["model"])
        for name, values in result.metrics.items():
            if name != "model":
                metrics.update(flat_metrics(values, f"{name}_"))
        metrics.update({f"rows_{k}": float(v) for k, v in split["rows"].items()})
        band = model.metadata.get(BAND_METADATA_KEY) or {}
        metrics.update(
            {f"band_{k}": float(v) for k, v in band.items() if isinstance(v, int | float)}
        )
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_report_files(_without_real_rows(result, shap_rows, seed), folder, shap_rows, seed)
            mlflow.log_artifacts(str(folder))
            pickled = folder / MODEL_ARTIFACT
            pickled.write_bytes(pickle.dumps(model))
            example = safe_input_example(model, 3)
            info = _log_pyfunc(folder, pickled, example, model, result.target, register)
    registered = info.registered_model_version
    version_id = str(registered) if registered is not None else None
    log.info("logged %s run %s (model version %s)", result.target, run.info.run_id, version_id)
    return run.info.run_id, version_id


def log_recalibration(
    result: RecalibrationResult, params: Mapping[str, object] | None = None
) -> str:
    """Log a rule recalibration: its settings, holdout metrics, new points and report.

    Everything logged is aggregate (points, intervals, rates): no row of the data.

    Args:
        result: What :func:`models.recalibrate.recalibrate` returned.
        params: Already filtered, safe-to-log run parameters (nested mappings are
            flattened with dots, each logged as ``settings.<key>``).

    Returns:
        The run id.
    """
    rules = result.old_rules.name
    with mlflow.start_run(
        experiment_id=_experiment_id_named(RECALIBRATION_EXPERIMENT),
        run_name=f"{rules}-{result.target}",
    ) as run:
        mlflow.set_tags({"rules": rules, "target": result.target})
        logged = {f"recalibration.{k}": str(v)[:500] for k, v in result.settings.items()}
        logged.update(_flatten(params or {}, "settings."))
        for part in ("training", "holdout"):
            dates = result.split[f"{part}_cutoffs"]
            logged[f"{part}_cutoffs"] = f"{dates[0]} to {dates[-1]} ({len(dates)} dates)"
        mlflow.log_params(logged)
        metrics = result.flat_metrics()
        metrics.update(
            {f"rows_{k.removeprefix('n_')}": float(v) for k, v in result.split.items()
             if k.startswith("n_")}
        )  # fmt: skip
        for row in result.table.itertuples():
            metrics[f"points_old.{row.signal}"] = float(row.old_points)
            metrics[f"points_new.{row.signal}"] = float(row.new_points)
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        with tempfile.TemporaryDirectory() as tmp:
            result.write(tmp)
            mlflow.log_artifacts(tmp)
    log.info("logged %s/%s recalibration run %s", rules, result.target, run.info.run_id)
    return run.info.run_id
