"""What a run read and what it set aside: :class:`InputReport` and the event policy.

Exact duplicate events (:func:`exact_duplicates`) and events later than the run's
"now" are counted here (:func:`input_report`), and the caller decides what to do with
them (:func:`clean_events`). Many duplicates (over :data:`DUPLICATE_WARNING_SHARE`) get
a warning with a sample and the likely cause (:func:`duplicates_warning`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.backend import EVENT_COLUMNS
from features.timeutil import as_utc

#: Share of exact duplicate events above which the run summary warns.
DUPLICATE_WARNING_SHARE = 0.01
#: Duplicate rows shown in the warning.
DUPLICATE_SAMPLE_ROWS = 3
#: Odd 64-bit multiplier folding the column hashes of a row into one.
_ROW_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class InputReport:
    """What a run read and what it set aside.

    Attributes:
        events: Event rows read.
        entities: Entity rows read.
        outcomes: Outcome rows read.
        duplicate_events: Event rows that exactly repeat an earlier row.
        future_events: Events later than ``as_of`` (never used by features).
        events_of_unknown_entities: Events whose ``entity_id`` is not in entities.
        entities_without_consent: Entities with ``consent`` false (the suppression
            list included).
        entities_on_suppression_list: Entities set to no consent by the suppression list.
        entities_forgotten_earlier: Entities erased earlier by ``leadscore forget`` and
            found again in the sources; their rows were dropped before any count above.
        rejected: Rows removed from the inputs, by reason.
        as_of: The run's "now".
        duplicate_sample: A few duplicated events (contract columns, as text).
        unmapped_event_columns: Event columns of the source outside the contract.
        duplicates_kept: The duplicates were kept (``sources.keep_duplicates``).
    """

    events: int
    entities: int
    outcomes: int
    duplicate_events: int
    future_events: int
    events_of_unknown_entities: int = 0
    entities_without_consent: int = 0
    entities_on_suppression_list: int = 0
    entities_forgotten_earlier: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    as_of: pd.Timestamp | None = None
    duplicate_sample: list[dict[str, str]] = field(default_factory=list)
    unmapped_event_columns: list[str] = field(default_factory=list)
    duplicates_kept: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts (``as_of`` as an ISO 8601 string)."""
        data = asdict(self)
        data["as_of"] = None if self.as_of is None else self.as_of.isoformat()
        return data


def input_report(
    events: pd.DataFrame,
    as_of: pd.Timestamp | str,
    entities: pd.DataFrame | None = None,
    outcomes: pd.DataFrame | None = None,
) -> InputReport:
    """Count the validated inputs of a run (nothing is removed here).

    Args:
        events: Validated events, before duplicates are dropped.
        as_of: The run's "now"; naive values are UTC.
        entities: Validated entities, if loaded.
        outcomes: Validated outcomes, if loaded.

    Returns:
        The counts; ``rejected`` is empty until :func:`clean_events` fills it.
    """
    unknown = 0
    without_consent = 0
    if entities is not None:
        unknown = int((~events["entity_id"].isin(entities["entity_id"])).sum())
        if "consent" in entities.columns:
            without_consent = int((~entities["consent"].astype(bool)).sum())
    duplicated = exact_duplicates(events)
    contract = [c for c in EVENT_COLUMNS if c in events.columns]
    sample = events.loc[duplicated, contract].head(DUPLICATE_SAMPLE_ROWS).astype("str")
    return InputReport(
        events=len(events),
        entities=0 if entities is None else len(entities),
        outcomes=0 if outcomes is None else len(outcomes),
        duplicate_events=int(duplicated.sum()),
        duplicate_sample=sample.to_dict("records"),
        unmapped_event_columns=[str(c) for c in events.columns if c not in contract],
        future_events=int((events["event_time"] > as_utc(as_of)).sum()),
        events_of_unknown_entities=unknown,
        entities_without_consent=without_consent,
        as_of=as_utc(as_of),
    )


def exact_duplicates(events: pd.DataFrame) -> pd.Series:
    """Rows equal in every column to an earlier row: ``events.duplicated()``, faster.

    Every row is hashed once (pandas' hashes: missing values alike, ``0.0`` and
    ``-0.0`` alike) and the hashes are sorted; only rows whose hash repeats are
    compared exactly with ``DataFrame.duplicated``, so a feed without duplicates is
    never put through a hash table of whole rows (6-9 s at 10M events).

    Args:
        events: Any frame.

    Returns:
        A bool Series on ``events``' index, true for each repeat of an earlier row.
    """
    if events.empty:
        return events.duplicated()
    key = np.zeros(len(events), dtype=np.uint64)
    for _, column in events.items():
        hashed = pd.util.hash_pandas_object(column, index=False).to_numpy(dtype=np.uint64)
        key = key * _ROW_HASH_MULTIPLIER + hashed
    ordered = np.sort(key)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    duplicated = np.zeros(len(events), dtype=bool)
    if repeated.size:
        # pandas' hash-table isin: numpy's sorts all rows again (16 s at 10M rows).
        candidates = np.flatnonzero(pd.Index(key).isin(repeated))
        duplicated[candidates] = events.iloc[candidates].duplicated().to_numpy(dtype=bool)
    return pd.Series(duplicated, index=events.index)


def duplicates_warning(report: InputReport) -> str:
    """A warning when exact duplicates exceed 1% of the events, with the likely cause; "" if not.

    Rows equal in every column are usually rows the source tells apart by a column
    the mapping left out (the watched video, the clicked link: ``item``), or an
    export that repeats rows.
    """
    if not report.events or report.duplicate_events <= DUPLICATE_WARNING_SHARE * report.events:
        return ""
    share = report.duplicate_events / report.events
    sample = "; ".join(
        ", ".join(f"{k}={v}" for k, v in row.items()) for row in report.duplicate_sample
    )
    if report.unmapped_event_columns:
        cause = (
            "the events' other columns ("
            + ", ".join(report.unmapped_event_columns[:8])
            + ") are equal too, so the export itself repeats rows, or a column that tells "
            "them apart was not exported"
        )
    else:
        cause = (
            "a source column that tells them apart (such as the video, page or product: "
            "`item`) is probably not mapped in sources.column_map"
        )
    action = (
        "they were kept (sources.keep_duplicates)"
        if report.duplicates_kept
        else "they were dropped; set sources.keep_duplicates: true if they are real repeats"
    )
    return (
        f"{report.duplicate_events:,} events ({share:.1%}) exactly repeat another event: "
        f"{cause}; {action}. E.g. {sample}."
    )


def clean_events(
    events: pd.DataFrame,
    as_of: pd.Timestamp | str,
    *,
    drop_duplicates: bool = True,
    drop_future: bool = False,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply the run's policy for duplicate and future events.

    By default exact duplicates are dropped (a re-sent export must not double
    counts) and future events are kept: the point-in-time rule already keeps them
    out of every feature, and a later run may need them.

    Args:
        events: Validated events.
        as_of: The run's "now"; naive values are UTC.
        drop_duplicates: Drop rows equal to an earlier row.
        drop_future: Drop events later than ``as_of``.

    Returns:
        The kept events and the number of rows removed by reason.
    """
    rejected: dict[str, int] = {}
    keep = pd.Series(True, index=events.index)
    if drop_duplicates:
        duplicated = exact_duplicates(events)
        rejected["duplicate_events"] = int(duplicated.sum())
        keep &= ~duplicated
    if drop_future:
        future = events["event_time"] > as_utc(as_of)
        rejected["future_events"] = int((future & keep).sum())
        keep &= ~future
    return events.loc[keep].reset_index(drop=True), rejected
