"""Process defaults of a command: the early Prefect server and the exit without collections.

Each test runs a fresh interpreter: both change process-wide state (Prefect's server
singleton, exit handlers).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the test environment plus ``env``.

    A ``PREFECT_API_URL`` of this test process (set by an earlier command run in it)
    is not passed on: each test says which server, if any, it wants.
    """
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**base, **env}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_objects_are_frozen_by_the_last_exit_handler_once():
    done = python("""
        import atexit, gc, sys
        from pipelines.runtime import freeze_objects_at_exit

        # Exit handlers run last registered first: these two after the freeze.
        atexit.register(lambda: print("frozen", gc.get_freeze_count() > 0, flush=True))
        atexit.register(lambda: print("teardown noise", file=sys.stderr))
        before = atexit._ncallbacks()
        freeze_objects_at_exit()
        freeze_objects_at_exit()
        print("registered", atexit._ncallbacks() - before, gc.get_freeze_count())
        print("still heard", file=sys.stderr)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["registered", "1", "0", "frozen", "True"]
    assert done.stderr.split() == ["still", "heard"]  # then stderr is /dev/null


def test_a_configured_api_starts_no_temporary_server():
    done = python(
        """
        import sys
        from pipelines.runtime import start_prefect_server_early, wait_for_prefect_server

        start_prefect_server_early()
        wait_for_prefect_server()
        print("server module", "prefect.server.api.server" in sys.modules)
        """,
        PREFECT_API_URL="http://127.0.0.1:9/api",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["server", "module", "False"]


def test_a_server_named_by_the_prefect_profile_is_used_instead(tmp_path):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "deployed"\n[profiles.deployed]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    done = python(
        """
        import sys
        from pipelines import runtime

        runtime.start_prefect_server_early()
        runtime.wait_for_prefect_server()
        print("stopped", runtime._early["process"] is None)
        print("server module", "prefect.server.api.server" in sys.modules)
        """,
        PREFECT_PROFILES_PATH=str(profiles),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["stopped", "True", "server", "module", "False"]


@pytest.mark.slow
@pytest.mark.service
def test_the_flow_runs_on_the_server_started_early_which_stops_at_exit():
    done = python("""
        import os, sys
        from prefect import flow

        from pipelines.runtime import (
            set_quiet_and_patient_defaults, start_prefect_server_early, wait_for_prefect_server,
        )

        set_quiet_and_patient_defaults()
        start_prefect_server_early()
        start_prefect_server_early()  # once per process
        wait_for_prefect_server()
        url = os.environ["PREFECT_API_URL"]

        @flow
        def answer() -> int:
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
