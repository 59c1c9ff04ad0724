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
from dataclasses import dataclass
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


@dataclass
class RolledUp:
    """The workspace after three nightlies without roll-ups, then the same three with them."""

    without: dict[str, pd.DataFrame]  # scores of the runs without roll-ups (days 2-3)
    second_summary: dict  # the run summary of the second day without roll-ups
    runs: dict[str, dict]  # per day, the inputs of the run summary with roll-ups
    current: list[bool]  # per run with roll-ups, whether rollups/CURRENT existed after it
    scores: dict[str, pd.DataFrame]  # scores of the runs with roll-ups (days 2-3)


@pytest.fixture(scope="module")
def rolled_up(workspace, tmp_path_factory) -> RolledUp:
    """Both tests' starting point, made once per module (and on any worker that needs it)."""
    out, cwd = workspace.out, tmp_path_factory.mktemp("rollup-runs")
    for day in DAYS:  # the first run trains; the others only score
        workspace.run(cwd, "nightly", "--as-of", day)
    without = {day: scores_of(out, day) for day in DAYS[1:]}
    second_summary = summary_of(out, DAYS[1])

    settings = yaml.safe_load(workspace.config.read_text())
    settings["features"] = {"incremental_rollups": True}
    config = cwd / "rollups.yaml"
    config.write_text(yaml.safe_dump(settings))
    runs, current = {}, []
    for day in DAYS:  # the same dates again, same models, roll-ups on
        workspace.run(cwd, "nightly", "--as-of", day, "--config", str(config), with_config=False)
        runs[day] = summary_of(out, day)["inputs"]
        current.append((out / "rollups" / "CURRENT").exists())
    scores = {day: scores_of(out, day) for day in DAYS[1:]}
    return RolledUp(without, second_summary, runs, current, scores)


def test_nightly_runs_with_rollups_score_as_without_and_read_only_the_new_day(workspace, rolled_up):
    runs = rolled_up.runs
    assert "events_read_for_features" not in rolled_up.second_summary["inputs"]
    assert all(rolled_up.current)

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
        pd.testing.assert_frame_equal(
            rolled_up.scores[day], rolled_up.without[day], check_exact=False, rtol=1e-9
        )
    generations = [p.name for p in (workspace.out / "rollups").iterdir() if p.is_dir()]
    assert len(generations) == 1  # older generations are removed once a new one is in force


def test_a_changed_setting_rebuilds_the_rollups_and_forget_deletes_them(
    workspace, rolled_up, tmp_path
):
    """A changed feature setting rebuilds the roll-ups in full; ``forget`` deletes them."""
    settings = yaml.safe_load(workspace.config.read_text())
    settings["features"] = {"incremental_rollups": True, "half_life_days": 7.0}
    config = tmp_path / "changed.yaml"
    config.write_text(yaml.safe_dump(settings))
    assert (workspace.out / "rollups" / "CURRENT").exists()  # made by rolled_up
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
