"""The light registry listing (models.tracking_index) gives mlflow's rows, and
``leadscore models`` prints them without importing mlflow, pandas or lightgbm."""

from __future__ import annotations

import math
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import fields
from datetime import UTC
from pathlib import Path

import pytest
from mlflow import MlflowClient

from models import tracking, tracking_registry
from models.tracking_index import (
    KEY_METRICS,
    ChampionFile,
    RegisteredVersion,
    champion_file,
    list_versions,
)

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
#: Packages ``leadscore models`` must not import on the stores the index reads.
HEAVY = {"mlflow", "pandas", "lightgbm", "sklearn", "numpy"}


def register_twice(trained) -> str:  # noqa: ANN001
    """Two versions of ``conversion`` in the configured store, with a second alias."""
    for _ in range(2):
        run_id, version = tracking.log_training_run(trained)
        tracking_registry.register_and_promote(trained, run_id, version)
    MlflowClient().set_registered_model_alias("conversion", "candidate", version)
    return version


def mlflow_rows() -> list[RegisteredVersion]:
    """What the mlflow path (tracking_registry.list_models) lists, as index rows."""
    frame = tracking_registry.list_models()
    return [RegisteredVersion(**record) for record in frame.to_dict("records")]


def assert_same_rows(rows: list[RegisteredVersion] | None, expected: list[RegisteredVersion]):
    assert rows is not None and rows
    assert rows == expected
    assert [r.version for r in rows] == sorted((r.version for r in rows), reverse=True)
    for row in rows:
        assert type(row.version) is int and row.created.tzinfo is not None
        assert row.created.utcoffset() == UTC.utcoffset(None)
        assert not any(math.isnan(getattr(row, key)) for key in (*KEY_METRICS, "rule_roc_auc"))


@pytest.fixture(scope="module")
def local_store(tmp_path_factory, trained):
    """An embedded store with two registered versions of a real training."""
    output = tmp_path_factory.mktemp("tracking_index") / "output"
    uri = f"sqlite:///{output / 'mlflow.db'}"
    tracking.configure(uri)
    version = register_twice(trained)
    return {"uri": uri, "output": output, "version": version}


def test_rows_have_the_listing_columns():
    names = [f.name for f in fields(RegisteredVersion)]
    assert names == [
        "model", "version", "aliases", "created", "run_id", "feature_set_version",
        "out_of_time", *KEY_METRICS, "rule_roc_auc",
    ]  # fmt: skip


def test_sqlite_store_lists_what_mlflow_lists(local_store):
    tracking.configure(local_store["uri"])
    rows = list_versions(local_store["uri"])
    assert_same_rows(rows, mlflow_rows())
    assert [r.version for r in rows] == [2, 1]
    assert "candidate" in rows[0].aliases.split(", ")
    assert rows[0].feature_set_version == "engagement-v1-test"
    assert list_versions(local_store["uri"], ("churn",)) == []


def test_stores_only_mlflow_reads_fall_back(monkeypatch, tmp_path):
    assert list_versions("postgresql://user@db/mlflow") is None
    assert list_versions(f"file://{tmp_path}") is None
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team")
    assert list_versions("http://127.0.0.1:9") is None
    broken = tmp_path / "other.db"
    broken.write_bytes(b"")  # an empty database: not MLflow's schema
    assert list_versions(f"sqlite:///{broken}") is None


@pytest.mark.service
def test_tracking_server_lists_what_mlflow_lists(mlflow_server, trained):
    tracking.configure(mlflow_server["url"])
    register_twice(trained)
    rows = list_versions(mlflow_server["url"])
    assert_same_rows(rows, mlflow_rows())
    assert {"conversion"} == {r.model for r in rows}


def test_leadscore_models_prints_the_table_without_importing_mlflow(local_store, tmp_path):
    config = tmp_path / "leadscore.yaml"
    config.write_text(f"output:\n  dir: {local_store['output']}\n")
    env = {**os.environ, "COLUMNS": "200", "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(
        [str(BIN / "leadscore"), "models", "--config", str(config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "Registered models (newest first)" in lines[0]
    rows = [line.split("│")[1:-1] for line in lines if line.startswith("│")]
    cells = [[cell.strip() for cell in row] for row in rows]
    tracking.configure(local_store["uri"])
    expected = mlflow_rows()
    assert [c[:3] for c in cells] == [[r.model, str(r.version), r.aliases or "-"] for r in expected]
    for cell, row in zip(cells, expected, strict=True):
        assert cell[3] == row.created.strftime("%Y-%m-%d %H:%M")
        assert cell[4:7] == [f"{row.roc_auc:.3f}", f"{row.rule_roc_auc:.3f}", f"{row.ece:.4f}"]
        assert cell[7] == (
            "out-of-time" if row.out_of_time.lower() == "true" else "not out-of-time"
        )
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()}
    heavy = {name for name in imported if name.split(".")[0] in HEAVY}
    assert not heavy, f"`leadscore models` imported {sorted(heavy)[:5]}"
    assert "models.tracking" not in imported and "models.tracking_index" in imported


def test_champion_is_read_without_mlflow_as_mlflow_loads_it(local_store, tmp_path, monkeypatch):
    tracking.configure(local_store["uri"])
    expected = tracking_registry.load_champion("conversion")
    found = champion_file(local_store["uri"], "conversion")
    assert found is not None and found.version == expected.metadata["registered_version"]
    assert pickle.dumps(found.load()) == pickle.dumps(expected)  # metadata included
    assert champion_file(local_store["uri"], "churn") == ChampionFile("churn", None)
    assert champion_file("postgresql://user@db/mlflow", "conversion") is None
    copy = tmp_path / "mlflow.db"
    shutil.copy(local_store["output"] / "mlflow.db", copy)
    with sqlite3.connect(copy) as db:  # a champion a dead run left: never loaded
        db.execute(
            "INSERT INTO model_version_tags (key, value, name, version, workspace)"
            " VALUES (?, 'true', 'conversion', ?, 'default')",
            (tracking_registry.ORPHAN_TAG, int(found.version)),
        )
    orphan = champion_file(f"sqlite:///{copy}", "conversion")
    assert orphan is not None and orphan.orphan and orphan.load() is None
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team")
    assert champion_file(local_store["uri"], "conversion") is None  # mlflow's to read


def test_the_nightly_loads_champions_without_importing_mlflow(local_store):
    code = (
        "import pickle, sys; from pipelines import steps; "
        f"found = steps.load_champions({local_store['uri']!r}); "
        "assert 'mlflow' not in sys.modules; sys.stdout.buffer.write(pickle.dumps(found))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tracking.configure(local_store["uri"])
    expected = {"conversion": tracking_registry.load_champion("conversion"), "churn": None}
    assert done.stdout == pickle.dumps(expected)
