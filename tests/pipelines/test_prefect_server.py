"""The temporary Prefect server a command starts early, and stops at exit.

Each test runs a fresh interpreter: the server and its exit handler are process-wide.
"""

from __future__ import annotations

import socket

import pytest

from tests.fresh_python import python


def test_a_configured_api_starts_no_temporary_server():
    done = python(
        """
        import sys
        from pipelines.prefect_server import start_prefect_server_early, wait_for_prefect_server

        start_prefect_server_early()
        wait_for_prefect_server()
        print("server module", "prefect.server.api.server" in sys.modules)
        from prefect.settings import get_current_settings

        print("heartbeats", get_current_settings().flows.heartbeat_frequency)
        """,
        PREFECT_API_URL="http://127.0.0.1:9/api",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # A server of the user's: flow runs keep Prefect's heartbeats (crash detection).
    assert done.stdout.split() == ["server", "module", "False", "heartbeats", "180"]


def test_a_server_named_by_the_prefect_profile_is_used_instead(tmp_path):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "deployed"\n[profiles.deployed]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    done = python(
        """
        import sys
        from pipelines import prefect_server

        prefect_server.start_prefect_server_early()
        prefect_server.wait_for_prefect_server()
        print("launched", prefect_server._early.launches)
        print("server module", "prefect.server.api.server" in sys.modules)
        """,
        PREFECT_PROFILES_PATH=str(profiles),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["launched", "0", "server", "module", "False"]


@pytest.mark.slow
@pytest.mark.service
def test_the_flow_runs_on_the_server_started_early_which_stops_at_exit():
    done = python("""
        import os, sys
        from prefect import flow

        from pipelines.prefect_server import start_prefect_server_early, wait_for_prefect_server
        from pipelines.runtime import set_quiet_and_patient_defaults

        set_quiet_and_patient_defaults()
        # Started from a user's project that has a pipelines package of its own.
        import pathlib, tempfile

        project = pathlib.Path(tempfile.mkdtemp())
        (project / "pipelines").mkdir()
        (project / "pipelines" / "__init__.py").write_text("raise SystemExit('not ours')")
        os.chdir(project)
        start_prefect_server_early()
        start_prefect_server_early()  # once per process
        wait_for_prefect_server()
        url = os.environ["PREFECT_API_URL"]

        @flow
        def answer() -> int:
            from prefect.settings import get_current_settings

            # No heartbeats to a server that ends with the process.
            assert get_current_settings().flows.heartbeat_frequency is None
            return 42

        assert answer() == 42
        assert answer() == 42
        assert os.environ["PREFECT_API_URL"] == url  # one server for every flow
        print("ok", url, "prefect.server.api.server" in sys.modules)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    word, url, server_module = done.stdout.split()[-3:]
    assert word == "ok" and url.startswith("http://127.0.0.1:") and url.endswith("/api")
    assert server_module == "False"  # the server application runs in its own process only
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as sock:  # stopped when the command's process exited
        assert sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.service
def test_a_server_that_cannot_start_is_a_sentence_without_relaunches():
    done = python(
        """
        import time
        from pipelines import prefect_server

        began = time.monotonic()
        prefect_server.start_prefect_server_early()
        try:
            prefect_server.wait_for_prefect_server()
        except RuntimeError as exc:
            quick = time.monotonic() - began < 60
            print("launches", prefect_server._early.launches, "quick", quick)
            print(exc)
        """,
        # Its database is a closed port on the loopback: the server stops as it starts.
        PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://u:p@127.0.0.1:9/none",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, sentence = done.stdout.splitlines()[:2]
    assert first.split() == ["launches", "1", "quick", "True"]
    assert "stopped with exit code 3" in sentence and "PREFECT_API_URL" in sentence


def test_the_server_process_imports_the_application_without_collections():
    # The server process's main, with uvicorn's own main replaced by a probe.
    done = python("""
        import gc, sys
        import uvicorn.main

        runs = []
        gc.callbacks.append(lambda phase, info: phase == "start" and runs.append(1))

        def probe():
            print("imported", "prefect.server.api.server" in sys.modules)
            print("collections while importing", len(runs))
            print("collector on", gc.isenabled(), "frozen", gc.get_freeze_count() > 100_000)
            print("args", sys.argv)
            return 0

        uvicorn.main.main = probe
        sys.argv = ["-m", "--port", "1234"]
        from pipelines.prefect_server import serve

        runs.clear()
        try:
            serve()
        except SystemExit as done:
            print("exit", done.code)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "imported True",
        "collections while importing 0",
        "collector on True frozen True",
        "args ['uvicorn', '--port', '1234']",
        "exit 0",
    ]
