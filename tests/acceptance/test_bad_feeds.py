"""Bad feeds and a full disk, through ``leadscore nightly --config`` as a user runs it.

One output folder for the module, on a small tmpfs where this machine allows mounting
one (root), so that the last test can fill the disk. A normal day runs first; then
each bad feed is tried on the same run date: an empty feed, a shrunken one, a CSV cut
inside a value and a truncated ``.csv.gz`` stop the run with a sentence and leave the
outputs as they were; the shrunken feed forced with ``LEADSCORE_SOURCES__FORCE_FEED``
runs; out-of-range values are quarantined and counted in the summary with undeclared
event types. Finally the disk is filled: the next date stops with a sentence naming
the file and the cause, the previous outputs intact.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from features.synthetic import source_paths
from pipelines.databases import sql_read
from pipelines.sources import read_files
from tests.acceptance.conftest import BIN

pytestmark = [pytest.mark.slow, pytest.mark.service]

FIRST, NEXT = "2025-12-01", "2025-12-08"
#: Files a failed run may touch without changing an output: the databases (compared by
#: content), the run lock and hidden staging names.
VOLATILE = (".duckdb", ".duckdb.wal", "mlflow.db", "mlflow.db-journal")


def leadscore(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run ``leadscore *args --config FILE``; the caller checks the exit code."""
    return subprocess.run(
        [str(BIN / "leadscore"), *args, "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def said(done: subprocess.CompletedProcess) -> str:
    """Everything the command printed, with Rich's line wrapping undone."""
    return " ".join((done.stdout + done.stderr).split())


def snapshot(out: Path) -> dict[str, str]:
    """SHA-256 of every output file (databases and hidden files aside)."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and not p.name.endswith(VOLATILE)
        and not any(part.startswith(".") for part in p.relative_to(out).parts)
    }


class Site:
    """The module's data, output folder, configs and Prefect environment."""

    def __init__(self, root: Path, workspace, small_disk: bool) -> None:  # noqa: ANN001
        self.root, self.workspace, self.small_disk = root, workspace, small_disk
        self.out = root / "out"
        self.env = workspace.env
        self.events = read_files(source_paths(workspace.data)["events"], "events")

    def config(self, name: str, events: str | None = None) -> Path:
        """A config like the acceptance one, with these events and the module's output."""
        settings = yaml.safe_load(self.workspace.config.read_text())
        settings["output"] = {"dir": str(self.out)}
        if events is not None:
            settings["sources"]["events"] = events
        path = self.root / "conf" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(settings))
        return path

    def feed(self, name: str, frame: pd.DataFrame) -> str:
        """Write an events feed (one Parquet file in a folder); return its folder."""
        folder = self.root / "feeds" / name
        folder.mkdir(parents=True)
        frame.to_parquet(folder / "part-0.parquet", index=False)
        return str(folder)


@pytest.fixture(scope="module")
def site(workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-feeds")
    (root / "out").mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(root / "out")]
    mounted = os.geteuid() == 0 and not subprocess.run(mount, check=False).returncode
    yield Site(root, workspace, small_disk=mounted)
    if mounted:
        subprocess.run(["umount", "-l", str(root / "out")], check=False)


@pytest.fixture(scope="module")
def normal_day(site) -> dict[str, str]:
    """The first nightly run, on the full feed; returns a snapshot of its outputs."""
    done = leadscore(site.config("normal"), site.env, "nightly", "--as-of", FIRST)
    assert done.returncode == 0, said(done)
    summary = json.loads((site.out / "summary.json").read_text())
    assert summary["feeds"]["events_before_as_of"] > 0
    return snapshot(site.out)


def assert_stopped_unchanged(site, before, done, *sentences: str) -> None:  # noqa: ANN001
    """Exit 1 with each sentence, no traceback, outputs as ``before``, scores of FIRST."""
    text = said(done)
    assert done.returncode == 1, text
    for sentence in sentences:
        assert " ".join(sentence.split()) in text
    assert "Traceback" not in text
    assert snapshot(site.out) == before
    assert sql_read(f"duckdb:///{site.out / 'leadscore.duckdb'}", "lead_scores")[
        "as_of"
    ].dt.date.astype(str).unique().tolist() == [FIRST]


def test_an_empty_feed_after_a_normal_day_stops_before_any_write(site, normal_day):
    before = snapshot(site.out)
    events = site.feed("empty", site.events.head(0))
    done = leadscore(site.config("empty", events), site.env, "nightly", "--as-of", FIRST)
    had = json.loads((site.out / "summary.json").read_text())["feeds"]["events_before_as_of"]
    assert_stopped_unchanged(
        site, before, done,
        f"Step 'load inputs' failed: The events feed {events} has no events before {FIRST} "
        f"(the previous run had {had:,} before {FIRST}). Nothing was written.",
        "sources.force_feed: true",
    )  # fmt: skip


def test_a_shrunken_feed_stops_and_runs_when_forced(site, normal_day):
    before = snapshot(site.out)
    kept = site.events.sample(frac=0.3, random_state=1)
    events = site.feed("shrunk", kept)
    config = site.config("shrunk", events)
    done = leadscore(config, site.env, "nightly", "--as-of", FIRST)
    assert_stopped_unchanged(
        site, before, done, f"The events feed {events} shrank from", "sources.max_feed_shrink"
    )
    forced_env = {**site.env, "LEADSCORE_SOURCES__FORCE_FEED": "true"}
    forced = leadscore(config, forced_env, "nightly", "--as-of", FIRST)
    assert forced.returncode == 0, said(forced)
    summary = json.loads((site.out / "summary.json").read_text())
    assert any("went on because sources.force_feed is true" in w for w in summary["warnings"])


def test_a_csv_cut_inside_a_value_is_named_with_its_line(site, normal_day):
    before = snapshot(site.out)
    folder = site.root / "feeds" / "cut"
    folder.mkdir(parents=True)
    rows = site.events.head(20)[["entity_id", "event_time", "event_type", "value"]]
    text = rows.to_csv(index=False)
    (folder / "events.csv").write_text(text + "00001,2025-11-30 10:00:00+00:00,page_vi")
    done = leadscore(site.config("cut", str(folder)), site.env, "nightly", "--as-of", FIRST)
    assert_stopped_unchanged(
        site, before, done,
        f"events ({folder / 'events.csv'}): line 22 (the header is line 1) has 3 fields where "
        "the header has 4",
        "'00001,2025-11-30 10:00:00+00:00,page_vi'",
    )  # fmt: skip


def test_a_truncated_csv_gz_is_named(site, normal_day):
    before = snapshot(site.out)
    folder = site.root / "feeds" / "truncated"
    folder.mkdir(parents=True)
    data = gzip.compress(site.events.head(5_000).to_csv(index=False).encode())
    (folder / "events.csv.gz").write_bytes(data[: len(data) // 2])
    done = leadscore(site.config("truncated", str(folder)), site.env, "nightly", "--as-of", FIRST)
    assert_stopped_unchanged(
        site, before, done,
        f"The events file {folder / 'events.csv.gz'} ends early (truncated or still being written)",
    )  # fmt: skip


def test_out_of_range_values_are_quarantined_and_unknown_types_counted(site, normal_day):
    base = site.events.iloc[:1]
    odd = pd.concat([base] * 8, ignore_index=True).assign(
        event_time=pd.date_range("2025-11-20 09:00", periods=8, freq="h", tz="UTC"),
        event_type=["nps_answer", "session", "purchase", "page_view"] + ["page_vi"] * 3 + ["x"],
        value=[99.0, -5.0, 1e308, np.inf, np.nan, np.nan, np.nan, np.nan],
    )
    events = site.feed("values", pd.concat([site.events, odd], ignore_index=True))
    done = leadscore(site.config("values", events), site.env, "nightly", "--as-of", FIRST)
    assert done.returncode == 0, said(done)
    feeds = json.loads((site.out / "summary.json").read_text())["feeds"]
    assert feeds["quarantined"] == {
        "NPS score outside 0 to 10": 1,
        "session minutes below 0": 1,
        "value larger than 1e+12 in size": 1,
        "value not finite (inf or -inf)": 1,
    }
    assert {s["value"] for s in feeds["quarantine_samples"]} == {99.0, -5.0, 1e308, "inf"}
    assert feeds["unknown_event_types"] == {"page_vi": 3, "x": 1}


def test_a_full_disk_names_the_file_and_keeps_the_previous_outputs(site, normal_day):
    if not site.small_disk:
        pytest.skip("no tmpfs here: tests/pipelines/test_feeds.py simulates a full disk")
    config = site.config("normal")
    before = snapshot(site.out)
    filler = site.out / ".filler"
    free = os.statvfs(site.out).f_bavail * os.statvfs(site.out).f_frsize
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(free - 150_000, 0))
    try:
        done = leadscore(config, site.env, "nightly", "--as-of", NEXT)
    finally:
        filler.unlink()
    text = said(done)
    assert done.returncode == 1, text
    assert f"No space left on device while writing {site.out}" in text
    assert "free space or point output.dir elsewhere" in text
    assert "cannot rollback" not in text and "Traceback" not in text
    assert snapshot(site.out) == before
    scores = sql_read(f"duckdb:///{site.out / 'leadscore.duckdb'}", "lead_scores")
    assert scores["as_of"].dt.date.astype(str).unique().tolist() == [FIRST]
    assert not (site.out / "scores" / f"as_of={NEXT}").exists()


def test_a_feed_that_grows_by_a_file_has_only_that_file_counted(site, normal_day):
    """The profile's day counts are remembered per file: the next night counts the new one.

    A copy of the module's outputs (its champions: no training), so the other tests'
    outputs stay as they were.
    """
    out = Path(shutil.copytree(site.out, site.root / "out-growing"))
    folder = site.root / "feeds" / "growing"
    folder.mkdir(parents=True)
    site.events.to_parquet(folder / "part-0.parquet", index=False)
    settings = yaml.safe_load(site.config("growing", str(folder)).read_text())
    settings["output"]["dir"] = str(out)
    config = site.root / "conf" / "growing-own-output.yaml"
    config.write_text(yaml.safe_dump(settings))

    first = leadscore(config, site.env, "--verbose", "nightly", "--as-of", FIRST)
    new = site.events.sample(40, random_state=3).assign(
        event_time=pd.date_range(f"{FIRST} 06:00", periods=40, freq="4h", tz="UTC")
    )
    new.to_parquet(folder / "part-1.parquet", index=False)
    second = leadscore(config, site.env, "--verbose", "nightly", "--as-of", NEXT)

    assert first.returncode == 0, said(first)
    assert second.returncode == 0, said(second)
    assert "Counted the events of 1 new or changed file(s) by day; 0 remembered." in said(first)
    assert "Counted the events of 1 new or changed file(s) by day; 1 remembered." in said(second)
    summary = json.loads((out / "summary.json").read_text())
    every = pd.concat([site.events, new], ignore_index=True)
    at = pd.Timestamp(NEXT, tz="UTC")
    assert summary["inputs"]["events"] == len(every)
    assert summary["feeds"]["events_before_as_of"] == int((every["event_time"] < at).sum())
    assert summary["inputs"]["future_events"] == int((every["event_time"] > at).sum())
