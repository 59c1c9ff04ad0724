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
