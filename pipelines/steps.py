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
    from pipelines.io import load_inputs as read_inputs

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
    from pipelines.io import write_parquet_atomic

    path = settings.output.dir / "features" / f"as_of={as_of.date()}.parquet"
    return write_parquet_atomic(table, path)


def training_frame(
    settings: Settings, inputs: LoadedInputs, target: str, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Point-in-time snapshots with labels, one row per (entity, cutoff)."""
    from features.build import build_snapshots
    from features.labels import make_labels, rolling_cutoffs

    horizon = (
        settings.labels.conversion_horizon_days
        if target == "conversion"
        else settings.labels.churn_horizon_days
    )
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
    from models import tracking
    from models.rules import RuleScore
    from models.train import train_model

    frame = training_frame(settings, inputs, target, as_of)
    horizon = (
        settings.labels.conversion_horizon_days
        if target == "conversion"
        else settings.labels.churn_horizon_days
    )
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
    )
    tracking.configure(settings.tracking_uri)
    run_id, version = tracking.log_training_run(result, settings.model_dump(mode="json"))
    decision = tracking.register_and_promote(
        result,
        run_id,
        version,
        max_auc_drop=m.champion_max_auc_drop,
        max_ece_increase=m.champion_max_ece_increase,
    )
    return {
        "target": target,
        "run_id": run_id,
        "version": version,
        "decision": decision.summary(),
        "metrics": result.metrics["model"],
    }


def load_champions(settings: Settings) -> dict[str, Any]:
    """The ``@champion`` of each target, or ``None`` (scoring then uses the rules)."""
    from models import tracking

    tracking.configure(settings.tracking_uri)
    return {target: tracking.load_champion(target) for target in TARGETS}


def read_previous(settings: Settings, as_of: pd.Timestamp) -> pd.DataFrame | None:
    """The last scores written before this date."""
    from pipelines.outputs import read_previous_scores

    return read_previous_scores(settings.output.dir, as_of)


def rule_scores(features: pd.DataFrame, entities: pd.DataFrame) -> pd.DataFrame:
    """Rule points and band per entity: lead rules for leads, engagement for customers."""
    from models.rules import RuleScore

    kinds = entities.set_index("entity_id")["kind"] if "kind" in entities else None
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
    from features.build import fit_columns
    from features.spec import feature_catalog
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
        rule_scores(features, inputs.entities),
        band_rule,
        catalog,
        previous,
        as_of,
        tolerance=settings.output.reason_refresh_tolerance,
    )


def write_outputs(settings, scored, previous, as_of):  # noqa: ANN001, ANN201
    """All outputs of a run, each written atomically."""
    from pipelines.outputs import write_outputs as write

    paths = write(
        scored,
        settings.output.dir,
        settings.database_url,
        crm_batch_size=settings.output.crm_batch_size,
        previous=previous,
        band_rule=scored.attrs.get("band_rule"),
    )
    return dict(paths.items())


def retrain_due(settings: Settings, champion, features, as_of) -> tuple[bool, str]:  # noqa: ANN001
    """Retrain when there is no champion or it is older than the configured age."""
    if champion is None:
        return True, "no champion yet"
    trained = champion.metadata.get("trained_at")
    if trained is None:
        return False, "champion in use"
    age = (as_of - pd.Timestamp(trained)).days
    if age > settings.model.retrain_max_age_days:
        return True, f"champion is {age} days old"
    return False, f"champion is {age} days old; no retrain"


def summarise(settings, inputs, features, scored, champions, decisions, retention, as_of):  # noqa: ANN001, ANN201
    """The run summary (counts, bands, moves, champions, PSI)."""
    from models.drift import psi

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
    values = {}
    for target, model in champions.items():
        if model is not None and len(model.reference_scores):
            column = f"{target}_probability"
            if column in scored:
                current = scored[column].dropna()
                if len(current):
                    values[f"{target} probability"] = psi(model.reference_scores, current)
    summary.psi = values
    summary.psi_status, summary.warnings = psi_status(
        values, settings.schedule.psi_warn, settings.schedule.psi_fail
    )
    return summary


def write_summary(settings: Settings, summary: RunSummary) -> Path:
    """``summary.json`` beside the outputs (one per date, plus the latest)."""
    from pipelines.io import write_text_atomic

    text = json.dumps(summary.to_dict(), indent=2, default=str)
    write_text_atomic(text, settings.output.dir / "summaries" / f"{summary.as_of}.json")
    return write_text_atomic(text, settings.output.dir / "summary.json")
