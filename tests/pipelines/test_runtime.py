"""Process defaults of a command: the exit without collections.

The test runs a fresh interpreter: exit handlers are process-wide state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


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
