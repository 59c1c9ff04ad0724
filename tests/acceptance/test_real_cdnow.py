"""CDNOW from its own file, through the installed ``leadscore`` with only a config file.

The purchase log (``customer_id``, ``date``, ``number_of_cds``, ``dollar_value``;
no entities, no outcomes, no event type) is read as it is: the config maps its
columns, gives every row the event type ``purchase`` (``sources.constant``), derives
the entities from the events (``sources.entities: null``), has no outcomes
(``sources.outcomes: null``) and learns churn from inactivity. Everything else is a
default. The shared datasets are at ``LEADSCORE_DATASETS``; without them the test
fails (it is the real-data must-show of issues 14 and 15, not optional).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from models.entity_status import INACTIVE
from pipelines.board_store import BoardStore, LeadQuery
from pipelines.crm_profiles import CRM_FIELDS
from tests.acceptance.conftest import BIN
from tests.pipelines.test_events_only_inputs import purchase_log_sources

pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.service]

AS_OF = "1998-01-01"
#: Customers of the 1997-Q1 cohort (the dataset README), all first seen before AS_OF.
CUSTOMERS = 23_570
#: The train command's last sentence: the validation AUC, its interval and positives.
VALIDATION = re.compile(
    r"Validation AUC (0\.\d+) \(95% CI (0\.\d+)-(0\.\d+), (\d+) positives\), ECE (0\.\d+)"
)


def cdnow_file() -> Path:
    """The shared CDNOW purchase log; the test fails when it is missing."""
    folder = os.environ.get("LEADSCORE_DATASETS")
    path = Path(folder or "/nonexistent") / "cdnow" / "cdnow_master.parquet"
    if not path.is_file():
        pytest.fail(f"LEADSCORE_DATASETS ({folder!r}) does not hold cdnow/cdnow_master.parquet")
    return path


@pytest.fixture(scope="module")
def cdnow(prefect_api, tmp_path_factory) -> dict:
    """The config (only the mapping and the churn-from-inactivity switch) and where
    its outputs go."""
    _, env = prefect_api
    root = tmp_path_factory.mktemp("cdnow")
    config = root / "cdnow.yaml"
    settings = {
        "sources": purchase_log_sources(cdnow_file()),
        "labels": {"churn_from_inactivity": True},
        "targets": ["churn"],
        "output": {"dir": str(root / "out")},
    }
    config.write_text(yaml.safe_dump(settings))
    return {"config": config, "out": root / "out", "env": env, "root": root}


def leadscore(cdnow: dict, *args: str) -> str:
    """Run the installed ``leadscore *args --config FILE`` from an empty folder; its stdout."""
    cwd = Path(cdnow["root"]) / f"cwd-{args[0]}"
    cwd.mkdir()
    command = [str(BIN / "leadscore"), *args, "--config", str(cdnow["config"])]
    done = subprocess.run(
        command, cwd=cwd, env=cdnow["env"], capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_nightly_scores_every_customer_from_the_purchase_log_alone(cdnow):
    leadscore(cdnow, "nightly", "--as-of", AS_OF)
    out = cdnow["out"]
    ids = set(pd.read_parquet(cdnow_file(), columns=["customer_id"])["customer_id"])

    scores = pd.read_parquet(out / "scores" / f"as_of={AS_OF}" / "part-0.parquet")
    assert len(scores) == CUSTOMERS == scores["entity_id"].nunique()
    assert set(scores["entity_id"]) == ids
    assert (scores["kind"] == "customer").all()
    # As in training (churn from inactivity), only customers who bought in the 60 days
    # before the run date are scored; the others have churned already and say so.
    scored = scores["status"] == "scored"
    assert set(scores.loc[~scored, "status"]) == {INACTIVE}
    assert 1_000 < scored.sum() < CUSTOMERS // 2
    assert scores.loc[scored, "churn_probability"].notna().all()
    assert scores.loc[~scored, "churn_probability"].isna().all()
    # Their probabilities spread out instead of sitting at 1.0 (issue 15's finding).
    assert (scores.loc[scored, "churn_probability"] > 0.99).mean() < 0.05
    summary = json.loads((out / "summaries" / f"{AS_OF}.json").read_text())
    assert summary["champions"]["churn"].startswith("v1, validated by out-of-time split")

    crm = [
        pd.read_csv(path, dtype=str, keep_default_na=False)
        for path in sorted((out / "crm" / f"as_of={AS_OF}").glob("batch-*.csv"))
    ]
    assert crm and all(list(frame.columns) == list(CRM_FIELDS.values()) for frame in crm)
    rows = pd.concat(crm)
    # The scored customers, ids with their leading zeros; a first run sends no row for
    # those without a score (nothing changed for them in the CRM).
    assert sorted(rows["Id"]) == sorted(scores.loc[scored, "entity_id"])
    assert set(rows["Id"]) <= ids
    assert set(rows["Leadscore_As_Of__c"]) == {AS_OF}
    assert (rows["Leadscore_Churn_Probability__c"] != "").all()

    store = BoardStore(f"duckdb:///{out / 'leadscore.duckdb'}", out / "board")
    try:
        page = store.page(LeadQuery(limit=50))
    finally:
        store.close()
    assert page["total"] == scored.sum()  # the board lists who is scored
    # No name column: the board names each customer by its id.
    assert all(row["name"] == row["id"] and row["id"] in ids for row in page["rows"])


def test_train_churn_reports_its_auc_interval_positives_and_scheme(cdnow):
    stdout = " ".join(leadscore(cdnow, "train", "--target", "churn", "--as-of", AS_OF).split())

    auc, low, high, positives, _ = VALIDATION.search(stdout).groups()
    assert float(low) < float(auc) < float(high)
    assert float(auc) > 0.6 and int(positives) >= 100
    assert "evaluated by out-of-time split" in stdout
    record = json.loads((cdnow["out"] / "training" / f"churn-{AS_OF}.json").read_text())
    assert record["metrics"]["positives"] == int(positives)
    assert round(record["metrics"]["roc_auc"], 3) == float(auc)
