"""Fault injection: ``leadscore nightly`` killed with SIGKILL, and two runs at once.

A first night (D1) trains and writes everything; it is started twice at once, and the
second run must stop at once on the run lock with a sentence naming the holder, with
one model version per target. Then ``leadscore nightly --as-of D2`` is run again and
again with ``LEADSCORE_TEST_KILL_AT`` set to the next kill point (a test hook: the
process SIGKILLs itself at that step, see :func:`pipelines.atomic_files.kill_point`),
at every step boundary (after recovery, loading, retention, features, champions,
previous scores, scoring, summary, writing, retention, publishing) and inside the
output commit. Each run is the rerun of the
killed one before it: it must take over the stale lock and recover all that run left
(none of those leftovers may remain), and after each kill the D1 outputs must be
byte-identical (and, for kills before the database commit, the score table and the
board index too). A last, normal run of D2 must complete, leave no staged, temporary
or lock file anywhere in the output folder, leave the stores together on D2 (score
table, partition, CRM folder, board page and index, summary) and leave no model
version without a promotion decision. One chain instead of a fresh folder and a
rerun per kill point keeps the module within a few minutes on two cores.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from models import tracking
from models.tracking_registry import DECISION_TAG, ORPHAN_TAG
from pipelines.atomic_files import KILL_AT_ENV, is_staging_dir, is_temp_file, swapped_final
from pipelines.databases import sql_read
from pipelines.recovery import latest_score_date
from pipelines.run_lock import LOCK_FILE
from pipelines.settings import load_settings
from tests.acceptance.conftest import BIN

pytestmark = [pytest.mark.slow, pytest.mark.service]

D1, D2 = "2025-12-01", "2025-12-08"
#: (kill point, whether the database commit of D2 had happened when it fired), in the
#: order the runs are killed: each run first recovers what the kill before it left.
KILL_POINTS = [
    # At every step boundary of a next-day run before the commit (``flows._step``) ...
    ("after recover", False),
    ("after load inputs", False),
    ("after event retention", False),
    ("after build features", False),
    ("after load champions", False),
    ("after read previous scores", False),
    ("after score", False),
    ("after summarise", False),
    # ... inside the output commit (``pipelines.output_commit``, ``atomic_files``) ...
    ("staged", False),  # partition and CRM staged, database untouched
    ("committed", True),  # score tables on D2, partition still a temporary file
    ("dir-swap", True),  # partition in, CRM folder halfway through its swap
    ("crm", True),  # CRM folder in, board not written
    # ... at the step boundaries after it ...
    ("after write outputs", True),
    ("after retention", True),
    ("after publish summary", True),
    # ... and in the commit again, now with every file of D2 in place.
    ("committed", True),
]


def command(workspace, day: str) -> list[str]:
    return [str(BIN / "leadscore"), "nightly", "--as-of", day, "--config", str(workspace.config)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_of_day(out: Path, day: str) -> dict[str, str]:
    """Hashes of every file a run of ``day`` wrote under its own date."""
    paths = [
        *(out / "scores" / f"as_of={day}").rglob("*"),
        *(out / "crm" / f"as_of={day}").rglob("*"),
        out / "board" / f"{day}.html",
        out / "summaries" / f"{day}.json",
        *(out / "training").glob(f"*-{day}.json"),
    ]
    return {str(p.relative_to(out)): digest(p) for p in paths if p.is_file()}


def score_table(database_url: str) -> list[dict]:
    rows = sql_read(database_url, "lead_scores").sort_values("entity_id")
    return json.loads(rows.to_json(orient="records", date_format="iso"))


def leftovers(out: Path) -> list[str]:
    """Staged folders, temporary files, set-aside folders and the lock under ``out``."""
    found = [
        p
        for p in out.rglob("*")
        if is_temp_file(p) or is_staging_dir(p) or swapped_final(p) is not None
    ]
    found += [out / LOCK_FILE] if (out / LOCK_FILE).exists() else []
    return sorted(str(p.relative_to(out)) for p in found)


def versions(tracking_uri: str) -> dict[str, list[dict[str, str]]]:
    """Tags of each registered version, by model."""
    tracking.configure(tracking_uri)
    client = MlflowClient()
    found: dict[str, list[dict[str, str]]] = {}
    for model in client.search_registered_models():
        found[model.name] = [
            dict(v.tags) for v in client.search_model_versions(f"name = '{model.name}'")
        ]
    return found


def assert_stores_agree(out: Path, database_url: str, day: str) -> None:
    assert str(latest_score_date(database_url)) == day
    assert (out / "scores" / f"as_of={day}" / "part-0.parquet").is_file()
    assert list((out / "crm" / f"as_of={day}").glob("batch-*.csv"))
    page = out / "board" / f"{day}.html"
    assert page.read_bytes() == (out / "board" / "index.html").read_bytes()
    assert json.loads((out / "summaries" / f"{day}.json").read_text())["as_of"] == day


def read_lock_when_written(lock: Path, holder: subprocess.Popen) -> dict:
    """The lock's content once its holder has written it.

    The holder creates the file (``O_EXCL``) and then writes into it: a read in between
    finds it empty, which the product's own reader waits out too (``run_lock._read``).
    """
    deadline = time.monotonic() + 300
    while holder.poll() is None and time.monotonic() < deadline:
        try:
            return json.loads(lock.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"the first run never wrote {lock} (exit {holder.poll()})")


@pytest.fixture(scope="module")
def settings(workspace):
    return load_settings(workspace.config)


@pytest.fixture(scope="module")
def first_night(workspace, tmp_path_factory) -> dict:
    """D1 started twice at once on an empty folder: the first run's holder, the second run."""
    cwd = tmp_path_factory.mktemp("cwd")
    lock = workspace.out / LOCK_FILE
    verbose = [command(workspace, D1)[0], "--verbose", *command(workspace, D1)[1:]]
    first = subprocess.Popen(
        verbose, cwd=cwd, env=workspace.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    holder = read_lock_when_written(lock, first)
    second = subprocess.run(
        command(workspace, D1), cwd=cwd, env=workspace.env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, f"{out}\n{err}"
    return {"holder": holder, "second": second, "log": f"{out}\n{err}"}


def test_a_first_night_says_no_champion_only_for_targets_left_without_one(first_night, workspace):
    """Issue 13, defect 5: the warning used to come right before training a champion."""
    summary = json.loads((workspace.out / "summaries" / f"{D1}.json").read_text())
    promoted = [t for t, why in summary["retrain"].items() if "promoted to @champion" in why]
    assert promoted, summary["retrain"]  # the acceptance config promotes on this history
    for target in promoted:
        assert f"no @champion for {target}" not in first_night["log"]


def test_a_second_run_of_the_same_date_stops_on_the_lock(first_night, workspace, settings):
    second, holder = first_night["second"], first_night["holder"]
    message = " ".join(second.stderr.split())
    assert second.returncode == 1, f"{second.stdout}\n{second.stderr}"
    assert (
        f"Another leadscore run (pid {holder['pid']} on {holder['host']}, started "
        f"{holder['started']}, nightly for {D1}) holds {workspace.out / LOCK_FILE}"
    ) in message
    # One model version per target for the date, each with its decision; nothing left over.
    registered = versions(settings.tracking_uri)
    assert sorted(registered) == ["churn", "conversion"]
    assert all(len(tags) == 1 and DECISION_TAG in tags[0] for tags in registered.values())
    assert leftovers(workspace.out) == []
    assert_stores_agree(workspace.out, settings.database_url, D1)


def test_runs_killed_at_each_step_leave_the_previous_night_and_the_rerun_repairs(
    first_night, workspace, settings, tmp_path
):
    out = workspace.out
    night1, table1 = files_of_day(out, D1), score_table(settings.database_url)
    index1 = digest(out / "board" / "index.html")
    left_before: set[str] = set()
    for step, committed in KILL_POINTS:
        killed = subprocess.run(
            command(workspace, D2), cwd=tmp_path, env={**workspace.env, KILL_AT_ENV: step},
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, f"{step}:\n{killed.stdout}\n{killed.stderr}"
        assert files_of_day(out, D1) == night1, step
        if not committed:
            assert score_table(settings.database_url) == table1, step
            assert digest(out / "board" / "index.html") == index1, step
        left = set(leftovers(out))
        # SIGKILL runs no finally: the lock stays, for the next run to take over. What
        # the kill before left was recovered by this run: none of it is there any more.
        assert LOCK_FILE in left and not (left_before - {LOCK_FILE}) & left, (step, left)
        left_before = left

    workspace.run(tmp_path, "nightly", "--as-of", D2)

    assert leftovers(out) == []
    assert files_of_day(out, D1) == night1
    assert_stores_agree(out, settings.database_url, D2)
    summary = json.loads((out / "summaries" / f"{D2}.json").read_text())
    assert any("stale run lock" in w for w in summary["warnings"]), summary["warnings"]
    assert summary["recovered"], summary
    for tags in versions(settings.tracking_uri).values():
        assert len(tags) == 1 and DECISION_TAG in tags[0] and ORPHAN_TAG not in tags[0]
