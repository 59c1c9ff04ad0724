"""Training and rule recalibration as run steps: labelled snapshots in, registry out.

Builds the point-in-time training frame of a target, calls the pure trainer
(``models.train``) and the rule recalibration (``models.recalibrate``), and records
what happened in MLflow (``models.tracking*``) and in a training record per run
date, so that re-running a date never trains twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from features.targets import CHURN, Target
from pipelines.context import RunContext
from pipelines.sources import Inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    """What training one target did.

    Attributes:
        target: The target's name.
        run_id: The MLflow run of the training.
        version: The registered model version.
        decision: Champion/challenger decision in words (``conversion v2 promoted ...``),
            ending with the evaluation scheme and the AUCs with their intervals.
        metrics: Validation metrics of the model (``roc_auc_ci_low``/``_high`` too).
        evaluation: The evaluation scheme and why (``rolling origin: 4 cutoffs ...``).
        reason: Why the run trained (``no champion yet``); empty for ``leadscore train``.
    """

    target: str
    run_id: str
    version: str
    decision: str
    metrics: dict[str, float]
    evaluation: str = ""
    reason: str = ""

    @property
    def summary_text(self) -> str:
        """The run summary's retrain text: why it trained, then what came of it."""
        return f"{self.reason}; {self.decision}" if self.reason else self.decision


@dataclass(frozen=True)
class RecalibrationOutcome:
    """What a rule recalibration did.

    Attributes:
        rules: The rule file recalibrated.
        target: The target's name.
        table: Old and new points per signal, with confidence intervals.
        metrics: Holdout metrics of the old and the recalibrated rules.
        paths: Report and rule files written.
        run_id: The MLflow run it was logged to.
    """

    rules: str
    target: str
    table: pd.DataFrame
    metrics: dict[str, float]
    paths: dict[str, Path]
    run_id: str


def training_cutoffs(
    inputs: Inputs, as_of: pd.Timestamp, horizon_days: int, step_days: int, longest_window: int
) -> pd.DatetimeIndex:
    """The training cutoffs of a run: a snapshot's one, else the rolling cutoffs.

    Rolling cutoffs run from the first event plus the longest feature window to the run
    date minus the horizon (:func:`features.labels.rolling_cutoffs`); empty without events.
    """
    from features.labels import rolling_cutoffs

    if inputs.snapshot_cutoff is not None:
        # A snapshot: its attributes as of the day before it, its known outcomes after.
        return pd.DatetimeIndex([inputs.snapshot_cutoff])
    first_event = inputs.events.time_range[0]
    if first_event is None:
        return pd.DatetimeIndex([], tz="UTC")
    first = first_event + pd.Timedelta(days=longest_window)
    return rolling_cutoffs(first, as_of, step_days, horizon_days)


def training_frame(ctx: RunContext, inputs: Inputs, target: Target) -> pd.DataFrame:
    """Point-in-time snapshots with labels, one row per (entity, cutoff)."""
    from features.build import build_snapshots
    from features.labels import label_events, make_labels, no_cutoff_message
    from models.train_guards import NotEnoughHistoryError

    labels_settings = ctx.settings.labels
    horizon = labels_settings.horizon_days(target.name)
    spec = ctx.settings.feature_spec()
    first_event = inputs.events.time_range[0]
    cutoffs = training_cutoffs(
        inputs, ctx.as_of, horizon, labels_settings.cutoff_step_days, max(spec.windows_days)
    )
    if cutoffs.empty:
        raise NotEnoughHistoryError(
            no_cutoff_message(
                first_event, max(spec.windows_days), ctx.as_of, horizon,
                labels_settings.cutoff_step_days, f"labels.{target.name}_horizon_days",
            )
        )  # fmt: skip
    inactivity = labels_settings.churn_from_inactivity
    # Events only where the labels read them: inactivity churn, or purchases making
    # customers when the entities have no kind column.
    events = (
        label_events(inputs.events, target.name, inactivity)
        if "kind" not in inputs.entities or (inactivity and target.name == CHURN.name)
        else None
    )
    labels = make_labels(
        inputs.outcomes,
        inputs.entities,
        cutoffs,
        target.name,
        horizon,
        events=events,
        churn_from_inactivity=inactivity,
    )
    # Only the labelled (entity, cutoff) rows are built: leads for conversion, customers
    # for churn (about half the rows of every entity at every cutoff).
    snapshots = build_snapshots(
        inputs.events, inputs.entities, cutoffs, spec, population=labels[["entity_id", "as_of"]]
    )
    return snapshots.merge(labels, on=["entity_id", "as_of"], how="inner")


def train(ctx: RunContext, inputs: Inputs, target: Target, reason: str = "") -> TrainOutcome:
    """Train, log and register one target; promote only when it wins.

    Args:
        ctx: The run context.
        inputs: The run's inputs.
        target: The target to train.
        reason: Why the run trains it (kept in the training record, so a rerun of the
            date reports the same decision word for word).
    """
    from features.labels import label_definition
    from models import tracking, tracking_registry
    from models.evaluate import describe_auc
    from models.rules import RuleScore
    from models.train import train_model

    settings = ctx.settings
    frame = training_frame(ctx, inputs, target)
    horizon = settings.labels.horizon_days(target.name)
    m = settings.model
    order = None
    if inputs.row_order is not None:
        order = inputs.row_order.reindex(frame["entity_id"].astype("str")).to_numpy()
    result = train_model(
        frame.drop(columns=["label"]),
        frame["label"],
        frame["as_of"],
        target.name,
        horizon_days=horizon,
        row_order=order,
        max_training_rows=m.max_training_rows,
        params=m.lightgbm_params,
        feature_set_version=settings.feature_spec().version,
        min_positive_labels=m.min_positive_labels,
        leakage_auc_threshold=m.leakage_auc_threshold,
        allow_leaky_features=m.allow_leaky_features,
        rule_model=RuleScore(target.rules),
        label_definition=label_definition(
            target.name, horizon, settings.labels.churn_from_inactivity
        ),
        seed=settings.seed,
        # The run date, not the wall clock: backfills and re-runs age models consistently.
        trained_at=ctx.as_of,
        band_share=settings.bands.high_share
        if target.band == "high"
        else settings.bands.at_risk_share,
    )
    tracking.configure(settings.tracking_uri)
    # Only the allow-listed settings: never a key, a password, a path or a source.
    run_id, version = tracking.log_training_run(result, settings.tracked_params())
    decision = tracking_registry.register_and_promote(
        result,
        run_id,
        version,
        max_auc_drop=m.champion_max_auc_drop,
        max_ece_increase=m.champion_max_ece_increase,
        min_validation_positives=m.min_validation_positives,
        confidence=m.promotion_confidence,
    )
    evaluation = f"evaluated by {result.split.reason}"
    aucs = ", ".join(
        f"{'model' if name == 'model' else name.replace('_', ' ') + ' score'} "
        + describe_auc(values)
        for name, values in result.metrics.items()
    )
    outcome = TrainOutcome(
        target=target.name,
        run_id=run_id,
        version=str(version),
        decision=f"{decision.summary()}. Validation {aucs}; {evaluation}",
        metrics=dict(result.metrics["model"]),
        evaluation=evaluation,
        reason=reason,
    )
    _record_training(ctx.output_dir, target, ctx.as_of, outcome)
    return outcome


def _training_record(output_dir: Path, target: Target, as_of: pd.Timestamp) -> Path:
    return output_dir / "training" / f"{target.name}-{as_of.date()}.json"


def _record_training(
    output_dir: Path, target: Target, as_of: pd.Timestamp, outcome: TrainOutcome
) -> None:
    """Note that a target was trained for a run date, so a re-run does not train again."""
    from pipelines.atomic_files import write_text_atomic

    text = json.dumps(asdict(outcome), indent=2, default=str)
    write_text_atomic(text, _training_record(output_dir, target, as_of))


def trained_for_date(output_dir: Path, target: Target, as_of: pd.Timestamp) -> str | None:
    """The run-summary text of an earlier training of this target for this date, or ``None``.

    A run that retrained and then failed later, or a re-run of the date, finds it here
    and reuses the registry's outcome (promoted or not) instead of training again, and
    reports it as the first run did (``TrainOutcome.summary_text``), so the summary of a
    rerun is the same, byte for byte.
    """
    path = _training_record(output_dir, target, as_of)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        reason, decision = str(record.get("reason", "")), str(record["decision"])
        return f"{reason}; {decision}" if reason else decision
    except (ValueError, KeyError) as exc:
        log.warning("Ignoring the unreadable training record %s (%s).", path, exc)
        return None


def recalibrate(
    ctx: RunContext, inputs: Inputs, rules: str, target: Target
) -> RecalibrationOutcome:
    """Recalibrate a rule file from labelled snapshots, write the report, log to MLflow."""
    from models import tracking
    from models.recalibrate import recalibrate as learn

    settings = ctx.settings
    frame = training_frame(ctx, inputs, target)
    result = learn(
        frame,
        frame["label"],
        frame["as_of"],
        rules,
        target.name,
        seed=settings.seed,
        label_horizon_days=settings.labels.horizon_days(target.name),
    )
    paths = result.write(ctx.output_dir / "recalibration" / f"{rules}-{target.name}")
    tracking.configure(settings.tracking_uri)
    run_id = tracking.log_recalibration(result, settings.tracked_params())
    return RecalibrationOutcome(
        rules=rules,
        target=target.name,
        table=result.table,
        metrics=dict(result.flat_metrics()),
        paths={k: Path(v) for k, v in paths.items()},
        run_id=run_id,
    )
