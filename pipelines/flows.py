"""Prefect flows: thin wiring over the pure steps in ``features/`` and ``models/``.

Tasks that touch storage or services retry with backoff; pure steps do not. A
failure in any step ends the run in a failed state whose message names the step,
and since every write is atomic and promotion happens only after evaluation, the
previous outputs and the champion model stay as they were.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pipelines import steps
from pipelines.settings import Settings, load_settings
from pipelines.summary import psi_status

log = logging.getLogger(__name__)

IO_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 5, 15]}


class StepFailed(RuntimeError):
    """A nightly step failed; the message names the step and the cause."""


def _step(name: str, func, *args, **kwargs):  # noqa: ANN001, ANN202
    try:
        return func(*args, **kwargs)
    except Exception as exc:
        raise StepFailed(f"Step '{name}' failed: {exc}") from exc


def _settings(config_path: str | None, sources: dict[str, str | None]) -> Settings:
    overrides = {k: v for k, v in sources.items() if v}
    settings = load_settings(Path(config_path) if config_path else None)
    if overrides:
        settings.sources = settings.sources.model_copy(update=overrides)
    return settings


@task(name="load inputs", **IO_RETRIES)
def load_inputs_task(settings: Settings, as_of: pd.Timestamp) -> steps.LoadedInputs:
    """Read and validate events, entities and outcomes."""
    return steps.load_inputs(settings, as_of)


@task(name="build features")
def build_features_task(
    settings: Settings, inputs: steps.LoadedInputs, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Point-in-time features as of the run date."""
    return steps.build_features(settings, inputs, as_of)


# No retries: training failures (too few labels, leakage, short history) are not transient.
@task(name="train model")
def train_task(settings: Settings, inputs: steps.LoadedInputs, target: str, as_of: pd.Timestamp):  # noqa: ANN201
    """Train, evaluate and register one target; promotion only when it wins."""
    return steps.train(settings, inputs, target, as_of)


@task(name="load champions", **IO_RETRIES)
def load_champions_task(settings: Settings) -> dict[str, Any]:
    """The ``@champion`` model of each target, or ``None``."""
    return steps.load_champions(settings)


@task(name="read previous scores", **IO_RETRIES)
def read_previous_task(settings: Settings, as_of: pd.Timestamp) -> pd.DataFrame | None:
    """The last scores written before this date."""
    return steps.read_previous(settings, as_of)


@task(name="score")
def score_task(settings, inputs, features, champions, previous, as_of):  # noqa: ANN001, ANN201
    """Score every entity: probabilities, bands, rule score and reasons."""
    return steps.score(settings, inputs, features, champions, previous, as_of)


@task(name="write outputs", **IO_RETRIES)
def write_outputs_task(settings, scored, previous, as_of):  # noqa: ANN001, ANN201
    """Parquet partition, score tables, CRM export and lead board, each atomic."""
    return steps.write_outputs(settings, scored, previous, as_of)


@task(name="apply retention", **IO_RETRIES)
def purge_task(settings: Settings, scored: pd.DataFrame, as_of: pd.Timestamp) -> dict[str, int]:
    """Purge score history past its maximum age and earlier scores of withdrawn consent."""
    return steps.purge(settings, scored, as_of)


@task(name="publish summary", **IO_RETRIES)
def publish_summary_task(settings: Settings, summary) -> str:  # noqa: ANN001
    """Run summary as JSON beside the outputs and as a Prefect Markdown artifact."""
    path = steps.write_summary(settings, summary)
    create_markdown_artifact(
        markdown=summary.to_markdown(),
        key="leadscore-run-summary",
        description=f"leadscore nightly run {summary.as_of}",
    )
    return str(path)


@flow(name="build_features")
def build_features_flow(
    as_of: str | None = None,
    config_path: str | None = None,
    events: str | None = None,
    entities: str | None = None,
    outcomes: str | None = None,
) -> str:
    """Build and save the feature table as of a date; returns its path."""
    settings = _settings(
        config_path, {"events": events, "entities": entities, "outcomes": outcomes}
    )
    run_date = steps.resolve_as_of(as_of, settings)
    inputs = load_inputs_task(settings, run_date)
    table = build_features_task(settings, inputs, run_date)
    return str(steps.save_features(settings, table, run_date))


@flow(name="train")
def train_flow(
    target: str = "conversion", as_of: str | None = None, config_path: str | None = None
) -> dict[str, Any]:
    """Train one target on point-in-time snapshots and run champion/challenger."""
    settings = _settings(config_path, {})
    run_date = steps.resolve_as_of(as_of, settings)
    inputs = load_inputs_task(settings, run_date)
    return train_task(settings, inputs, target, run_date)


@flow(name="recalibrate_baseline")
def recalibrate_flow(
    rules: str = "engagement",
    target: str = "churn",
    as_of: str | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Recalibrate a rule file's points from outcomes and write the report."""
    settings = _settings(config_path, {})
    run_date = steps.resolve_as_of(as_of, settings)
    inputs = load_inputs_task(settings, run_date)
    result = steps.recalibrate(settings, inputs, rules, target, run_date)
    return {**result, "table": result["table"].to_dict("records")}


@flow(name="score")
def score_flow(as_of: str | None = None, config_path: str | None = None) -> dict[str, Any]:
    """Score everyone with the champions and write all outputs (no retraining)."""
    return _run_nightly(as_of, config_path, {}, allow_retrain=False)


@flow(name="nightly")
def nightly(
    as_of: str | None = None,
    config_path: str | None = None,
    events: str | None = None,
    entities: str | None = None,
    outcomes: str | None = None,
) -> dict[str, Any]:
    """Validate inputs, build features, retrain when due, score, write and publish."""
    sources = {"events": events, "entities": entities, "outcomes": outcomes}
    return _run_nightly(as_of, config_path, sources, allow_retrain=True)


def _run_nightly(
    as_of: str | None, config_path: str | None, sources: dict, *, allow_retrain: bool
) -> dict[str, Any]:
    logger = get_run_logger()
    settings = _settings(config_path, sources)
    run_date = steps.resolve_as_of(as_of, settings)
    logger.info("leadscore run as of %s", run_date.date())
    inputs = _step("load inputs", load_inputs_task, settings, run_date)
    retention = _step("event retention", steps.apply_retention, settings, inputs, run_date)
    features = _step("build features", build_features_task, settings, inputs, run_date)
    champions = _step("load champions", load_champions_task, settings)
    decisions: dict[str, str] = {}
    if allow_retrain:
        due = {}
        for target in steps.TARGETS:
            due[target], decisions[target] = steps.retrain_due(
                settings,
                champions.get(target),
                features,
                run_date,
                trained_already=steps.trained_for_date(settings, target, run_date),
            )
        champions = _retrain(settings, inputs, run_date, due, decisions, champions)
    previous = _step("read previous scores", read_previous_task, settings, run_date)
    result = _step("score", score_task, settings, inputs, features, champions, previous, run_date)
    scored = result.frame
    if allow_retrain:
        # Drift is measured on this run's scores, so it needs a first scoring; only
        # targets with a drifting champion are retrained, and then everything is re-scored.
        drift = steps.score_psi(champions, scored)
        due = {}
        for target, value in drift.items():
            if steps.trained_for_date(settings, target, run_date) is not None:
                continue  # trained for this date already, by this run or an earlier one
            due[target], why = steps.retrain_due(
                settings, champions.get(target), features, run_date, drift_psi=value
            )
            if due[target]:
                decisions[target] = why
        if any(due.values()):
            champions = _retrain(settings, inputs, run_date, due, decisions, champions)
            result = _step(
                "score", score_task, settings, inputs, features, champions, previous, run_date
            )
            scored = result.frame
    summary = _step(
        "summarise",
        steps.summarise,
        settings, inputs, features, scored, champions, decisions, retention, run_date,
    )  # fmt: skip
    paths = _step("write outputs", write_outputs_task, settings, result, previous, run_date)
    summary.outputs = {k: str(v) for k, v in paths.items()}
    summary.retention |= _step("retention", purge_task, settings, scored, run_date)
    summary_path = _step("publish summary", publish_summary_task, settings, summary)
    if summary.psi_status == "failed":
        schedule = settings.schedule
        raise StepFailed(
            "Step 'drift check' failed: "
            # Only the drift messages: the summary's other warnings are not why it failed.
            + " ".join(psi_status(summary.psi, schedule.psi_warn, schedule.psi_fail)[1])
            + f" Scores were written; see {summary_path}."
        )
    if not summary.counts_match:
        raise StepFailed(
            f"Step 'score' failed: {summary.entities_in} entities in"
            f" but {summary.rows_out} rows out."
        )
    return summary.to_dict()


def _retrain(
    settings: Settings,
    inputs: steps.LoadedInputs,
    run_date: pd.Timestamp,
    due: dict[str, bool],
    decisions: dict[str, str],
    champions: dict[str, Any],
) -> dict[str, Any]:
    """Train the targets that are due, note each decision, return the champions in force."""
    trained = False
    for target in steps.TARGETS:
        if due.get(target):
            result = _step(f"train {target}", train_task, settings, inputs, target, run_date)
            decisions[target] = f"{decisions[target]}; {result['decision']}"
            trained = True
    if not trained:
        return champions
    return _step("load champions", load_champions_task, settings)
