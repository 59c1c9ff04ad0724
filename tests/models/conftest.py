"""Shared fixtures of the model tests: seeded synthetic training frames, a rule score
estimator, local MLflow stores and one real ``mlflow server`` per session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator


@dataclass
class SyntheticTraining:
    """A stacked (entity, cutoff) frame whose labels come from a known logistic model."""

    features: pd.DataFrame
    labels: np.ndarray
    p_true: np.ndarray

    @property
    def as_of(self) -> pd.Series:
        return self.features["as_of"]


def make_training_frame(
    seed: int = 0,
    n_entities: int = 3000,
    n_cutoffs: int = 8,
    step_days: int = 30,
    intercept: float = -3.0,
) -> SyntheticTraining:
    """Monthly snapshots with numeric, missing-laden and categorical features."""
    rng = np.random.default_rng(seed)
    cutoffs = pd.date_range("2025-02-01", periods=n_cutoffs, freq=f"{step_days}D", tz="UTC")
    n = n_entities * n_cutoffs
    entity = np.repeat(np.arange(n_entities), n_cutoffs)
    visits = rng.normal(size=n)
    minutes = rng.exponential(size=n)
    downloads = rng.integers(0, 20, n).astype("float64")
    downloads[rng.random(n) < 0.2] = np.nan
    industry = rng.choice(["retail", "software", "health", "finance"], n)
    logit = (
        intercept
        + 1.0 * visits
        + 0.6 * np.log1p(minutes)
        + 0.08 * np.nan_to_num(downloads, nan=5.0)
        + np.select([industry == "retail", industry == "software"], [0.7, -0.5], 0.0)
    )
    p_true = 1.0 / (1.0 + np.exp(-logit))
    labels = (rng.random(n) < p_true).astype("int64")
    features = pd.DataFrame(
        {
            "entity_id": [f"ent-{seed}-{i:05d}" for i in entity],
            "as_of": np.tile(cutoffs, n_entities),
            "page_view_count_30d": visits,
            "session_minutes_30d": minutes,
            "content_download_count_90d": downloads,
            "industry": pd.Categorical(industry),
        }
    )
    return SyntheticTraining(features, labels, p_true)


class PointsRule(BaseEstimator):
    """A tiny rule score: points for page views; ``fit`` re-learns the points per view."""

    def __init__(self, points_per_view: float = 10.0):
        self.points_per_view = points_per_view

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> PointsRule:  # noqa: N803
        views = X["page_view_count_30d"].to_numpy()
        slope = np.corrcoef(views, y)[0, 1]
        self.fitted_points_ = 10.0 * np.sign(slope)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        points = getattr(self, "fitted_points_", self.points_per_view)
        return np.clip(50 + points * X["page_view_count_30d"].to_numpy(), 0, 150)


@pytest.fixture(scope="session")
def training_data() -> SyntheticTraining:
    return make_training_frame(seed=0)


@pytest.fixture(scope="session")
def trained(training_data):  # noqa: ANN001, ANN201
    from models.train import train_model

    return train_model(
        training_data.features,
        training_data.labels,
        training_data.as_of,
        "conversion",
        horizon_days=30,
        feature_set_version="engagement-v1-test",
        rule_model=PointsRule(),
        label_definition="1 when converted within 30 days of the cutoff.",
    )


@pytest.fixture
def local_tracking(tmp_path: Path) -> str:
    """A fresh embedded MLflow store (SQLite) in the test's own folder."""
    from models import tracking

    uri = f"sqlite:///{tmp_path / 'output' / 'mlflow.db'}"
    tracking.configure(uri)
    return uri


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited early:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One real ``mlflow server`` (SQLite backend, proxied artifacts) for the session.

    One worker and no background job runner keep it light; it runs in its own process
    group, which is ended as a whole at teardown.
    """
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow_cli), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,
        )
    try:
        _wait_healthy(url, process, log_path, timeout=180)
        yield {"url": url, "artifacts": root / "artifacts"}
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
