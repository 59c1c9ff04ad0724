"""Incremental roll-ups kept between runs in ``OUTPUT/rollups/`` (``features.incremental_rollups``).

The tables are those of :mod:`features.rollup`: ``daily`` (one Parquet part per run
that added days; a rebuild, and every run whose parts outnumber the longest window's
days, merges the days older than every window into one row per (entity, type)),
``items.parquet`` and ``nps.parquet``, the window state ``window.parquet``
(:mod:`features.rollup_window`: one row per (entity, type) as of the roll-ups' end,
from which the features are read), with ``state.json``, in one generation folder;
``OUTPUT/rollups/CURRENT`` names the generation in force. A run with roll-ups on:

1. decides (:func:`plan`): **incremental** when the stored roll-ups were made with the
   same feature settings and mapping, end before the run date, the event files they
   read are unchanged (path, size, modification time; new files may be added) and the
   events before their end are as many as they counted; otherwise it **rebuilds** them
   from every event before the run date (the first run, a changed setting or mapping, a
   file changed in the past). A run date before the roll-ups' end reads the events in
   full and leaves the roll-ups alone;
2. aggregates only the events from the roll-ups' end to the run date, moves the window
   state to the run date with the days entering and leaving its windows, writes the new
   generation into a hidden staging folder and computes the features from it
   (:func:`features.rollup.build_features`);
3. after the run has written its outputs, :func:`commit` renames the staging folder in
   and then points ``CURRENT`` at it (each step atomic): a run that fails keeps the last
   good roll-ups, and the next run's recovery removes what it staged.

With ``retention.max_event_age_days``, days and latest uses older than the retained
events are left out when the features are computed and when a generation is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features import engine, rollup, rollup_window
from features.event_table import EventTable
from features.spec import FeatureSpec
from pipelines.atomic_files import staging_dir, write_text_atomic

log = logging.getLogger(__name__)

POINTER = "CURRENT"
STATE = "state.json"
DAILY, ITEMS, NPS = "daily", "items.parquet", "nps.parquet"
WINDOW = "window.parquet"


@dataclass
class RollupReport:
    """What a run did with the roll-ups, for the summary and :func:`commit`.

    Attributes:
        mode: ``incremental``, ``rebuilt`` or ``full read`` (roll-ups not used).
        reason: Why (a rebuild or a full read), in words.
        events_read: Events aggregated by this run for its features.
        since: The first moment of the events read (``None``: from the first event).
        staged: The new generation to commit, or ``None``.
    """

    mode: str
    reason: str = ""
    events_read: int = 0
    since: pd.Timestamp | None = None
    staged: Path | None = field(default=None, repr=False)
    root: Path | None = field(default=None, repr=False)

    def summary_counts(self) -> dict[str, int]:
        """``{events_read_for_features: n, rollups_used: 0/1}`` for the run summary."""
        return {"events_read_for_features": self.events_read,
                "rollups_used": int(self.mode == "incremental")}  # fmt: skip


def fingerprint(spec: FeatureSpec, source: str, mapping: Any) -> str:
    """What the roll-ups depend on besides the events: version, feature set, source, mapping."""
    parts = [rollup.ROLLUP_VERSION, repr(spec), str(source), repr(mapping)]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def file_stats(files: list[Path] | None) -> dict[str, list[int]]:
    """``{path: [size, modification time ns]}`` of the event files (empty for SQL)."""
    out = {}
    for file in files or []:
        stat = file.stat()
        out[str(file.resolve())] = [stat.st_size, stat.st_mtime_ns]
    return out


def current(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The generation in force and its state, or ``None`` (none yet, or unreadable)."""
    try:
        folder = root / (root / POINTER).read_text(encoding="utf-8").strip()
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
        return folder, state
    except (OSError, ValueError):
        return None


def plan(
    root: Path,
    events: EventTable,
    as_of: pd.Timestamp,
    key: str,
    stats: dict[str, list[int]],
    oldest: pd.Timestamp | None,
) -> tuple[str, str, Path | None, dict[str, Any] | None]:
    """``(mode, reason, generation, state)``: incremental, rebuilt or full read; see the module."""
    if not rollup.is_midnight(as_of):
        return "full read", "the run date is not midnight UTC", None, None
    found = current(root)
    if found is None:
        return "rebuilt", "no roll-ups yet", None, None
    folder, state = found
    through = pd.Timestamp(state["through"], tz="UTC")
    if state.get("fingerprint") != key:
        return "rebuilt", "the feature settings, source or mapping changed", None, None
    if as_of < through:
        return (
            "full read",
            f"the run date is before the roll-ups' end ({through.date()})",
            None,
            None,
        )
    changed = [path for path, stat in state.get("files", {}).items() if stats.get(path) != stat]
    if changed:
        return "rebuilt", f"{len(changed)} event file(s) changed since the roll-ups", None, None
    rolled = _rolled_count(events.con, folder, state, oldest)
    counted = _events_in_window(events, oldest, through)
    if rolled != counted:
        return (
            "rebuilt",
            f"{counted:,} events before {through.date()} where the roll-ups counted {rolled:,}",
            None,
            None,
        )
    return "incremental", "", folder, state


def _events_in_window(events: EventTable, oldest: pd.Timestamp | None, end: pd.Timestamp) -> int:
    """Events in ``[oldest, end)`` (from the first event without retention).

    Without retention this is :meth:`EventTable.before`, whose scan the feed checks have
    usually made already: the previous run date is the roll-ups' end.
    """
    if oldest is None:
        return events.before(end)
    return events.where(_window(events, oldest, end)).rows


def _window(events: EventTable, oldest: pd.Timestamp | None, end: pd.Timestamp) -> Any:
    from features.event_table import utc_literal

    time = events.table.event_time
    kept = time < utc_literal(end)
    return kept if oldest is None else kept & (time >= utc_literal(oldest))


def _rolled_count(con: Any, folder: Path, state: dict, oldest: pd.Timestamp | None) -> int:
    daily = _daily(con, folder, state["parts"])
    if oldest is not None:
        daily = daily.filter(daily.day >= rollup.day_of(oldest))
    return int(con.execute(daily.n.sum().fill_null(0)))


def _daily(con: Any, folder: Path, parts: list[str]) -> Any:
    return con.read_parquet([str(folder / DAILY / part) for part in parts])


def prepare(
    output_dir: Path,
    events: EventTable,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
    key: str,
    stats: dict[str, list[int]],
    oldest: pd.Timestamp | None = None,
    max_parts: int | None = None,
) -> tuple[tuple[Any, Any, Any] | None, RollupReport]:
    """Bring the roll-ups up to ``as_of`` in a staging folder; return them and the report.

    Args:
        output_dir: The run's output folder (roll-ups in ``rollups/``).
        events: The run's validated events (after retention).
        as_of: The run date (midnight UTC).
        spec: The feature set.
        key: :func:`fingerprint` of the settings.
        stats: :func:`file_stats` of the event files.
        oldest: The oldest event retention keeps, or ``None``.
        max_parts: Nightly parts kept before they are merged again (default: the days
            of the longest window), so the rows read stay bounded by the window.

    Returns:
        The window state, ``items`` and ``nps`` tables as of ``as_of`` (``None`` for a
        full read), and the report (its ``staged`` generation to :func:`commit`).
    """
    root = output_dir / "rollups"
    mode, reason, folder, state = plan(root, events, as_of, key, stats, oldest)
    if mode == "full read":
        log.info("Roll-ups not used: %s; the features read every event.", reason)
        return None, RollupReport(mode, reason, _events_in_window(events, oldest, as_of))
    con = events.con
    start = None if folder is None else pd.Timestamp(state["through"], tz="UTC")
    why = f" ({reason})" if reason else ""
    log.info("Roll-ups %s%s: aggregating the events from %s to %s.",
             mode, why, start or "the first event", as_of.date())  # fmt: skip
    staged = staging_dir(root / f"gen-{uuid.uuid4().hex[:12]}")
    (staged / DAILY).mkdir()
    rows = rollup.events_between(events.table, start, as_of, con.name)
    new_daily, new_items, new_nps = rollup.rollups_of(rows, spec)
    part = f"through={as_of.date()}.parquet"
    if folder is None and oldest is None:
        # A rebuild merges the days older than every window into one row per (entity,
        # type): dated before the window, that row stays exact at every later cutoff.
        new_daily = rollup.compacted(new_daily, rollup.compaction_day(as_of, spec), spec)
    _write_daily(con, new_daily, staged / DAILY / part)
    read = int(con.execute(con.read_parquet(staged / DAILY / part).n.sum().fill_null(0)))
    parts = [part]
    if folder is not None:
        for old in state["parts"]:
            _link(folder / DAILY / old, staged / DAILY / old)
        parts = [*state["parts"], part]
    if oldest is None:
        # Before older days are merged: the days leaving a window are read one by one.
        daily = _daily(con, staged, parts)
        window = (
            rollup_window.window_state(daily, as_of, spec)
            if folder is None
            else rollup_window.advanced(con.read_parquet(folder / WINDOW), daily, start, as_of,
                                        spec)
        )  # fmt: skip
        con.to_parquet(window, staged / WINDOW)
    if folder is not None:
        old_items, old_nps = con.read_parquet(folder / ITEMS), con.read_parquet(folder / NPS)
        new_items = rollup.merge_items(old_items.union(new_items.select(*old_items.columns)))
        new_nps = rollup.merge_nps(old_nps.union(new_nps.select(*old_nps.columns)))
    if oldest is None and len(parts) > (max_parts or rollup.longest_window(spec)):
        parts = _merge_parts(con, staged / DAILY, parts, as_of, spec)
    if oldest is not None:
        parts = _purge_days(con, staged / DAILY, parts, rollup.day_of(oldest))
        since = engine.microseconds(oldest)
        new_items = new_items.filter(new_items.last_us >= since)
        new_nps = new_nps.filter(new_nps.last_us >= since)
        # Retention drops days from the parts: the state is made again from those kept.
        window = rollup_window.window_state(_daily(con, staged, parts), as_of, spec)
        con.to_parquet(window, staged / WINDOW)
    con.to_parquet(new_items, staged / ITEMS)
    con.to_parquet(new_nps, staged / NPS)
    new_state = {"fingerprint": key, "through": str(as_of.date()), "files": stats, "parts": parts}
    (staged / STATE).write_text(json.dumps(new_state, indent=1), encoding="utf-8")
    tables = tuple(con.read_parquet(staged / name) for name in (WINDOW, ITEMS, NPS))
    report = RollupReport(mode, reason, read, start, staged, root)
    log.info("Roll-ups %s: %d events read for the features.", mode, read)
    return tables, report


def _write_daily(con: Any, daily: Any, path: Path) -> None:
    """Write a ``daily`` part in day order, so its row groups hold few days each.

    A night reads the days leaving each window (:func:`features.rollup_window.advanced`):
    with the part in day order the engine skips the other row groups by their
    statistics. Unordered, the 23M-row part of a 1M-entity rebuild had every day in
    every row group and was read whole each night (the advance took 1.7 s, 1.35 s in
    day order; the sort costs the rebuild 1.4 s, once).
    """
    con.to_parquet(daily.order_by("day"), path)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _merge_parts(con: Any, folder: Path, parts: list[str], as_of: pd.Timestamp,
                 spec: FeatureSpec) -> list[str]:  # fmt: skip
    """All parts as one, the days older than every window merged (see :func:`prepare`)."""
    merged = f"merged-{as_of.date()}.parquet"
    table = con.read_parquet([str(folder / part) for part in parts])
    compact = rollup.compacted(table, rollup.compaction_day(as_of, spec), spec)
    _write_daily(con, compact, folder / merged)
    for part in parts:
        (folder / part).unlink()
    return [merged]


def _purge_days(con: Any, folder: Path, parts: list[str], first_day: int) -> list[str]:
    """Parts without the days before ``first_day`` (retention); emptied parts are dropped."""
    kept = []
    for part in parts:
        path = folder / part
        table = con.read_parquet(path)
        if int(con.execute(table.day.min().fill_null(first_day))) >= first_day:
            kept.append(part)
            continue
        remaining = table.filter(table.day >= first_day)
        if int(con.execute(remaining.count())):
            rewritten = folder / f"kept-{part}"
            _write_daily(con, remaining, rewritten)
            path.unlink()
            rewritten.rename(path)
            kept.append(part)
        else:
            path.unlink()
    return kept


def types_seen(con: Any, daily: Any) -> list[str]:
    """The event types of the roll-ups' days (the types :func:`EventTable.types_seen` lists)."""
    names = con.execute(daily.select("event_type").distinct())["event_type"]
    return sorted(str(name) for name in names)


def commit(report: RollupReport | None) -> None:
    """Put a staged generation in force (after the run wrote its outputs); drop older ones."""
    if report is None or report.staged is None or report.root is None:
        return
    final = report.root / report.staged.name.split(".staged-")[0].lstrip(".")
    try:
        report.staged.rename(final)
        write_text_atomic(final.name, report.root / POINTER)
    except OSError as exc:
        log.warning("Could not keep the roll-ups in %s (%s); the next run rebuilds them.",
                    report.root, exc)  # fmt: skip
        return
    for other in report.root.iterdir():
        if other.is_dir() and other.name.startswith("gen-") and other != final:
            shutil.rmtree(other, ignore_errors=True)
    report.staged = None
