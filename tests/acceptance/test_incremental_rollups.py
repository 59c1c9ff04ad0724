"""``features.incremental_rollups`` through the CLI (issue 17 item 5).

Consecutive nightly runs with the roll-ups on give the scores of the runs with them
off (probabilities to 1e-9, bands and reasons exactly), and the run of the next day
aggregates only the events of the day before it: the run summary says how many
events its features read, and that is the count of that one day's events.
``leadscore forget`` deletes the roll-ups (the receipt says so) and the next nightly
rebuilds them from the events without the forgotten entities (their keyed hashes are
listed: the conftest's config sets a pseudonym key).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.service]

DAYS = ("2025-12-01", "2025-12-02", "2025-12-03")


def scores_of(out: Path, day: str) -> pd.DataFrame:
    frame = pd.read_parquet(out / "scores" / f"as_of={day}")
    return frame.sort_values("entity_id").reset_index(drop=True)


def summary_of(out: Path, day: str) -> dict:
    return json.loads((out / "summaries" / f"{day}.json").read_text())


def events_between(data: Path, start: str | None, end: str) -> int:
    since = "" if start is None else f"event_time >= TIMESTAMPTZ '{start} 00:00:00+00' AND "
    query = (
        f"SELECT count(*) FROM read_parquet('{data / 'events'}/**/*.parquet') "
        f"WHERE {since}event_time < TIMESTAMPTZ '{end} 00:00:00+00'"
    )
    return duckdb.sql(query).fetchall()[0][0]


def rollup_ids(out: Path) -> set[str]:
    """Every entity id in any roll-up Parquet file."""
    ids: set[str] = set()
    for path in (out / "rollups").rglob("*.parquet"):
        ids |= set(pd.read_parquet(path, columns=["entity_id"])["entity_id"].astype(str))
    return ids


def test_nightly_runs_with_rollups_score_as_without_and_read_only_the_new_day(workspace, tmp_path):
    out = workspace.out
    for day in DAYS:  # the first run trains; the others only score
        workspace.run(tmp_path, "nightly", "--as-of", day)
    without = {day: scores_of(out, day) for day in DAYS[1:]}
    assert "events_read_for_features" not in summary_of(out, DAYS[1])["inputs"]

    settings = yaml.safe_load(workspace.config.read_text())
    settings["features"] = {"incremental_rollups": True}
    config = tmp_path / "rollups.yaml"
    config.write_text(yaml.safe_dump(settings))
    runs = {}
    for day in DAYS:  # the same dates again, same models, roll-ups on
        done = workspace.run(tmp_path, "nightly", "--as-of", day, "--config", str(config),
                             with_config=False)  # fmt: skip
        runs[day] = summary_of(out, day)["inputs"]
        assert (out / "rollups" / "CURRENT").exists(), done.stdout

    # The first run with roll-ups builds them from every event before its date ...
    assert runs[DAYS[0]]["rollups_used"] == 0
    assert runs[DAYS[0]]["events_read_for_features"] == events_between(
        workspace.data, None, DAYS[0]
    )
    # ... each next day aggregates only the day before it.
    for before, day in zip(DAYS, DAYS[1:], strict=False):
        new = events_between(workspace.data, before, day)
        assert 0 < new < runs[DAYS[0]]["events_read_for_features"] / 100
        assert runs[day]["rollups_used"] == 1
        assert runs[day]["events_read_for_features"] == new
        with_rollups = scores_of(out, day)
        pd.testing.assert_frame_equal(with_rollups, without[day], check_exact=False, rtol=1e-9)
    generations = [p.name for p in (out / "rollups").iterdir() if p.is_dir()]
    assert len(generations) == 1  # older generations are removed once a new one is in force


def test_a_changed_setting_rebuilds_the_rollups_and_forget_deletes_them(workspace, tmp_path):
    """A changed feature setting rebuilds the roll-ups in full; ``forget`` deletes them."""
    settings = yaml.safe_load(workspace.config.read_text())
    settings["features"] = {"incremental_rollups": True, "half_life_days": 7.0}
    config = tmp_path / "changed.yaml"
    config.write_text(yaml.safe_dump(settings))
    assert (workspace.out / "rollups" / "CURRENT").exists()  # left by the test above
    workspace.run(tmp_path, "nightly", "--as-of", DAYS[2], "--config", str(config),
                  with_config=False)  # fmt: skip
    inputs = summary_of(workspace.out, DAYS[2])["inputs"]
    assert inputs["rollups_used"] == 0
    assert inputs["events_read_for_features"] == events_between(workspace.data, None, DAYS[2])

    # Forgetting entities deletes the roll-ups; the next run rebuilds them without them.
    out = workspace.out
    ids = sorted(rollup_ids(out))[:2]
    assert len(ids) == 2  # the roll-ups hold these entities
    workspace.run(tmp_path, "forget", *ids, "--config", str(config), with_config=False)
    assert not (out / "rollups").exists()
    receipt = json.loads(next((out / "erasure").glob("receipt-*.json")).read_text())
    store = next(s for s in receipt["stores"] if s["store"].startswith("incremental roll-ups"))
    assert store["files_deleted"] > 0
    workspace.run(tmp_path, "nightly", "--as-of", DAYS[-1], "--config", str(config),
                  with_config=False)  # fmt: skip
    assert summary_of(out, DAYS[-1])["inputs"]["rollups_used"] == 0  # rebuilt in full
    assert (out / "rollups" / "CURRENT").exists()
    assert rollup_ids(out)  # rebuilt ...
    assert not set(ids) & rollup_ids(out)  # ... without the forgotten entities
