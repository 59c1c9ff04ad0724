"""The nightly deployment: a cron schedule in the configured time zone.

``leadscore serve`` registers the ``nightly`` deployment on the Prefect API named by
``PREFECT_API_URL`` (a self-hosted ``prefect server`` or Prefect Cloud) and serves it
from this process, which then runs each scheduled flow run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from pipelines.settings import Settings

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "leadscore-nightly"


def nightly_deployment(settings: Settings, config: Path | None):  # noqa: ANN201
    """The ``RunnerDeployment`` of the nightly flow with its cron schedule.

    Args:
        settings: Settings (schedule cron and time zone come from here).
        config: Config file the scheduled runs read (absolute path stored).

    Returns:
        A Prefect ``RunnerDeployment``.
    """
    from prefect.schedules import Cron

    from pipelines.flows import nightly

    parameters = {"config_path": str(Path(config).resolve()) if config else None}
    return nightly.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(settings.schedule.cron, timezone=settings.schedule.timezone)],
        parameters=parameters,
        description="Validate inputs, build features, retrain when due, score, publish.",
        tags=["leadscore"],
    )


def serve_nightly(config: Path | None, register_only: bool, console: Console) -> None:
    """Register the nightly deployment and serve it (blocks until interrupted).

    Args:
        config: Config file for the scheduled runs (and the schedule).
        register_only: Register (``apply``) and return instead of serving.
        console: Where to tell the person what happened.
    """
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    from pipelines.settings import load_settings

    settings = load_settings(config)
    deployment = nightly_deployment(settings, config)
    api = PREFECT_API_URL.value() or "Prefect's ephemeral local API (set PREFECT_API_URL)"
    schedule = f"{settings.schedule.cron} ({settings.schedule.timezone})"
    if register_only:
        deployment_id = deployment.apply()
        console.print(f"Registered deployment nightly/{DEPLOYMENT_NAME} ({deployment_id}) on {api}")
        console.print(f"Schedule: {schedule}. Run `leadscore serve` to execute scheduled runs.")
        return
    console.print(f"Serving nightly/{DEPLOYMENT_NAME} on {api}; schedule {schedule}. Ctrl-C stops.")
    serve(deployment, print_starting_message=False)
