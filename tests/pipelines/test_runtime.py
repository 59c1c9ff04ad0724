"""Process defaults of a command: the exit without collections.

The test runs a fresh interpreter: exit handlers are process-wide state.
"""

from __future__ import annotations

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
