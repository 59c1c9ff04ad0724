"""Per-step wall time and peak memory: in the Markdown summary, the CLI's table and a file."""

from __future__ import annotations

import json

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from features.synthetic import generate, source_paths
from pipelines.step_timing import StepTiming, collecting, timed, write_timings
from pipelines.summary import RunSummary

AS_OF = "2025-12-01"


def test_timed_steps_inside_a_collection_are_recorded_in_order():
    with collecting() as timings:
        with timed("read"):
            pass
        with pytest.raises(RuntimeError), timed("fail"):
            raise RuntimeError("boom")
    with timed("outside"):
        pass
    assert [t.step for t in timings] == ["read", "fail"]
    assert all(t.seconds >= 0 and t.peak_rss_bytes > 0 and t.cpu_seconds >= 0 for t in timings)


def test_a_step_records_the_cpu_time_of_its_threads():
    import threading
    import time

    def spin(seconds: float) -> None:
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    with collecting() as timings:
        with timed("busy"):
            spin(0.3)
        with timed("idle"):
            threading.Event().wait(0.3)
    busy, idle = timings
    assert busy.cpu_seconds >= 0.3 and idle.cpu_seconds < 0.1 <= idle.seconds


def test_timings_are_in_the_markdown_but_not_in_summary_json(tmp_path):
    summary = RunSummary(as_of=AS_OF, timings=[StepTiming("score", 2.25, 1_500_000_000, 3.5)])
    assert "| score | 2.2 | 1.50 |" in summary.to_markdown()
    assert "timings" not in summary.to_dict()
    path = write_timings(tmp_path / "timings" / f"{AS_OF}.json", summary.timings)
    assert json.loads(path.read_text()) == [
        {"step": "score", "seconds": 2.25, "peak_rss_bytes": 1_500_000_000, "cpu_seconds": 3.5}
    ]


@pytest.mark.slow
def test_leadscore_score_prints_step_timings_and_writes_them_only_when_it_succeeds(tmp_path):
    from pipelines.cli import app

    data = generate(tmp_path / "data", n_leads=200, n_customers=150, months=3, seed=1).out_dir
    out = tmp_path / "out"
    config = tmp_path / "leadscore.yaml"
    config.write_text(yaml.safe_dump({"sources": source_paths(data), "output": {"dir": str(out)}}))
    broken = tmp_path / "broken.yaml"
    sources = {**source_paths(data), "events": str(tmp_path / "no-events")}
    broken.write_text(yaml.safe_dump({"sources": sources, "output": {"dir": str(out)}}))
    with prefect_test_harness(server_startup_timeout=120):
        done = CliRunner().invoke(
            app, ["score", "--as-of", "2025-03-25", "--config", str(config)], env={"COLUMNS": "200"}
        )
        failed = CliRunner().invoke(
            app, ["score", "--as-of", "2025-03-26", "--config", str(broken)]
        )
    assert done.exit_code == 0, done.output
    assert failed.exit_code != 0 and not (out / "timings" / "2025-03-26.json").exists()
    assert "Steps" in done.output and "load inputs" in done.output
    timings = json.loads((out / "timings" / "2025-03-25.json").read_text())
    steps = [t["step"] for t in timings]
    assert steps[0] == "recover" and "write outputs" in steps and "publish summary" in steps
    assert "timings" not in json.loads((out / "summary.json").read_text())
