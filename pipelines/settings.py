"""Run settings: one pydantic-settings model, env prefix ``LEADSCORE_``.

Settings are built in entry points (CLI, flows, notebooks) and passed down;
nothing here runs at import time. Values come, in order of precedence, from
keyword arguments, ``LEADSCORE_*`` environment variables (nested with ``__``,
e.g. ``LEADSCORE_MODEL__MIN_POSITIVE_LABELS=50``) and an optional YAML or TOML
config file (:func:`load_settings`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SourceSettings(BaseModel):
    """Where the three inputs come from and how their columns are named.

    A source is a Parquet or CSV file, a folder of them, or a SQL URL with a
    table, ``duckdb:///path.duckdb?table=events`` or
    ``postgresql://user@host/db?table=events``.
    """

    events: str = "data/events"
    entities: str = "data/entities.parquet"
    outcomes: str = "data/outcomes.parquet"
    #: People who objected to profiling: a file, folder, glob or SQL URL with
    #: ``?table=``, with an ``entity_id`` column (mappable under ``column_map``'s
    #: ``suppression_list`` key). Listed entities are treated as ``consent`` false.
    suppression_list: str | None = None
    #: Map from the user's column name to the contract's, per input.
    column_map: dict[str, dict[str, str]] = Field(default_factory=dict)


class FeatureSettings(BaseModel):
    """Feature set parameters (see :class:`features.spec.FeatureSpec`)."""

    windows_days: tuple[int, ...] = (7, 30, 90)
    half_life_days: float = 14.0
    trend_window_days: int = 30
    kpi_window_days: int = 90
    key_features: tuple[str, ...] | None = None
    engine: str = "duckdb"


class LabelSettings(BaseModel):
    """Label windows: an outcome counts when it falls in (cutoff, cutoff + horizon]."""

    conversion_horizon_days: int = 30
    churn_horizon_days: int = 60
    #: Without explicit ``churned`` outcomes, a customer inactive this long has churned.
    churn_from_inactivity: bool = False
    cutoff_step_days: int = 30

    def horizon_days(self, target: str) -> int:
        """The label window of ``conversion`` or ``churn``."""
        return self.conversion_horizon_days if target == "conversion" else self.churn_horizon_days


class ModelSettings(BaseModel):
    """Training, calibration and champion/challenger settings."""

    min_positive_labels: int = 100
    leakage_auc_threshold: float = 0.95
    allow_leaky_features: tuple[str, ...] = ()
    lightgbm_params: dict[str, Any] = Field(default_factory=dict)
    #: A challenger must not lose more AUC than this against the champion.
    champion_max_auc_drop: float = 0.0
    #: ... nor have an expected calibration error worse by more than this.
    champion_max_ece_increase: float = 0.005
    retrain_max_age_days: int = 7


class BandSettings(BaseModel):
    """How probabilities become bands; thresholds are picked on validation data."""

    high_conversion_threshold: float | None = None
    at_risk_churn_threshold: float | None = None
    #: Target share of scored leads in ``high`` when picking the threshold.
    high_share: float = 0.10
    at_risk_share: float = 0.10


class OutputSettings(BaseModel):
    """Where results go."""

    dir: Path = Path("output")
    database_url: str | None = None  # default: duckdb file in the output dir
    crm_batch_size: int = 10_000
    #: Score move (0-100 points) below which a lead's reasons are kept, not recomputed.
    reason_refresh_tolerance: float = 2.0


class ScheduleSettings(BaseModel):
    """The nightly deployment."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    psi_warn: float = 0.1
    psi_fail: float = 0.25


class RetentionSettings(BaseModel):
    """How long personal data is kept (``None``: forever); the nightly run purges.

    ``max_event_age_days``: events older than this are not read into features.
    ``max_score_history_days``: older rows of ``lead_score_history``, score
    partitions, feature snapshots, CRM export folders, board pages and
    ``lead_scores`` rows not refreshed since are deleted.
    """

    max_event_age_days: int | None = None
    max_score_history_days: int | None = None


class Settings(BaseSettings):
    """All settings of a leadscore run."""

    model_config = SettingsConfigDict(
        env_prefix="LEADSCORE_", env_nested_delimiter="__", extra="forbid"
    )

    sources: SourceSettings = Field(default_factory=SourceSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    bands: BandSettings = Field(default_factory=BandSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    #: MLflow tracking URI; default: a SQLite store in the output dir.
    mlflow_tracking_uri: str | None = None
    seed: int = 42
    #: Key of the keyed hash (HMAC-SHA256, 16+ characters) that pseudonymises ids in
    #: artifacts and erasure receipts: set ``LEADSCORE_PSEUDONYM_KEY``, never a file in
    #: the repository. Without it, receipts use a random key of the process.
    pseudonym_key: str | None = None

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI in force."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.output.dir / 'mlflow.db').resolve()}"

    @property
    def database_url(self) -> str:
        """The SQL database the score tables are written to."""
        if self.output.database_url:
            return self.output.database_url
        return f"duckdb:///{(self.output.dir / 'leadscore.duckdb').resolve()}"

    def feature_spec(self):  # noqa: ANN201 - avoids importing features at module level
        """The :class:`features.spec.FeatureSpec` these settings describe."""
        from features.spec import FeatureSpec

        f = self.features
        return FeatureSpec(
            windows_days=tuple(f.windows_days),
            half_life_days=f.half_life_days,
            trend_window_days=f.trend_window_days,
            kpi_window_days=f.kpi_window_days,
            key_features=f.key_features,
        )


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML/TOML file, the environment and overrides.

    Args:
        config: Path to a ``.yaml``/``.yml`` or ``.toml`` file, or ``None``.
        **overrides: Top-level fields that win over everything else.

    Returns:
        The settings.

    Raises:
        ValueError: If the config file has an unknown extension.
    """
    data: dict[str, Any] = {}
    if config is not None:
        text = Path(config).read_text()
        if config.suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(text) or {}
        elif config.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ValueError(f"Config file {config} must end in .yaml, .yml or .toml.")
    # Environment variables must beat the file: pydantic-settings gives init kwargs
    # precedence, so read the environment first and lay it over the file.
    env = Settings().model_dump(exclude_unset=True)
    merged = _deep_merge(_deep_merge(data, env), overrides)
    return Settings(**merged)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
