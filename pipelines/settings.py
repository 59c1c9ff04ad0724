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
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.targets import TARGET_NAMES, TargetName
from pipelines.board_settings import BoardSettings
from pipelines.settings_sections import (
    BandSettings,
    CrmSettings,
    FeatureSettings,
    LabelSettings,
    ModelSettings,
    OutputSettings,
    ReasonSettings,
    RetentionSettings,
    ScheduleSettings,
    SourceSettings,
)

if TYPE_CHECKING:
    pass


class ConfigError(ValueError):
    """A config file or variable that does not describe valid settings."""


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
    "model.min_validation_positives",
    "model.promotion_confidence",
    "model.max_training_rows",
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
    reasons: ReasonSettings = Field(default_factory=ReasonSettings)
    #: Targets trained and scored by a model; a target left out is scored with the rule
    #: score, e.g. ``targets: [conversion]`` when there is no churn data.
    targets: tuple[TargetName, ...] = TARGET_NAMES
    #: MLflow tracking URI (may hold a password); default: a SQLite store in the output dir.
    mlflow_tracking_uri: SecretStr | None = None
    #: Random seed of training, sampling and bootstraps (same seed, same models).
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
