"""Wall time and peak memory per step of a run, for the log, the summary and benchmarks.

A run opens a :func:`collecting` block; each step inside it is wrapped in
:func:`timed`, which logs one line (``step 'build features' done in 12.3 s, peak
memory 1.42 GB``) and records a :class:`StepTiming`. Peak memory is the process's
peak resident set so far (``getrusage``), so a step's figure is the high-water mark
reached by the end of that step.

A nightly run puts its timings in the run summary's Markdown (the Prefect artifact),
the CLI's end-of-run table and ``OUTPUT/timings/DATE.json`` (:func:`write_timings`,
read by ``benchmarks/nightly.py``); never in ``summary.json``, which stays
byte-identical when a date is run again.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("pipelines.steps")

_COLLECTED: ContextVar[list[StepTiming] | None] = ContextVar("step_timings", default=None)


@dataclass(frozen=True)
class StepTiming:
    """One step of a run: its name, wall time and the process's peak memory after it.

    ``cpu_seconds`` is the CPU time of every thread of this process during the step
    (not of child processes such as Prefect's temporary server): above ``seconds``
    the step kept more than one core busy.
    """

    step: str
    seconds: float
    peak_rss_bytes: int
    cpu_seconds: float = 0.0

    def describe(self) -> str:
        """``build features: 12.3 s, peak memory 1.42 GB``."""
        return f"{self.step}: {self.seconds:.1f} s, peak memory {self.peak_rss_bytes / 1e9:.2f} GB"


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@contextmanager
def collecting() -> Iterator[list[StepTiming]]:
    """Collect the timings of the steps run inside the block (one run)."""
    timings: list[StepTiming] = []
    token = _COLLECTED.set(timings)
    try:
        yield timings
    finally:
        _COLLECTED.reset(token)


@contextmanager
def timed(step: str) -> Iterator[None]:
    """Time one step; log it and record it in the run's collection, if any."""
    began, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        timing = StepTiming(
            step, time.perf_counter() - began, peak_rss_bytes(), time.process_time() - cpu
        )
        collected = _COLLECTED.get()
        if collected is not None:
            collected.append(timing)
        log.info("step %s", timing.describe())


def collected_so_far() -> list[StepTiming]:
    """The timings the enclosing :func:`collecting` block holds so far (a copy)."""
    return list(_COLLECTED.get() or [])


def write_timings(path: Path, timings: list[StepTiming]) -> Path | None:
    """Write the timings as JSON (``[{step, seconds, peak_rss_bytes, cpu_seconds}]``) atomically.

    A failure to write is logged, never raised: timings must not fail or mask a run.

    Returns:
        The file written, or ``None`` if it could not be.
    """
    from pipelines.atomic_files import write_text_atomic

    text = json.dumps([asdict(t) for t in timings], indent=2)
    try:
        return write_text_atomic(text, path)
    except OSError as exc:
        log.warning("Could not write the step timings to %s: %s", path, exc)
        return None
