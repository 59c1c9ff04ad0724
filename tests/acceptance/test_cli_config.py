"""Every ``leadscore`` command with ``--config``: outputs where the file says, none where it runs.

Each test runs the installed script in a fresh, empty working directory with
``--config`` pointing at the module's config file (data and output folders in a
temporary tree) and an explicit ``--as-of`` inside the generated history, then finds
the command's outputs under the configured output folder and the working directory
still empty (no ``./output``, ``./data``, ``./mlruns``, ``./mlflow.db``...).
``generate`` and ``demo`` take no config: they must write only under their ``--out``.

The tests share one output folder and run in file order, as a user would: ``train``
registers a model before ``score`` and ``nightly`` use it (without one, ``score``
falls back to the rule score), and ``forget`` comes after the runs it erases from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.synthetic import generate
from tests.acceptance.conftest import CRON

pytestmark = [pytest.mark.slow, pytest.mark.service]

FIRST, NEXT = "2025-12-01", "2025-12-08"
BACKFILL = ("2025-12-15", "2025-12-22")


def leftovers(cwd: Path) -> list[str]:
    """What a command left in its working directory (hidden files included)."""
    return sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))


@pytest.fixture
def cwd(tmp_path) -> Path:
    """A fresh, empty working directory for one command."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


def assert_run_date_outputs(out: Path, day: str) -> None:
    """A scoring run's partition, summary, CRM export and board page for ``day``."""
    assert (out / "scores" / f"as_of={day}" / "part-0.parquet").is_file()
    assert json.loads((out / "summaries" / f"{day}.json").read_text())["as_of"] == day
    assert list((out / "crm" / f"as_of={day}").glob("batch-*.csv"))
    assert (out / "board" / f"{day}.html").is_file()
    assert (out / "leadscore.duckdb").is_file()


def test_generate_writes_only_under_out(workspace, cwd):
    workspace.run(
        cwd, "generate", "--out", "gen", "--leads", "60", "--customers", "40", "--months", "2",
        with_config=False,
    )  # fmt: skip
    assert {p.name for p in cwd.iterdir()} == {"gen"}
    assert (cwd / "gen" / "entities.parquet").is_file()
    assert list((cwd / "gen" / "events").glob("*.parquet"))
    assert len(pd.read_parquet(cwd / "gen" / "entities.parquet")) == 100


def test_features_writes_the_feature_table_under_the_configured_output(workspace, cwd):
    done = workspace.run(cwd, "features", "--as-of", FIRST)
    table = workspace.out / "features" / f"as_of={FIRST}.parquet"
    assert table.is_file()
    entities = pd.read_parquet(workspace.data / "entities.parquet")["entity_id"]
    assert set(pd.read_parquet(table)["entity_id"]) <= set(entities)
    assert str(table) in done.stdout
    assert leftovers(cwd) == []


def test_recalibrate_writes_its_report_under_the_configured_output(workspace, cwd):
    workspace.run(cwd, "recalibrate", "--rules", "engagement", "--target", "churn",
                  "--as-of", FIRST)  # fmt: skip
    folder = workspace.out / "recalibration" / "engagement-churn"
    assert list(folder.glob("*.md")) and list(folder.glob("*.yaml"))
    assert (workspace.out / "mlflow.db").is_file()
    assert leftovers(cwd) == []


def test_train_reads_the_config_and_registers_under_the_configured_output(workspace, cwd):
    done = workspace.run(cwd, "train", "--target", "conversion", "--as-of", FIRST)
    assert (workspace.out / "training" / f"conversion-{FIRST}.json").is_file()
    assert (workspace.out / "mlflow.db").is_file()
    assert list((workspace.out / "mlartifacts").iterdir())
    assert "conversion v1 " in done.stdout
    assert leftovers(cwd) == []


def test_models_lists_the_configured_registry(workspace, cwd):
    done = workspace.run(cwd, "models")
    assert "conversion" in done.stdout
    assert leftovers(cwd) == []


def test_score_reads_the_config_and_writes_every_output_there(workspace, cwd):
    workspace.run(cwd, "score", "--as-of", FIRST)
    assert_run_date_outputs(workspace.out, FIRST)
    assert json.loads((workspace.out / "summary.json").read_text())["as_of"] == FIRST
    assert leftovers(cwd) == []


def test_nightly_writes_every_output_under_the_configured_output(workspace, cwd):
    done = workspace.run(cwd, "nightly", "--as-of", NEXT)
    # The command read the inputs while the flow run was created; the flow took them.
    assert "inputs read ahead while Prefect started" in done.stdout + done.stderr
    assert_run_date_outputs(workspace.out, NEXT)
    assert json.loads((workspace.out / "summary.json").read_text())["as_of"] == NEXT
    assert (workspace.out / "board" / "index.html").is_file()
    assert leftovers(cwd) == []


def test_backfill_writes_a_partition_per_date_under_the_configured_output(workspace, cwd):
    workspace.run(cwd, "backfill", "--from", BACKFILL[0], "--to", BACKFILL[1], "--every", "7")
    for day in BACKFILL:
        assert_run_date_outputs(workspace.out, day)
    assert leftovers(cwd) == []


def test_forget_erases_from_the_configured_stores_and_writes_the_receipt_there(workspace, cwd):
    ids = pd.read_parquet(workspace.data / "entities.parquet")["entity_id"].head(2).tolist()
    workspace.run(cwd, "forget", *ids)
    receipts = list((workspace.out / "erasure").glob("receipt-*.json"))
    assert len(receipts) == 1
    assert json.loads(receipts[0].read_text())["entities"]["count"] == 2
    for partition in (workspace.out / "scores").glob("as_of=*"):
        assert not set(ids) & set(pd.read_parquet(partition)["entity_id"])
    assert leftovers(cwd) == []


def test_serve_register_only_registers_the_configured_schedule(workspace, cwd):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    done = workspace.run(cwd, "serve", "--register-only")
    assert "Registered deployment nightly/leadscore-nightly" in done.stdout
    assert CRON in done.stdout
    with (
        temporary_settings({PREFECT_API_URL: workspace.api_url}),
        get_client(sync_client=True) as client,
    ):
        deployment = client.read_deployment_by_name("nightly/leadscore-nightly")
    assert [s.schedule.cron for s in deployment.schedules] == [CRON]
    assert deployment.parameters["config_path"] == str(workspace.config.resolve())
    assert leftovers(cwd) == []


def test_demo_writes_only_under_out(workspace, cwd):
    # The demo generates 21,000 entities when its data folder is empty: hand it a tiny
    # history where it looks for one (the demo takes no config; the environment may
    # lower the label minimum for it).
    generate(cwd / "demo" / "data", n_leads=400, n_customers=300, months=12, seed=5)
    env = {**workspace.env, "LEADSCORE_MODEL__MIN_POSITIVE_LABELS": "10"}
    done = workspace.run(cwd, "demo", "--out", "demo", "--as-of", FIRST, with_config=False, env=env)
    assert {p.name for p in cwd.iterdir()} == {"demo"}
    assert {p.name for p in (cwd / "demo").iterdir()} == {"data", "output"}
    output = cwd / "demo" / "output"
    assert_run_date_outputs(output, FIRST)
    assert (output / "mlflow.db").is_file()
    assert f"Lead board: {(output / 'board' / 'index.html').resolve()}" in done.stdout
