"""``crm.profile`` through the command a user types: the CRM files parsed back per profile.

The module runs ``leadscore nightly --config FILE`` on the generated history of
``conftest.py``, once with ``crm: {profile: salesforce}`` and then, for the same date,
with ``crm: {profile: hubspot}`` (the re-run reuses the models the first one trained
and replaces the date's CRM folder). A few entities lose their ``crm_id`` first, so
the run summary must count and name them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.pipelines.test_crm_export import HUBSPOT_COLUMNS, SALESFORCE_COLUMNS

pytestmark = [pytest.mark.slow, pytest.mark.service]

AS_OF = "2025-12-01"


@pytest.fixture(scope="module")
def without_crm_id(workspace) -> list[str]:
    """Entity ids of three entities whose ``crm_id`` is removed from the entities file."""
    path = workspace.data / "entities.parquet"
    entities = pd.read_parquet(path)
    blank = entities.index[:3]
    entities["crm_id"] = entities["crm_id"].astype("object")
    entities.loc[blank, "crm_id"] = None
    entities.to_parquet(path, index=False)
    return entities.loc[blank, "entity_id"].astype(str).tolist()


def nightly_with(workspace, cwd: Path, crm: dict) -> dict:
    """Run ``leadscore nightly`` with the module's config plus ``crm``; the run summary."""
    settings = yaml.safe_load(workspace.config.read_text()) | {"crm": crm}
    config = workspace.config.parent / f"{crm['profile']}.yaml"
    config.write_text(yaml.safe_dump(settings))
    workspace.run(cwd, "nightly", "--as-of", AS_OF, "--config", str(config), with_config=False)
    return json.loads((workspace.out / "summaries" / f"{AS_OF}.json").read_text())


def crm_files(workspace) -> dict[str, pd.DataFrame]:
    """Every CRM file of the date, read back as text (empty cells as ``""``)."""
    folder = workspace.out / "crm" / f"as_of={AS_OF}"
    return {
        path.name: pd.read_csv(path, dtype=str, keep_default_na=False)
        for path in sorted(folder.glob("*.csv"))
    }


def converted_by_run_date(workspace) -> set[str]:
    """``crm_id`` of the leads converted at or before the run date."""
    outcomes = pd.read_parquet(workspace.data / "outcomes.parquet")
    entities = pd.read_parquet(workspace.data / "entities.parquet")
    when = pd.to_datetime(outcomes["occurred_at"], utc=True)
    done = outcomes.loc[
        (outcomes["outcome"] == "converted") & (when <= pd.Timestamp(AS_OF, tz="UTC")),
        "entity_id",
    ]
    return set(entities.loc[entities["entity_id"].isin(done), "crm_id"].dropna())


def test_salesforce_writes_lead_and_contact_files_without_converted_leads(
    workspace, without_crm_id, tmp_path
):
    summary = nightly_with(workspace, tmp_path, {"profile": "salesforce"})
    files = crm_files(workspace)
    assert files and all(re.fullmatch(r"(Lead|Contact)-batch-\d{4}\.csv", n) for n in files)
    for frame in files.values():
        assert list(frame.columns) == SALESFORCE_COLUMNS
    leads = pd.concat(f for n, f in files.items() if n.startswith("Lead-"))
    contacts = pd.concat(f for n, f in files.items() if n.startswith("Contact-"))

    converted = converted_by_run_date(workspace)
    assert converted, "the generated history should have leads converted by the run date"
    assert not converted & set(leads["Id"])
    assert converted & set(contacts["Id"])
    assert set(leads["Leadscore_As_Of__c"]) == {AS_OF} == set(contacts["Leadscore_As_Of__c"])
    # Leads have no churn probability and customers no conversion probability.
    assert (leads["Leadscore_Churn_Probability__c"] == "").all()
    assert (contacts["Leadscore_Conversion_Probability__c"] == "").all()

    [warning] = [w for w in summary["warnings"] if "no crm_id" in w]
    assert warning.startswith("3 of ")
    assert all(entity in warning for entity in without_crm_id)


def test_hubspot_writes_one_contacts_file_with_internal_names(workspace, without_crm_id, tmp_path):
    nightly_with(workspace, tmp_path, {"profile": "hubspot", "fields": {"status": "ls_status"}})
    files = crm_files(workspace)
    assert files and all(re.fullmatch(r"contacts-batch-\d{4}\.csv", n) for n in files)
    rows = pd.concat(files.values())
    assert list(rows.columns) == [*HUBSPOT_COLUMNS[:-1], "ls_status"]

    scored = pd.read_parquet(workspace.out / "scores" / f"as_of={AS_OF}" / "part-0.parquet")
    exported = scored[scored["crm_id"].notna() & scored["score"].notna()]
    assert sorted(rows["hs_object_id"]) == sorted(exported["crm_id"])
    assert not set(without_crm_id) & set(rows["hs_object_id"])
