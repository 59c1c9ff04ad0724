"""A feed that adds a file a day, through the CLI (issue 17: the day after's checks).

The events' checks of the files a run read are remembered; the next day's run, whose
folder holds those files unchanged and the new day's file, checks only the new file
and counts only the duplicates its rows could make. Its inputs are those of a run
that checks every file (the same counts in the run summary), and a copy of an old
event in the new file is counted and dropped as a duplicate, as a full check does.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.service]

FIRST, NEXT = "2025-12-02", "2025-12-03"


def feed_of(events: Path, folder: Path) -> Path:
    """``events``' files cut to the events before :data:`FIRST`, as a feed's folder."""
    folder.mkdir()
    for source in sorted(events.rglob("*.parquet")):
        duckdb.execute(f"COPY (SELECT * FROM read_parquet('{source}') WHERE event_time < "
                       f"TIMESTAMPTZ '{FIRST} 00:00:00+00') TO "
                       f"'{folder / source.name}' (FORMAT parquet)")  # fmt: skip
    return folder


def deliver_day(events: Path, feed: Path, repeat_one: bool) -> None:
    """The events of :data:`FIRST`'s day as one more file (with a copy of an old event)."""
    old = (f"UNION ALL (SELECT * FROM read_parquet('{feed}/*.parquet') ORDER BY event_time "
           "DESC, entity_id LIMIT 1)") if repeat_one else ""  # fmt: skip
    duckdb.execute(f"COPY (SELECT * FROM read_parquet('{events}/**/*.parquet') WHERE "
                   f"event_time >= TIMESTAMPTZ '{FIRST} 00:00:00+00' AND event_time < "
                   f"TIMESTAMPTZ '{NEXT} 00:00:00+00' {old}) TO "
                   f"'{feed / f'day-{FIRST}.parquet'}' (FORMAT parquet)")  # fmt: skip


def inputs_of(out: Path, day: str) -> dict:
    return json.loads((out / "summaries" / f"{day}.json").read_text())["inputs"]


@pytest.mark.parametrize("repeat_one", [False, True], ids=["new-day", "new-day-with-a-copy"])
def test_the_next_days_file_alone_is_checked_and_the_inputs_are_a_full_checks(
    workspace, tmp_path, repeat_one
):
    feed = feed_of(workspace.data / "events", tmp_path / "feed")
    settings = yaml.safe_load(workspace.config.read_text())
    settings["sources"]["events"] = str(feed)
    settings["output"]["dir"] = str(tmp_path / "out")
    config = tmp_path / "feed.yaml"
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "out"

    def score(day: str) -> str:
        done = workspace.run(tmp_path, "-v", "score", "--as-of", day, "--config", str(config),
                             with_config=False)  # fmt: skip
        return done.stdout + done.stderr

    first = score(FIRST)  # every file checked; the checks remembered with the outputs
    assert "new one(s) checked" not in first
    deliver_day(workspace.data / "events", feed, repeat_one)
    incremental = score(NEXT)
    assert "only the 1 new one(s) checked" in " ".join(incremental.split())
    remembered = inputs_of(out, NEXT)

    (out / "checks" / "events.json").unlink()  # nothing remembered: every file checked
    full = score(NEXT)
    assert "new one(s) checked" not in full
    assert remembered == inputs_of(out, NEXT)
    assert remembered["duplicate_events"] == (1 if repeat_one else 0)
    assert remembered["events"] > 0
