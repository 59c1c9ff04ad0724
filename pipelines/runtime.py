"""Process-wide defaults a run sets before Prefect or MLflow start.

Only defaults: a variable the user has set is left as it is. Also how the process
collects garbage during a run and at exit, and which pages Linux backs its memory with.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)
#: Seconds Prefect waits for its temporary local API server to start. Prefect's own
#: default (20 s) is missed on a busy 2-core machine, and the run then fails with
#: "Timed out while attempting to connect to ephemeral Prefect API server".
EPHEMERAL_STARTUP_SECONDS = 120

DEFAULTS = {
    # The temporary Prefect server would phone home on start-up (and log an error
    # offline); a scoring pipeline holding personal data calls out to nobody.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(EPHEMERAL_STARTUP_SECONDS),
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    # LightGBM's OpenMP threads sleep between parallel regions instead of spinning: on a
    # busy 2-core machine spinning threads starved each other (training 31.3 s of wall
    # time spinning, 6.1 s sleeping; the same models bit for bit).
    "OMP_WAIT_POLICY": "PASSIVE",
    # numpy's OpenBLAS on one thread: a run's matrix products are small (the reasons'
    # contributions by concept, the rule points), and after each one OpenBLAS keeps
    # its other threads spinning for about 0.1 s, a core taken from the run's own
    # threads (0.5 s of CPU in a million-entity nightly; a 50,000 x 140 product
    # takes 0.02 s on one thread). Set before numpy is imported, which reads it.
    "OPENBLAS_NUM_THREADS": "1",
}


def set_quiet_and_patient_defaults() -> dict[str, str]:
    """Set :data:`DEFAULTS` in the environment where the user has not.

    Returns:
        The variables this call set.
    """
    applied = {}
    for name, value in DEFAULTS.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return applied


#: Linux's ``prctl`` option that turns transparent huge pages off for a process.
PR_SET_THP_DISABLE = 41


def no_transparent_huge_pages() -> bool:
    """Have Linux back this process's memory (and its children's) with 4 KB pages only.

    numpy asks for transparent huge pages on every array of 4 MB or more, and Arrow's
    and DuckDB's allocators on their arenas. Each first touch of such a page makes the
    kernel find and zero 2 MB at once; on a virtual machine whose free memory goes back
    to the host, those 2 MB come from memory the host must hand back first. A
    million-entity next-day nightly on the 2-core benchmark machine spent 10-12.5 s of
    its 47 s of CPU in the kernel, about 70% of it zeroing huge pages; with 4 KB
    pages 6-6.3 s, and the run took 1.4-3.5 s less (peak memory 0.1 GB less, user time
    the same). Linux only; the flag is kept across ``fork`` and ``exec``.

    Returns:
        Whether the process now runs without transparent huge pages.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):  # a libc without prctl
        return False
    return prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0


def freeze_objects_at_exit() -> None:
    """Spare the process Python's last garbage collections when it exits.

    At exit the interpreter collects garbage over every object still alive, most of
    them made by importing pandas, Prefect, LightGBM and the rest: 3.7-4.6 s of each
    command on a busy 2-core machine, after its work is done and its files are closed.
    The last exit handler (the first registered) flushes the terminal and freezes
    those objects (:func:`gc.freeze`) so no collection walks them (0.2-0.3 s). Every
    other exit handler (Prefect stopping its temporary server, temporary folders)
    still runs first. Objects never collected are then reported as leaks by
    nanobind-based extensions (DuckDB) while the interpreter tears down: that noise,
    all that could still be printed, goes to /dev/null. Calling this again does nothing.
    """
    if not _exit_freeze["registered"]:
        atexit.register(_freeze_and_quiet)
        _exit_freeze["registered"] = True


_exit_freeze = {"registered": False}


def _freeze_and_quiet() -> None:
    import gc

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    gc.freeze()
    with contextlib.suppress(OSError):
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)
        os.close(quiet)


@contextlib.contextmanager
def no_collections_while_importing() -> Iterator[None]:
    """Pause Python's garbage collector while a command imports its pipeline.

    Importing pandas, Prefect, DuckDB, LightGBM and the flows makes hundreds of
    thousands of long-lived objects (modules, classes, pydantic models), and the
    collector walked them again and again as they were made: about 0.6 s of a
    ``nightly`` command's start-up. Within this block nothing is collected; what it
    made is then frozen (:func:`gc.freeze`: never walked again, as modules live to the
    end anyway) and the collector runs as before.
    """
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


#: Young-generation collections between two full ones during a run (Python: 10).
FULL_COLLECTION_EVERY = 1000


@contextlib.contextmanager
def few_full_collections() -> Iterator[None]:
    """Hold back Python's full garbage collections for the length of a run.

    A full collection walks every object alive: the imported modules' and, during a
    run, pandas' and Prefect's. A million-entity nightly made 7 of them, 0.56 s of its
    main thread, and freed little. Within this block the objects alive at its start
    are frozen (never walked again) and a full collection waits for 1000 young ones
    instead of 10 (none in that nightly; still some in a long training). Young
    collections go on as before, so short-lived cycles are freed as they were. The
    previous thresholds are restored and the objects unfrozen when the block ends.
    """
    import gc

    young, middle, full = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, middle, max(full, FULL_COLLECTION_EVERY))
    try:
        yield
    finally:
        gc.set_threshold(young, middle, full)
        gc.unfreeze()


def configure_terminal_logging(verbose: bool) -> None:
    """Logging for a person at the terminal.

    One line per step of a run (``pipelines.steps``: name, duration, peak memory) and
    our own warnings, through rich; Prefect's own chatter (task states, the temporary
    server, tracebacks the command reports as one sentence anyway) only with
    ``--verbose``.

    Args:
        verbose: Show every INFO message, Prefect's included.
    """
    import logging

    from rich.logging import RichHandler

    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("pipelines.steps").setLevel(logging.INFO)
