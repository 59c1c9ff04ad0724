"""Run settings: one pydantic-settings model, env prefix ``LEADSCORE_``.

Settings are built in entry points (CLI, flows, notebooks) and passed down;
nothing here runs at import time. Values come, in order of precedence, from
keyword arguments, ``LEADSCORE_*`` environment variables (nested with ``__``,
e.g. ``LEADSCORE_MODEL__MIN_POSITIVE_LABELS=50``) and an optional YAML or TOML
config file (:func:`load_settings`).
"""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.targets import CHURN, CONVERSION
from features.targets import target as target_named
from pipelines.board_settings import BoardSettings
from pipelines.crm_profiles import ProfileName, crm_profile

if TYPE_CHECKING:
    from features.mapping import InputMapping

InputName = Literal["events", "entities", "outcomes"]
MappedInput = Literal["events", "entities", "outcomes", "suppression_list"]


class _Section(BaseModel):
    """A settings section: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A config file or variable that does not describe valid settings."""


class SourceSettings(_Section):
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
    #: Map from the user's column name to the contract's, per input; a list feeds
    #: several contract columns from one column (``{contact_id: [entity_id, crm_id]}``).
    column_map: dict[MappedInput, dict[str, str | list[str]]] = Field(default_factory=dict)
    #: User values -> contract values per input and contract column, before validation
    #: (``{events: {event_type: {"Email Opened": email_opened}}}``); null drops the rows.
    value_map: dict[InputName, dict[str, dict[str, str | None]]] = Field(default_factory=dict)
    #: ``strptime`` format of text timestamps (``"%m/%d/%Y %H:%M"``), for every input or
    #: per input (``{events: ..., entities: ...}``); unset: ISO 8601.
    timestamp_format: str | dict[InputName, str] | None = None
    #: Largest share of the previous run's events (before its run date) that may be
    #: missing from today's feed; more, or an empty feed, stops the run before any write.
    max_feed_shrink: float = Field(0.5, ge=0.0, le=1.0)
    #: Run even when the event feed is empty or shrank (set it for one run only).
    force_feed: bool = False

    def mapping(self, table: InputName) -> InputMapping:
        """How the user's export of ``table`` maps to the data contract."""
        from features.mapping import InputMapping  # pandas is not needed to read settings

        fmt = self.timestamp_format
        return InputMapping(
            columns=self.column_map.get(table, {}),
            values=self.value_map.get(table, {}),
            timestamp_format=fmt.get(table) if isinstance(fmt, dict) else fmt,
        )


class FeatureSettings(_Section):
    """Feature set parameters (see :class:`features.spec.FeatureSpec`)."""

    windows_days: tuple[int, ...] = (7, 30, 90)
    half_life_days: float = 14.0
    trend_window_days: int = 30
    kpi_window_days: int = 90
    key_features: tuple[str, ...] | None = None
    engine: str = "duckdb"


class LabelSettings(_Section):
    """Label windows: an outcome counts when it falls in (cutoff, cutoff + horizon]."""

    conversion_horizon_days: int = CONVERSION.default_horizon_days
    churn_horizon_days: int = CHURN.default_horizon_days
    #: Without explicit ``churned`` outcomes, a customer inactive this long has churned.
    churn_from_inactivity: bool = False
    cutoff_step_days: int = 30

    def horizon_days(self, target: str) -> int:
        """The label window of a target (``conversion`` or ``churn``)."""
        return {
            CONVERSION.name: self.conversion_horizon_days,
            CHURN.name: self.churn_horizon_days,
        }[target_named(target).name]


class ModelSettings(_Section):
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


class BandSettings(_Section):
    """How probabilities become bands; thresholds are picked on validation data."""

    high_conversion_threshold: float | None = None
    at_risk_churn_threshold: float | None = None
    #: Target share of scored leads in ``high`` when picking the threshold.
    high_share: float = 0.10
    at_risk_share: float = 0.10


class OutputSettings(_Section):
    """Where results go."""

    dir: Path = Path("output")
    #: SQLAlchemy URL of the score store (may hold a password); default: a DuckDB
    #: file in the output dir.
    database_url: SecretStr | None = None
    crm_batch_size: int = 10_000
    #: Score move (0-100 points) below which a lead's reasons are kept, not recomputed.
    reason_refresh_tolerance: float = 2.0


class CrmSettings(_Section):
    """The CRM import files (:mod:`pipelines.crm_profiles`).

    ``profile``: ``generic`` (one series of files, every record), ``salesforce``
    (Lead and Contact files, custom-field API names) or ``hubspot`` (a contacts
    file, internal property names). ``fields`` renames columns over the profile's
    defaults, e.g. ``{score: Lead_Score__c, crm_id: email}``.
    """

    profile: ProfileName = "generic"
    fields: dict[str, str] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _fields_known(cls, fields: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        crm_profile(info.data.get("profile", "generic"), fields)  # a ValueError names the key
        return fields


class ScheduleSettings(_Section):
    """The nightly deployment."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    psi_warn: float = 0.1
    psi_fail: float = 0.25


class RetentionSettings(_Section):
    """How long personal data is kept (``None``: forever); the nightly run purges.

    ``max_event_age_days``: events older than this are not read into features.
    ``max_score_history_days``: older rows of ``lead_score_history``, score
    partitions, feature snapshots, CRM export folders, board pages and
    ``lead_scores`` rows not refreshed since are deleted.
    """

    max_event_age_days: int | None = None
    max_score_history_days: int | None = None


#: Settings that shape a model and are logged with each training run; everything
#: else (sources, outputs, URLs, keys, schedule) stays out of the tracking store.
TRACKED_SETTINGS: tuple[str, ...] = (
    "features.windows_days",
    "features.half_life_days",
    "features.trend_window_days",
    "features.kpi_window_days",
    "features.key_features",
    "features.engine",
    "labels.conversion_horizon_days",
    "labels.churn_horizon_days",
    "labels.churn_from_inactivity",
    "labels.cutoff_step_days",
    "model.min_positive_labels",
    "model.leakage_auc_threshold",
    "model.allow_leaky_features",
    "model.lightgbm_params",
    "model.champion_max_auc_drop",
    "model.champion_max_ece_increase",
    "model.retrain_max_age_days",
    "bands.high_conversion_threshold",
    "bands.at_risk_churn_threshold",
    "bands.high_share",
    "bands.at_risk_share",
    "retention.max_event_age_days",
    "seed",
)


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
    crm: CrmSettings = Field(default_factory=CrmSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    board: BoardSettings = Field(default_factory=BoardSettings)
    #: MLflow tracking URI (may hold a password); default: a SQLite store in the output dir.
    mlflow_tracking_uri: SecretStr | None = None
    seed: int = 42
    #: Key of the keyed hash (HMAC-SHA256, 16+ characters) that pseudonymises ids in
    #: artifacts and erasure receipts: set ``LEADSCORE_PSEUDONYM_KEY``, never a file in
    #: the repository. Without it, receipts use a random key of the process.
    pseudonym_key: SecretStr | None = None

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI in force."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri.get_secret_value()
        return f"sqlite:///{(self.output.dir / 'mlflow.db').resolve()}"

    @property
    def database_url(self) -> str:
        """The SQL database the score tables are written to."""
        if self.output.database_url:
            return self.output.database_url.get_secret_value()
        return f"duckdb:///{(self.output.dir / 'leadscore.duckdb').resolve()}"

    def tracked_params(self) -> dict[str, str]:
        """The settings logged with a training or recalibration run, flattened.

        An explicit allow-list of what shapes a model (:data:`TRACKED_SETTINGS`):
        never a secret, a path, a URL or a source location, so that nothing personal
        or confidential reaches the tracking store.

        Returns:
            ``{"model.min_positive_labels": "100", ...}`` with JSON-encoded values.
        """
        data = self.model_dump(mode="json")
        params: dict[str, str] = {}
        for dotted in TRACKED_SETTINGS:
            value: Any = data
            for part in dotted.split("."):
                value = value[part]
            if isinstance(value, dict):
                for key, item in sorted(value.items()):
                    params[f"{dotted}.{key}"] = json.dumps(item)
            else:
                params[dotted] = json.dumps(value)
        return params

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
    """Build settings from an optional YAML/TOML/JSON file, the environment and overrides.

    Args:
        config: Path to a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file, or ``None``.
        **overrides: Top-level fields that win over everything else.

    Returns:
        The settings.

    Raises:
        ConfigError: If the file has an unknown extension, does not parse, or names an
            unknown or invalid setting (the sentence names the key and, for a
            misspelling, the closest valid one).
    """
    data: dict[str, Any] = {}
    where = "the environment (LEADSCORE_*)"
    if config is not None:
        config = Path(config)
        where = str(config)
        data = _read_config(config)
    try:
        # Environment variables must beat the file: pydantic-settings gives init kwargs
        # precedence, so read the environment first and lay it over the file.
        env = Settings().model_dump(exclude_unset=True)
        return Settings(**_deep_merge(_deep_merge(data, env), overrides))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None


def _read_config(config: Path) -> dict[str, Any]:
    text = config.read_text()
    try:
        if config.suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(text) or {}
        elif config.suffix == ".toml":
            data = tomllib.loads(text)
        elif config.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"Config file {config} must end in .yaml, .yml, .toml or .json.")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Config file {config} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {config} must hold a mapping of settings at the top.")
    return data


def _describe(exc: ValidationError, where: str) -> str:
    """One sentence per problem, naming the dotted key (and the closest valid key)."""
    sentences = []
    for error in exc.errors():
        path = [str(p) for p in error["loc"]]
        key = ".".join(path)
        if error["type"] == "extra_forbidden":
            valid = _keys_at(path[:-1])
            close = difflib.get_close_matches(path[-1], valid, n=1, cutoff=0.6)
            hint = (
                f"; did you mean `{'.'.join([*path[:-1], close[0]])}`?"
                if close
                else (f"; valid keys here: {', '.join(sorted(valid))}.")
            )
            sentences.append(f"Unknown setting `{key}` in {where}{hint}")
        else:
            sentences.append(f"Setting `{key}` in {where} is invalid: {error['msg']}.")
    return " ".join(sentences)


def _keys_at(path: list[str]) -> list[str]:
    """The valid keys of the settings section at ``path`` (empty when not a section)."""
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
