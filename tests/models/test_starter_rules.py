"""A rule baseline that fits the data: starter rules when the built-in signals never occur."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import spearmanr

from features.spec import DEFAULT_EVENT_TYPES
from features.synthetic import generate, source_paths, true_weights
from features.targets import CONVERSION
from models.point_fit import fit_points
from models.recalibrate import fit_rules, recalibrate
from models.rules import load_rules, signal_units
from models.starter_rules import matches_data

AS_OF = "2025-10-20"
#: Every built-in event type renamed, as a user's own export names them.
RENAMED = {"events": {"event_type": {e.name: f"x_{e.name}" for e in DEFAULT_EVENT_TYPES}}}


def quiet_leads(n: int = 200) -> pd.DataFrame:
    """Feature rows with every lead-rule column present and no activity at all."""
    rules = load_rules("lead")
    frame = pd.DataFrame({s.column: np.zeros(n) for s in rules.signals})
    frame["days_since_last_event"] = np.nan
    return frame


def test_point_fit_survives_rules_whose_signals_never_vary():
    rules = load_rules("lead")
    frame = quiet_leads()
    units = signal_units(rules, frame)
    y = np.tile([0.0, 1.0], len(frame) // 2)

    fit = fit_points(
        rules, units, y, np.arange(len(y)), np.random.default_rng(0),
        n_bootstrap=5, l2=1.0, confidence=0.95,
    )  # fmt: skip

    assert fit.points == {}
    assert not matches_data(rules, frame)


def test_rules_match_only_when_a_rewarded_signal_varies():
    frame = quiet_leads()
    frame.loc[:9, "days_since_last_event"] = 5.0  # only the inactivity penalty varies
    assert not matches_data(load_rules("lead"), frame)
    frame.loc[:9, "form_submit_count_90d"] = 1
    assert matches_data(load_rules("lead"), frame)
    assert not matches_data(load_rules("lead"), frame.drop(columns="form_submit_count_90d"))


@pytest.fixture(scope="module")
def renamed(tmp_path_factory):
    """Synthetic leads whose event types are all renamed, and their training frame."""
    from pipelines import steps, training
    from pipelines.context import RunContext
    from pipelines.settings import load_settings

    folder = tmp_path_factory.mktemp("starter")
    data = generate(folder / "data", n_leads=4_000, n_customers=50, months=10, seed=11)
    sources = {**source_paths(data.out_dir), "value_map": RENAMED}
    settings = load_settings(None, sources=sources, output={"dir": str(folder / "output")})
    ctx = RunContext(settings, pd.Timestamp(AS_OF, tz="UTC"))
    frame = training.training_frame(ctx, steps.load_inputs(ctx), CONVERSION)
    return data, sources, frame


@pytest.mark.slow
def test_rules_built_from_the_data_rank_the_true_signals_in_order(renamed):
    data, _, frame = renamed
    result = recalibrate(
        frame, frame["label"], frame["as_of"], "lead", "conversion", n_bootstrap=10,
        label_horizon_days=30,
    )  # fmt: skip

    note = result.settings["starter_rules"]
    assert "matched no signal in your data" in note and "event types" in note
    assert result.to_markdown().startswith(f"> {note}")
    assert result.metrics["old_rules"]["roc_auc"] > 0.65  # the built-in rules give 0.500

    # The true signals by event type (form_submit_count_30d -> form_submit), strongest first.
    signals = true_weights(data.out_dir)["models"]["conversion"]["signals"]
    truth = {s["column"].rsplit("_count_", 1)[0]: s["weight"] for s in signals}
    starter = result.old_rules.points
    points = {event: starter[f"x_{event}_recent"] for event in truth}
    assert all(p > 0 for p in points.values()), points
    assert max(truth, key=truth.get) == max(points, key=points.get)
    assert spearmanr(list(truth.values()), list(points.values())).statistic >= 0.6, points
    # Fit attributes: the levels the truth favours get more points than those it does not.
    level = {(s.column, s.value): s.points for s in result.old_rules.signals}
    assert level["job_level", "c_level"] > level["job_level", "individual"]
    assert level["company_size", "1000+"] > level["company_size", "1-10"]
    assert level["lead_source", "referral"] > level["lead_source", "paid_social"]


@pytest.mark.slow
def test_fit_rules_falls_back_to_starter_rules_so_the_baseline_ranks(renamed):
    _, _, frame = renamed
    rules = fit_rules(frame, frame["label"], "lead", "conversion", n_bootstrap=0)
    assert rules.source == "<starter>"
    assert any(s.column == "x_demo_request_count_30d" for s in rules.signals)


@pytest.mark.slow
def test_leadscore_recalibrate_says_it_built_a_starter_rule_set(renamed, tmp_path):
    _, sources, _ = renamed
    config = tmp_path / "leadscore.yaml"
    settings = {"sources": sources, "output": {"dir": str(tmp_path / "output")}}
    config.write_text(yaml.safe_dump(settings))
    command = [
        str(Path(sys.executable).with_name("leadscore")), "recalibrate", "--rules", "lead",
        "--target", "conversion", "--as-of", AS_OF, "--config", str(config),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert "matched no signal in your data; a starter rule set was built from your" in said
    written = next((tmp_path / "output" / "recalibration").rglob("*.yaml"))
    assert "x_demo_request_count_30d" in written.read_text()
