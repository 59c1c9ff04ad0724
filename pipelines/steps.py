"""Steps the flows, the CLI and the notebooks wire together: read, call the core, write.

Each step takes the few typed values it needs (a :class:`~pipelines.context.RunContext`
only where it reads several settings) and returns a typed value. Decisions (who is
scored by which rules, when to retrain, how stable scores are) are pure functions in
``models/``; this module reads, calls them and writes.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.spec import FeatureDef, FeatureSpec
from pipelines.context import RunContext
from pipelines.sources import Inputs

if TYPE_CHECKING:
    from collections.abc import Callable

    from models.model import TrainedModel
    from models.scoring import ScoreResult
    from pipelines.rollups import RollupReport
    from pipelines.settings_sections import BandSettings, ReasonSettings
    from pipelines.summary import RunSummary

log = logging.getLogger(__name__)

#: ``{target name: its @champion, or None}``.
Champions = dict[str, "TrainedModel | None"]


@dataclass(frozen=True)
class FeatureTable:
    """A feature table and the catalog that describes its columns.

    Attributes:
        frame: One row per existing entity: ``entity_id``, ``as_of``, the features.
        catalog: One definition (name, one-line description) per feature column, as
            built: the reasons read their descriptions from here.
        rollups: What the incremental roll-ups did (``None``: not switched on).
        entity_rows: Per row of ``frame``, its row in the inputs' entities (``None``:
            unknown; scoring then matches the ids).
    """

    frame: pd.DataFrame
    catalog: tuple[FeatureDef, ...]
    rollups: RollupReport | None = None
    entity_rows: np.ndarray | None = None


def load_inputs(ctx: RunContext) -> Inputs:
    """Read and validate the three inputs, then run the feed checks (before any write).

    Raises:
        ContractError: The inputs break the data contract (a sentence per problem).
        FeedError: The event feed is empty or shrank (``pipelines.feeds.check_feeds``).
        RunDateError: If the run date is after the data and ``allow_future`` is off.
    """
    from pipelines.context import check_not_future
    from pipelines.feeds import check_feeds
    from pipelines.sources import load_inputs as read_inputs

    inputs = read_inputs(ctx.settings, ctx.as_of)
    if inputs.snapshot_cutoff is not None:
        # A snapshot has no event feed to check; its data ends on the snapshot date.
        if not ctx.allow_future:
            check_not_future(ctx.as_of, inputs.snapshot_cutoff + pd.Timedelta(days=1))
        return inputs
    events, feed = check_feeds(ctx.settings, inputs.events, inputs.report.events, ctx.as_of)
    inputs = replace(inputs, events=events, feed=feed)
    last = inputs.events.time_range[1]
    if not ctx.allow_future and last is not None:
        check_not_future(ctx.as_of, last)
    return inputs


def apply_retention(
    inputs: Inputs, max_event_age_days: int | None, as_of: pd.Timestamp
) -> tuple[Inputs, dict[str, int]]:
    """Drop events older than the maximum age; return the inputs kept and the count.

    Args:
        inputs: The run's inputs.
        max_event_age_days: ``retention.max_event_age_days`` (``None``: keep all).
        as_of: The run date.

    Returns:
        The inputs without the old events, and ``{"events_older_than_retention": n}``
        (empty without a limit).
    """
    if max_event_age_days is None:
        return inputs, {}
    oldest = as_of - pd.Timedelta(days=max_event_age_days)
    purged = inputs.events.before(oldest)
    if not purged:
        return inputs, {"events_older_than_retention": 0}
    kept = inputs.events.since(oldest)
    return replace(inputs, events=kept), {"events_older_than_retention": purged}


def build_features(spec: FeatureSpec, inputs: Inputs, as_of: pd.Timestamp) -> FeatureTable:
    """The feature table as of the run date, with its catalog.

    The event types seen before the run date are listed once and both the table's
    columns and the catalog follow them, so every column keeps its description
    whatever the windows are.
    """
    from features.build import build_features as build
    from features.table import columns_for, existing_rows, fit_columns

    types = inputs.events.types_seen(before=as_of)
    rows = existing_rows(inputs.entities, as_of)
    frame = build(inputs.events, inputs.entities, as_of, spec, event_types=types, rows=rows)
    catalog = columns_for(spec, types, fit_columns(inputs.entities))
    return FeatureTable(frame, tuple(catalog), entity_rows=rows)


def build_features_incremental(ctx: RunContext, inputs: Inputs) -> FeatureTable:
    """:func:`build_features` from the roll-ups of :mod:`pipelines.rollups`.

    Only the events since the stored roll-ups' end are aggregated (all of them on the
    first run or after a change); the roll-ups to keep are staged, and committed by
    :func:`pipelines.rollups.commit` once the run has written its outputs.
    """
    from features.rollup import build_features as from_rollups
    from features.table import columns_for, existing_rows, fit_columns
    from pipelines import rollups
    from pipelines.engine_events import event_files

    settings, as_of = ctx.settings, ctx.as_of
    spec = settings.feature_spec()
    if inputs.snapshot_cutoff is not None:  # a snapshot has no event history to roll up
        return build_features(spec, inputs, as_of)
    source = settings.sources.events
    key = rollups.fingerprint(spec, source, settings.sources.mapping("events"))
    found = event_files(source)
    stats = rollups.file_stats(found[1] if found else None)
    age = settings.retention.max_event_age_days
    oldest = None if age is None else as_of - pd.Timedelta(days=age)
    tables, report = rollups.prepare(ctx.output_dir, inputs.events, as_of, spec, key, stats, oldest)
    if tables is None:
        return replace(build_features(spec, inputs, as_of), rollups=report)
    con = inputs.events.con
    types = rollups.types_seen(con, tables[0])
    rows = existing_rows(inputs.entities, as_of)
    frame = from_rollups(con, tables, inputs.entities, as_of, spec, types, rows)
    catalog = columns_for(spec, types, fit_columns(inputs.entities))
    return FeatureTable(frame, tuple(catalog), report, rows)


def save_features(output_dir: Path, frame: pd.DataFrame, as_of: pd.Timestamp) -> Path:
    """Write the feature table to ``output/features/as_of=DATE.parquet`` atomically."""
    from pipelines.atomic_files import write_parquet_atomic

    return write_parquet_atomic(frame, output_dir / "features" / f"as_of={as_of.date()}.parquet")


def load_champions(tracking_uri: str) -> Champions:
    """The ``@champion`` of each target, or ``None`` (scoring then uses the rules).

    Until something has imported mlflow (a training run), an embedded store with local
    artifacts is read without it (:func:`models.tracking_index.champion_file`: the
    same pickles, seconds less per run); any other store through mlflow.
    """
    import sys

    from features.targets import TARGETS
    from models import tracking_index

    if "mlflow" not in sys.modules:
        found = [tracking_index.champion_file(tracking_uri, target.name) for target in TARGETS]
        if all(found):
            return {champion.name: champion.load() for champion in found}  # type: ignore[union-attr]
    from models import tracking, tracking_registry

    tracking.configure(tracking_uri)
    return {target.name: tracking_registry.load_champion(target.name) for target in TARGETS}


def read_previous(output_dir: Path, as_of: pd.Timestamp) -> pd.DataFrame | None:
    """The last scores written before this date, without their reason texts.

    The reason texts are most of a partition (about 0.75 GB for a million entities):
    :func:`score` reads them one column at a time from :func:`previous_partition`, so
    they are never all in memory and are not held after scoring.
    """
    from models.previous_run import TEXT_COLUMNS
    from pipelines.outputs import PREVIOUS_COLUMNS, read_previous_scores

    columns = tuple(name for name in PREVIOUS_COLUMNS if name not in TEXT_COLUMNS)
    return read_previous_scores(output_dir, as_of, columns)


def previous_partition(output_dir: Path, previous: pd.DataFrame | None) -> Path | None:
    """The score partition ``previous`` (from :func:`read_previous`) was read from."""
    from pipelines.outputs import list_partitions

    if previous is None or not len(previous):
        return None
    return Path(list_partitions(output_dir)[previous["as_of"].iloc[0].date()])


class _ColumnPrefetch:
    """Reads a score partition's columns ahead, in turn, in a background thread.

    Parquet decoding releases the GIL, so the first ``depth`` columns are read while
    scoring runs (predictions, reason codes) and each next one while an earlier one is
    assembled. With the three reason texts and ``depth`` 2, memory holds at most as
    many text columns as when they were read on demand (four, at the last one), only
    sooner (two while explaining, about 0.5 GB at 1M entities). A column asked for out
    of turn, or missing from the partition (``None``), is read on demand.
    """

    def __init__(self, partition: Path, names: tuple[str, ...], depth: int = 2) -> None:
        import pyarrow.parquet as pq

        self.partition = partition
        present = set(pq.ParquetFile(partition).schema_arrow.names)
        self.ahead = [name for name in names if name in present]
        self.pending: dict[str, Future[pd.Series | None]] = {}
        self.depth = depth
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="previous-texts")
        self._next()

    def _next(self) -> None:
        while self.ahead and len(self.pending) < self.depth:
            name = self.ahead.pop(0)
            self.pending[name] = self.pool.submit(_read_column, self.partition, name)
        if not self.ahead and not self.pending:
            self.pool.shutdown(wait=False)

    def __call__(self, name: str) -> pd.Series | None:
        future = self.pending.pop(name, None)
        if future is None:
            if name in self.ahead:
                self.ahead.remove(name)
            column = _read_column(self.partition, name)
        else:
            column = future.result()
        self._next()
        return column


def _read_column(partition: Path, name: str) -> pd.Series | None:
    """One column of a score partition (``None`` for a column it lacks)."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(partition)
    if name not in file.schema_arrow.names:
        return None
    return file.read(columns=[name]).to_pandas()[name]  # one chunk, as written


def _column_reader(partition: Path | None) -> Callable[[str], pd.Series | None] | None:
    """Reads one column of a score partition; the reason texts are read ahead."""
    from models.previous_run import TEXT_COLUMNS

    return None if partition is None else _ColumnPrefetch(partition, TEXT_COLUMNS)


def score(
    inputs: Inputs,
    features: FeatureTable,
    champions: Champions,
    previous: pd.DataFrame | None,
    as_of: pd.Timestamp,
    *,
    bands: BandSettings,
    reason_refresh_tolerance: float,
    reasons: ReasonSettings | None = None,
    churn_inactivity_days: int | None = None,
    previous_partition: Path | None = None,
) -> ScoreResult:
    """Score every entity with the champions (or the rules), with reasons.

    ``previous_partition`` (:func:`previous_partition`): where the kept reason texts of
    ``previous`` are read from. ``churn_inactivity_days``
    (``LabelSettings.churn_inactivity_days``): customers silent that long have churned by
    inactivity and are not scored, as in training.
    """
    from models.bands import band_rule_for_models
    from models.explain import SHARED_SHARE
    from models.scoring import score_entities

    band_rule = band_rule_for_models(
        champions,
        bands.high_share,
        bands.at_risk_share,
        bands.high_conversion_threshold,
        bands.at_risk_churn_threshold,
    )
    read_previous = _column_reader(previous_partition)  # starts reading the texts
    return score_entities(
        features.frame,
        inputs.entities,
        champions,
        None,  # rules_by_kind: scoring finds each entity's kind once, for the rules too
        band_rule,
        features.catalog,
        previous,
        as_of,
        tolerance=reason_refresh_tolerance,
        outcomes=inputs.outcomes,
        value_labels=reasons.value_labels() if reasons else None,
        shared_share=reasons.shared_share if reasons else SHARED_SHARE,
        churn_inactivity_days=churn_inactivity_days,
        read_previous=read_previous,
        rules_by_kind=True,
        feature_rows=features.entity_rows,
    )


def write_outputs(
    ctx: RunContext,
    scored: ScoreResult,
    previous: pd.DataFrame | None,
    entities: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """All outputs of a run, each written atomically; ``entities`` give the board's names."""
    from pipelines.board_data import board_entities
    from pipelines.crm_profiles import crm_profile
    from pipelines.output_commit import write_outputs as write

    settings = ctx.settings
    paths = write(
        scored.frame,
        settings.output.dir,
        settings.database_url,
        crm_batch_size=settings.output.crm_batch_size,
        previous=previous,
        previous_rows=scored.previous_rows,
        band_rule=scored.band_rule.describe(),
        crm_profile=crm_profile(settings.crm.profile, settings.crm.fields),
        board_entities=None
        if entities is None
        else board_entities(entities, settings.board.display),
        board_embed_limit=settings.board.embed_limit,
    )
    return dict(paths.items())


def write_summary(output_dir: Path, summary: RunSummary) -> Path:
    """``summary.json`` beside the outputs (one per date, plus the latest)."""
    from pipelines.atomic_files import write_text_atomic

    text = json.dumps(summary.to_dict(), indent=2, default=str)
    write_text_atomic(text, output_dir / "summaries" / f"{summary.as_of}.json")
    return write_text_atomic(text, output_dir / "summary.json")


def purge(ctx: RunContext, scored: pd.DataFrame) -> dict[str, int]:
    """Retention after a run: old score history, and earlier scores of withdrawn consent.

    Withdrawn means no consent now but profiled (scored) in an earlier partition;
    entities that never consented have nothing to remove (their rows only say why).

    Returns:
        Rows and files removed per store, for the run summary (a re-run of the same
        date finds nothing left to remove).
    """
    from models.entity_status import NO_CONSENT
    from pipelines.retention import purge_score_history, purge_withdrawn_consent, withdrawn_consent

    counts = purge_score_history(ctx.settings, ctx.as_of)
    # Every earlier partition, not only the last: a purge that failed once is caught up.
    refused = scored.loc[scored["status"] == NO_CONSENT, "entity_id"].astype("str")
    withdrawn = withdrawn_consent(ctx.output_dir, refused, ctx.as_of.date())
    removed = purge_withdrawn_consent(ctx.settings, withdrawn, ctx.as_of)
    counts |= {f"no_consent_{name}": n for name, n in removed.items()}
    return counts
