"""Process defaults of a command: the exit without collections, 4 KB pages, one OpenBLAS thread.

The test runs a fresh interpreter: exit handlers are process-wide state.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.fresh_python import python


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


def test_a_run_holds_back_full_collections_and_restores_them():
    done = python("""
        import gc
        from pipelines.runtime import FULL_COLLECTION_EVERY, few_full_collections

        gc.set_threshold(700, 10, 10)
        full_runs = []
        gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2
                            and full_runs.append(1))
        with few_full_collections():
            print("inside", gc.get_threshold()[2] == FULL_COLLECTION_EVERY,
                  gc.get_freeze_count() > 0)
            kept = [[i] for i in range(200_000)]  # many young collections, no full one
            print("full collections", len(full_runs))
        print("after", gc.get_threshold(), gc.get_freeze_count())
        del kept
        [[i] for i in range(200_000)]
        print("full collections again", len(full_runs) > 0)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "inside True True",
        "full collections 0",
        "after (700, 10, 10) 0",
        "full collections again True",
    ]


def test_imports_make_no_collections_and_are_frozen_after():
    done = python("""
        import gc
        from pipelines.runtime import no_collections_while_importing

        runs = []
        gc.callbacks.append(lambda phase, info: phase == "start" and runs.append(1))
        with no_collections_while_importing():
            print("inside", gc.isenabled())
            made = [[i] for i in range(200_000)]  # would trigger young collections
            print("collections", len(runs))
        print("after", gc.isenabled(), gc.get_freeze_count() >= 200_000)
        gc.disable()
        with no_collections_while_importing():
            pass
        print("left disabled", not gc.isenabled())
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "inside False",
        "collections 0",
        "after True True",
        "left disabled True",
    ]


def _thp_enabled(status: str) -> str:
    return next(line.split()[1] for line in status.splitlines() if line.startswith("THP_enabled"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux process flag")
def test_a_command_and_what_it_starts_run_without_transparent_huge_pages(tmp_path):
    """Through the CLI: the command's process, and a process it starts, have them off."""
    done = python(f"""
        import ctypes, subprocess, sys
        from typer.testing import CliRunner
        from pipelines.cli import app

        # Back to the kernel's default, whatever this test's own process had set.
        ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)
        before = open("/proc/self/status").read()
        result = CliRunner().invoke(app, ["init", "--out", {str(tmp_path / "ls.yaml")!r}])
        after = open("/proc/self/status").read()
        child = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True)
        print(result.exit_code, repr(before), repr(after), repr(child.stdout), sep="\\n")
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    code, before, after, child = done.stdout.splitlines()
    assert code == "0"
    assert _thp_enabled(eval(before)) == "1"  # the kernel's default, before the command
    assert _thp_enabled(eval(after)) == "0"
    assert _thp_enabled(eval(child)) == "0"
    assert (tmp_path / "ls.yaml").exists()


# OpenBLAS caps a number asked for at the machine's cores.
@pytest.mark.parametrize(("users", "expected"), [(None, 1), ("2", min(2, os.cpu_count() or 1))])
def test_a_command_runs_numpy_s_openblas_on_one_thread_unless_the_user_says(
    tmp_path, users, expected
):
    """Through the CLI: OpenBLAS gets one thread (no spinning helper), or the user's number."""
    done = python(f"""
        import os
        os.environ.pop("OPENBLAS_NUM_THREADS", None)  # this test process set the default
        if {users!r} is not None:
            os.environ["OPENBLAS_NUM_THREADS"] = {users!r}
        from typer.testing import CliRunner
        from pipelines.cli import app

        result = CliRunner().invoke(app, ["init", "--out", {str(tmp_path / "ls.yaml")!r}])
        import numpy  # noqa: F401 - loads its OpenBLAS
        from threadpoolctl import threadpool_info

        blas = [p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openblas"]
        print(result.exit_code, blas[:1])
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n", 1)[0] == f"0 [{expected}]"
