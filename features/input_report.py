"""What a run read and what it set aside: :class:`InputReport` and the event policy.

Exact duplicate events and events later than the run's "now" are counted here
(:func:`input_report`), and the caller decides what to do with them
(:func:`clean_events`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from features.timeutil import as_utc


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
    return InputReport(
        events=len(events),
        entities=0 if entities is None else len(entities),
        outcomes=0 if outcomes is None else len(outcomes),
        duplicate_events=int(events.duplicated().sum()),
        future_events=int((events["event_time"] > as_utc(as_of)).sum()),
        events_of_unknown_entities=unknown,
        entities_without_consent=without_consent,
        as_of=as_utc(as_of),
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
        duplicated = events.duplicated()
        rejected["duplicate_events"] = int(duplicated.sum())
        keep &= ~duplicated
    if drop_future:
        future = events["event_time"] > as_utc(as_of)
        rejected["future_events"] = int((future & keep).sum())
        keep &= ~future
    return events.loc[keep].reset_index(drop=True), rejected
