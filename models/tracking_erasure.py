"""Erasure support in the MLflow store: find, scrub and delete what holds a person's data.

Find runs and logged models whose artifacts hold given values
(:func:`find_artifacts_containing`), replace forgotten category levels inside stored
models (:func:`replace_model_levels`), delete runs (:func:`delete_hits`), and run
``mlflow gc`` so deleted runs are gone (:func:`collect_garbage`).
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# models.tracking switches MLflow's usage telemetry off: it must be imported before mlflow.
from features.targets import TARGET_NAMES

from models.tracking import MODEL_ARTIFACT, experiment_name, registered_name  # isort: skip

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.model import TrainedModel

log = logging.getLogger(__name__)


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
    values: list[str], targets: tuple[str, ...] = TARGET_NAMES
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
    replacements: Mapping[str, str], targets: tuple[str, ...] = TARGET_NAMES
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
