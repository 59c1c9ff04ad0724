"""Prefect flows: thin wiring over the steps, which call the pure core.

Each flow builds its :class:`~pipelines.context.RunContext` once, from the user's
config file and run date, and hands each task the few typed values it needs. Tasks
that touch storage retry with backoff, but only on errors that a second try can
cure (an I/O hiccup, a busy database): a contract error or a missing file fails at
once with its sentence. Too few labels to train a target does not fail the run: the
target is scored with the rule score and the summary says how many positives it needs.
A failure in any step ends the run in a failed state whose message names the step;
since every write is atomic and promotion happens only after evaluation, the previous
outputs and the champion stay as they were.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from features.targets import TARGETS, Target
from features.targets import target as target_named
from models.drift import drift_status, first_scorings, score_psi
from models.retrain import RetrainPolicy, retrain_due
from models.scoring import model_versions
from models.train_guards import InsufficientLabelsError, NotEnoughHistoryError
from pipelines import read_ahead, steps, training
from pipelines.atomic_files import kill_point
from pipelines.checks_memo import remember_checks
from pipelines.context import RunContext, build_context
from pipelines.crm_export import missing_crm_id_warnings
from pipelines.recovery import Recovery, recover
from pipelines.retry_policy import retry_condition
from pipelines.rollups import commit as commit_rollups
from pipelines.run_lock import run_lock
from pipelines.sources import Inputs
from pipelines.step_timing import collected_so_far, collecting, timed, write_timings
from pipelines.summary import RunSummary, references, summarise

log = logging.getLogger(__name__)

#: Tasks of the run never cache (their inputs are large frames, hashing them costs
#: time and nothing is reused across runs).
PLAIN = {"cache_policy": NO_CACHE}
IO_RETRIES = {
    "retries": 3,
    "retry_delay_seconds": [2, 5, 15],
    "retry_condition_fn": retry_condition,
    **PLAIN,
}


#: What scores a target without a model.
RULE_FALLBACK = "scored with the rule score"
#: The decision of a target left out of the ``targets`` setting.
SWITCHED_OFF = f"switched off by the targets setting; {RULE_FALLBACK}"


class StepFailed(RuntimeError):
    """A nightly step failed; the message names the step and the cause."""


def _step(name: str, func, *args, **kwargs):  # noqa: ANN001, ANN202
    try:
        with timed(name):
            result = func(*args, **kwargs)
    except Exception as exc:
        raise StepFailed(f"Step '{name}' failed: {exc}") from exc
    kill_point(f"after {name}")  # crash-test hook at every step boundary
    return result


@task(name="load inputs", **IO_RETRIES)
def load_inputs_task(ctx: RunContext) -> Inputs:
    """Read and validate events, entities and outcomes (unless the command read them ahead)."""
    inputs = read_ahead.take(ctx)
    return steps.load_inputs(ctx) if inputs is None else inputs


@task(name="build features", **PLAIN)
def build_features_task(ctx: RunContext, inputs: Inputs) -> steps.FeatureTable:
    """Point-in-time features as of the run date (from the roll-ups when switched on)."""
    if ctx.settings.features.incremental_rollups:
        return steps.build_features_incremental(ctx, inputs)
    return steps.build_features(ctx.settings.feature_spec(), inputs, ctx.as_of)


# No retries: training failures (too few labels, leakage, short history) are not transient.
@task(name="train model", task_run_name="train {target}", **PLAIN)
def train_task(
    ctx: RunContext, inputs: Inputs, target: Target, reason: str = ""
) -> training.TrainOutcome:
    """Train, evaluate and register one target; promotion only when it wins."""
    return training.train(ctx, inputs, target, reason)


@task(name="load champions", **IO_RETRIES)
def load_champions_task(tracking_uri: str) -> steps.Champions:
    """The ``@champion`` model of each target, or ``None``."""
    return steps.load_champions(tracking_uri)


@task(name="read previous scores", **IO_RETRIES)
def read_previous_task(ctx: RunContext) -> Any:
    """The last scores written before this date."""
    return steps.read_previous(ctx.output_dir, ctx.as_of)


@task(name="score", **PLAIN)
def score_task(ctx, inputs, features, champions, previous):  # noqa: ANN001, ANN201
    """Score every entity: probabilities, bands, rule score and reasons."""
    return steps.score(
        inputs,
        features,
        champions,
        previous,
        ctx.as_of,
        bands=ctx.settings.bands,
        reason_refresh_tolerance=ctx.settings.output.reason_refresh_tolerance,
        reasons=ctx.settings.reasons,
        churn_inactivity_days=ctx.settings.labels.churn_inactivity_days(),
        previous_partition=steps.previous_partition(ctx.output_dir, previous),
    )


@task(name="write outputs", **IO_RETRIES)
def write_outputs_task(ctx, scored, previous, entities):  # noqa: ANN001, ANN201
    """Parquet partition, score tables, CRM export and lead board, each atomic."""
    return steps.write_outputs(ctx, scored, previous, entities)


@task(name="apply retention", **IO_RETRIES)
def purge_task(ctx: RunContext, scored: Any) -> dict[str, int]:
    """Purge score history past its maximum age and earlier scores of withdrawn consent."""
    return steps.purge(ctx, scored)


@task(name="publish summary", **IO_RETRIES)
def publish_summary_task(ctx: RunContext, summary: RunSummary) -> str:
    """Run summary as JSON beside the outputs and as a Prefect Markdown artifact."""
    path = steps.write_summary(ctx.output_dir, summary)
    create_markdown_artifact(
        markdown=summary.to_markdown(),
        key="leadscore-run-summary",
        description=f"leadscore nightly run {summary.as_of}",
    )
    return str(path)


@flow(name="train")
def train_flow(
    target: str = "conversion",
    as_of: str | None = None,
    config_path: str | None = None,
    allow_future: bool = False,
) -> training.TrainOutcome:
    """Train one target on point-in-time snapshots and run champion/challenger."""
    ctx = build_context(config_path, as_of, allow_future=allow_future)
    with run_lock(ctx.output_dir, ctx.as_of, "train"):  # one version per target and date
        inputs = load_inputs_task(ctx)
        return train_task(ctx, inputs, target_named(target))


@flow(name="recalibrate_baseline")
def recalibrate_flow(
    rules: str = "engagement",
    target: str = "churn",
    as_of: str | None = None,
    config_path: str | None = None,
) -> training.RecalibrationOutcome:
    """Recalibrate a rule file's points from outcomes and write the report."""
    ctx = build_context(config_path, as_of)
    inputs = load_inputs_task(ctx)
    return training.recalibrate(ctx, inputs, rules, target_named(target))


@flow(name="score")
def score_flow(
    as_of: str | None = None, config_path: str | None = None, allow_future: bool = False
) -> RunSummary:
    """Score everyone with the champions and write all outputs (no retraining)."""
    ctx = build_context(config_path, as_of, allow_future=allow_future)
    return _run_nightly(ctx, allow_retrain=False)


@flow(name="nightly")
def nightly(
    as_of: str | None = None,
    config_path: str | None = None,
    events: str | None = None,
    entities: str | None = None,
    outcomes: str | None = None,
    allow_future: bool = False,
) -> RunSummary:
    """Validate inputs, build features, retrain when due, score, write and publish."""
    sources = {"events": events, "entities": entities, "outcomes": outcomes}
    ctx = build_context(config_path, as_of, sources, allow_future=allow_future)
    return _run_nightly(ctx, allow_retrain=True)


def _wall_clock() -> str:
    """Now, UTC, to the second: for the log and the Markdown summary, never an output."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _run_nightly(ctx: RunContext, *, allow_retrain: bool) -> RunSummary:
    """Hold the output folder's run lock, recover what a killed run left, then run.

    Each step's wall time and peak memory go to the log, the summary's Markdown and,
    when the run completes, ``OUTPUT/timings/DATE.json``; never to ``summary.json``. A
    failed run writes nothing, so the last good outputs stay as they were.
    """
    lock = run_lock(ctx.output_dir, ctx.as_of, "nightly" if allow_retrain else "score")
    with lock as notes, collecting() as timings:
        recovered = _step("recover", recover, ctx.settings)
        recovered.warnings[:0] = notes
        summary = _nightly_steps(ctx, allow_retrain=allow_retrain, recovered=recovered)
        write_timings(ctx.output_dir / "timings" / f"{ctx.as_of.date()}.json", timings)
        return summary


def _nightly_steps(ctx: RunContext, *, allow_retrain: bool, recovered: Recovery) -> RunSummary:
    logger = get_run_logger()
    settings = ctx.settings
    started_at = _wall_clock()
    logger.info("leadscore run as of %s started at %s", ctx.as_of.date(), started_at)
    inputs = _step("load inputs", load_inputs_task, ctx)
    inputs, retention = _step(
        "event retention", steps.apply_retention, inputs, settings.retention.max_event_age_days,
        ctx.as_of,
    )  # fmt: skip
    features = _step("build features", build_features_task, ctx, inputs)
    champions = _in_force(
        _step("load champions", load_champions_task, settings.tracking_uri), settings.targets
    )
    policy = RetrainPolicy(settings.model.retrain_max_age_days, settings.schedule.psi_warn)
    decisions = {name: SWITCHED_OFF for name in champions if name not in settings.targets}
    needed: dict[str, int] = {}  # positives each untrainable target still needs
    if allow_retrain:
        due = {}
        for target in TARGETS:
            if target.name not in settings.targets:
                continue
            champion = champions.get(target.name)
            decision = retrain_due(
                policy,
                None if champion is None else champion.metadata,
                ctx.as_of,
                trained_already=training.trained_for_date(ctx.output_dir, target, ctx.as_of),
            )
            due[target.name], decisions[target.name] = decision.due, decision.reason
        champions = _retrain(ctx, inputs, due, decisions, champions, needed)
    _note_rule_fallbacks(champions, logger)
    previous = _step("read previous scores", read_previous_task, ctx)
    result = _step("score", score_task, ctx, inputs, features, champions, previous)
    scored = result.frame
    if allow_retrain:
        # Drift is measured on this run's scores, so it needs a first scoring; only
        # targets with a drifting champion are retrained, and then everything is re-scored.
        drift = score_psi(references(champions), scored)
        due = {}
        for name, value in drift.items():
            target = target_named(name)
            if training.trained_for_date(ctx.output_dir, target, ctx.as_of) is not None:
                continue  # trained for this date already, by this run or an earlier one
            champion = champions.get(name)
            decision = retrain_due(
                policy, None if champion is None else champion.metadata, ctx.as_of, drift_psi=value
            )
            due[name] = decision.due
            if decision.due:
                decisions[name] = decision.reason
        if any(due.values()):
            champions = _retrain(ctx, inputs, due, decisions, champions, needed)
            result = _step("score", score_task, ctx, inputs, features, champions, previous)
            scored = result.frame
    # A champion's first scoring of this population only warns about drift.
    first = first_scorings(
        model_versions(champions), None if previous is None else previous.get("model_versions")
    )
    summary = _step(
        "summarise", summarise, inputs, features.frame, scored, champions, decisions, retention,
        ctx.as_of, settings.schedule, needed, first_scored=first,
    )  # fmt: skip
    summary.warnings[:0], summary.recovered = recovered.warnings, recovered.counts()
    if features.rollups is not None:
        summary.inputs |= features.rollups.summary_counts()
    paths = _step("write outputs", write_outputs_task, ctx, result, previous, inputs.entities)
    remember_checks(inputs.checks_memo)  # only a run that wrote its outputs
    commit_rollups(features.rollups)  # likewise: a failed run keeps the last good roll-ups
    summary.outputs = {k: str(v) for k, v in paths.items()}
    summary.warnings += missing_crm_id_warnings(scored)
    summary.retention |= _step("retention", purge_task, ctx, scored)
    summary.started_at, summary.finished_at = started_at, _wall_clock()
    summary.timings = collected_so_far()
    logger.info("leadscore run as of %s finished at %s", ctx.as_of.date(), summary.finished_at)
    summary_path = _step("publish summary", publish_summary_task, ctx, summary)
    if summary.psi_status == "failed":
        schedule = settings.schedule
        raise StepFailed(
            "Step 'drift check' failed: "
            # Only the drift messages: the summary's other warnings are not why it failed.
            + " ".join(drift_status(summary.psi, schedule.psi_warn, schedule.psi_fail, first)[1])
            + f" Scores were written; see {summary_path}."
        )
    if not summary.counts_match:
        raise StepFailed(
            f"Step 'score' failed: {summary.entities_in} entities in"
            f" but {summary.rows_out} rows out."
        )
    return summary


def _note_rule_fallbacks(champions: steps.Champions, logger: Any) -> None:
    """Say which targets are scored with the rule score: after training, never before."""
    for name, model in champions.items():
        if model is None:
            logger.warning("no @champion for %s: scoring falls back to the rule score", name)


def _in_force(champions: steps.Champions, targets: tuple[str, ...]) -> steps.Champions:
    """The champions of the targets switched on; the others are scored with the rule score."""
    return {name: model if name in targets else None for name, model in champions.items()}


def _retrain(
    ctx: RunContext,
    inputs: Inputs,
    due: dict[str, bool],
    decisions: dict[str, str],
    champions: steps.Champions,
    needed: dict[str, int],
) -> steps.Champions:
    """Train the targets that are due, note each decision, return the champions in force.

    A target with too few positive labels, or a history too short for any training
    cutoff, does not fail the run: its decision says why (and how many more positives
    it needs, also noted in ``needed``) and it keeps its champion, or, without one, is
    scored with the rule score.
    """
    trained = False
    for target in TARGETS:
        if not due.get(target.name):
            continue
        try:
            why = decisions[target.name]
            result = _step(f"train {target}", train_task, ctx, inputs, target, why)
        except StepFailed as exc:
            refusal = exc.__cause__
            if not isinstance(refusal, (InsufficientLabelsError, NotEnoughHistoryError)):
                raise
            kept = champions.get(target.name) is not None
            outcome = refusal.decision("the current champion stays" if kept else RULE_FALLBACK)
            decisions[target.name] = f"{decisions[target.name]}; {outcome}"
            if isinstance(refusal, InsufficientLabelsError):
                needed[target.name] = refusal.missing
            get_run_logger().warning("%s: %s", target, outcome)
            continue
        decisions[target.name] = result.summary_text
        trained = True
    if not trained:
        return champions
    reloaded = _step("load champions", load_champions_task, ctx.settings.tracking_uri)
    return _in_force(reloaded, ctx.settings.targets)
