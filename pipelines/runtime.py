"""Process-wide defaults a run sets before Prefect or MLflow start.

Only defaults: a variable the user has set is left as it is.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

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
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    gc.freeze()
    with contextlib.suppress(OSError):
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)
        os.close(quiet)


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


#: The temporary Prefect server this process started (see
#: :func:`start_prefect_server_early`): its process and port.
_early: dict[str, Any] = {"process": None, "port": None, "started": False}
#: The server's environment, as Prefect's own temporary server has it (no UI).
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
#: Exit code of uvicorn when its port was taken meanwhile: start again on another port.
PORT_TAKEN = 3


def start_prefect_server_early() -> None:
    """Start a temporary Prefect API server now, in the background, if a run will need it.

    Without ``PREFECT_API_URL`` a flow's first call starts Prefect's temporary server (a
    uvicorn subprocess) and waits for it to answer, after importing the whole server
    application into the command's own process (about 3 s of CPU) only to launch it.
    Started here, as a command begins, the same server (the same uvicorn command and
    environment as Prefect's) comes up in its own process while the command imports the
    pipeline and reads its config; :func:`wait_for_prefect_server` waits only for what
    is left and points Prefect at it with ``PREFECT_API_URL``, so the flow uses it as
    it would a deployed server. It is stopped when the process exits. With
    ``PREFECT_API_URL`` set (a real server) this does nothing; when Prefect's profile
    names a server, or turns the temporary one off, the server is stopped again. Call
    it after :func:`set_quiet_and_patient_defaults`; calling it again does nothing.
    """
    if _early["started"] or os.environ.get("PREFECT_API_URL"):
        return
    _early["started"] = True
    _launch(_free_port())  # before importing Prefect: the server starts a second sooner
    atexit.register(_stop)
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        _stop()  # a profile's server: the flow talks to it; none allowed: Prefect says so


def _launch(port: int) -> None:
    """Start Prefect's server application under uvicorn, as Prefect's temporary server."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise RuntimeError("Prefect is not installed: run the README's set-up command.")
    _early["port"] = port
    _early["process"] = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        [
            sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "error", "--lifespan", "on",
        ],
        env={**os.environ, **SERVER_ENV},
    )  # fmt: skip


def _free_port() -> int:
    """A port on 127.0.0.1 nobody listens on, from Prefect's range for this server."""
    for _ in range(20):
        port = random.randrange(8000, 9000)  # noqa: S311 - not for security
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("No free port between 8000 and 8999 for Prefect's temporary server.")


def wait_for_prefect_server() -> None:
    """Wait until the server :func:`start_prefect_server_early` started answers; use it.

    Call it before the first flow. It sets ``PREFECT_API_URL`` to the server and has
    Prefect read its settings again, so every flow of this process (and the threads
    Prefect starts) talks to that one server.

    Raises:
        RuntimeError: The server exited, or did not answer within
            ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (the sentence names it).
    """
    process = _early["process"]
    if process is None or os.environ.get("PREFECT_API_URL"):
        return
    from prefect.settings import get_current_settings

    timeout = get_current_settings().server.ephemeral.startup_timeout_seconds
    deadline = time.monotonic() + timeout
    while not _answers(f"http://127.0.0.1:{_early['port']}/api/health"):
        code = _early["process"].poll()
        if code == PORT_TAKEN:
            _launch(_free_port())
        elif code is not None:
            raise RuntimeError(f"Prefect's temporary API server exited with code {code}.")
        elif time.monotonic() > deadline:
            raise RuntimeError(
                f"Timed out after {timeout} s while attempting to connect to the temporary "
                "Prefect API server; set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS "
                "higher on a busy machine, or PREFECT_API_URL to a running server."
            )
        time.sleep(0.1)
    from prefect.context import refresh_global_settings_context

    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_early['port']}/api"
    refresh_global_settings_context()


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 (``False`` while nothing listens yet)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return response.status == 200
    except (OSError, ValueError):
        return False


def _stop() -> None:
    """Stop the temporary server at exit, as Prefect stops its own."""
    process = _early["process"]
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _early["process"] = None
