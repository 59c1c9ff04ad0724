"""Inputs read ahead, while Prefect's temporary server starts and the flow run is created.

The ``nightly`` and ``score`` commands build their run context before the flow does
(:mod:`pipelines.flow_runs`), then wait for Prefect's temporary server and for Prefect
to create the flow run: about a second in which one core of a small machine idles.
:func:`read_ahead` starts reading and checking the inputs
(:func:`pipelines.steps.load_inputs`) in a background thread at that point, and the
flow's ``load inputs`` task takes the result (:func:`take`) instead of reading again.

It is taken only when nothing the read depended on has changed since:

- the task's run context has the same settings, run date and ``allow_future``;
- the output folder's files the read consulted (the previous ``summary.json`` for the
  feed check, and the memo of the event checks) are unchanged. The run lock is taken
  by the flow, after the read began; a run that finished in between changed them.

Otherwise the task reads again. A read that raised raises the same exception from the
task, which retries it or fails with its sentence as if it had read the inputs itself.
Nothing is read ahead while another run holds the output folder's lock (the flow will
stop at it at once). Only one read is pending per process, and the command that
started it drops it when its flow ends (:func:`drop`): a later flow of the same
process never takes it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.event_days_memo import DAYS_FILE
from pipelines.sources import CHECKS_FILE

if TYPE_CHECKING:
    from pipelines.context import RunContext
    from pipelines.sources import Inputs

log = logging.getLogger(__name__)
#: The step lines' logger (:mod:`pipelines.step_timing`): the ``load inputs`` line then
#: says the read took longer than the step shows.
step_log = logging.getLogger("pipelines.steps")

#: The output folder's files :func:`pipelines.steps.load_inputs` reads.
CONSULTED = ("summary.json", CHECKS_FILE, DAYS_FILE)

_Stamp = tuple[tuple[str, int, int] | None, ...]


@dataclass
class _Pending:
    """The read in progress, what it was started for, and when."""

    ctx: RunContext
    stamp: _Stamp
    future: Future[Inputs]
    started: float


_pending: list[_Pending] = []  # at most one


def _stamp(output_dir: Path) -> _Stamp:
    """``(name, modification time, size)`` of each consulted file (``None``: absent)."""
    stamps = []
    for name in CONSULTED:
        try:
            info = (Path(output_dir) / name).stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((name, info.st_mtime_ns, info.st_size))
    return tuple(stamps)


def _same_run(a: RunContext, b: RunContext) -> bool:
    """Whether two contexts read the same inputs the same way (the config path aside)."""
    return (a.settings, a.as_of, a.allow_future) == (b.settings, b.as_of, b.allow_future)


def read_ahead(ctx: RunContext) -> None:
    """Start reading the inputs of ``ctx`` in a background thread (see the module)."""
    from pipelines.run_lock import lock_path
    from pipelines.steps import load_inputs

    _pending.clear()
    if lock_path(ctx.output_dir).exists():
        return  # another run holds the folder: the flow stops at its lock, nothing to read
    stamp = _stamp(ctx.output_dir)  # before the read: a change during it is seen too
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
    try:
        future = pool.submit(load_inputs, ctx)
    finally:
        pool.shutdown(wait=False)  # the thread ends with the read
    _pending.append(_Pending(ctx, stamp, future, time.perf_counter()))


def drop() -> None:
    """Forget a read not taken (its thread finishes on its own)."""
    _pending.clear()


def take(ctx: RunContext) -> Inputs | None:
    """The inputs read ahead for ``ctx``, or ``None`` when the task must read them.

    Raises:
        Exception: What the read raised (a contract or feed error, an I/O error).
    """
    if not _pending:
        return None
    pending = _pending.pop()
    if not _same_run(pending.ctx, ctx):
        log.debug("Inputs read ahead for another run context; reading again.")
        return None
    waited = time.perf_counter()
    error = pending.future.exception()  # waits for the read
    if _stamp(ctx.output_dir) != pending.stamp:  # a stale read, failed or not
        log.info("The output folder changed since the inputs were read ahead; reading again.")
        return None
    if error is not None:
        raise error
    inputs = pending.future.result()
    now = time.perf_counter()
    step_log.info(
        "inputs read ahead while Prefect started: %.1f s, of which the load inputs step "
        "waited %.1f s", now - pending.started, now - waited,
    )  # fmt: skip
    return inputs
