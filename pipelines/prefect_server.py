"""The temporary Prefect API server a command starts for its flows, and stops at exit.

Without ``PREFECT_API_URL`` a flow's first call starts Prefect's temporary server (a
uvicorn subprocess) and waits for it to answer, after importing the whole server
application into the command's own process (about 3 s of CPU) only to launch it.
:func:`start_prefect_server_early` starts the same server (the same uvicorn command and
environment as Prefect's) in its own process as a command begins, so it comes up while
the command imports the pipeline and reads its config; :func:`wait_for_prefect_server`
waits only for what is left and points Prefect at it with ``PREFECT_API_URL``, so the
flows use it as they would a deployed server. Like Prefect's own temporary server it
serves every flow of the process and is stopped when the process exits.

The server process is this module run as ``python -P -m pipelines.prefect_server`` with
uvicorn's arguments (:func:`serve`): it imports the server application with Python's
garbage collector paused, which spares it about a second of its start-up.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: The server's environment, as Prefect's own temporary server has it (no UI).
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
#: uvicorn's exit code when it could not start (a taken port among other causes).
STARTUP_FAILED = 3
#: Launches when the port was taken by another process meanwhile.
MAX_LAUNCHES = 3


@dataclass
class _Server:
    """The temporary server of this process."""

    process: subprocess.Popen | None = None
    port: int = 0
    started: bool = False
    launches: int = 0


_early = _Server()


def start_prefect_server_early() -> None:
    """Start the temporary Prefect API server now, in the background, if a run needs it.

    Nothing is started with ``PREFECT_API_URL`` set or named by the active Prefect
    profile (a real server). A server named elsewhere (``.env``, ``prefect.toml``) or
    the temporary server turned off is found once Prefect's settings are read, and the
    server just started is stopped again: set ``PREFECT_API_URL`` in the environment to
    spare that. Call it after :func:`pipelines.runtime.set_quiet_and_patient_defaults`;
    calling it again does nothing.
    """
    if _early.started or os.environ.get("PREFECT_API_URL") or _profile_names_a_server():
        return
    _early.started = True
    _launch()  # before importing Prefect: the server starts a second sooner
    atexit.register(_stop)
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        _stop()  # a configured server: the flow talks to it; none allowed: Prefect says so


def _profile_names_a_server() -> bool:
    """Whether the active Prefect profile sets ``PREFECT_API_URL`` (read without Prefect)."""
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    profile = (profiles.get("profiles") or {}).get(active) or {}
    return bool(profile.get("PREFECT_API_URL"))


def _launch() -> None:
    """Start Prefect's server application under uvicorn on a free port."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise RuntimeError("Prefect is not installed: run the README's set-up command.")
    _early.port = _free_port()
    _early.launches += 1
    _early.process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        [
            # -P: a folder named pipelines in the working directory is not this one.
            sys.executable, "-P", "-m", "pipelines.prefect_server",
            "--app-dir", str(Path(spec.origin).parent.parent),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
            "--port", str(_early.port), "--log-level", "error", "--lifespan", "on",
        ],
        env={**os.environ, **SERVER_ENV},
    )  # fmt: skip


def _free_port() -> int:
    """A port on 127.0.0.1 nobody listens on, from Prefect's range for this server."""
    for _ in range(20):
        port = random.randrange(8000, 9000)  # noqa: S311 - not for security
        if _port_free(port):
            return port
    raise RuntimeError("No free port between 8000 and 8999 for Prefect's temporary server.")


def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_prefect_server() -> None:
    """Wait until the server :func:`start_prefect_server_early` started answers; use it.

    Call it before the first flow. It sets ``PREFECT_API_URL`` to the server and has
    Prefect read its settings again, so every flow of this process (and the threads
    Prefect starts) talks to that one server, without flow-run heartbeats.

    Raises:
        RuntimeError: The server exited (its own messages are printed above), or did
            not answer within ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``.
    """
    if _early.process is None or os.environ.get("PREFECT_API_URL"):
        return
    from prefect.settings import get_current_settings

    timeout = get_current_settings().server.ephemeral.startup_timeout_seconds
    deadline = time.monotonic() + timeout
    while True:
        code = _early.process.poll()
        # Only while our server runs: another process may have taken its port.
        if code is None and _answers(f"http://127.0.0.1:{_early.port}/api/health"):
            if _early.process.poll() is None:
                break
            continue
        if (
            code == STARTUP_FAILED
            and not _port_free(_early.port)
            and (_early.launches < MAX_LAUNCHES)
        ):
            _launch()  # the port was taken meanwhile: another one
        elif code is not None:
            raise RuntimeError(
                f"Prefect's temporary API server stopped with exit code {code} as it "
                "started (its messages are above); set PREFECT_API_URL to a running "
                "Prefect server, or see docs/NIGHTLY.md."
            )
        elif time.monotonic() > deadline:
            raise RuntimeError(
                f"Timed out after {timeout} s while attempting to connect to the temporary "
                "Prefect API server; set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS "
                "higher on a busy machine, or PREFECT_API_URL to a running server."
            )
        time.sleep(0.1)
    import prefect.context

    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_early.port}/api"
    prefect.context.refresh_global_settings_context()
    # No flow-run heartbeats: they let a server mark a crashed run, but this server ends
    # with the process, and Prefect joins its heartbeat thread, asleep in 1 s steps, at
    # every flow's end (about 0.5 s each). The environment cannot say None (>= 30 s).
    root = prefect.context.GLOBAL_SETTINGS_CONTEXT
    prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.SettingsContext(
        profile=root.profile,
        settings=root.settings.copy_with_update(updates={"flows.heartbeat_frequency": None}),
    )


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 (``False`` while nothing listens yet)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return response.status == 200
    except (OSError, ValueError):
        return False


def _stop() -> None:
    """Stop the temporary server, as Prefect stops its own."""
    process = _early.process
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _early.process = None


def serve() -> None:
    """Run Prefect's server application under uvicorn (the server process's main).

    Importing the application makes over 400,000 long-lived objects (modules,
    pydantic models, SQLAlchemy tables), and Python's collector walked them again and
    again as they were made: the server answered after 3.1-3.5 s on a 2-core machine,
    and after 2.2-2.5 s without those collections, while the command waits for it.
    They are imported with the collector paused and then frozen (:func:`gc.freeze`), so
    no collection walks them; the collector runs as usual for what the server does
    afterwards. Arguments are uvicorn's, as Prefect's own temporary server is started.
    """
    from pipelines.runtime import no_collections_while_importing

    with no_collections_while_importing():
        import prefect.server.api.server  # noqa: F401 - imported without collections
        import uvicorn.main

    sys.argv[0] = "uvicorn"
    sys.exit(uvicorn.main.main())


if __name__ == "__main__":
    serve()
