"""The run context: the settings and the run date of one run, built once.

Every entry point (a CLI command, a Prefect flow, a notebook) builds one
:class:`RunContext` from the user's ``--config`` file, the environment and the
``--as-of`` date, and hands each step the few typed values it needs from it. The run
date has one name, ``as_of``, and one type, a :class:`pandas.Timestamp` at midnight
UTC, from the command line down to the feature SQL and the score tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipelines.settings import Settings, load_settings

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class RunDateError(ValueError):
    """A run date that is not a calendar date written ``YYYY-MM-DD``."""


@dataclass(frozen=True)
class RunContext:
    """Settings and run date of one run.

    Attributes:
        settings: The settings in force (config file, environment, overrides).
        as_of: The run date, midnight UTC: features use events strictly before it.
        config_path: The config file the settings came from, if any (scheduled runs
            and child flows read it again).
        allow_future: Run even when ``as_of`` is after the latest event's next day.
    """

    settings: Settings
    as_of: pd.Timestamp
    config_path: Path | None = None
    allow_future: bool = False

    @property
    def output_dir(self) -> Path:
        """Folder of every output of the run."""
        return self.settings.output.dir


def parse_as_of(text: str | None, timezone: str = "UTC") -> pd.Timestamp:
    """The run date as midnight UTC.

    Args:
        text: ``YYYY-MM-DD``, or ``None`` for today in ``timezone``.
        timezone: Time zone that says which day "today" is.

    Returns:
        Midnight UTC of that day.

    Raises:
        RunDateError: If ``text`` is not a valid ``YYYY-MM-DD`` date (``12/01/2025``
            is refused: it reads as two different days depending on the country).
    """
    if text is None or not str(text).strip():
        today = pd.Timestamp.now(tz=timezone).tz_localize(None)
        return pd.Timestamp(today.date(), tz="UTC")
    text = str(text).strip()
    if not _ISO_DATE.match(text):
        raise RunDateError(
            f"Run date {text!r} is not written YYYY-MM-DD; give the day as, for example, "
            "--as-of 2025-12-01."
        )
    try:
        day = pd.Timestamp(text)
    except ValueError as exc:
        raise RunDateError(f"Run date {text!r} is not a calendar date ({exc}).") from exc
    return pd.Timestamp(day.date(), tz="UTC")


def check_not_future(as_of: pd.Timestamp, latest_event: pd.Timestamp | None) -> None:
    """Refuse a run date after the day following the latest event.

    A run dated after the data ends scores everyone as inactive and sends that to
    the CRM; it is almost always a mistyped date or a feed that stopped.

    Args:
        as_of: The run date (midnight UTC).
        latest_event: The time of the latest event read, or ``None`` without events.

    Raises:
        RunDateError: If ``as_of`` is later than the latest event's day plus one day.
    """
    if latest_event is None or pd.isna(latest_event):
        return
    last_day = pd.Timestamp(latest_event).tz_convert("UTC").normalize()
    if as_of > last_day + pd.Timedelta(days=1):
        raise RunDateError(
            f"Run date {as_of.date()} is after the data: the latest event is on "
            f"{last_day.date()}, so the latest sensible run date is "
            f"{(last_day + pd.Timedelta(days=1)).date()}. Check --as-of, or whether the "
            "event feed stopped; give --allow-future to run anyway. Nothing was written."
        )


def build_context(
    config_path: str | Path | None = None,
    as_of: str | None = None,
    sources: Mapping[str, str | None] | None = None,
    *,
    allow_future: bool = False,
) -> RunContext:
    """Load the settings once and fix the run date.

    Args:
        config_path: YAML, TOML or JSON config file, or ``None`` (environment and
            defaults only).
        as_of: Run date ``YYYY-MM-DD``; ``None`` means today in the schedule's zone.
        sources: Source locations that win over the config (``events``, ``entities``,
            ``outcomes``); ``None`` values are ignored.
        allow_future: Allow a run date after the data (see :func:`check_not_future`).

    Returns:
        The run context.
    """
    path = Path(config_path) if config_path else None
    settings = load_settings(path)
    given = {name: value for name, value in (sources or {}).items() if value}
    if given:
        settings.sources = settings.sources.model_copy(update=given)
    day = parse_as_of(as_of, settings.schedule.timezone)
    return RunContext(settings, day, path, allow_future)
