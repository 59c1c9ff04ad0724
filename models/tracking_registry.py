"""The MLflow model registry: champion/challenger aliases, loading and listing versions.

* One registered model per target (``conversion``, ``churn``); versions are created
  by :func:`models.tracking.log_training_run`.
* Promotion uses aliases: ``@champion`` only when the new version is at least as good
  as the champion on the same out-of-time rows and beats the rule baseline
  (:func:`models.promotion.decide_promotion`); otherwise it becomes ``@challenger``.
  The decision and its numbers are logged on the version's run.
* A version registered by a run that died before its decision (no ``decision`` tag,
  no alias) is an orphan: :func:`mark_orphans` tags it ``leadscore.orphan=true`` and
  :func:`load_champion` never loads a version so tagged.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path

# models.tracking switches MLflow's usage telemetry off: it must be imported before mlflow.
from features.targets import TARGET_NAMES

from models.tracking import MODEL_ARTIFACT, registered_name  # isort: skip

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from models.model import TrainedModel
from models.promotion import PromotionDecision, decide_promotion
from models.tracking_index import RegisteredVersion, version_row
from models.train import TrainResult

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Tag of a version whose training run died between registering and deciding.
ORPHAN_TAG = "leadscore.orphan"
#: Tag :func:`register_and_promote` sets on every version it decides on.
DECISION_TAG = "decision"


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
    client = MlflowClient()
    name = registered_name(target)
    version_id = _champion_version(client, name)
    if version_id is not None and ORPHAN_TAG in client.get_model_version(name, version_id).tags:
        log.warning("%s v%s is an orphan version: not loaded as the champion", name, version_id)
        version_id = None
    if version_id is None:
        # The run says so once it knows (after any training), not here: see pipelines.flows.
        log.debug("no @champion for %s", target)
        return None
    model = load_version(target, version_id)
    model.metadata["alias"] = CHAMPION
    return model


def register_and_promote(
    result: TrainResult,
    run_id: str,
    version_id: str,
    *,
    max_auc_drop: float = 0.0,
    max_ece_increase: float = 0.005,
    min_validation_positives: int = 20,
    confidence: float = 0.95,
) -> PromotionDecision:
    """Champion/challenger for a newly registered version, with aliases.

    Args:
        result: The new version's training result.
        run_id: Its run (the decision is logged there).
        version_id: Its registered version.
        max_auc_drop: ``model.champion_max_auc_drop``.
        max_ece_increase: ``model.champion_max_ece_increase``.
        min_validation_positives: ``model.min_validation_positives``.
        confidence: ``model.promotion_confidence``.

    Returns:
        The decision; ``@champion`` or ``@challenger`` now points at the version.
    """
    client = MlflowClient()
    name = registered_name(result.target)
    previous = _champion_version(client, name)
    champion = load_version(result.target, previous) if previous not in (None, version_id) else None
    promote, reasons, numbers = decide_promotion(
        result,
        champion,
        max_auc_drop=max_auc_drop,
        max_ece_increase=max_ece_increase,
        min_validation_positives=min_validation_positives,
        confidence=confidence,
    )
    alias = CHAMPION if promote else CHALLENGER
    client.set_registered_model_alias(name, alias, version_id)
    decision = PromotionDecision(
        result.target, version_id, promote, alias, previous, reasons, numbers
    )
    client.set_model_version_tag(name, version_id, DECISION_TAG, alias)
    client.set_tag(run_id, "promotion", alias)
    for key, value in numbers.items():
        client.log_metric(run_id, f"promotion_{key}", float(value))
    client.log_dict(run_id, asdict(decision), "promotion.json")
    log.info("%s", decision.summary())
    return decision


def _registered(
    client: MlflowClient, targets: tuple[str, ...]
) -> Iterator[tuple[str, list[ModelVersion], dict[str, str]]]:
    """``(name, versions, aliases)`` of each target's registered model that exists."""
    for target in targets:
        name = registered_name(target)
        try:
            versions = client.search_model_versions(f"name = '{name}'")
            aliases = client.get_registered_model(name).aliases or {}
        except MlflowException:
            continue
        yield name, list(versions), dict(aliases)


def mark_orphans(targets: tuple[str, ...] = TARGET_NAMES) -> list[str]:
    """Tag the versions a training run registered but never decided on (it died).

    Call it only while no training runs against this registry (under the run lock).

    Returns:
        ``name vN`` of each version newly tagged :data:`ORPHAN_TAG`.
    """
    client = MlflowClient()
    marked = []
    for name, versions, aliases in _registered(client, targets):
        aliased = {str(v) for v in aliases.values()}
        for mv in versions:
            tags = mv.tags or {}
            if DECISION_TAG in tags or ORPHAN_TAG in tags or str(mv.version) in aliased:
                continue
            client.set_model_version_tag(name, mv.version, ORPHAN_TAG, "true")
            log.warning("%s v%s has no promotion decision: tagged %s", name, mv.version, ORPHAN_TAG)
            marked.append(f"{name} v{mv.version}")
    return marked


def list_models(targets: tuple[str, ...] = TARGET_NAMES) -> pd.DataFrame:
    """Registered versions with their aliases and key validation metrics, newest first.

    :func:`models.tracking_index.list_versions` reads the same rows without mlflow.

    Returns:
        One column per :class:`~models.tracking_index.RegisteredVersion` field:
        ``model``, ``version``, ``aliases``, ``created``, ``run_id``,
        ``feature_set_version``, ``out_of_time``, the key metrics and ``rule_roc_auc``.
    """
    client = MlflowClient()
    rows = []
    for name, versions, aliases in _registered(client, targets):
        for mv in versions:
            run = client.get_run(mv.run_id) if mv.run_id else None
            created = pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC")
            metrics = run.data.metrics if run else {}
            tags = run.data.tags if run else {}
            row = version_row(name, mv.version, aliases, created, mv.run_id, metrics, tags)
            rows.append(asdict(row))
    columns = [field.name for field in fields(RegisteredVersion)]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["model", "version"], ascending=[True, False], ignore_index=True)


def model_versions_with_windows(targets: tuple[str, ...] = TARGET_NAMES) -> pd.DataFrame:
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
