"""A small generated history, its config file and one real Prefect server for the session.

The acceptance tests run the installed ``leadscore`` script as a user would, so the
environment handed to it carries no ``LEADSCORE_*`` or ``PREFECT_*`` variable of the
test process: every setting comes from the config file. Flows report to one
``prefect server`` started for the session (an ephemeral server per command takes
20 s or more to start on a busy machine). Under pytest-xdist each worker has its own
session, so its own server (free port, home under its own ``tmp_path_factory``
folder) and its own copy of the history; modules stay whole on one worker
(``--dist loadfile``), so a module's ``workspace`` is never shared. The server
(``prefect_api``) and the history (``shared_history``) are session fixtures of
tests/conftest.py, shared with tests/pipelines/test_flows*.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from features.synthetic import source_paths

BIN = Path(sys.executable).parent
#: A cron unlike the default, so a command that reads the file shows it.
CRON = "15 3 * * 2-6"


@dataclass(frozen=True)
class Workspace:
    """Where the module's data, config and outputs live, and how to run a command.

    Attributes:
        data: The generated history (``events/``, ``entities.parquet``, ...).
        config: The YAML config file pointing at ``data`` and ``out``.
        out: The configured output folder.
        env: Environment of every command (Prefect server, no ``LEADSCORE_*``).
        api_url: The Prefect server's API URL.
    """

    data: Path
    config: Path
    out: Path
    env: dict[str, str]
    api_url: str

    def run(
        self, cwd: Path, *args: str, with_config: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run ``leadscore *args [--config FILE]`` in ``cwd``; assert it exits 0."""
        command = [str(BIN / "leadscore"), *args]
        if with_config:
            command += ["--config", str(self.config)]
        done = subprocess.run(
            command, cwd=cwd, env=env or self.env, capture_output=True, text=True, timeout=900,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"`{' '.join(command[1:])}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
        return done


@pytest.fixture(scope="module")
def workspace(prefect_api, shared_history, tmp_path_factory) -> Workspace:
    """A copy of the shared history (a module may change it) and ``conf/leadscore.yaml``
    pointing at it and at a fresh ``out/``."""
    api_url, env = prefect_api
    root = tmp_path_factory.mktemp("acceptance")
    data = Path(shutil.copytree(shared_history, root / "data"))
    out = root / "out"
    config = root / "conf" / "leadscore.yaml"
    config.parent.mkdir()
    settings = {
        "sources": source_paths(data),
        "output": {"dir": str(out)},
        # Small data: promote on the AUC itself (the 95% lower bound has its own tests).
        "model": {
            "min_positive_labels": 30,
            "retrain_max_age_days": 30,
            "promotion_confidence": 0.0,
        },
        # Small samples drift a lot; drift has its own tests.
        "schedule": {"cron": CRON, "psi_warn": 10, "psi_fail": 10},
        "pseudonym_key": "acceptance-tests-pseudonym-key",
    }
    config.write_text(yaml.safe_dump(settings))
    return Workspace(data=data, config=config, out=out, env=env, api_url=api_url)
