"""The run lock: one run per output folder, a live holder refused, a stale one taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.run_lock import LOCK_FILE, RunLockedError, run_lock


def write_lock(out: Path, pid: int, host: str | None = None, started: str | None = None) -> Path:
    """A lock file as a run writes it; ``started`` defaults to a few minutes from now (a
    live process must not look newer than its lock, whenever in the session this runs)."""
    if started is None:
        started = (datetime.now(UTC) + timedelta(minutes=5)).isoformat(timespec="seconds")
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    holder = {
        "pid": pid, "host": host or socket.gethostname(), "started": started,
        "command": "nightly", "as_of": "2025-12-08",
    }  # fmt: skip
    path.write_text(json.dumps(holder))
    return path


@pytest.fixture
def live_pid():
    """A live process of this host that is not this one."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_lock_names_its_holder_and_goes_when_the_run_ends(tmp_path):
    out = tmp_path / "out"
    with run_lock(out, "2025-12-08", "nightly") as notes:
        holder = json.loads((out / LOCK_FILE).read_text())
        assert notes == []
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["as_of"] == "2025-12-08" and holder["command"] == "nightly"
        assert holder["started"].endswith("+00:00")
    assert not (out / LOCK_FILE).exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(ZeroDivisionError), run_lock(tmp_path, "2025-12-08", "nightly"):
        1 / 0  # noqa: B018
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_live_holder_stops_the_second_run_with_a_sentence(tmp_path, live_pid):
    path = write_lock(tmp_path, live_pid)
    before = path.read_bytes()
    with pytest.raises(RunLockedError) as caught, run_lock(tmp_path, "2025-12-08", "nightly"):
        pytest.fail("the block must not run")
    message = str(caught.value)
    started = json.loads(before)["started"]
    assert message.startswith(
        f"Another leadscore run (pid {live_pid} on {socket.gethostname()}, started "
        f"{started}, nightly for 2025-12-08) holds "
    )
    assert str(path) in message and "wait for it" in message
    assert path.read_bytes() == before  # not released by the run it refused


def test_a_lock_of_another_host_is_never_taken_over(tmp_path, dead_pid):
    write_lock(tmp_path, dead_pid, host="elsewhere.example")
    with (
        pytest.raises(RunLockedError, match="on elsewhere.example"),
        run_lock(tmp_path, "2025-12-08", "nightly"),
    ):
        pytest.fail("the block must not run")


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, dead_pid, caplog):
    write_lock(tmp_path, dead_pid)
    with caplog.at_level(logging.WARNING), run_lock(tmp_path, "2025-12-09", "score") as notes:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {dead_pid}" in notes[0] and "stale" in notes[0]
    assert "stale run lock" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_of_a_reused_pid_started_after_it_is_stale(tmp_path, live_pid):
    # The pid is alive, but its process started years after the lock was taken.
    write_lock(tmp_path, live_pid, started="2001-01-01T00:00:00+00:00")
    with run_lock(tmp_path, "2025-12-09", "nightly") as notes:
        assert notes and "stale" in notes[0]


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    with run_lock(tmp_path, "2025-12-08", "nightly"):
        with run_lock(tmp_path, "2025-12-08", "nightly") as inner:
            assert inner == []
        assert (tmp_path / LOCK_FILE).exists()  # the outer run still holds it
    assert not (tmp_path / LOCK_FILE).exists()


def forget_command(tmp_path: Path) -> list[str]:
    config = tmp_path / "leadscore.yaml"
    config.write_text(yaml.safe_dump({"output": {"dir": str(tmp_path / "out")}}))
    return ["forget", "E1", "--config", str(config)]


def test_forget_stops_while_a_run_holds_the_folder(tmp_path, live_pid):
    write_lock(tmp_path / "out", live_pid)
    done = CliRunner().invoke(app, forget_command(tmp_path))
    assert done.exit_code == 1
    assert f"Another leadscore run (pid {live_pid} on" in " ".join(done.output.split())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOCK_FILE]  # nothing written


def test_forget_takes_over_a_stale_lock_and_releases_it(tmp_path, dead_pid):
    write_lock(tmp_path / "out", dead_pid)
    done = CliRunner().invoke(app, forget_command(tmp_path))
    assert done.exit_code == 0, done.output
    assert not (tmp_path / "out" / LOCK_FILE).exists()
    assert list((tmp_path / "out" / "erasure").glob("receipt-*.json"))


def test_forget_deletes_the_staged_and_temporary_copies_killed_runs_left(tmp_path):
    out = tmp_path / "out"
    staged = out / "crm" / ".as_of=2025-12-08.staged-4321-0a1b2c3d" / "batch-0001.csv"
    temp = out / "scores" / "as_of=2025-12-08" / ".part-0.parquet.k2j3h4.tmp"
    for path in (staged, temp):
        path.parent.mkdir(parents=True)
        path.write_text("E1,a full copy of personal data\n")

    done = CliRunner().invoke(app, forget_command(tmp_path))

    assert done.exit_code == 0, done.output
    assert not staged.parent.exists() and not temp.exists()
    receipt = json.loads(next((out / "erasure").glob("receipt-*.json")).read_text())
    leftovers = next(s for s in receipt["stores"] if s["store"].startswith("staged"))
    assert leftovers["files_deleted"] == 2
