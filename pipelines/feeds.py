"""Feed sanity checks at the reading edge: CSV rows cut short, feeds that shrank.

:func:`check_csv_rows` stops a CSV file whose rows do not all have the header's
number of fields (a file cut inside a value, a quote left open), naming the file,
the line and its text; :func:`ends_early` is the sentence for a compressed file
that ends early. :func:`check_feeds` runs the pure checks of
:mod:`features.feed_checks` on the events read, against the previous run's
``summary.json``: an empty or shrunken feed stops the run before any write (unless
``sources.force_feed``), out-of-range values are quarantined, undeclared event
types are counted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from features.column_checks import ContractError
from features.event_report import quarantine_table, undeclared_types
from features.event_table import EventTable
from features.feed_checks import FeedError, FeedReport, feed_size_problem
from features.timeutil import as_utc
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def ends_early(table: str, file: Path, exc: BaseException) -> str:
    """The sentence for a (compressed) file that ends before its end marker."""
    return (
        f"The {table} file {file} ends early (truncated or still being written): {exc}. "
        "Copy it again once it is complete."
    )


def check_csv_rows(file: Path, table: str = "input") -> None:
    """Check that every row of a CSV file has as many fields as its header.

    pandas fills a short row with empty values, so a file cut inside a value (or a
    quote left open) would otherwise pass with a made-up event type. The file is
    streamed once with pyarrow (only its first column converted), compressed files
    included.

    Raises:
        ContractError: A row has too few or too many fields; the file, the line
            (the header is line 1) and its text are named.
        OSError: A compressed file ends early (pyarrow: "Truncated compressed stream").
    """
    bad: list[pa_csv.InvalidRow] = []

    def first_bad_row(row: pa_csv.InvalidRow) -> str:
        bad.append(row)
        return "error"

    read = pa_csv.ReadOptions(use_threads=False)  # row numbers are known single-threaded
    parse = pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=first_bad_row)
    try:
        names = pa_csv.open_csv(file, read_options=read, parse_options=parse).schema.names
        only_first = pa_csv.ConvertOptions(
            include_columns=names[:1], column_types={names[0]: pa.string()}
        )
        for _ in pa_csv.open_csv(file, read, parse, only_first):
            pass
    except pa.ArrowInvalid:
        if not bad:
            return  # an empty file, or a value pandas may still read: pandas decides
    if bad:
        row = bad[0]
        quote = " (a quote is left open)" if row.text.count('"') % 2 else ""
        raise ContractError(
            table,
            str(file),
            [f"line {row.number} (the header is line 1) has {row.actual_columns} fields where "
             f"the header has {row.expected_columns}{quote}: {row.text[:200]!r}; the file was "
             "probably cut inside a value, or a value holds an unquoted comma: fix the file "
             "or export it again"],
        )  # fmt: skip


def check_feeds(
    settings: Settings,
    events: EventTable | pd.DataFrame,
    events_read: int,
    as_of: pd.Timestamp,
) -> tuple[EventTable, FeedReport]:
    """Stop on an empty or shrunken event feed; quarantine out-of-range values.

    Runs after the inputs are read, before anything is written. The previous run's
    ``summary.json`` gives its events before its run date; today's events before
    that same date are compared with it (feeds are full histories, so a shrink means
    rows disappeared, whatever the two run dates). A summary written before this
    count existed is compared with the events read in all.

    Args:
        settings: Run settings (``sources.max_feed_shrink``, ``sources.force_feed``,
            the declared event types, ``output.dir``).
        events: The validated events of the run (a frame is handed to the engine).
        events_read: Event rows read (the input report's ``events``).
        as_of: The run date.

    Returns:
        The events without quarantined rows, and what the checks found.

    Raises:
        FeedError: The feed is empty or shrank too much, and ``force_feed`` is off.
    """
    if isinstance(events, pd.DataFrame):
        events = EventTable.from_frame(events)
    sources = settings.sources
    previous = previous_feed(Path(settings.output.dir) / "summary.json")
    count, current, window = None, len(events), "at all"
    if previous is not None:
        day, count = previous
        if day is None:
            current, window = events_read, "in all"
        else:
            current, window = events.before(day), f"before {day.date()}"
    problem = feed_size_problem(
        sources.events, current, count, sources.max_feed_shrink, window=window
    )
    forced = []
    if problem and not sources.force_feed:
        raise FeedError(
            f"{problem} Nothing was written. If the source really lost these rows, run once "
            "with sources.force_feed: true (or LEADSCORE_SOURCES__FORCE_FEED=true)."
        )
    if problem:
        log.warning("%s Going on: sources.force_feed is true.", problem)
        forced.append(f"{problem} The run went on because sources.force_feed is true.")
    kept, quarantine = quarantine_table(events)
    if quarantine.rows:
        log.warning("Quarantined %d event rows: %s", quarantine.rows, quarantine.counts)
    declared = [e.name for e in settings.feature_spec().event_types]
    report = FeedReport(
        events.before(as_of), quarantine, undeclared_types(events, declared), forced
    )
    return kept, report


def previous_feed(summary: Path, *, warn: bool = True) -> tuple[pd.Timestamp | None, int] | None:
    """The previous run's ``(run date, events before it)`` from its summary.

    ``(None, events read)`` for a summary without that count; ``None`` without a
    readable summary (a first run), with a warning unless ``warn`` is false.
    """
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        if warn:
            log.warning("Could not read the previous run summary %s (%s); no feed comparison.",
                        summary, exc)  # fmt: skip
        return None
    windowed = (data.get("feeds") or {}).get("events_before_as_of")
    if windowed is not None and data.get("as_of"):
        return as_utc(pd.Timestamp(data["as_of"])), int(windowed)
    total = (data.get("inputs") or {}).get("events")
    return None if total is None else (None, int(total))
