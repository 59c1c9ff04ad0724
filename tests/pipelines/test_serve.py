"""The nightly deployment on a real ``prefect server``, registered and served by ``leadscore``.

A Prefect server runs on a free port of 127.0.0.1 with its own PREFECT_HOME (SQLite);
``leadscore serve --register-only`` registers the deployment from a config file with
a non-default cron and time zone; the test reads it back through the Prefect client,
triggers a run and lets ``leadscore serve`` (the serving process) execute it on a
small generated dataset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import yaml

from features.synthetic import generate, source_paths
from tests.services import free_port

pytestmark = [pytest.mark.service, pytest.mark.slow]

BIN = Path(sys.executable).parent
CRON = "30 4 * * 1-5"
TIMEZONE = "Europe/Paris"
DEPLOYMENT = "nightly/leadscore-nightly"


@contextmanager
def process_group(args: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Run a command in its own process group; stop the whole group on exit."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            args, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=Path.cwd(),
            start_new_session=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=grace)
                    break


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for_health(api_url: str, server: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited with {server.returncode}:\n{tail(log)}")
        with suppress(OSError), urllib.request.urlopen(f"{api_url}/health", timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(
        f"prefect server did not answer {api_url}/health within {timeout:.0f} s:\n{tail(log)}"
    )


@contextmanager
def running_prefect_server(
    home: Path, log: Path, timeout: float
) -> Iterator[tuple[str, dict[str, str]]]:
    """A real ``prefect server`` on 127.0.0.1 with its own home and database, stopped by
    process group; yields its API URL and a clean environment pointing at it."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEADSCORE_"))},
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with process_group(command, log, env) as server:
        wait_for_health(api_url, server, log, timeout=timeout)
        yield api_url, {**env, "PREFECT_API_URL": api_url}


@pytest.fixture
def prefect_server(tmp_path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real Prefect server; yields its API URL and the environment pointing at it."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    with running_prefect_server(home, tmp_path / "prefect-server.log", timeout=90) as server:
        yield server


def test_serve_registers_the_nightly_deployment_and_executes_a_triggered_run(
    prefect_server, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url, env = prefect_server
    data = generate(tmp_path / "data", n_leads=400, n_customers=300, months=12, seed=5)
    out = tmp_path / "output"
    config = tmp_path / "leadscore.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": source_paths(data.out_dir),
                "output": {"dir": str(out)},
                "model": {"min_positive_labels": 10},
                "schedule": {"cron": CRON, "psi_warn": 10, "psi_fail": 10},
            }
        )
    )
    # The time zone comes from the environment, the cron from the file: both paths count.
    env = {**env, "LEADSCORE_SCHEDULE__TIMEZONE": TIMEZONE}
    register = subprocess.run(
        [str(BIN / "leadscore"), "serve", "--register-only", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert register.returncode == 0, register.stdout + register.stderr
    assert f"Registered deployment {DEPLOYMENT}" in register.stdout
    assert api_url in register.stdout

    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(DEPLOYMENT)
        assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [
            (CRON, TIMEZONE)
        ]
        assert all(s.active for s in deployment.schedules)
        assert deployment.parameters["config_path"] == str(config.resolve())

        flow_run = run_deployment(DEPLOYMENT, parameters={"as_of": "2025-12-01"}, timeout=0)
        log = tmp_path / "leadscore-serve.log"
        serve = [str(BIN / "leadscore"), "serve", "--config", str(config)]
        with process_group(serve, log, env) as serving:
            deadline = time.monotonic() + 300
            with get_client(sync_client=True) as client:
                while True:
                    state = client.read_flow_run(flow_run.id).state
                    if state is not None and state.is_final():
                        break
                    if serving.poll() is not None or time.monotonic() > deadline:
                        status = "exited" if serving.poll() is not None else "ran 300 s"
                        pytest.fail(
                            f"The run is {state and state.name}; `leadscore serve` {status}:\n"
                            + tail(log)
                        )
                    time.sleep(2)
        assert state.is_completed(), f"{state.name}: {state.message}\n{tail(log)}"

    assert (out / "scores" / "as_of=2025-12-01" / "part-0.parquet").exists()
    assert (out / "summaries" / "2025-12-01.json").exists()
