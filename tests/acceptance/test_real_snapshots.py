"""X Education leads and bank marketing from their own files, through the installed CLI.

Both are snapshots: one row per lead (or call) with an outcome column and no event
dates. The config names the file under ``sources.snapshot`` with its own column names
and values (``Prospect ID``, ``Converted``, ``Select``; ``y`` = ``yes``), the columns
left out (filled in by sales after contact; ``duration``, known only after the call)
and, for bank marketing, that the rows are in time order. Everything else is a
default. The shared datasets are at ``LEADSCORE_DATASETS``; without them the tests
fail (they are the real-data must-show of issues 14 and 15).
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

from pipelines.board_store import BoardStore, LeadQuery
from tests.acceptance.conftest import BIN
from tests.pipelines.test_crm_export import HUBSPOT_COLUMNS, SALESFORCE_COLUMNS

pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.service]

#: The train command's sentence: the validation AUC, its interval and positives.
VALIDATION = re.compile(
    r"Validation model AUC (0\.\d+) \(95% CI (0\.\d+)-(0\.\d+), (\d+) positives\)"
)
#: X Education columns filled in during or after the sale, and vendor scores of unknown
#: timing (the dataset README): left out of the features.
X_EDUCATION_DROPPED = [
    "Tags", "Lead Quality", "Lead Profile", "Last Activity", "Last Notable Activity",
    "Asymmetrique Activity Index", "Asymmetrique Profile Index",
    "Asymmetrique Activity Score", "Asymmetrique Profile Score",
]  # fmt: skip


def dataset(*parts: str) -> Path:
    """A shared dataset file; the test fails when it is missing."""
    folder = os.environ.get("LEADSCORE_DATASETS")
    path = Path(folder or "/nonexistent", *parts)
    if not path.is_file():
        pytest.fail(f"LEADSCORE_DATASETS ({folder!r}) does not hold {'/'.join(parts)}")
    return path


def x_education_settings(out: Path) -> dict:
    """The whole config of the X Education export."""
    return {
        "sources": {
            "snapshot": {
                "path": str(dataset("x_education_leads", "leads.parquet")),
                "taken_at": "2019-06-30",
                "id_column": "Prospect ID",
                "outcome_column": "Converted",
                "missing_values": ["Select"],
                "drop_columns": X_EDUCATION_DROPPED,
            }
        },
        "targets": ["conversion"],
        "board": {"display": {"name": "Lead Number", "attributes": ["Lead Origin", "City"]}},
        "crm": {"profile": "salesforce"},
        "output": {"dir": str(out)},
    }


def bank_settings(out: Path) -> dict:
    """The whole config of the bank marketing calls (no id: rows are numbered)."""
    return {
        "sources": {
            "snapshot": {
                "path": str(dataset("bank_marketing", "bank_additional_full.parquet")),
                "taken_at": "2010-11-30",
                "outcome_column": "y",
                "drop_columns": ["duration"],
                "rows_in_time_order": True,
            }
        },
        "targets": ["conversion"],
        "crm": {"profile": "hubspot"},
        "output": {"dir": str(out)},
    }


def leadscore(config: Path, env: dict, *args: str) -> str:
    """Run the installed ``leadscore *args --config FILE`` from an empty folder; its stdout."""
    cwd = config.parent / f"cwd-{args[0]}"
    cwd.mkdir(exist_ok=True)
    command = [str(BIN / "leadscore"), *args, "--config", str(config)]
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return " ".join(done.stdout.split())


@pytest.fixture(scope="module")
def x_education(prefect_api, tmp_path_factory) -> tuple[Path, dict, str]:
    """The X Education config and the stdout of its nightly run."""
    _, env = prefect_api
    root = tmp_path_factory.mktemp("x-education")
    config = root / "x-education.yaml"
    config.write_text(yaml.safe_dump(x_education_settings(root / "out")))
    return config, env, leadscore(config, env, "nightly", "--as-of", "2019-06-30")


@pytest.fixture(scope="module")
def bank(prefect_api, tmp_path_factory) -> tuple[Path, dict, str]:
    """The bank marketing config and the stdout of its nightly run."""
    _, env = prefect_api
    root = tmp_path_factory.mktemp("bank")
    config = root / "bank.yaml"
    config.write_text(yaml.safe_dump(bank_settings(root / "out")))
    return config, env, leadscore(config, env, "nightly", "--as-of", "2010-11-30")


def crm_rows(out: Path, as_of: str, pattern: str) -> dict[str, pd.DataFrame]:
    """The date's CRM files matching ``pattern``, read back as text."""
    files = sorted((out / "crm" / f"as_of={as_of}").glob(pattern))
    assert files, f"no CRM file {pattern} for {as_of}"
    return {f.name: pd.read_csv(f, dtype=str, keep_default_na=False) for f in files}


def board_page(out: Path) -> dict:
    store = BoardStore(f"duckdb:///{out / 'leadscore.duckdb'}", out / "board")
    try:
        return store.page(LeadQuery(limit=50))
    finally:
        store.close()


def test_x_education_check_counts_the_snapshot_without_writing(prefect_api, tmp_path):
    _, env = prefect_api
    config = tmp_path / "x.yaml"
    config.write_text(yaml.safe_dump(x_education_settings(tmp_path / "out")))
    stdout = leadscore(config, env, "check")
    assert "9,240" in stdout and "3,561" in stdout  # leads, conversions (dataset README)
    assert not (tmp_path / "out").exists()


def test_x_education_scores_every_lead_from_its_own_file(x_education):
    config, _, stdout = x_education
    out = config.parent / "out"
    leads = pd.read_parquet(dataset("x_education_leads", "leads.parquet"))
    scores = pd.read_parquet(out / "scores" / "as_of=2019-06-30" / "part-0.parquet")
    assert len(scores) == len(leads) == scores["entity_id"].nunique()
    assert set(scores["entity_id"]) == set(leads["Prospect ID"])
    converted = set(leads.loc[leads["Converted"] == 1, "Prospect ID"])
    # The converted leads are customers now; every other lead has a conversion probability.
    open_leads = scores[scores["kind"] == "lead"]
    assert set(open_leads["entity_id"]) == set(leads["Prospect ID"]) - converted
    assert open_leads["conversion_probability"].notna().all()
    assert (open_leads["score_source"] == "model").all()

    # Salesforce: open leads in the Lead file, converted ones only in the Contact file.
    files = crm_rows(out, "2019-06-30", "*.csv")
    assert all(list(frame.columns) == SALESFORCE_COLUMNS for frame in files.values())
    lead_file = pd.concat(f for name, f in files.items() if name.startswith("Lead-"))
    contact_file = pd.concat(f for name, f in files.items() if name.startswith("Contact-"))
    assert set(lead_file["Id"]) == set(open_leads["entity_id"])
    assert set(contact_file["Id"]) == converted
    assert (lead_file["Leadscore_Reasons__c"] != "").all()

    # What sales wrote after contact never reaches a reason; the lead number neither.
    reasons = " ".join(open_leads["reasons_text"])
    assert not any(f"{column}:" in reasons for column in [*X_EDUCATION_DROPPED, "Lead Number"])
    page = board_page(out)
    numbers = set(leads["Lead Number"].astype(str))
    assert page["total"] == len(leads)
    assert all(row["name"] in numbers for row in page["rows"])  # names, not UUIDs
    assert "stratified random split (not out-of-time)" in stdout


def test_x_education_model_beats_the_rules_with_its_interval(x_education):
    config, env, _ = x_education
    stdout = leadscore(config, env, "train", "--target", "conversion", "--as-of", "2019-06-30")
    auc, low, high, positives = VALIDATION.search(stdout).groups()
    # 20% of 3,561 conversions validate; the benchmark's honest model had 0.861.
    assert 0.80 < float(low) < float(auc) < float(high)
    assert int(positives) == 712
    assert "the metrics are not out-of-time" in stdout


def test_bank_marketing_scores_every_call_and_validates_on_later_rows(bank):
    config, _, stdout = bank
    out = config.parent / "out"
    calls = pd.read_parquet(dataset("bank_marketing", "bank_additional_full.parquet"))
    scores = pd.read_parquet(out / "scores" / "as_of=2010-11-30" / "part-0.parquet")
    assert len(scores) == len(calls) == scores["entity_id"].nunique()
    open_calls = scores[scores["kind"] == "lead"]
    assert len(open_calls) == int((calls["y"] == "no").sum())
    # A model, not a constant: the open calls get many different probabilities.
    assert (open_calls["score_source"] == "model").all()
    assert open_calls["conversion_probability"].nunique() > 100

    files = crm_rows(out, "2010-11-30", "contacts-batch-*.csv")
    rows = pd.concat(files.values())
    assert all(list(frame.columns) == HUBSPOT_COLUMNS for frame in files.values())
    assert sorted(rows["hs_object_id"]) == sorted(scores["entity_id"])

    auc, low, high, positives = VALIDATION.search(stdout).groups()
    assert 0.5 < float(low) < float(auc) < float(high)
    assert "rolling origin over the file's row order" in stdout
    summary = json.loads((out / "summaries" / "2010-11-30.json").read_text())
    assert summary["champions"]["conversion"].startswith("v1, validated by rolling origin")
    page = board_page(out)
    assert page["total"] == len(calls)
    assert all(row["name"].startswith("row-") for row in page["rows"])
