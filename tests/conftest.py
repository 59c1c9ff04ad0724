"""Fixtures shared by every test package: small seeded event histories.

The suite runs on two pytest-xdist workers (``-n 2 --dist loadfile``, see the
Makefile): each worker is a process with its own session fixtures, its own
``tmp_path_factory`` folder and, set here, its own ``PREFECT_HOME``, so no two
workers share a Prefect database, profile or result store (nor the user's
``~/.prefect``). Servers started by fixtures pick free ports.

Modules are handed to the workers heaviest first (see
:func:`pytest_collection_modifyitems`; the Makefile passes ``--no-loadscope-reorder``,
without which xdist hands out modules with the most tests first, which puts the
one-test modules that run ``leadscore nightly`` last, one worker busy alone at the end).

Two session fixtures serve both the acceptance tests (``leadscore`` as a subprocess) and
the in-process flows of tests/pipelines/test_flows*.py on a worker: one real Prefect
server (:func:`prefect_api`; a start-up costs 20-50 s on a busy machine) and one
generated history (:func:`shared_dataset`, read only).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.spec import DEFAULT_EVENT_TYPES
from pipelines.runtime import set_quiet_and_patient_defaults


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _prefect_home() -> Path:
    """A fresh, empty Prefect home for this process (Prefect does not create a missing
    one: its temporary server then never starts); the homes of test processes that are
    gone without cleaning up (a killed run) are removed."""
    for stale in Path(tempfile.gettempdir()).glob("leadscore-tests-prefect-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    home = Path(tempfile.gettempdir()) / f"leadscore-tests-prefect-{os.getpid()}"
    home.mkdir()
    return home


# Before any test module imports mlflow or prefect: no telemetry, a patient Prefect,
# and one Prefect home per test process (xdist worker), removed when the process ends.
set_quiet_and_patient_defaults()
PREFECT_HOME = _prefect_home()
os.environ["PREFECT_HOME"] = str(PREFECT_HOME)

AS_OF = pd.Timestamp("2025-03-15 09:30:00", tz="UTC")
EventHistory = tuple[pd.DataFrame, pd.DataFrame]


def make_event_history(
    seed: int = 0,
    n_entities: int = 40,
    n_events: int = 800,
    as_of: pd.Timestamp = AS_OF,
    extra_types: tuple[str, ...] = ("chat message", "api_call"),
    history_days: float = 120.0,
) -> EventHistory:
    """Random events and entities around ``as_of``, seeded.

    Events cover every declared type plus ``extra_types``, a tenth of them after
    the cutoff, a few of entities missing from the entities table, NPS scores,
    session minutes (some missing), purchase amounts and feature ids. Entities
    include some created after the cutoff, some without consent and some without
    any event; they carry a text and a numeric fit attribute.

    Returns:
        ``(events, entities)`` with contract column names.
    """
    rng = np.random.default_rng(seed)
    types = np.array([e.name for e in DEFAULT_EVENT_TYPES] + list(extra_types))
    ids = np.array([f"e{i:03d}" for i in range(n_entities)])
    # Only the first 80% of entities have events; a few events belong to strangers.
    who = np.where(
        rng.random(n_events) < 0.97,
        ids[rng.integers(0, int(n_entities * 0.8), n_events)],
        "stranger",
    )
    what = types[rng.integers(0, len(types), n_events)]
    age_days = rng.uniform(-0.1, 1.0, n_events) * history_days
    event_time = (as_of - pd.to_timedelta(age_days, unit="D")).floor("us").as_unit("us")
    value = np.full(n_events, np.nan)
    for name, draw in {
        "nps_answer": lambda k: rng.integers(0, 11, k).astype(float),
        "session": lambda k: np.where(rng.random(k) < 0.1, np.nan, rng.uniform(1, 90, k)),
        "purchase": lambda k: rng.uniform(10, 500, k).round(2),
    }.items():
        chosen = what == name
        value[chosen] = draw(chosen.sum())
    item = np.where(
        what == "feature_use",
        np.array([f"f{i}" for i in range(6)])[rng.integers(0, 6, n_events)],
        None,
    )
    events = pd.DataFrame(
        {
            "entity_id": who,
            "event_time": event_time,
            "event_type": what,
            "value": value,
            "item": pd.array(item, dtype="str"),
        }  # fmt: skip
    )
    created = as_of - pd.to_timedelta(rng.uniform(-20, 400, n_entities), unit="D")
    entities = pd.DataFrame(
        {
            "entity_id": ids,
            "created_at": created.floor("us").as_unit("us"),
            "crm_id": [f"crm-{i}" for i in range(n_entities)],
            "consent": rng.random(n_entities) > 0.05,
            "kind": np.where(rng.random(n_entities) < 0.5, "lead", "customer"),
            "industry": rng.choice(["software", "retail", "finance"], n_entities),
            "employees": rng.integers(1, 5000, n_entities).astype(float),
        }
    )
    return events, entities


#: Marks of modules that start servers, run the CLI, Spark or Chromium: tens of seconds
#: to minutes each, against well under a second for most other modules.
HEAVY_MARKS = frozenset({"service", "slow", "spark", "browser", "realdata"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every module holding a heavy test before the other modules, in collection order
    otherwise, so that two workers finish together: the many light modules fill the gaps
    at the end instead of one long module running alone (longest processing time first).
    The order of the tests inside a module is kept."""
    heavy = {item.nodeid.split("::")[0] for item in items
             if HEAVY_MARKS & {mark.name for mark in item.iter_markers()}}  # fmt: skip
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in heavy)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this process's Prefect home."""
    shutil.rmtree(PREFECT_HOME, ignore_errors=True)


@pytest.fixture
def as_of() -> pd.Timestamp:
    """The default cutoff of :func:`make_event_history` (not a midnight)."""
    return AS_OF


@pytest.fixture
def event_history() -> Callable[..., EventHistory]:
    """Factory of seeded random ``(events, entities)``; see :func:`make_event_history`."""
    return make_event_history


@pytest.fixture(scope="session")
def spark_session():
    """One local Spark session (2 cores, UTC, no UI) for the whole run; skipped without PySpark."""
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("leadscore-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """A real Prefect server for the whole session (one start-up, ~20-40 s, not one per
    module); yields its API URL and an environment pointing at it (no ``PREFECT_*`` or
    ``LEADSCORE_*`` variable of the test process)."""
    from tests.pipelines.test_serve import running_prefect_server

    home = tmp_path_factory.mktemp("prefect-home")
    with running_prefect_server(home, home / "prefect-server.log", timeout=120) as (url, env):
        # Wide enough that Rich prints every path on one line.
        yield url, {**env, "COLUMNS": "400"}


@pytest.fixture(scope="session")
def shared_dataset(tmp_path_factory):
    """The smallest generated history on which both targets train and beat the rule
    score, generated once per session (read only): tests/pipelines/test_flows*.py's and
    the acceptance tests'. Returns what :func:`features.synthetic.generate` returns."""
    from features.synthetic import generate

    root = tmp_path_factory.mktemp("shared-history")
    return generate(root / "data", n_leads=1_500, n_customers=1_000, months=12, seed=3)


@pytest.fixture(scope="session")
def shared_history(shared_dataset) -> Path:
    """The folder of :func:`shared_dataset` (read only)."""
    return shared_dataset.out_dir
