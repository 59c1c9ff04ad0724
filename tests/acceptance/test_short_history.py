"""Short histories with a long horizon train through ``leadscore train --config``.

Seven months of history, 90-day feature windows and a 90-day conversion horizon leave
two cutoffs, too few for a train/calibration/validation time split with 90-day gaps:
training evaluates by rolling origin when one cutoff lies a horizon after another, by a
stated stratified split otherwise, and stops with the binding constraint in numbers
when no cutoff fits.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from features.synthetic import generate, source_paths
from tests.acceptance.conftest import BIN

pytestmark = [pytest.mark.slow, pytest.mark.service]

AS_OF = "2025-07-31"


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    """Seven generated months, 2025-01-01 to 2025-08-01."""
    root = tmp_path_factory.mktemp("short-history")
    return generate(root / "data", n_leads=2_000, n_customers=500, months=7, seed=5).out_dir


def train(tmp_path: Path, env: dict[str, str], data: Path, **overrides) -> tuple[int, str]:
    """``leadscore train --target conversion`` with a config of ``overrides``.

    Returns:
        The exit code and the output (stdout and stderr) on one line, as words.
    """
    settings = {
        "sources": source_paths(data),
        "output": {"dir": str(tmp_path / "out")},
        "model": {"min_positive_labels": 20},
        "labels": {"conversion_horizon_days": 90},
        "pseudonym_key": "short-history-tests-key",
    }
    for section, values in overrides.items():
        settings.setdefault(section, {}).update(values)
    config = tmp_path / "leadscore.yaml"
    config.write_text(yaml.safe_dump(settings))
    command = [
        str(BIN / "leadscore"), "train", "--target", "conversion", "--as-of", AS_OF,
        "--config", str(config),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    return done.returncode, " ".join(f"{done.stdout}\n{done.stderr}".split())


def trained(tmp_path: Path, env: dict[str, str], data: Path, **overrides) -> str:
    """The output of a ``train`` that succeeded, its AUC stated with interval and positives."""
    code, output = train(tmp_path, env, data, **overrides)
    assert code == 0, output
    assert "Validation AUC 0." in output and "95% CI 0." in output, output
    assert "positives)" in output and "rule score AUC" in output, output
    return output


def test_seven_months_with_a_90_day_horizon_train_and_state_the_split(
    prefect_api, history, tmp_path
):
    # Cutoffs 2025-04-02 and 2025-05-02: none is a horizon after the other.
    flat = trained(tmp_path, prefect_api[1], history)
    assert "evaluated by stratified random split: 2 cutoffs 30 days apart" in flat
    assert "which needs 7, and none is 90 days after another" in flat
    assert "the metrics are not out-of-time" in flat


def test_three_cutoffs_train_by_rolling_origin_and_say_so(prefect_api, history, tmp_path):
    # A 60-day horizon: cutoffs 2025-04-02, 2025-05-02 and 2025-06-01.
    flat = trained(tmp_path, prefect_api[1], history, labels={"conversion_horizon_days": 60})
    assert "evaluated by rolling origin: 3 cutoffs 30 days apart" in flat
    assert "which needs 5; 1 fold each train" in flat
    assert "out-of-time split" not in flat and "stratified" not in flat


def test_one_cutoff_trains_with_a_stated_stratified_split(prefect_api, history, tmp_path):
    # 90-day windows and a 90-day horizon leave one cutoff, 2025-05-02.
    flat = trained(tmp_path, prefect_api[1], history, labels={"cutoff_step_days": 60})
    assert "stratified random split: one usable cutoff (2025-05-02)" in flat
    assert "not out-of-time" in flat


def test_no_cutoff_states_the_binding_constraint(prefect_api, history, tmp_path):
    code, flat = train(tmp_path, prefect_api[1], history, labels={"conversion_horizon_days": 150})
    assert code != 0, flat
    assert "No training cutoff fits" in flat
    assert "plus the longest feature window (90 days)" in flat
    assert "minus the 150-day horizon" in flat
    assert "labels.conversion_horizon_days to at most" in flat
