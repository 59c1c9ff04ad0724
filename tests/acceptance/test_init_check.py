"""A new user's first steps, through the installed ``leadscore`` command only.

From a raw CRM export with its own column names, values and US dates
(:func:`tests.pipelines.test_check.write_raw_export`): ``leadscore init`` writes the
starter config, the user points it at the export (and maps the outcome columns),
``leadscore check`` reports what is there without writing anything, ``leadscore
features`` sees the mapped event types, and ``leadscore nightly`` runs on it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.acceptance.conftest import BIN
from tests.pipelines.test_check import edit_starter_config, write_raw_export

pytestmark = pytest.mark.slow

AS_OF = "2025-05-30"


def leadscore(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run the installed ``leadscore`` in ``cwd`` (exit code not checked)."""
    return subprocess.run(
        [str(BIN / "leadscore"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip


@pytest.fixture
def first_steps(tmp_path) -> tuple[Path, Path, dict[str, str]]:
    """``leadscore init`` in a fresh folder, then the user's edits: (cwd, output dir, env)."""
    import os

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEADSCORE_"))},
        "COLUMNS": "250",
    }
    export = write_raw_export(tmp_path / "exports")
    cwd = tmp_path / "work"
    cwd.mkdir()
    done = leadscore(cwd, env, "init")
    assert done.returncode == 0, done.stderr
    assert "leadscore check -c leadscore.yaml" in done.stdout
    again = leadscore(cwd, env, "init")
    assert again.returncode == 1 and "--force" in again.stderr
    edit_starter_config(cwd / "leadscore.yaml", export, tmp_path / "out")
    return cwd, tmp_path / "out", env


def test_check_reports_the_raw_export_and_writes_nothing(first_steps):
    cwd, out, env = first_steps

    done = leadscore(cwd, env, "check", "-c", "leadscore.yaml")

    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"as of {AS_OF}" in text
    assert "events   │ 1,500" in text and "entities │    50" in text
    assert "Email Opened" in text and "mapped" in text and "Podcast Listened" in text
    assert "2 entities without any event." in text
    assert "more positives (rule score used)" in text
    assert not out.exists() and {p.name for p in cwd.iterdir()} == {"leadscore.yaml"}


def test_check_refuses_a_bad_date_with_a_sentence(first_steps):
    cwd, out, env = first_steps
    config = cwd / "leadscore.yaml"
    config.write_text(config.read_text().replace('"%m/%d/%Y %H:%M"', '"%d/%m/%Y %H:%M"'))

    done = leadscore(cwd, env, "check", "-c", "leadscore.yaml")

    assert done.returncode == 1
    assert "column 'event_time' has" in done.stderr and "'%d/%m/%Y %H:%M'" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_features_see_the_mapped_event_types(first_steps):
    cwd, _, env = first_steps

    done = leadscore(
        cwd, env, "features", "-c", "leadscore.yaml", "--as-of", AS_OF, "--out", "f.parquet"
    )

    assert done.returncode == 0, done.stderr
    table = pd.read_parquet(cwd / "f.parquet")
    assert len(table) == 50
    for name in ("email_opened", "email_clicked", "page_view", "demo_request"):
        assert table[f"{name}_count_90d"].sum() > 0
    assert "Email Opened_count_90d" not in table.columns


@pytest.mark.service
def test_nightly_runs_on_the_raw_export(first_steps, prefect_api):
    """Too few conversions for a model: the run must still end with rule scores."""
    cwd, out, env = first_steps
    _, server_env = prefect_api

    done = leadscore(
        cwd, {**server_env, "COLUMNS": "250"}, "nightly", "-c", "leadscore.yaml",
        "--as-of", AS_OF,
    )  # fmt: skip

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    scores = pd.concat(pd.read_parquet(p) for p in (out / "scores").rglob("*.parquet"))
    assert scores["entity_id"].nunique() == 50
    # Too little history or too few conversions for a model: rule scores with reasons.
    scored = scores[scores["status"] == "scored"]
    assert len(scored) and scored["reasons_up"].notna().all()
    assert set(scored["band"]) <= {"high", "medium", "at-risk"}
    summary = (out / "summary.json").read_text()
    assert "not trained: " in summary and "scored with the rule score" in summary
