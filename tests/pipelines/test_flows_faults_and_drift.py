"""The nightly flow when a step fails or the scores drift: what it keeps, retrains, reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipelines import flows, steps, training
from tests.pipelines.test_flows import (
    FIRST,
    NEXT,
    TARGETS,
    assert_same,
    champion_versions,
    run_env,
    snapshot,
    use_env,
)

# The fixtures of tests/pipelines/test_flows.py (its first nightly run and copies of its
# outputs); module-scoped, so this module makes its own first run. Faults are injected
# with real bad input where that is natural and otherwise by making a step of
# ``pipelines.steps`` raise.
from tests.pipelines.test_flows import after_first_run as after_first_run
from tests.pipelines.test_flows import dataset as dataset
from tests.pipelines.test_flows import first_run as first_run
from tests.pipelines.test_flows import prefect_harness as prefect_harness


def of_date(snap: dict, day: str) -> dict:
    """The part of a snapshot that belongs to one run date.

    History rows of people without consent are left out: a later run deletes them on
    purpose (their earlier scores must go).
    """
    files = {k: v for k, v in snap["files"].items() if day in k}
    history = snap["tables"]["lead_score_history"]
    keep = (history["as_of"].dt.strftime("%Y-%m-%d") == day) & (
        history["status"] != "not scored: no consent"
    )
    rows = history[keep].reset_index(drop=True)
    # A column that is all missing on one day reads back as object, otherwise as text.
    rows = rows.astype(object).where(rows.notna(), None)
    return {"files": files, "history": rows, "champions": snap["champions"]}


# --- a failure in any step leaves the earlier outputs and the champion alone -----------


@pytest.fixture
def no_retry_delay(monkeypatch):
    """Keep the retries but not their back-off, so an injected fault fails in seconds."""
    for name in ("load_inputs_task", "load_champions_task", "read_previous_task",
                 "write_outputs_task", "publish_summary_task"):  # fmt: skip
        monkeypatch.setattr(flows, name, getattr(flows, name).with_options(retry_delay_seconds=0))


def corrupt_events(dataset, tmp_path: Path, monkeypatch) -> Path:
    events = tmp_path / "events"
    shutil.copytree(dataset.events_dir, events)
    victim = sorted(events.glob("*.parquet"))[0]
    victim.write_bytes(b"PAR1 this is not a parquet file")
    monkeypatch.setenv("LEADSCORE_SOURCES__EVENTS", str(events))
    return victim


#: Step name -> (function of pipelines.steps or .training made to fail with an I/O
#: error, attempts with retries, settings).
FAULTS = {
    "load inputs": (None, 1, {}),
    "build features": ("build_features", 1, {}),
    "train conversion": ("train", 1, {"MODEL__RETRAIN_MAX_AGE_DAYS": "3"}),
    "load champions": ("load_champions", 4, {}),
    "read previous scores": ("read_previous", 4, {}),
    "score": ("score", 1, {}),
    "write outputs": ("write_outputs", 4, {}),
    "retention": ("purge", 4, {}),
    "publish summary": ("write_summary", 4, {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("step", list(FAULTS))
def test_a_failing_step_leaves_earlier_outputs_and_champions_intact(
    step, after_first_run, dataset, tmp_path, monkeypatch, no_retry_delay
):
    out = after_first_run
    function, attempts, extra = FAULTS[step]
    use_env(monkeypatch, {f"LEADSCORE_{k}": v for k, v in extra.items()})
    before = snapshot(out)
    calls = []
    if function is None:
        cause = corrupt_events(dataset, tmp_path, monkeypatch).name
    else:
        cause = f"injected fault in {function}"

        def fail(*args, **kwargs):
            calls.append(args)
            raise OSError(cause)

        monkeypatch.setattr(training if function == "train" else steps, function, fail)

    state = flows.nightly(as_of=NEXT, return_state=True)

    assert state.is_failed()
    assert f"Step '{step}' failed" in state.message and cause in state.message
    if function is not None:
        assert len(calls) == attempts
    after = snapshot(out)
    assert_same(of_date(before, FIRST), of_date(after, FIRST))
    if step not in ("retention", "publish summary"):  # outputs are written before these
        assert_same(before, after)
        assert not (out / "scores" / f"as_of={NEXT}").exists()
    assert json.loads((out / "summary.json").read_text())["as_of"] == FIRST


@pytest.mark.slow
def test_a_crash_inside_write_outputs_leaves_no_store_half_written(
    after_first_run, monkeypatch, no_retry_delay
):
    import pipelines.output_commit

    out = after_first_run
    before = snapshot(out)

    def crash(*args, **kwargs):
        raise OSError("disk full while writing the CRM export")

    monkeypatch.setattr(pipelines.output_commit, "write_crm_batches", crash)
    state = flows.nightly(as_of=NEXT, return_state=True)
    assert state.is_failed() and "Step 'write outputs' failed" in state.message
    assert_same(before, snapshot(out))
    assert not (out / "scores" / f"as_of={NEXT}").exists()
    assert not list((out / "crm").glob(".*"))  # no staging left behind


# --- retraining when drift is flagged -----------------------------------------------------


@pytest.mark.slow
def test_drift_above_the_warning_retrains_and_scores_with_the_champions_in_force(
    after_first_run, monkeypatch
):
    out = after_first_run
    # Any shift at all counts as drift here; failing stays out of reach.
    use_env(
        monkeypatch, {"LEADSCORE_SCHEDULE__PSI_WARN": "0", "LEADSCORE_SCHEDULE__PSI_FAIL": "10"}
    )

    result = flows.nightly(as_of=NEXT).to_dict()

    for target in TARGETS:
        # A new version was trained and judged against the champion (it may or may not win).
        assert result["retrain"][target].startswith("drift flagged: score PSI")
        assert f"{target} v2 " in result["retrain"][target]
    versions = champion_versions(out)
    scores = pd.read_parquet(out / "scores" / f"as_of={NEXT}")
    used = scores.loc[scores["status"] == "scored", "model_versions"].map(json.loads)
    assert all(used_by == versions for used_by in used)
    # Trained for this date already: a re-run does not train again despite the same drift,
    # and reports the training word for word (its summary is the same).
    rerun = flows.nightly(as_of=NEXT).to_dict()
    assert rerun["retrain"] == result["retrain"]
    assert champion_versions(out) == versions


@pytest.mark.slow
def test_drift_above_the_failure_threshold_fails_the_run_naming_only_the_drift(
    after_first_run, monkeypatch
):
    out = after_first_run
    # Any shift fails the run; none triggers a retrain (that needs the warning threshold).
    use_env(
        monkeypatch, {"LEADSCORE_SCHEDULE__PSI_WARN": "10", "LEADSCORE_SCHEDULE__PSI_FAIL": "0"}
    )
    summarise = flows.summarise

    def with_another_warning(*args, **kwargs):
        summary = summarise(*args, **kwargs)
        summary.warnings.append("A warning that has nothing to do with drift.")
        return summary

    monkeypatch.setattr(flows, "summarise", with_another_warning)

    state = flows.nightly(as_of=NEXT, return_state=True)

    assert state.is_failed()
    assert "Step 'drift check' failed: PSI of " in state.message
    assert "nothing to do with drift" not in state.message
    assert (out / "scores" / f"as_of={NEXT}").exists()  # scores were written all the same


@pytest.mark.slow
def test_a_champions_first_scoring_with_drift_ends_with_a_warning_not_a_failure(
    first_run, dataset, tmp_path, monkeypatch
):
    out = tmp_path / "output"
    out.mkdir()
    # Yesterday's champions, but no scores yet: this is their first scoring here.
    shutil.copy(first_run[0] / "mlflow.db", out / "mlflow.db")
    use_env(monkeypatch, run_env(dataset, out, schedule__psi_fail="0"))

    state = flows.score_flow(as_of=NEXT, return_state=True)

    assert state.is_completed(), state.message
    summary = json.loads((out / "summary.json").read_text())
    assert summary["psi_status"] == "warning"
    assert any("first time" in w and "not a failure" in w for w in summary["warnings"])
