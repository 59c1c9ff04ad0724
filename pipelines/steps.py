"""Steps the flows and the CLI wire together: I/O here, logic in features/ and models/."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.settings import Settings
from pipelines.summary import RunSummary, band_moves, psi_status

log = logging.getLogger(__name__)

TARGETS = ("conversion", "churn")
RULES_FOR_TARGET = {"conversion": "lead", "churn": "engagement"}


@dataclass
class LoadedInputs:
    """Validated inputs of one run and their input report."""

    events: pd.DataFrame
    entities: pd.DataFrame
    outcomes: pd.DataFrame
    report: dict[str, Any]


def resolve_as_of(as_of: str | None, settings: Settings) -> pd.Timestamp:
    """The run date as midnight UTC (default: today in the configured time zone)."""
    if as_of:
        day = pd.Timestamp(as_of)
    else:
        day = pd.Timestamp.now(tz=settings.schedule.timezone).tz_localize(None)
    return pd.Timestamp(day.date(), tz="UTC")


def load_inputs(settings: Settings, as_of: pd.Timestamp) -> LoadedInputs:
    """Read and validate the three inputs (raises a ContractError with a sentence)."""
    from pipelines.sources import load_inputs as read_inputs

    inputs = read_inputs(settings, as_of)
    return LoadedInputs(inputs.events, inputs.entities, inputs.outcomes, inputs.report.to_dict())


def apply_retention(settings: Settings, inputs: LoadedInputs, as_of: pd.Timestamp) -> dict:
    """Drop events older than the configured maximum age; return what was purged."""
    max_age = settings.retention.max_event_age_days
    if max_age is None:
        return {}
    keep = inputs.events["event_time"] >= as_of - pd.Timedelta(days=max_age)
    purged = int((~keep).sum())
    inputs.events = inputs.events[keep]
    return {"events_older_than_retention": purged}


def build_features(settings: Settings, inputs: LoadedInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """The feature table as of the run date."""
    from features.build import build_features as build

    return build(inputs.events, inputs.entities, as_of, settings.feature_spec())


def save_features(settings: Settings, table: pd.DataFrame, as_of: pd.Timestamp) -> Path:
    """Write the feature table to ``output/features/as_of=DATE.parquet`` atomically."""
    from pipelines.atomic_files import write_parquet_atomic

    path = settings.output.dir / "features" / f"as_of={as_of.date()}.parquet"
    return write_parquet_atomic(table, path)


def training_frame(
    settings: Settings, inputs: LoadedInputs, target: str, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Point-in-time snapshots with labels, one row per (entity, cutoff)."""
    from features.build import build_snapshots
    from features.labels import make_labels, rolling_cutoffs

    horizon = settings.labels.horizon_days(target)
    spec = settings.feature_spec()
    first = inputs.events["event_time"].min() + pd.Timedelta(days=max(spec.windows_days))
    cutoffs = rolling_cutoffs(first, as_of, settings.labels.cutoff_step_days, horizon)
    snapshots = build_snapshots(inputs.events, inputs.entities, cutoffs, spec)
    labels = make_labels(
        inputs.outcomes,
        inputs.entities,
        cutoffs,
        target,
        horizon,
        events=inputs.events,
        churn_from_inactivity=settings.labels.churn_from_inactivity,
    )
    return snapshots.merge(labels, on=["entity_id", "as_of"], how="inner")


def train(settings: Settings, inputs: LoadedInputs, target: str, as_of: pd.Timestamp) -> dict:
    """Train, log and register one target; promote only when it wins."""
    from features.labels import label_definition
    from models import tracking, tracking_registry
    from models.rules import RuleScore
    from models.train import train_model

    frame = training_frame(settings, inputs, target, as_of)
    horizon = settings.labels.horizon_days(target)
    m = settings.model
    result = train_model(
        frame.drop(columns=["label"]),
        frame["label"],
        frame["as_of"],
        target,
        horizon_days=horizon,
        params=m.lightgbm_params,
        feature_set_version=settings.feature_spec().version,
        min_positive_labels=m.min_positive_labels,
        leakage_auc_threshold=m.leakage_auc_threshold,
        allow_leaky_features=m.allow_leaky_features,
        rule_model=RuleScore(RULES_FOR_TARGET[target]),
        label_definition=label_definition(target, horizon, settings.labels.churn_from_inactivity),
        seed=settings.seed,
        # The run date, not the wall clock: backfills and re-runs age models consistently.
        trained_at=as_of,
        band_share=(
            settings.bands.high_share if target == "conversion" else settings.bands.at_risk_share
        ),
    )
    tracking.configure(settings.tracking_uri)
    run_id, version = tracking.log_training_run(result, settings.model_dump(mode="json"))
    decision = tracking_registry.register_and_promote(
        result,
        run_id,
        version,
        max_auc_drop=m.champion_max_auc_drop,
        max_ece_increase=m.champion_max_ece_increase,
    )
    outcome = {
        "target": target,
        "run_id": run_id,
        "version": version,
        "decision": decision.summary(),
        "metrics": result.metrics["model"],
    }
    _record_training(settings, target, as_of, outcome)
    return outcome


def _training_record(settings: Settings, target: str, as_of: pd.Timestamp) -> Path:
    return settings.output.dir / "training" / f"{target}-{as_of.date()}.json"


def _record_training(settings: Settings, target: str, as_of: pd.Timestamp, outcome: dict) -> None:
    """Note that a target was trained for a run date, so a re-run does not train again."""
    from pipelines.atomic_files import write_text_atomic

    text = json.dumps(outcome, indent=2, default=str)
    write_text_atomic(text, _training_record(settings, target, as_of))


def trained_for_date(settings: Settings, target: str, as_of: pd.Timestamp) -> str | None:
    """The decision of an earlier training of this target for this run date, or ``None``.

    A run that retrained and then failed later, or a re-run of the date, finds it here
    and reuses the registry's outcome (promoted or not) instead of training again.
    """
    path = _training_record(settings, target, as_of)
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["decision"])
    except (ValueError, KeyError) as exc:
        log.warning("Ignoring the unreadable training record %s (%s).", path, exc)
        return None


def load_champions(settings: Settings) -> dict[str, Any]:
    """The ``@champion`` of each target, or ``None`` (scoring then uses the rules)."""
    from models import tracking, tracking_registry

    tracking.configure(settings.tracking_uri)
    return {target: tracking_registry.load_champion(target) for target in TARGETS}


def read_previous(settings: Settings, as_of: pd.Timestamp) -> pd.DataFrame | None:
    """The last scores written before this date."""
    from pipelines.outputs import read_previous_scores

    return read_previous_scores(settings.output.dir, as_of)


def rule_scores(
    features: pd.DataFrame,
    entities: pd.DataFrame,
    outcomes: pd.DataFrame | None = None,
    as_of: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Rule points and band per entity: lead rules for leads, engagement for customers.

    With ``outcomes`` and ``as_of``, a lead converted by then counts as a customer.
    """
    from models.entity_status import kinds_as_of
    from models.rules import RuleScore

    kinds = kinds_as_of(entities, outcomes, as_of) if "kind" in entities else None
    frames = []
    for kind, rules in (("lead", "lead"), ("customer", "engagement")):
        rows = (
            features
            if kinds is None
            else features[features["entity_id"].map(kinds).eq(kind).fillna(False).to_numpy(bool)]
        )
        if kinds is None and kind == "customer":
            break
        if rows.empty:
            continue
        estimator = RuleScore(rules).fit(rows)
        frames.append(
            pd.DataFrame(
                {
                    "entity_id": rows["entity_id"].to_numpy(),
                    "rule_score": estimator.predict(rows),
                    "rule_band": estimator.predict_band(rows),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else None


def score(settings, inputs, features, champions, previous, as_of):  # noqa: ANN001, ANN201
    """Score every entity with the champions (or the rules), with reasons."""
    from features.spec import feature_catalog
    from features.table import fit_columns
    from models.bands import band_rule_for_models
    from models.scoring import score_entities

    b = settings.bands
    band_rule = band_rule_for_models(
        champions,
        b.high_share,
        b.at_risk_share,
        b.high_conversion_threshold,
        b.at_risk_churn_threshold,
    )
    types = [c[: -len("_count_7d")] for c in features.columns if c.endswith("_count_7d")]
    catalog = feature_catalog(settings.feature_spec(), types, fit_columns(inputs.entities))
    return score_entities(
        features,
        inputs.entities,
        champions,
        rule_scores(features, inputs.entities, inputs.outcomes, as_of),
        band_rule,
        catalog,
        previous,
        as_of,
        tolerance=settings.output.reason_refresh_tolerance,
        outcomes=inputs.outcomes,
    )


def write_outputs(settings, scored, previous, as_of):  # noqa: ANN001, ANN201
    """All outputs of a run, each written atomically."""
    from pipelines.output_commit import write_outputs as write

    paths = write(
        scored.frame,
        settings.output.dir,
        settings.database_url,
        crm_batch_size=settings.output.crm_batch_size,
        previous=previous,
        band_rule=scored.band_rule.describe(),
    )
    return dict(paths.items())


def retrain_due(
    settings: Settings,
    champion,  # noqa: ANN001 - a models.model.TrainedModel or None
    features: pd.DataFrame | None,
    as_of: pd.Timestamp,
    *,
    drift_psi: float | None = None,
    trained_already: str | None = None,
) -> tuple[bool, str]:
    """Whether a target's model must be retrained on this run, and why, in words.

    Retrain when there is no champion, when it is older than
    ``model.retrain_max_age_days`` (age in run dates, from its ``trained_at``), or when
    drift is flagged: the PSI of this run's scores against the champion's reference
    is above ``schedule.psi_warn``. A target already trained for this run date (see
    :func:`trained_for_date`), or whose champion was trained as of this date or later,
    is not trained again, so running a date twice gives the same models and outputs.

    Args:
        settings: Settings with the age limit and the PSI warning threshold.
        champion: The target's ``@champion`` model, or ``None``.
        features: This run's feature table (unused; kept for callers that pass it).
        as_of: The run date (midnight UTC).
        drift_psi: PSI of this run's champion scores, or ``None`` when not measured yet.
        trained_already: Decision of an earlier training for this date, if any.

    Returns:
        ``(due, reason)``.
    """
    from features.timeutil import as_utc

    del features
    if trained_already is not None:
        return False, f"already trained for {as_of.date()}: {trained_already}"
    if champion is None:
        return True, "no champion yet"
    trained = champion.metadata.get("trained_at")
    if trained is None:
        age = None
        described = "champion of unknown age"
    else:
        trained_at = as_utc(trained)
        age = (as_of - trained_at).days
        if age < 0:
            return False, (f"champion trained as of {trained_at.date()}, after this run date; kept")
        described = f"champion is {age} days old"
        if age > settings.model.retrain_max_age_days:
            return True, f"{described} (limit {settings.model.retrain_max_age_days})"
    warn = settings.schedule.psi_warn
    if drift_psi is not None and drift_psi > warn:
        if age == 0:
            return False, f"{described}; score PSI {drift_psi:.3f} above {warn} but trained today"
        return True, f"drift flagged: score PSI {drift_psi:.3f} above {warn}; {described}"
    return False, f"{described}; no retrain"


def score_psi(champions: dict[str, Any], scored: pd.DataFrame) -> dict[str, float]:
    """PSI of each champion's probabilities in this run against its validation reference.

    Args:
        champions: ``{target: model or None}``.
        scored: The scored frame with ``{target}_probability`` columns.

    Returns:
        ``{target: psi}`` for the targets with a champion and scored rows.
    """
    from models.drift import psi

    values = {}
    for target, model in champions.items():
        column = f"{target}_probability"
        if model is None or not len(model.reference_scores) or column not in scored:
            continue
        current = scored[column].dropna()
        if len(current):
            values[target] = psi(model.reference_scores, current)
    return values


def summarise(settings, inputs, features, scored, champions, decisions, retention, as_of):  # noqa: ANN001, ANN201
    """The run summary (counts, bands, moves, champions, PSI, warnings)."""
    from models.scoring import absent_columns_warning

    status = scored["status"].astype(str)
    summary = RunSummary(
        as_of=str(as_of.date()),
        inputs={k: v for k, v in inputs.report.items() if isinstance(v, int)},
        entities_in=len(inputs.entities),
        rows_out=len(scored),
        scored=int((status == "scored").sum()),
        not_scored={k: int(v) for k, v in status[status != "scored"].value_counts().items()},
        bands={k: int(v) for k, v in scored["band"].value_counts().items()},
        band_moves=band_moves(scored),
        champions={
            t: (f"v{m.metadata.get('registered_version', '?')}" if m else "none: rule score used")
            for t, m in champions.items()
        },
        retrain=decisions,
        retention=retention,
    )
    values = {f"{t} probability": v for t, v in score_psi(champions, scored).items()}
    summary.psi = values
    summary.psi_status, summary.warnings = psi_status(
        values, settings.schedule.psi_warn, settings.schedule.psi_fail
    )
    for target, model in champions.items():
        absent = "" if model is None else absent_columns_warning(target, model, features.columns)
        if absent:
            summary.warnings.append(absent)
    erased = inputs.report.get("entities_forgotten_earlier", 0)
    if erased:
        summary.warnings.append(
            f"{erased:,} entities erased earlier with `leadscore forget` are in the sources "
            "again; their rows were dropped. Erase them in the source systems too."
        )
    return summary


def write_summary(settings: Settings, summary: RunSummary) -> Path:
    """``summary.json`` beside the outputs (one per date, plus the latest)."""
    from pipelines.atomic_files import write_text_atomic

    text = json.dumps(summary.to_dict(), indent=2, default=str)
    write_text_atomic(text, settings.output.dir / "summaries" / f"{summary.as_of}.json")
    return write_text_atomic(text, settings.output.dir / "summary.json")


def purge(settings: Settings, scored: pd.DataFrame, as_of: pd.Timestamp) -> dict[str, int]:
    """Retention after a run: old score history, and earlier scores of withdrawn consent.

    Withdrawn means no consent now but profiled (scored) in an earlier partition;
    entities that never consented have nothing to remove (their rows only say why).

    Returns:
        Rows and files removed per store, for the run summary (a re-run of the same
        date finds nothing left to remove).
    """
    from models.entity_status import NO_CONSENT
    from pipelines.retention import purge_score_history, purge_withdrawn_consent

    counts = purge_score_history(settings, as_of)
    from pipelines.outputs import list_partitions

    refused = set(scored.loc[scored["status"] == NO_CONSENT, "entity_id"].astype("str"))
    withdrawn: set[str] = set()
    if refused:
        # Every earlier partition, not only the last: a purge that failed once is
        # caught up at the next run.
        for day, path in list_partitions(settings.output.dir).items():
            if day >= as_of.date():
                continue
            rows = pd.read_parquet(path, columns=["entity_id", "status"])
            ids = rows["entity_id"].astype("str")
            withdrawn |= refused & set(ids[(rows["status"] != NO_CONSENT).to_numpy()])
    removed = purge_withdrawn_consent(settings, sorted(withdrawn), as_of)
    counts |= {f"no_consent_{name}": n for name, n in removed.items()}
    return counts


def recalibrate(
    settings: Settings, inputs: LoadedInputs, rules: str, target: str, as_of: pd.Timestamp
) -> dict[str, Any]:
    """Recalibrate a rule file from labelled snapshots, write the report, log to MLflow."""
    from models import tracking
    from models.recalibrate import recalibrate as learn

    frame = training_frame(settings, inputs, target, as_of)
    horizon = settings.labels.horizon_days(target)
    result = learn(
        frame,
        frame["label"],
        frame["as_of"],
        rules,
        target,
        seed=settings.seed,
        label_horizon_days=horizon,
    )
    out = settings.output.dir / "recalibration" / f"{rules}-{target}"
    paths = result.write(out)
    tracking.configure(settings.tracking_uri)
    run_id = tracking.log_recalibration(result, settings.model_dump(mode="json"))
    return {
        "rules": rules,
        "target": target,
        "table": result.table,
        "metrics": result.flat_metrics(),
        "paths": {k: str(v) for k, v in paths.items()},
        "run_id": run_id,
    }
