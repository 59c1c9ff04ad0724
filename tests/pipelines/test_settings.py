"""Settings: strict keys with a suggestion, three file formats, secrets kept secret."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from pipelines.settings import TRACKED_SETTINGS, ConfigError, Settings, load_settings


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sources:\n  event: x\n", "Unknown setting `sources.event`"),
        ("sources:\n  event: x\n", "did you mean `sources.events`?"),
        ("model:\n  min_positive_label: 3\n", "did you mean `model.min_positive_labels`?"),
        ("modle:\n  seed: 3\n", "did you mean `model`?"),
        ("labels:\n  churn_horizon_days: soon\n", "`labels.churn_horizon_days`"),
    ],
)
def test_unknown_or_invalid_keys_at_any_depth_are_named(tmp_path, text, words):
    config = tmp_path / "leadscore.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert words in str(raised.value) and str(config) in str(raised.value)


def test_yaml_toml_and_json_give_the_same_settings(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  min_positive_labels: 7\nseed: 3\n")
    (tmp_path / "a.toml").write_text("seed = 3\n[model]\nmin_positive_labels = 7\n")
    (tmp_path / "a.json").write_text(json.dumps({"model": {"min_positive_labels": 7}, "seed": 3}))
    loaded = [load_settings(tmp_path / f"a.{ext}") for ext in ("yaml", "toml", "json")]
    assert {(s.seed, s.model.min_positive_labels) for s in loaded} == {(3, 7)}


def test_secrets_are_secret_strings_and_never_tracked(monkeypatch):
    url = "postgresql://scorer:hunter2-secret@127.0.0.1/scores"
    monkeypatch.setenv("LEADSCORE_PSEUDONYM_KEY", "a-very-secret-pseudonym-key")
    monkeypatch.setenv("LEADSCORE_OUTPUT__DATABASE_URL", url)
    monkeypatch.setenv("LEADSCORE_MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    settings = load_settings(None)
    assert isinstance(settings.pseudonym_key, SecretStr)
    assert settings.database_url == url
    assert "hunter2" not in repr(settings) and "a-very-secret" not in repr(settings)
    params = settings.tracked_params()
    assert set(params) >= {"model.min_positive_labels", "seed", "labels.churn_horizon_days"}
    text = json.dumps(params)
    for secret in ("hunter2", "a-very-secret", "sqlite", "output", "sources"):
        assert secret not in text
    assert not any(p.split(".")[0] in {"sources", "output", "schedule"} for p in TRACKED_SETTINGS)


def test_every_tracked_setting_exists():
    data = Settings().model_dump(mode="json")
    for dotted in TRACKED_SETTINGS:
        value = data
        for part in dotted.split("."):
            value = value[part]
