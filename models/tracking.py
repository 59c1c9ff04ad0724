"""Every MLflow call of the project: runs, artifacts, registry and champion/challenger.

* One experiment per target (``leadscore-conversion``, ``leadscore-churn``), one
  registered model per target (``conversion``, ``churn``).
* A run logs parameters, the feature-set version and data fingerprint, all metrics
  of the model and of the rule baselines, and artifacts: calibration curve, lift
  chart, global SHAP summary, feature importance, model card, metrics and split.
* The model is a ``pyfunc`` (calibrated probabilities) with a signature and a made-up
  input example (:func:`safe_input_example`), and it carries the pickled
  :class:`~models.model.TrainedModel` so scoring gets the booster back for
  ``pred_contrib``. No artifact holds entity ids; the SHAP summary is drawn on
  decorrelated rows (:func:`models.privacy.decorrelated_rows`), never real ones.
* Erasure support (the functions at the end): find runs and
  logged models whose artifacts hold given values, replace forgotten category levels
  inside stored models, delete runs, and run ``mlflow gc`` so deleted runs are gone.
* Promotion uses aliases: ``@champion`` only when the new version is at least as good
  as the champion on the same out-of-time rows and beats the rule baseline;
  otherwise it becomes ``@challenger``. The decision and its numbers are logged.
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
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from models.bands import BAND_METADATA_KEY
from models.evaluate import evaluate, flat_metrics
from models.model import TrainedModel, write_report_files
from models.privacy import decorrelated_rows
from models.train import TrainResult

if TYPE_CHECKING:
    from models.recalibrate import RecalibrationResult

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "trained_model.pkl"
#: Metrics shown by ``leadscore models`` and compared for promotion.
KEY_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")
_state: dict[str, str | None] = {"artifact_root": None}
#: Categorical columns with more levels than this may identify people (names, e-mails):
#: their values never appear in an input example.
MAX_EXAMPLE_LEVELS = 50


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


# --- erasure -----------------------------------------------------------------------


@dataclass
class ArtifactHit:
    """A run or logged model whose artifacts hold some of the searched values.

    Attributes:
        kind: ``run`` or ``logged_model``.
        id: The run id or logged model id.
        target: ``conversion`` or ``churn``.
        files: Artifact paths (relative) that matched; never the values themselves.
    """

    kind: str
    id: str
    target: str
    files: list[str] = field(default_factory=list)


def _experiments(targets: tuple[str, ...]) -> list[tuple[str, str]]:
    found = []
    for target in targets:
        experiment = mlflow.get_experiment_by_name(experiment_name(target))
        if experiment is not None:
            found.append((target, experiment.experiment_id))
    return found


def _matching_files(folder: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(needle in data for needle in needles):
            hits.append(path.relative_to(folder).as_posix())
    return hits


def find_artifacts_containing(
    values: list[str], targets: tuple[str, ...] = ("conversion", "churn")
) -> list[ArtifactHit]:
    """Runs and logged models (deleted ones too) whose artifact bytes contain a value.

    Every artifact is downloaded to a temporary folder and searched byte for byte
    (UTF-8), pickles included, so nothing escapes because of its format.

    Args:
        values: Raw ids and attribute values to look for (empty strings are skipped).
        targets: Experiments to search.

    Returns:
        One hit per run or logged model with at least one matching file.
    """
    from mlflow.entities import ViewType

    needles = [v.encode("utf-8") for v in dict.fromkeys(values) if v]
    if not needles:
        return []
    client = MlflowClient()
    hits = []
    for target, experiment_id in _experiments(targets):
        runs = client.search_runs([experiment_id], run_view_type=ViewType.ALL)
        sources = [("run", r.info.run_id, {"run_id": r.info.run_id}) for r in runs]
        sources += [
            ("logged_model", m.model_id, {"artifact_uri": m.artifact_location})
            for m in client.search_logged_models(experiment_ids=[experiment_id])
        ]
        for kind, identifier, where in sources:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    local = mlflow.artifacts.download_artifacts(**where, dst_path=tmp)
                except (MlflowException, OSError):  # artifacts already collected
                    continue
                files = _matching_files(Path(local), needles)
            if files:
                hits.append(ArtifactHit(kind, identifier, target, files))
    return hits


def _local_path(artifact_uri: str) -> Path | None:
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    return Path(artifact_uri) if parsed.scheme == "" else None


def _replaced(items: list[Any], replacements: Mapping[str, str]) -> tuple[list[Any], int]:
    out = [replacements.get(v, v) if isinstance(v, str) else v for v in items]
    return out, sum(a != b for a, b in zip(items, out, strict=True))


def replace_model_levels(
    replacements: Mapping[str, str], targets: tuple[str, ...] = ("conversion", "churn")
) -> list[dict[str, Any]]:
    """Replace forgotten category levels inside every stored model, in place.

    A categorical fit attribute keeps its training levels in the model (our
    ``categorical_levels``, the feature profile and LightGBM's ``pandas_categorical``).
    A level unique to a forgotten person (a company name) is personal data. Each
    such level is swapped for its replacement at the same position in all three
    lists, so category codes, and therefore every other entity's score, stay exactly
    the same. Only local (``file:``) artifact stores can be rewritten.

    Args:
        replacements: Raw value -> replacement (e.g. a pseudonym).
        targets: Experiments to search.

    Returns:
        One ``{"target", "model_id", "levels_replaced"}`` per model rewritten.
    """
    if not replacements:
        return []
    client = MlflowClient()
    rewritten = []
    for target, experiment_id in _experiments(targets):
        for logged in client.search_logged_models(experiment_ids=[experiment_id]):
            folder = _local_path(logged.artifact_location)
            path = folder / "artifacts" / MODEL_ARTIFACT if folder else None
            if path is None or not path.is_file():
                continue
            with open(path, "rb") as handle:
                model: TrainedModel = pickle.load(handle)  # noqa: S301 - our own registry
            count = 0
            for name, levels in model.categorical_levels.items():
                model.categorical_levels[name], n = _replaced(levels, replacements)
                count += n
                stats = model.metadata.get("feature_profile", {}).get(name, {})
                if "top_levels" in stats:
                    stats["top_levels"], _ = _replaced(stats["top_levels"], replacements)
            booster_levels = getattr(model.booster, "pandas_categorical", None) or []
            model.booster.pandas_categorical = [
                _replaced(list(levels), replacements)[0] for levels in booster_levels
            ]
            if count:
                _write_bytes_atomic(path, pickle.dumps(model))
                rewritten.append(
                    {"target": target, "model_id": logged.model_id, "levels_replaced": count}
                )
    return rewritten


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def delete_hits(hits: list[ArtifactHit]) -> dict[str, list[str]]:
    """Mark the runs and logged models of ``hits`` deleted, with their model versions.

    They disappear for real at the next :func:`collect_garbage`.

    Returns:
        ``{"runs": [...], "logged_models": [...], "model_versions": ["churn v3", ...]}``.
    """
    client = MlflowClient()
    deleted: dict[str, list[str]] = {"runs": [], "logged_models": [], "model_versions": []}
    run_ids = {h.id for h in hits if h.kind == "run"}
    model_ids = {h.id for h in hits if h.kind == "logged_model"}
    for target in {h.target for h in hits}:
        name = registered_name(target)
        try:
            versions = client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            versions = []
        for mv in versions:
            if mv.run_id in run_ids or getattr(mv, "model_id", None) in model_ids:
                client.delete_model_version(name, mv.version)
                deleted["model_versions"].append(f"{name} v{mv.version}")
    for model_id in sorted(model_ids):
        client.delete_logged_model(model_id)
        deleted["logged_models"].append(model_id)
    for run_id in sorted(run_ids):
        client.delete_run(run_id)
        deleted["runs"].append(run_id)
    return deleted


def collect_garbage(tracking_uri: str) -> None:
    """Run ``mlflow gc`` on the store: deleted runs and logged models go for good.

    The venv's ``mlflow`` command is used (MLflow has no public Python API for it).
    A SQLite store is then vacuumed, so deleted rows do not linger in free pages.

    Raises:
        RuntimeError: ``mlflow gc`` failed; the message quotes its last output lines.
    """
    import sqlite3
    import subprocess
    import sys

    command = Path(sys.executable).with_name("mlflow")
    args = [str(command)] if command.exists() else [sys.executable, "-m", "mlflow"]
    args += ["gc", "--backend-store-uri", tracking_uri]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"mlflow gc on {tracking_uri} failed (exit {done.returncode}): {tail}")
    if tracking_uri.startswith("sqlite:///"):
        connection = sqlite3.connect(tracking_uri.removeprefix("sqlite:///"))
        try:
            connection.execute("VACUUM")
        finally:
            connection.close()
    log.info("mlflow gc done on %s", tracking_uri)


def model_versions_with_windows(targets: tuple[str, ...] = ("conversion", "churn")) -> pd.DataFrame:
    """Registered versions with the last training cutoff of each (``last_cutoff``, UTC).

    Returns:
        :func:`list_models` columns plus ``last_cutoff`` (NaT when unknown).
    """
    frame = list_models(targets)
    client = MlflowClient()
    last = []
    for run_id in frame["run_id"]:
        window = client.get_run(run_id).data.params.get("validation_window", "") if run_id else ""
        end = window.rpartition(" to ")[2]
        last.append(pd.Timestamp(end, tz="UTC") if end else pd.NaT)
    return frame.assign(last_cutoff=pd.Series(last, index=frame.index, dtype="datetime64[ns, UTC]"))


def log_recalibration(
    result: RecalibrationResult, run_settings: Mapping[str, Any] | None = None
) -> str:
    """Log a rule recalibration: its settings, holdout metrics, new points and report.

    Everything logged is aggregate (points, intervals, rates): no row of the data.

    Args:
        result: What :func:`models.recalibrate.recalibrate` returned.
        run_settings: Settings worth recording (nested dicts are flattened with dots).

    Returns:
        The run id.
    """
    rules = result.old_rules.name
    with mlflow.start_run(
        experiment_id=_experiment_id_named(RECALIBRATION_EXPERIMENT),
        run_name=f"{rules}-{result.target}",
    ) as run:
        mlflow.set_tags({"rules": rules, "target": result.target})
        params = {f"recalibration.{k}": str(v)[:500] for k, v in result.settings.items()}
        params.update(_flatten(run_settings or {}, "settings."))
        for part in ("training", "holdout"):
            dates = result.split[f"{part}_cutoffs"]
            params[f"{part}_cutoffs"] = f"{dates[0]} to {dates[-1]} ({len(dates)} dates)"
        mlflow.log_params(params)
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
