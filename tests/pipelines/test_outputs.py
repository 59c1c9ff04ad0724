"""Score outputs: partition, score tables, CRM batches; a re-run replaces, never duplicates."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.reason_text import CRM_TEXT_LIMIT, crm_reason_text
from pipelines.crm_export import crm_changes, csv_safe, split_batches
from pipelines.crm_profiles import CRM_FIELDS
from pipelines.databases import sql_read
from pipelines.output_commit import write_outputs
from pipelines.outputs import list_partitions, read_previous_scores, run_date
from tests.pipelines.test_board import make_scored

DAY1, DAY2 = date(2025, 6, 1), date(2025, 6, 2)
ID, SCORE, BAND, STATUS = (
    CRM_FIELDS["crm_id"], CRM_FIELDS["score"], CRM_FIELDS["band"], CRM_FIELDS["status"],
)  # fmt: skip


def duckdb_url(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path / 'scores.duckdb'}"


def read_table(url: str, table: str) -> pd.DataFrame:
    return sql_read(url, table)


def crm_rows(paths) -> pd.DataFrame:
    frames = [pd.read_csv(p, dtype={ID: str}) for p in paths.crm_batches]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def next_day(scored: pd.DataFrame, changed: list[int], as_of: str = "2025-06-02") -> pd.DataFrame:
    """The same entities a day later, with new scores (and bands) for some rows."""
    later = scored.copy()
    later["as_of"] = pd.Timestamp(as_of, tz="UTC")
    later["scored_at"] = later["as_of"] + pd.Timedelta(hours=2)
    for i in changed:
        if pd.isna(later.loc[i, "score"]):
            continue
        later.loc[i, "score"] = (int(later.loc[i, "score"]) + 37) % 101
        later.loc[i, "band"] = "high" if later.loc[i, "band"] != "high" else "medium"
    return later


def test_first_run_writes_every_output(tmp_path):
    scored = make_scored(30, seed=10)
    url = duckdb_url(tmp_path)
    paths = write_outputs(scored, tmp_path, url, crm_batch_size=7, previous=None)

    partition = pd.read_parquet(paths.partition)
    assert paths.partition == tmp_path / "scores" / "as_of=2025-06-01" / "part-0.parquet"
    assert len(partition) == len(scored) and "as_of" not in partition.columns
    assert set(partition["entity_id"]) == set(scored["entity_id"])
    assert len(read_table(url, "lead_scores")) == len(scored)
    assert len(read_table(url, "lead_score_history")) == len(scored)

    with_crm = scored[scored["crm_id"].notna() & scored["score"].notna()]
    crm = crm_rows(paths)
    assert sorted(crm[ID]) == sorted(with_crm["crm_id"])
    assert [len(pd.read_csv(p)) for p in paths.crm_batches] == [
        len(b) for b in split_batches(crm, 7)
    ]
    assert list(crm.columns) == list(CRM_FIELDS.values())
    assert paths.board.exists() and paths.board_index.exists()
    assert dict(paths.items())["lead_board"] == str(paths.board)


def test_rerun_of_a_date_replaces_and_never_duplicates(tmp_path):
    url = duckdb_url(tmp_path)
    day1 = make_scored(30, seed=11)
    write_outputs(day1, tmp_path, url, crm_batch_size=5, previous=None)
    day2 = next_day(day1, changed=[0, 2, 4, 6, 9, 11, 12, 13])
    first = write_outputs(day2, tmp_path, url, crm_batch_size=2, previous=day1)
    assert len(first.crm_batches) > 1
    # The same date again, now with fewer changes and a bigger batch size.
    day2_again = next_day(day1, changed=[2])
    second = write_outputs(day2_again, tmp_path, url, crm_batch_size=5, previous=day1)

    history = read_table(url, "lead_score_history")
    # A no-consent entity keeps only today's blank row: its earlier history is purged.
    without_consent = int(day1["status"].str.contains("no consent").sum())
    assert without_consent > 0
    assert len(history) == 2 * len(day1) - without_consent
    assert not history.duplicated(["entity_id", "as_of"]).any()
    scores = read_table(url, "lead_scores").set_index("entity_id")
    assert len(scores) == len(day1)
    expected = day2_again.set_index("entity_id")["score"]
    assert scores.loc[expected.dropna().index, "score"].tolist() == expected.dropna().tolist()
    assert pd.read_parquet(second.partition)["score"].tolist() == day2_again["score"].tolist()
    crm_dir_files = sorted(p.name for p in second.crm_dir.iterdir())
    assert crm_dir_files == [p.name for p in second.crm_batches]
    changed_with_crm = day2_again.loc[[2]].dropna(subset=["crm_id"])
    assert sorted(crm_rows(second)[ID]) == sorted(changed_with_crm["crm_id"])
    assert not [p for p in second.crm_dir.parent.iterdir() if p.name.startswith(".")]


def test_previous_scores_are_the_latest_partition_before_the_date(tmp_path):
    url = duckdb_url(tmp_path)
    assert read_previous_scores(tmp_path, DAY1) is None
    day1 = make_scored(10, seed=12)
    day2 = next_day(day1, changed=[1])
    write_outputs(day1, tmp_path, url, crm_batch_size=10, previous=None)
    write_outputs(day2, tmp_path, url, crm_batch_size=10, previous=day1)
    assert sorted(list_partitions(tmp_path)) == [DAY1, DAY2]
    assert read_previous_scores(tmp_path, DAY1) is None
    assert read_previous_scores(tmp_path, pd.Timestamp(DAY2, tz="UTC")) is not None
    before_day2 = read_previous_scores(tmp_path, DAY2)
    assert before_day2["score"].tolist() == day1["score"].tolist()
    assert (before_day2["as_of"] == pd.Timestamp(DAY1, tz="UTC")).all()
    later = read_previous_scores(tmp_path, date(2025, 7, 1))
    assert later["score"].tolist() == day2["score"].tolist()


def test_withdrawn_consent_blanks_scores_and_purges_history(tmp_path):
    url = duckdb_url(tmp_path)
    day1 = make_scored(12, seed=13, no_consent=())
    write_outputs(day1, tmp_path, url, crm_batch_size=50, previous=None)
    # Entity 6 withdraws consent; a careless scorer still sends its old values along.
    day2 = next_day(day1, changed=[])
    day2.loc[6, "status"] = "not scored: no consent"
    paths = write_outputs(day2, tmp_path, url, crm_batch_size=50, previous=day1)
    entity, crm_id = day1.loc[6, "entity_id"], day1.loc[6, "crm_id"]

    row = read_table(url, "lead_scores").set_index("entity_id").loc[entity]
    assert row["status"] == "not scored: no consent"
    assert pd.isna(row["score"]) and pd.isna(row["band"]) and pd.isna(row["reasons_up"])
    assert pd.isna(row["conversion_probability"])
    history = read_table(url, "lead_score_history")
    assert history.loc[history["entity_id"] == entity, "score"].isna().all()
    assert len(history.loc[history["entity_id"] == entity]) == 1
    partition = pd.read_parquet(paths.partition).set_index("entity_id")
    assert pd.isna(partition.loc[entity, "score"])
    assert pd.isna(partition.loc[entity, "reasons_down"])
    crm = crm_rows(paths).set_index(ID)
    assert list(crm.index) == [crm_id]
    assert pd.isna(crm.loc[crm_id, SCORE]) and crm.loc[crm_id, STATUS].endswith("no consent")
    assert entity not in paths.board.read_text()


def test_crm_changes_keep_only_changed_rows_with_a_crm_id():
    day1 = make_scored(25, seed=14, no_consent=())
    changed = [1, 2, 5, 8, 10]  # 5 and 10 have no crm_id in the builder
    day2 = next_day(day1, changed=changed)
    rows = crm_changes(day2, day1)
    expected = day1.loc[changed, "crm_id"].dropna()
    assert sorted(rows[ID]) == sorted(expected)
    assert crm_changes(day1, day1).empty
    by_id = rows.set_index(ID)
    for i in expected.index:
        assert by_id.loc[day2.loc[i, "crm_id"], SCORE] == day2.loc[i, "score"]
        assert by_id.loc[day2.loc[i, "crm_id"], BAND] == day2.loc[i, "band"]


FORMULAS = ['=HYPERLINK("x")', "@SUM(1+1)", "+1+1", "-2+3"]


def test_crm_files_neutralise_formulas_in_every_text_column_and_keep_numbers(tmp_path):
    scored = make_scored(6, seed=20, no_consent=(), evil_name_at=None)
    scored.loc[:3, "entity_id"] = FORMULAS
    scored.loc[:3, "crm_id"] = FORMULAS
    scored.loc[4, "crm_id"] = "0042"
    scored.loc[4, "conversion_probability"] = -0.035  # a number, even a negative one
    paths = write_outputs(scored, tmp_path, duckdb_url(tmp_path), crm_batch_size=4, previous=None)

    written = pd.concat(
        [pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths.crm_batches]
    )
    assert sorted(written[ID]) == sorted(["'" + f for f in FORMULAS] + ["0042"])
    text_columns = written.columns.drop([SCORE, CRM_FIELDS["conversion_percent"]])
    for column in text_columns:
        assert not written[column].str.startswith(("=", "+", "-", "@", "\t", "\r")).any()
    numbers = pd.concat([pd.read_csv(p, dtype={ID: str}) for p in paths.crm_batches])
    conversion = numbers.set_index(ID)[CRM_FIELDS["conversion_percent"]]
    assert conversion["0042"] == -3.5


def test_csv_safe_changes_text_only():
    text = pd.Series(["\tx", "\ry", "plain", None, "-1"], dtype="string")
    assert csv_safe(text).tolist() == ["'\tx", "'\ry", "plain", pd.NA, "'-1"]
    numbers = pd.Series([-3.5, 2.0])
    assert csv_safe(numbers) is numbers


def test_split_batches_sizes_and_bad_size():
    frame = pd.DataFrame({"x": range(10)})
    batches = split_batches(frame, 4)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert pd.concat(batches)["x"].tolist() == frame["x"].tolist()
    assert split_batches(frame.iloc[:0], 4) == []
    with pytest.raises(ValueError, match="at least 1"):
        split_batches(frame, 0)


def test_mixed_dates_are_refused():
    scored = make_scored(4, seed=15)
    scored.loc[0, "as_of"] = pd.Timestamp("2025-05-01", tz="UTC")
    with pytest.raises(ValueError, match="mixes 2 as_of dates"):
        run_date(scored)


reason_items = st.lists(
    st.fixed_dictionaries(
        {
            "concept": st.text(min_size=1, max_size=80),
            "group": st.sampled_from(["fit", "engagement"]),
            "text": st.text(max_size=200),
            "impact": st.floats(-100, 100),
        }
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(reason_items, reason_items)
def test_crm_reason_text_is_short_and_never_a_formula(up, down):
    text = crm_reason_text(json.dumps(up), json.dumps(down))
    assert len(text) <= CRM_TEXT_LIMIT
    assert not text.startswith(("=", "+", "-", "@"))
    if up and text:
        assert text.startswith("Up:")


def test_sqlite_score_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.sqlite'}"
    day1 = make_scored(8, seed=18)
    write_outputs(day1, tmp_path, url, crm_batch_size=10, previous=None)
    write_outputs(day1, tmp_path, url, crm_batch_size=10, previous=None)
    assert len(read_table(url, "lead_scores")) == len(day1)
    assert len(read_table(url, "lead_score_history")) == len(day1)


@pytest.mark.service
def test_postgres_score_store(tmp_path, postgres_url):
    day1 = make_scored(15, seed=19, no_consent=())
    write_outputs(day1, tmp_path, postgres_url, crm_batch_size=4, previous=None)
    day2 = next_day(day1, changed=[0, 1])
    day2.loc[4, "status"] = "not scored: no consent"
    write_outputs(day2, tmp_path, postgres_url, crm_batch_size=4, previous=day1)
    write_outputs(day2, tmp_path, postgres_url, crm_batch_size=4, previous=day1)

    scores = read_table(postgres_url, "lead_scores").set_index("entity_id")
    assert len(scores) == len(day1)
    assert scores.loc[day1.loc[0, "entity_id"], "score"] == day2.loc[0, "score"]
    withdrawn = scores.loc[day1.loc[4, "entity_id"]]
    assert withdrawn["status"] == "not scored: no consent" and pd.isna(withdrawn["score"])
    history = read_table(postgres_url, "lead_score_history")
    assert len(history) == 2 * len(day1) - 1
    assert not history.duplicated(["entity_id", "as_of"]).any()
    assert set(history["as_of"]) == {pd.Timestamp(DAY1, tz="UTC"), pd.Timestamp(DAY2, tz="UTC")}


def test_a_no_consent_row_is_blanked_in_every_output_column_and_the_input_kept():
    from pipelines.board import NO_CONSENT_STATUS
    from pipelines.outputs import blank_without_consent

    scored = pd.DataFrame(
        {
            "entity_id": ["a", "b"],
            "status": ["scored", NO_CONSENT_STATUS],
            "score": [80.0, 55.0],  # left behind for "b": must not reach an output
            "band": ["high", None],
            "reasons_text": ["Up: demos +12.", None],
        }
    )

    out = blank_without_consent(scored)

    assert out["score"].isna().tolist() == [False, True]
    assert out["band"].tolist()[0] == "high" and out["reasons_text"].tolist()[0] == "Up: demos +12."
    assert scored.loc[1, "score"] == 55.0  # the caller's frame is untouched
