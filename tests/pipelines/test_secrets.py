"""Secrets never reach the tracking store: trained through the CLI, every byte searched.

A user sets the pseudonymisation key and a PostgreSQL score-store URL with a password
(both in the environment, as the README says), trains with ``leadscore train
--config``, and then every file of the MLflow store, the SQLite database and every
artifact included, is searched for either secret.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from features.synthetic import generate, source_paths

KEY = "pseudonym-key-that-must-stay-secret-8c1f"
PASSWORD = "pg-password-that-must-stay-secret-41d7"
URL = f"postgresql://scorer:{PASSWORD}@127.0.0.1:5432/scores"


@pytest.mark.slow
def test_training_through_the_cli_leaves_no_secret_in_the_mlflow_store(tmp_path):
    data = tmp_path / "data"
    generate(data, n_leads=1_500, n_customers=1_000, months=12, seed=3)
    out = tmp_path / "out"
    config = tmp_path / "leadscore.yaml"
    sources = source_paths(data)
    config.write_text(
        "sources:\n"
        + "".join(f"  {name}: {path}\n" for name, path in sources.items())
        + f"output:\n  dir: {out}\nmodel:\n  min_positive_labels: 30\n"
    )
    env = {
        **os.environ,
        "LEADSCORE_PSEUDONYM_KEY": KEY,
        "LEADSCORE_OUTPUT__DATABASE_URL": URL,
    }
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    command = [sys.executable, "-m", "pipelines.cli", "train", "--target", "conversion",
               "--config", str(config), "--as-of", "2025-12-01"]  # fmt: skip
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

    files = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "mlflow.db") in files
    assert [p for p in files if "artifacts" in p.parts or "mlruns" in p.parts], files
    for secret in (KEY, PASSWORD):
        needle = secret.encode()
        holders = [str(p) for p in files if needle in p.read_bytes()]
        assert not holders, f"{secret!r} found in {holders}"
    assert not list(workdir.iterdir())
