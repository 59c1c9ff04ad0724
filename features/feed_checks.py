"""Feed sanity checks: is today's event feed plausible before anything is written?

Pure checks on validated events (the caller reads the feed and the previous run's
counts, and decides what to stop or drop):

- :func:`feed_size_problem`: an empty feed, or one that shrank by more than a
  share against the previous run, counted in the same window (events strictly
  before the previous run date). Feeds are full histories, so rows the previous run
  saw in that window should all still be there.
- :func:`quarantine_events`: rows whose ``value`` is out of range for their declared
  event type (NPS 0 to 10, session minutes 0 or more, finite purchase amounts), or
  not finite or huge whatever the type, are set aside with counts and a few samples.
- :func:`unknown_event_types`: event types the feature spec does not declare (they
  are featurised generically), the most frequent first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.timeutil import as_utc

#: Largest ``value`` size accepted for any event type: beyond it sums overflow and
#: averages stop meaning anything (1e308 and ``inf`` are typical export faults).
MAX_ABS_VALUE = 1e12
#: Sample rows kept per run summary, and unknown event types listed.
SAMPLE_ROWS = 5
TOP_UNKNOWN_TYPES = 10


@dataclass(frozen=True)
class ValueRange:
    """The values an event type may carry (bounds included; missing values pass).

    Attributes:
        low: Smallest value allowed.
        high: Largest value allowed.
        meaning: What the value is, for the reason text ("NPS score").
    """

    low: float
    high: float
    meaning: str

    def describe(self) -> str:
        """``"NPS score outside 0 to 10"``, ``"session minutes below 0"``."""
        if math.isinf(self.high):
            return f"{self.meaning} below {self.low:g}"
        return f"{self.meaning} outside {self.low:g} to {self.high:g}"


#: Value ranges of the declared event types that carry a value.
VALUE_RANGES: dict[str, ValueRange] = {
    "nps_answer": ValueRange(0, 10, "NPS score"),
    "session": ValueRange(0, math.inf, "session minutes"),
}
NOT_FINITE = "value not finite (inf or -inf)"
HUGE = f"value larger than {MAX_ABS_VALUE:g} in size"


class FeedError(ValueError):
    """An event feed that fails a sanity check; the run stops before any write."""


@dataclass(frozen=True)
class Quarantine:
    """Event rows set aside because their value is out of range.

    Attributes:
        counts: Rows per reason (``"NPS score outside 0 to 10"``: 3).
        samples: Up to :data:`SAMPLE_ROWS` rows (``event_type``, ``event_time``,
            ``value``, ``reason``), without ids, so the summary holds no personal data;
            a value that is not finite is text (``"inf"``), so the summary stays JSON.
    """

    counts: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows set aside in all."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class FeedReport:
    """What the feed checks found, for the run summary.

    Attributes:
        events_before_as_of: Events strictly before the run date (the count the
            next run compares its feed with).
        quarantine: Rows set aside for out-of-range values.
        unknown_event_types: Undeclared event types and their rows, top
            :data:`TOP_UNKNOWN_TYPES`.
        forced: Size problems overridden by ``sources.force_feed``.
    """

    events_before_as_of: int
    quarantine: Quarantine = field(default_factory=Quarantine)
    unknown_event_types: dict[str, int] = field(default_factory=dict)
    forced: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``quarantined`` counts, ``quarantine_samples`` rows)."""
        data = asdict(self)
        quarantine = data.pop("quarantine")
        data["quarantined"] = quarantine["counts"]
        data["quarantine_samples"] = quarantine["samples"]
        return data

    def warnings(self) -> list[str]:
        """Sentences for the run summary's warnings (empty when all is well)."""
        out = list(self.forced)
        if self.quarantine.rows:
            reasons = ", ".join(f"{n:,} {why}" for why, n in self.quarantine.counts.items())
            out.append(
                f"{self.quarantine.rows:,} event rows were quarantined (not featurised): "
                f"{reasons}; see feeds.quarantine_samples. Fix them in the source system."
            )
        if self.unknown_event_types:
            listed = ", ".join(f"{t} ({n:,})" for t, n in self.unknown_event_types.items())
            out.append(
                f"Event types not declared in the feature spec (featurised generically): {listed}."
            )
        return out


def events_before(events: pd.DataFrame, cutoff: pd.Timestamp | str) -> int:
    """Events strictly before ``cutoff`` (naive means UTC)."""
    return int((events["event_time"] < as_utc(cutoff)).sum())


def feed_size_problem(
    source: str,
    current: int,
    previous: int | None,
    max_shrink: float,
    *,
    window: str,
) -> str | None:
    """A sentence when the feed is empty or shrank too much, else ``None``.

    Args:
        source: The events source, named in the sentence.
        current: Today's events in the comparison window.
        previous: The previous run's events in that window (``None``: no previous run).
        max_shrink: Largest share of rows that may disappear (``sources.max_feed_shrink``).
        window: The comparison window in words ("before 2025-12-01").

    Returns:
        The problem in one sentence, or ``None``.
    """
    earlier = "" if previous is None else f" (the previous run had {previous:,} {window})"
    if current == 0 and (previous is None or previous > 0):
        return f"The events feed {source} has no events {window}{earlier}."
    if previous is None or previous == 0:
        return None
    shrink = 1 - current / previous
    if shrink <= max_shrink:
        return None
    return (
        f"The events feed {source} shrank from {previous:,} to {current:,} events {window} "
        f"({shrink:.0%} fewer, more than sources.max_feed_shrink = {max_shrink:g}); "
        "rows the previous run saw have disappeared from the source."
    )


def quarantine_events(
    events: pd.DataFrame,
    ranges: dict[str, ValueRange] | None = None,
    max_abs: float = MAX_ABS_VALUE,
) -> tuple[pd.DataFrame, Quarantine]:
    """Set aside events whose ``value`` is out of range; keep the others.

    Args:
        events: Validated events (a float ``value`` column, or none).
        ranges: Allowed values per event type (default :data:`VALUE_RANGES`).
        max_abs: Largest value size for any type.

    Returns:
        The kept events (index reset) and what was set aside.
    """
    if "value" not in events.columns or events.empty:
        return events, Quarantine()
    ranges = VALUE_RANGES if ranges is None else ranges
    value = events["value"].to_numpy(dtype="float64", na_value=np.nan)
    types = events["event_type"].astype("str")
    # One small code per row (0: kept), the reason text only for the rows set aside.
    labels = ["", *(allowed.describe() for allowed in ranges.values()), HUGE, NOT_FINITE]
    code = np.zeros(len(events), dtype=np.int16)
    for number, (name, allowed) in enumerate(ranges.items(), start=1):
        of_type = types.eq(name).to_numpy(dtype=bool, na_value=False)
        code[of_type & ((value < allowed.low) | (value > allowed.high))] = number
    code[np.abs(value) > max_abs] = len(labels) - 2
    code[np.isinf(value)] = len(labels) - 1
    out = code != 0
    if not out.any():
        return events, Quarantine()
    reason = np.array(labels, dtype=object)[code[out]]
    counts = pd.Series(reason).value_counts()
    shown = events.loc[out, ["event_type", "event_time", "value"]].head(SAMPLE_ROWS)
    samples = [
        {
            "event_type": str(row.event_type),
            "event_time": pd.Timestamp(row.event_time).isoformat(),
            "value": float(row.value) if np.isfinite(row.value) else str(row.value),
            "reason": why,
        }
        for row, why in zip(shown.itertuples(index=False), reason[:SAMPLE_ROWS], strict=True)
    ]
    quarantine = Quarantine({str(k): int(v) for k, v in counts.items()}, samples)
    return events.loc[~out].reset_index(drop=True), quarantine


def unknown_event_types(
    events: pd.DataFrame, declared: Iterable[str], top: int = TOP_UNKNOWN_TYPES
) -> dict[str, int]:
    """Rows per event type the feature spec does not declare, most frequent first.

    Args:
        events: Events with an ``event_type`` column.
        declared: The declared event type names.
        top: How many types to list.
    """
    counts = events["event_type"].value_counts()
    # Counted first, named after: values that read as the same text count together.
    counts = counts[counts > 0]
    counts = counts.groupby(counts.index.astype("str")).sum()
    counts = counts[~counts.index.isin(set(declared))]
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {str(k): int(v) for k, v in ordered}
