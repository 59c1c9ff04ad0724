"""Crash recovery: each kind of leftover a killed run leaves is cleaned or completed."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
from mlflow import MlflowClient

from models import tracking, tracking_registry
from pipelines import output_commit
from pipelines.output_commit import write_outputs
from pipelines.outputs import crm_dir, partition_dir
from pipelines.recovery import Recovery, clear_leftovers, latest_score_date, recover
from pipelines.settings import load_settings
from tests.pipelines.test_board import make_scored
from tests.pipelines.test_outputs import next_day

D1, D2 = "2025-06-01", "2025-06-02"


def settings_for(out: Path):
    return load_settings(None, output={"dir": str(out), "crm_batch_size": 7})


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def crash_at(monkeypatch, step: str) -> None:
    """Make the commit protocol stop at ``step`` (as its kill point would, minus SIGKILL)."""

    def stop(name: str) -> None:
        if name == step:
            raise KeyboardInterrupt(f"stopped at {step}")

    monkeypatch.setattr(output_commit, "kill_point", stop)


@pytest.fixture
def day1(tmp_path):
    """An output folder after a complete first run, and its database URL."""
    out = tmp_path / "out"
    scored = make_scored(30, seed=10)
    url = load_settings(None, output={"dir": str(out)}).database_url
    write_outputs(scored, out, url, crm_batch_size=7, previous=None)
    return out, url, scored


def test_leftover_staging_temp_files_and_swaps_are_settled(tmp_path):
    out = tmp_path / "out"
    keep = {
        "scores/as_of=2025-06-01/part-0.parquet": b"p",
        "crm/as_of=2025-06-01/batch-0001.csv": b"c",
        "board/index.html": b"i",
        ".leadscore.lock": b"{}",
        "features/as_of=2025-06-01.parquet": b"f",
    }
    leftovers = {
        "crm/.as_of=2025-06-02.staged/batch-0001.csv": b"old fixed name",
        "crm/.as_of=2025-06-02.staged-123-0a1b2c3d/batch-0001.csv": b"unique name",
        "scores/as_of=2025-06-02/.part-0.parquet.k2j3h4.tmp": b"partition copy",
        "board/.index.html.abc123.tmp": b"page copy",
        "summaries/.2025-06-02.json.x.tmp": b"summary",
        "crm/.as_of=2025-06-01.previous/batch-0001.csv": b"swap finished, cleanup missed",
        "crm/.as_of=2025-05-31.previous/batch-0001.csv": b"swap interrupted",
    }
    for name, content in {**keep, **leftovers}.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)

    report = clear_leftovers(out)

    assert (report.staged_removed, report.temp_files_removed) == (2, 3)
    assert (report.swaps_finished, report.swaps_undone) == (1, 1)
    restored = {"crm/as_of=2025-05-31/batch-0001.csv": b"swap interrupted"}
    assert tree(out) == {**keep, **restored}
    assert clear_leftovers(out).counts() == {}


def test_a_crash_after_the_partition_rename_is_completed_from_the_partition(
    day1, tmp_path, monkeypatch
):
    out, url, scored = day1
    later = next_day(scored, changed=list(range(12)), as_of=D2)
    # What the run would have written had it not stopped, in a second folder.
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    reference_url = url.replace(str(out), str(reference))
    write_outputs(later, reference, reference_url, crm_batch_size=7, previous=scored)
    crash_at(monkeypatch, "partition")  # table and partition on D2; CRM and board not
    with pytest.raises(KeyboardInterrupt):
        write_outputs(later, out, url, crm_batch_size=7, previous=scored)
    monkeypatch.undo()
    assert str(latest_score_date(url)) == D2 and not crm_dir(out, date.fromisoformat(D2)).exists()

    report = recover(settings_for(out))

    assert report.files_rewritten == 2 and "rewritten" in report.warnings[-1]
    written, expected = tree(out), tree(reference)
    for name in ("crm/as_of=2025-06-02", "board/2025-06-02.html", "board/index.html"):
        assert {k: v for k, v in written.items() if k.startswith(name)} == {
            k: v for k, v in expected.items() if k.startswith(name)
        }, name
    assert recover(settings_for(out)).counts() == {}  # the stores agree now


def test_a_board_index_behind_its_page_is_brought_forward(day1, monkeypatch):
    out, url, scored = day1
    later = next_day(scored, changed=[1, 2], as_of=D2)
    write_outputs(later, out, url, crm_batch_size=7, previous=scored)
    page = out / "board" / f"{D2}.html"
    (out / "board" / "index.html").write_bytes((out / "board" / f"{D1}.html").read_bytes())

    report = recover(settings_for(out))

    assert report.files_rewritten == 1
    assert (out / "board" / "index.html").read_bytes() == page.read_bytes()


def test_a_missing_partition_of_the_score_table_date_is_a_warning(day1, monkeypatch):
    out, url, scored = day1
    later = next_day(scored, changed=[1, 2], as_of=D2)
    crash_at(monkeypatch, "committed")  # table on D2, nothing else
    with pytest.raises(KeyboardInterrupt):
        write_outputs(later, out, url, crm_batch_size=7, previous=scored)
    monkeypatch.undo()
    before = tree(out)

    report = recover(settings_for(out))

    assert not (partition_dir(out, date.fromisoformat(D2))).exists()
    assert len(report.warnings) == 1
    assert (
        f"on {D2} but the partition" in report.warnings[0] and "run the date" in report.warnings[0]
    )
    assert tree(out) == before  # nothing invented


def test_recovery_on_an_empty_or_consistent_folder_does_nothing(day1, tmp_path):
    assert recover(settings_for(tmp_path / "none")) == Recovery()
    out, _, _ = day1
    before = tree(out)
    report = recover(settings_for(out))
    assert report.counts() == {} and report.warnings == []
    assert tree(out) == before


def test_a_version_registered_without_a_decision_is_tagged_and_never_a_champion(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    settings = settings_for(out)
    tracking.configure(settings.tracking_uri)
    client = MlflowClient()
    name = tracking.registered_name("conversion")
    client.create_registered_model(name)
    decided = client.create_model_version(name, source=str(tmp_path / "model-1"))
    client.set_model_version_tag(name, decided.version, tracking_registry.DECISION_TAG, "champion")
    orphan = client.create_model_version(name, source=str(tmp_path / "model-2"))

    report = recover(settings)

    assert report.orphan_versions == 1 and f"{name} v{orphan.version}" in report.warnings[-1]
    tags = client.get_model_version(name, orphan.version).tags
    assert tags[tracking_registry.ORPHAN_TAG] == "true"
    assert tracking_registry.ORPHAN_TAG not in client.get_model_version(name, decided.version).tags
    assert recover(settings).orphan_versions == 0  # tagged once
    # Even an alias pointing at it does not make it a champion.
    client.set_registered_model_alias(name, tracking_registry.CHAMPION, orphan.version)
    assert tracking_registry.load_champion("conversion") is None
