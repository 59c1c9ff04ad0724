"""Running a snippet in a fresh interpreter, for tests of process-wide state."""

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
