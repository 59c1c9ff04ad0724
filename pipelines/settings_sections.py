"""The sections of the run settings (``sources``, ``features``, ``labels``, ...).

Each section is strict: an unknown key is an error naming the closest valid one (see
:func:`pipelines.settings.load_settings`). :class:`pipelines.settings.Settings`
gathers them.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from features.targets import CHURN, CONVERSION
from features.targets import target as target_named
from pipelines.crm_profiles import ProfileName, crm_profile

if TYPE_CHECKING:
    from features.mapping import InputMapping


InputName = Literal["events", "entities", "outcomes"]
MappedInput = Literal["events", "entities", "outcomes", "suppression_list"]


class _Section(BaseModel):
    """A settings section: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


#: Outcome column values read as yes when none are configured (case-insensitive).
DEFAULT_POSITIVE_VALUES: tuple[str, ...] = ("1", "1.0", "true", "yes", "y")


class SnapshotSettings(_Section):
    """A snapshot export: one row per entity with an outcome column and no event dates.

    When set, ``sources.events``, ``entities`` and ``outcomes`` are not read: the
    snapshot is all three (:mod:`features.snapshot`). Run with ``--as-of`` on the
    snapshot date.
    """

    #: The export: a Parquet or CSV file, a folder or glob of them, or a SQL URL with
    #: ``?table=``.
    path: str
    #: The day the export was taken (YYYY-MM-DD): features and scores are as of it.
    taken_at: date
    #: The column saying whether the entity reached the outcome (``Converted``, ``y``).
    outcome_column: str
    #: ``converted``: the rows are leads; ``churned``: the rows are customers.
    outcome: Literal["converted", "churned"] = "converted"
    #: Values of ``outcome_column`` meaning yes (compared as text, ignoring case).
    positive_values: tuple[str, ...] = DEFAULT_POSITIVE_VALUES
    #: The unique id column (also the CRM id); null numbers the rows (``row-00001``).
    id_column: str | None = None
    #: Columns left out of the features: those filled in during or after the sale
    #: (they leak the outcome), free text, vendor scores of unknown timing.
    drop_columns: tuple[str, ...] = ()
    #: Values meaning "not answered" (a form's untouched ``Select``), read as missing.
    missing_values: tuple[str, ...] = ()
    #: The rows are in time order (oldest first): models are validated on later rows.
    rows_in_time_order: bool = False


class SourceSettings(_Section):
    """Where the three inputs come from and how their columns are named.

    A source is a Parquet or CSV file, a folder of them, or a SQL URL with a
    table, ``duckdb:///path.duckdb?table=events`` or
    ``postgresql://user@host/db?table=events``.
    """

    #: Events: a Parquet or CSV file, a folder or glob of them, or a SQL URL with
    #: ``?table=``.
    events: str = "data/events"
    #: Null: no entities export; one entity per ``entity_id`` of the events, created
    #: at its first event (a purchase log on its own).
    entities: str | None = "data/entities.parquet"
    #: Null: no outcomes export (churn can still come from inactivity,
    #: ``labels.churn_from_inactivity``).
    outcomes: str | None = "data/outcomes.parquet"
    #: People who objected to profiling: a file, folder, glob or SQL URL with
    #: ``?table=``, with an ``entity_id`` column (mappable under ``column_map``'s
    #: ``suppression_list`` key). Listed entities are treated as ``consent`` false.
    suppression_list: str | None = None
    #: Map from the user's column name to the contract's, per input; a list feeds
    #: several contract columns from one column (``{contact_id: [entity_id, crm_id]}``).
    column_map: dict[MappedInput, dict[str, str | list[str]]] = Field(default_factory=dict)
    #: User values -> contract values per input and contract column, before validation
    #: (``{events: {event_type: {"Email Opened": email_opened}}}``); null drops the rows.
    value_map: dict[InputName, dict[str, dict[str, str | None]]] = Field(default_factory=dict)
    #: ``strptime`` format of text timestamps (``"%m/%d/%Y %H:%M"``), for every input or
    #: per input (``{events: ..., entities: ...}``); unset: ISO 8601.
    timestamp_format: str | dict[InputName, str] | None = None
    #: Contract columns an export lacks, with the one value of every row, per input
    #: (a purchase log without an event type: ``{events: {event_type: purchase}}``).
    constant: dict[InputName, dict[str, str]] = Field(default_factory=dict)
    #: Largest share of the previous run's events (before its run date) that may be
    #: missing from today's feed; more, or an empty feed, stops the run before any write.
    max_feed_shrink: float = Field(0.5, ge=0.0, le=1.0)
    #: Run even when the event feed is empty or shrank (set it for one run only).
    force_feed: bool = False
    #: Keep exact duplicate events (real repeats with nothing to tell them apart);
    #: by default they are dropped, and counted in the run summary either way.
    keep_duplicates: bool = False
    #: How CSV event files are parsed: ``engine`` (DuckDB, staged as Parquet in a
    #: temporary folder) or ``pandas`` (the reference path, all in memory and slower; for a file
    #: DuckDB reads differently). Rows that break the contract are worded by pandas
    #: either way.
    csv_reader: Literal["engine", "pandas"] = "engine"
    #: A snapshot export instead of events, entities and outcomes (see
    #: ``SnapshotSettings``); null: read the three inputs.
    snapshot: SnapshotSettings | None = None

    def mapping(self, table: InputName) -> InputMapping:
        """How the user's export of ``table`` maps to the data contract."""
        from features.mapping import InputMapping  # pandas is not needed to read settings

        fmt = self.timestamp_format
        return InputMapping(
            columns=self.column_map.get(table, {}),
            values=self.value_map.get(table, {}),
            timestamp_format=fmt.get(table) if isinstance(fmt, dict) else fmt,
            constants=self.constant.get(table, {}),
        )


class FeatureSettings(_Section):
    """Feature set parameters (see :class:`features.spec.FeatureSpec`)."""

    #: Trailing windows (days) of the per-event-type counts, sums and means.
    windows_days: tuple[int, ...] = (7, 30, 90)
    #: Half-life (days) of the recency-weighted counts (``*_decayed``).
    half_life_days: float = 14.0
    #: Window (days) of the trend: count in the last window minus the one before.
    trend_window_days: int = 30
    #: Window (days) of the e-mail rates and purchase amounts.
    kpi_window_days: int = 90
    #: ``feature_use`` items that count as key features (unset: every item).
    key_features: tuple[str, ...] | None = None
    #: Feature engine: ``duckdb`` or ``pyspark`` (local mode), same results.
    engine: str = "duckdb"
    #: Memory (GB) DuckDB may hold while it reads and checks the events; beyond it,
    #: big groupings spill to a temporary folder beside the outputs.
    engine_memory_gb: float = Field(default=3.0, gt=0)
    #: Keep daily per-(entity, event type) roll-ups in ``OUTPUT/rollups/`` between runs, so
    #: a nightly aggregates only the events since the last run (same features; a changed
    #: setting, mapping or past event file rebuilds them). See ``docs/ARCHITECTURE.md``.
    incremental_rollups: bool = False


class LabelSettings(_Section):
    """Label windows: an outcome counts when it falls in (cutoff, cutoff + horizon]."""

    #: A conversion counts when it falls in (cutoff, cutoff + this many days].
    conversion_horizon_days: int = CONVERSION.default_horizon_days
    #: A churn counts when it falls in (cutoff, cutoff + this many days].
    churn_horizon_days: int = CHURN.default_horizon_days
    #: Without explicit ``churned`` outcomes, a customer inactive this long has churned.
    churn_from_inactivity: bool = False
    #: Days between the training cutoffs (snapshots) taken back from the run date.
    cutoff_step_days: int = 30

    def churn_inactivity_days(self) -> int | None:
        """The churn horizon when churn is learnt from inactivity, else ``None``."""
        return self.churn_horizon_days if self.churn_from_inactivity else None

    def horizon_days(self, target: str) -> int:
        """The label window of a target (``conversion`` or ``churn``)."""
        return {
            CONVERSION.name: self.conversion_horizon_days,
            CHURN.name: self.churn_horizon_days,
        }[target_named(target).name]


class ModelSettings(_Section):
    """Training, calibration and champion/challenger settings."""

    #: Fewest positive labels a target needs to train; with fewer it is scored with the
    #: rule score.
    min_positive_labels: int = 100
    #: A single feature with a validation AUC above this is refused as leaking the outcome.
    leakage_auc_threshold: float = 0.95
    #: Features exempt from the leakage guard (name them only when you know why).
    allow_leaky_features: tuple[str, ...] = ()
    #: LightGBM parameters over the defaults (``is_unbalance`` and ``scale_pos_weight`` are
    #: refused).
    lightgbm_params: dict[str, Any] = Field(default_factory=dict)
    #: Most rows a booster trains on per fold (null: no bound). Beyond it, every positive
    #: and a seeded random sample of the negatives, weighted by the inverse sampling rate;
    #: early stopping, calibration and validation rows are never sampled.
    max_training_rows: int | None = Field(500_000, ge=2)
    #: A challenger must not lose more AUC than this against the champion.
    champion_max_auc_drop: float = 0.0
    #: ... nor have an expected calibration error worse by more than this.
    champion_max_ece_increase: float = 0.005
    #: Retrain a champion older than this many run days.
    retrain_max_age_days: int = 7
    #: A challenger is promoted only on at least this many validation positives.
    min_validation_positives: int = 20
    #: ... and when the lower bound of this bootstrap interval of its validation AUC
    #: beats the rule score's AUC on the same rows (0: the AUC itself, no margin).
    promotion_confidence: float = Field(0.95, ge=0.0, lt=1.0)


class BandSettings(_Section):
    """How probabilities become bands; thresholds are picked on validation data."""

    #: Fixed conversion probability at or above which a lead is ``high`` (unset: by share).
    high_conversion_threshold: float | None = None
    #: Fixed churn probability at or above which a customer is ``at-risk`` (unset: by
    #: share).
    at_risk_churn_threshold: float | None = None
    #: Target share of scored leads in ``high`` when picking the threshold.
    high_share: float = 0.10
    #: Target share of scored customers in ``at-risk`` when no threshold is set.
    at_risk_share: float = 0.10


class OutputSettings(_Section):
    """Where results go."""

    #: Folder of every output: scores, CRM files, board, MLflow store, summaries.
    dir: Path = Path("output")
    #: SQLAlchemy URL of the score store (may hold a password); default: a DuckDB
    #: file in the output dir.
    database_url: SecretStr | None = None
    #: Rows per CRM import file.
    crm_batch_size: int = 10_000
    #: Score move (0-100 points) below which a lead's reasons are kept, not recomputed.
    reason_refresh_tolerance: float = 2.0


class ReasonSettings(_Section):
    """How reasons read (:mod:`models.reason_text`, :mod:`models.explain`)."""

    #: Per entities column, a CSV file with columns ``value,label``: reasons show the
    #: label instead of the value (campaign ids, partner codes). Without one, an
    #: identifier-like value is described as a group ("Campaign: one of 312 values").
    lookups: dict[str, Path] = Field(default_factory=dict)
    #: A reason shown for at least this share of the scored entities is part of the
    #: base score, not a reason.
    shared_share: float = Field(0.99, gt=0.5, le=1.0)

    def value_labels(self) -> dict[str, dict[str, str]]:
        """The lookup tables read: per column, the label of each value.

        Raises:
            ValueError: A lookup file is missing or lacks a ``value`` or ``label`` column.
        """
        import pandas as pd

        labels: dict[str, dict[str, str]] = {}
        for column, path in self.lookups.items():
            if not path.is_file():
                raise ValueError(f"reasons.lookups.{column}: no file {path}.")
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            if not {"value", "label"} <= set(table.columns):
                raise ValueError(
                    f"reasons.lookups.{column}: {path} needs the columns value and label; "
                    f"it has {list(table.columns)}."
                )
            labels[column] = dict(zip(table["value"], table["label"], strict=True))
        return labels


class CrmSettings(_Section):
    """The CRM import files (:mod:`pipelines.crm_profiles`).

    ``profile``: ``generic`` (one series of files, every record), ``salesforce``
    (Lead and Contact files, custom-field API names) or ``hubspot`` (a contacts
    file, internal property names). ``fields`` renames columns over the profile's
    defaults, e.g. ``{score: Lead_Score__c, crm_id: email}``.
    """

    #: CRM import files: ``generic``, ``salesforce`` (Lead and Contact files) or
    #: ``hubspot``.
    profile: ProfileName = "generic"
    #: Renames of CRM columns (``{score: Lead_Score__c}``); unknown names are refused.
    fields: dict[str, str] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _fields_known(cls, fields: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        crm_profile(info.data.get("profile", "generic"), fields)  # a ValueError names the key
        return fields


class ScheduleSettings(_Section):
    """The nightly deployment."""

    #: When the nightly deployment runs (cron, in ``timezone``).
    cron: str = "0 2 * * *"
    #: Time zone of the schedule and of "today" when no run date is given.
    timezone: str = "UTC"
    #: Score PSI above which the run warns and a champion is retrained.
    psi_warn: float = 0.1
    #: Score PSI above which the run fails (a champion's first scoring only warns).
    psi_fail: float = 0.25


class RetentionSettings(_Section):
    """How long personal data is kept (``None``: forever); the nightly run purges.

    ``max_event_age_days``: events older than this are not read into features.
    ``max_score_history_days``: older rows of ``lead_score_history``, score
    partitions, feature snapshots, CRM export folders, board pages and
    ``lead_scores`` rows not refreshed since are deleted.
    """

    #: Events older than this many days are not read into features (unset: all).
    max_event_age_days: int | None = None
    #: Score history, partitions, CRM folders and boards older than this are purged.
    max_score_history_days: int | None = None
