"""CRM profiles: the files and columns of the generic, Salesforce and HubSpot exports."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.crm_export import crm_files, missing_crm_id_warnings, write_crm_batches
from pipelines.crm_profiles import CRM_FIELDS, HUBSPOT_FIELDS, RECORD_COLUMNS, crm_profile
from pipelines.output_commit import write_outputs
from pipelines.settings import ConfigError, load_settings
from tests.pipelines.test_board import make_scored

SALESFORCE_COLUMNS = [
    "Id", "Leadscore_Score__c", "Leadscore_Band__c", "Leadscore_Reasons__c",
    "Leadscore_Conversion_Probability__c", "Leadscore_Churn_Probability__c",
    "Leadscore_As_Of__c", "Leadscore_Scored_At__c", "Leadscore_Status__c",
]  # fmt: skip
HUBSPOT_COLUMNS = [
    "hs_object_id", "leadscore_score", "leadscore_band", "leadscore_reasons",
    "leadscore_conversion_probability", "leadscore_churn_probability",
    "leadscore_as_of", "leadscore_scored_at", "leadscore_status",
]  # fmt: skip


def scored_with_kinds(n: int = 30) -> pd.DataFrame:
    """A scored frame with leads and customers; as in scoring, each kind has one probability."""
    scored = make_scored(n, seed=31, no_consent=(), evil_name_at=None)
    leads = scored["kind"] == "lead"
    scored.loc[leads, "churn_probability"] = float("nan")
    scored.loc[~leads, "conversion_probability"] = float("nan")
    return scored


def read_files(paths: list) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths}


def test_profiles_hold_every_record_column_in_order():
    assert list(CRM_FIELDS.values()) == SALESFORCE_COLUMNS
    assert list(HUBSPOT_FIELDS) == list(RECORD_COLUMNS)
    assert list(HUBSPOT_FIELDS.values()) == HUBSPOT_COLUMNS
    assert all(name == name.lower() for name in HUBSPOT_FIELDS.values())


def test_salesforce_writes_lead_and_contact_files_and_never_a_converted_lead_as_lead(tmp_path):
    scored = scored_with_kinds()
    # A lead converted by the run date is scored as a customer (models.entity_status).
    converted = scored.index[(scored["kind"] == "lead") & scored["crm_id"].notna()][0]
    scored.loc[converted, ["kind", "conversion_probability", "churn_probability"]] = [
        "customer", float("nan"), 0.2,
    ]  # fmt: skip
    files = crm_files(scored, None, crm_profile("salesforce"))
    assert set(files) == {"Lead-batch", "Contact-batch"}
    paths = write_crm_batches(files, tmp_path, batch_size=4)
    names = sorted(p.name for p in paths)
    assert names[0] == "Contact-batch-0001.csv" and "Lead-batch-0001.csv" in names

    written = read_files(paths)
    lead_rows = pd.concat([f for n, f in written.items() if n.startswith("Lead-")])
    contact_rows = pd.concat([f for n, f in written.items() if n.startswith("Contact-")])
    for frame in written.values():
        assert list(frame.columns) == SALESFORCE_COLUMNS
        assert len(frame) <= 4
    with_id = scored[scored["crm_id"].notna()]
    assert sorted(lead_rows["Id"]) == sorted(with_id.loc[with_id["kind"] == "lead", "crm_id"])
    assert sorted(contact_rows["Id"]) == sorted(
        with_id.loc[with_id["kind"] == "customer", "crm_id"]
    )
    assert scored.loc[converted, "crm_id"] not in set(lead_rows["Id"])
    assert scored.loc[converted, "crm_id"] in set(contact_rows["Id"])
    # Both probabilities are columns; each is empty where the kind has none.
    assert (lead_rows["Leadscore_Churn_Probability__c"] == "").all()
    assert (lead_rows["Leadscore_Conversion_Probability__c"] != "").all()
    assert (contact_rows["Leadscore_Conversion_Probability__c"] == "").all()
    assert (contact_rows["Leadscore_Churn_Probability__c"] != "").all()
    assert set(lead_rows["Leadscore_As_Of__c"]) == {"2025-06-01"}


def test_hubspot_writes_one_contacts_file_keyed_by_the_record_id(tmp_path):
    scored = scored_with_kinds()
    paths = write_crm_batches(crm_files(scored, None, crm_profile("hubspot")), tmp_path, 100)
    assert [p.name for p in paths] == ["contacts-batch-0001.csv"]
    rows = read_files(paths)["contacts-batch-0001.csv"]
    assert list(rows.columns) == HUBSPOT_COLUMNS
    assert sorted(rows["hs_object_id"]) == sorted(scored["crm_id"].dropna())
    score = pd.to_numeric(rows.set_index("hs_object_id")["leadscore_score"])
    expected = scored.dropna(subset=["crm_id"]).set_index("crm_id")["score"]
    assert (score.sort_index() == expected.sort_index().astype(int)).all()


def test_generic_is_one_series_of_batches_with_every_kind(tmp_path):
    scored = scored_with_kinds()
    paths = write_crm_batches(crm_files(scored, None), tmp_path, batch_size=7)
    assert all(p.name.startswith("batch-") for p in paths)
    rows = pd.concat(read_files(paths).values())
    assert list(rows.columns) == list(CRM_FIELDS.values())
    assert sorted(rows["Id"]) == sorted(scored["crm_id"].dropna())


def test_configured_field_names_rename_the_columns(tmp_path):
    profile = crm_profile("hubspot", {"crm_id": "email", "score": "lead_score"})
    paths = write_crm_batches(crm_files(scored_with_kinds(), None, profile), tmp_path, 100)
    columns = list(read_files(paths)["contacts-batch-0001.csv"].columns)
    assert columns[:2] == ["email", "lead_score"] and "leadscore_band" in columns


def test_only_changed_rows_go_to_the_profile_files():
    day1 = scored_with_kinds()
    day2 = day1.copy()
    day2["as_of"] = pd.Timestamp("2025-06-02", tz="UTC")
    moved = day2.index[day2["crm_id"].notna()][:3]
    day2.loc[moved, "score"] = (day2.loc[moved, "score"] + 37) % 101
    files = crm_files(day2, day1, crm_profile("salesforce"))
    exported = pd.concat(files.values())["Id"]
    assert sorted(exported) == sorted(day2.loc[moved, "crm_id"])


@pytest.mark.parametrize("profile", ["generic", "salesforce", "hubspot"])
def test_the_rows_scoring_found_in_the_previous_run_give_the_files_of_an_id_lookup(profile):
    """What scoring aligned (ScoreResult.previous_rows) is what looking the ids up finds,
    with a previous run in another order, with a duplicate, a missing and a new entity."""
    from models.previous_run import PreviousRun

    day1 = scored_with_kinds()
    day2 = day1.copy()
    day2["as_of"] = pd.Timestamp("2025-06-02", tz="UTC")
    day2.loc[day2.index[::4], "score"] = (day2.loc[day2.index[::4], "score"] + 37) % 101
    day2.loc[day2.index[::7], "band"] = "medium"
    previous = pd.concat([day1.iloc[5:].sample(frac=1, random_state=3), day1.iloc[[9]]])
    previous = previous.reset_index(drop=True)
    previous.loc[len(previous) - 1, "score"] = 0  # the later of two rows counts
    ids = pd.Index(day2["entity_id"])
    rows = PreviousRun(previous, ids).source_index()
    assert (rows[:5] == -1).all() and (rows[5:] >= 0).all()
    aligned = crm_files(day2, previous, crm_profile(profile), rows)
    looked_up = crm_files(day2, previous, crm_profile(profile))
    assert aligned.keys() == looked_up.keys()
    for stem, frame in looked_up.items():
        pd.testing.assert_frame_equal(aligned[stem], frame)
    assert sum(len(f) for f in looked_up.values()) > 5


def test_formula_cells_are_neutralised_in_every_profile(tmp_path):
    scored = scored_with_kinds(6)
    scored["crm_id"] = ["=cmd()", "+1", "@x", "-2", "\tA", "ok"]
    scored["kind"] = "lead"
    for name in ("salesforce", "hubspot", "generic"):
        folder = tmp_path / name
        folder.mkdir()
        paths = write_crm_batches(crm_files(scored, None, crm_profile(name)), folder, 100)
        ids = pd.concat(read_files(paths).values()).iloc[:, 0]
        assert not ids.str.startswith(("=", "+", "-", "@", "\t")).any()


def test_rows_without_a_crm_id_are_counted_and_named():
    scored = scored_with_kinds(30)  # every fifth row has no crm_id
    [warning] = missing_crm_id_warnings(scored)
    assert warning.startswith("6 of 30 entities have no crm_id")
    assert "e0000, e0005, e0010, e0015, e0020, ..." in warning
    assert missing_crm_id_warnings(scored.dropna(subset=["crm_id"])) == []
    assert missing_crm_id_warnings(scored.drop(columns="crm_id"))[0].startswith("30 of 30")


def test_write_outputs_uses_the_profile(tmp_path):
    scored = scored_with_kinds(12)
    paths = write_outputs(
        scored, tmp_path, f"duckdb:///{tmp_path / 's.duckdb'}", crm_batch_size=50,
        previous=None, crm_profile=crm_profile("salesforce"),
    )  # fmt: skip
    assert {p.name for p in paths.crm_batches} <= {"Lead-batch-0001.csv", "Contact-batch-0001.csv"}
    assert paths.crm_rows == scored["crm_id"].notna().sum()


def test_crm_settings_are_checked_when_the_config_is_read(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("crm:\n  profile: hubspot\n  fields:\n    scor: lead_score\n")
    with pytest.raises(ConfigError, match=r"crm.fields.*did you mean 'score'"):
        load_settings(config)
    config.write_text("crm:\n  profile: salesfroce\n")
    with pytest.raises(ConfigError, match="crm.profile"):
        load_settings(config)
    config.write_text("crm:\n  profile: salesforce\n  fields:\n    band: Id\n")
    with pytest.raises(ConfigError, match="both have the field name 'Id'"):
        load_settings(config)
    config.write_text("crm:\n  profile: salesforce\n  fields:\n    score: Lead_Score__c\n")
    settings = load_settings(config)
    assert crm_profile(settings.crm.profile, settings.crm.fields).fields["score"] == (
        "Lead_Score__c"
    )


@pytest.mark.parametrize("profile", ["generic", "salesforce", "hubspot"])
def test_the_changes_found_once_give_each_file_what_its_own_comparison_gives(profile):
    """crm_files compares the run with the previous one once and splits by kind; each
    file is what crm_changes gives for that file's kinds alone."""
    from pipelines.crm_export import crm_changes

    day1 = scored_with_kinds()
    day2 = day1.copy()
    day2["as_of"] = pd.Timestamp("2025-06-02", tz="UTC")
    day2.loc[day2.index[::3], "score"] = (day2.loc[day2.index[::3], "score"] + 37) % 101
    day2.loc[day2.index[1], "kind"] = None  # counted as a lead
    chosen = crm_profile(profile)
    files = crm_files(day2, day1, chosen)
    kind = day2["kind"].astype("string").fillna("lead")
    for stem, kinds in chosen.files.items():
        among = None if kinds is None else kind.isin(kinds).to_numpy(bool)
        alone = crm_changes(day2, day1, chosen.fields, among=among)
        pd.testing.assert_frame_equal(files[stem], alone)
    assert sum(len(f) for f in files.values()) > 3
