"""Point-in-time labels: did the outcome happen in (cutoff, cutoff + horizon]?

Populations (who gets a label at cutoff ``c``):

* Every target: the entity exists (``created_at < c``) and has consent (``consent``
  missing counts as consent, as in the data contract).
* Every target: not ended by ``c`` (``ended_at``, an ``ended`` or a ``disqualified``
  outcome at or before ``c``) and not churned by ``c``; see :mod:`features.population`.
* ``conversion``: a lead at ``c``: not converted by ``c`` (no ``converted`` outcome at
  or before ``c``) and not a ``customer``: with a ``kind`` column, not one from the
  start; without one, no ``purchase`` event before ``c`` (kind inferred).
* ``churn``: a customer at ``c``: ``kind == "customer"`` or converted by ``c`` (without
  a ``kind`` column: converted by ``c`` or a ``purchase`` event before it). With
  inactivity churn, also active: at least one event in ``[c - h, c)``.

Labels:

* ``conversion``: a ``converted`` outcome in ``(c, c + h]``.
* ``churn``: a ``churned`` outcome in ``(c, c + h]``; with ``churn_from_inactivity``
  also 1 when the entity has no event at all in ``(c, c + h]`` and does not end in it
  (a contract that completes goes quiet without churning).

A cutoff is only usable for training when its window is closed, i.e. ``c + h`` is not
after the last date outcomes are known; :func:`rolling_cutoffs` picks such cutoffs, and
:func:`no_cutoff_message` says which constraint binds when none fits.
:func:`models.splits.choose_split` then decides how the stacked rows are evaluated.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.event_table import EventTable
from features.population import end_times, first_purchases
from features.targets import CHURN, CONVERSION, TargetName
from features.targets import target as target_named

log = logging.getLogger(__name__)


def _require(frame: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"The {name} table lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, frame.columns)) or 'no columns'}."
        )


def _utc(values: object) -> pd.Series | pd.DatetimeIndex:
    return pd.to_datetime(values, utc=True)


def _as_cutoffs(cutoffs: Iterable[object]) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(_utc(list(cutoffs))).unique().sort_values()
    if index.empty:
        raise ValueError("No cutoffs given: labels need at least one cutoff date.")
    return index


def rolling_cutoffs(
    first: object,
    outcomes_known_until: object,
    step_days: int,
    horizon_days: int,
    *,
    max_cutoffs: int | None = None,
) -> pd.DatetimeIndex:
    """Rolling cutoffs whose label windows are closed, latest last.

    The latest cutoff is ``outcomes_known_until - horizon`` (floored to midnight UTC),
    so its window ``(c, c + h]`` ends no later than the last known outcome; earlier
    cutoffs step back by ``step_days`` while they are not before ``first``.

    Args:
        first: Earliest allowed cutoff (e.g. the start of the history plus the
            longest feature window).
        outcomes_known_until: Last moment outcomes are known (usually the run date).
        step_days: Days between cutoffs (30: about monthly).
        horizon_days: Label window in days.
        max_cutoffs: Keep only the latest this many.

    Returns:
        Cutoffs as UTC timestamps, oldest first (empty when none fit).
    """
    if step_days <= 0 or horizon_days <= 0:
        raise ValueError("step_days and horizon_days must be positive.")
    start = pd.Timestamp(_utc(first))
    last = (pd.Timestamp(_utc(outcomes_known_until)) - pd.Timedelta(days=horizon_days)).floor("D")
    cutoffs: list[pd.Timestamp] = []
    current = last
    while current >= start and (max_cutoffs is None or len(cutoffs) < max_cutoffs):
        cutoffs.append(current)
        current = current - pd.Timedelta(days=step_days)
    return pd.DatetimeIndex(sorted(cutoffs))


def no_cutoff_message(
    first_event: object,
    longest_window_days: int,
    outcomes_known_until: object,
    horizon_days: int,
    step_days: int,
    horizon_setting: str = "the label horizon",
) -> str:
    """Why :func:`rolling_cutoffs` found no cutoff, with the numbers and what to change.

    The first cutoff is the first event plus the longest feature window (every window
    must be full); the last is the run date minus the horizon (the label window must be
    closed). No cutoff fits when the first comes after the last.

    Args:
        first_event: Time of the earliest event.
        longest_window_days: The longest feature window.
        outcomes_known_until: The run date.
        horizon_days: The label window.
        step_days: Days between cutoffs.
        horizon_setting: The setting that holds the horizon, named in the advice.

    Returns:
        One paragraph stating the binding constraint and the changes that would fit.
    """
    first_day = pd.Timestamp(_utc(first_event))
    start = first_day + pd.Timedelta(days=longest_window_days)
    run = pd.Timestamp(_utc(outcomes_known_until))
    last = (run - pd.Timedelta(days=horizon_days)).floor("D")
    short = max(math.ceil((start - last) / pd.Timedelta(days=1)), 0)
    history = (run - first_day).days
    return (
        f"No training cutoff fits: the first cutoff is the first event ({first_day.date()}) "
        f"plus the longest feature window ({longest_window_days} days) = {start.date()}, "
        f"and the last is the run date ({run.date()}) minus the {horizon_days}-day horizon "
        f"= {last.date()}. The {history} days of history need {longest_window_days} + "
        f"{horizon_days} = {longest_window_days + horizon_days} days for one cutoff: "
        f"{short} days short. Change one: {horizon_setting} to at most "
        f"{max(horizon_days - short, 0)} days, the longest of features.windows_days to at "
        f"most {max(longest_window_days - short, 0)} days, or a run date on or after "
        f"{(run + pd.Timedelta(days=short)).date()}. A smaller labels.cutoff_step_days "
        f"(now {step_days}) adds cutoffs only once one fits; an out-of-time evaluation "
        f"needs {horizon_days} days more history than one cutoff (one cutoff gives a "
        "stratified split)."
    )


def label_definition(target: str, horizon_days: int, churn_from_inactivity: bool = False) -> str:
    """One sentence saying what a positive label means (for model cards and reports)."""
    if target_named(target) is CONVERSION:
        return (
            f"1 when a lead not yet converted at the cutoff has a '{CONVERSION.outcome}' "
            f"outcome in the {horizon_days} days after it (cutoff excluded, last day included)."
        )
    text = (
        f"1 when a customer active at the cutoff has a '{CHURN.outcome}' outcome in the "
        f"{horizon_days} days after it"
    )
    if churn_from_inactivity:
        text += (
            f", or, having been active in the {horizon_days} days before, "
            "has no event at all in that window"
        )
    return text + " (cutoff excluded, last day included)."


def _first_outcome(outcomes: pd.DataFrame, outcome: str) -> pd.Series:
    rows = outcomes[outcomes["outcome"].astype("string") == outcome]
    return rows.groupby("entity_id", sort=False)["occurred_at"].min()


def _base_population(
    entities: pd.DataFrame, outcomes: pd.DataFrame, cutoffs: pd.DatetimeIndex
) -> pd.DataFrame:
    people = pd.DataFrame(
        {
            "entity_id": entities["entity_id"].astype("string"),
            "created_at": _utc(entities["created_at"]),
        }
    )
    if "consent" in entities:
        consent = entities["consent"].astype("boolean").fillna(True)
        people = people[consent.to_numpy(dtype=bool)]
    if "kind" in entities:
        kind = entities.loc[people.index, "kind"]
        people["kind"] = kind.astype("string").str.lower().to_numpy()
    people["ended_at"] = end_times(entities, outcomes).loc[people.index].to_numpy()
    if people["created_at"].isna().any():
        sample = people.loc[people["created_at"].isna(), "entity_id"].head(3).tolist()
        raise ValueError(f"entities.created_at is missing for e.g. {sample}.")
    grid = people.merge(pd.DataFrame({"as_of": cutoffs}), how="cross")
    return grid[grid["created_at"] < grid["as_of"]].reset_index(drop=True)


def _map_first(grid: pd.DataFrame, first: pd.Series) -> pd.Series:
    # ``.array``, not ``to_numpy()``: a zoned column's numpy form is a Timestamp per row.
    values = first.reindex(pd.Index(grid["entity_id"])).array
    return pd.Series(_utc(values), index=grid.index)


def label_events(events: EventTable, target: str, churn_from_inactivity: bool) -> pd.DataFrame:
    """The event rows :func:`make_labels` reads, fetched from the engine.

    Inactivity churn reads every event's entity and time; otherwise only purchases
    are read (they make customers of entities without a ``kind``).
    """
    columns = ["entity_id", "event_time", "event_type"]
    if churn_from_inactivity and target == CHURN.name:
        return events.to_pandas(columns)
    return events.of_types(["purchase"]).to_pandas(columns)


def make_labels(
    outcomes: pd.DataFrame,
    entities: pd.DataFrame,
    cutoffs: Iterable[object],
    target: TargetName,
    horizon_days: int,
    *,
    events: pd.DataFrame | None = None,
    churn_from_inactivity: bool = False,
) -> pd.DataFrame:
    """One label per eligible (entity, cutoff); see the module docstring for the rules.

    Args:
        outcomes: ``entity_id``, ``outcome`` (``converted``/``churned``), ``occurred_at``.
        entities: ``entity_id``, ``created_at``; optional ``consent``, ``kind`` and
            ``ended_at``.
        cutoffs: Cutoff timestamps (naive values are read as UTC).
        target: ``conversion`` or ``churn``.
        horizon_days: Label window length in days.
        events: ``entity_id``, ``event_time``, ``event_type``: needed for inactivity
            churn, and without a ``kind`` column its purchases make customers.
        churn_from_inactivity: Count a whole window without events as churn.

    Returns:
        Columns ``entity_id`` (string), ``as_of`` (UTC) and ``label`` (int64 0/1),
        sorted by ``as_of`` then ``entity_id``.

    Raises:
        ValueError: On an unknown target, a bad horizon or missing columns.
    """
    target_named(target)  # an unknown target is a ValueError naming the valid ones
    if horizon_days <= 0:
        raise ValueError(f"The label horizon must be positive, got {horizon_days} days.")
    _require(entities, ("entity_id", "created_at"), "entities")
    _require(outcomes, ("entity_id", "outcome", "occurred_at"), "outcomes")
    if churn_from_inactivity and target == CHURN.name:
        if events is None:
            raise ValueError("Inactivity churn needs the events table (entity_id, event_time).")
        _require(events, ("entity_id", "event_time"), "events")

    cutoff_index = _as_cutoffs(cutoffs)
    outcomes = outcomes.assign(
        entity_id=outcomes["entity_id"].astype("string"),
        occurred_at=_utc(outcomes["occurred_at"]),
    )
    grid = _base_population(entities, outcomes, cutoff_index)
    horizon = pd.Timedelta(days=horizon_days)
    window_end = grid["as_of"] + horizon
    first_conversion = _map_first(grid, _first_outcome(outcomes, CONVERSION.outcome))
    converted_by_cutoff = (first_conversion <= grid["as_of"]).fillna(False).astype(bool)
    first_churn = _map_first(grid, _first_outcome(outcomes, CHURN.outcome))
    ended = pd.Series(_utc(grid["ended_at"].array), index=grid.index)
    # Ended or churned entities are in no population (features.population).
    in_population = ~((first_churn <= grid["as_of"]) | (ended <= grid["as_of"])).fillna(False)
    if "kind" in grid:
        given_customer = (grid["kind"] == CHURN.kind).fillna(False).astype(bool)
    elif events is not None and "event_type" in events:
        bought = _map_first(grid, first_purchases(events))
        given_customer = (bought < grid["as_of"]).fillna(False).astype(bool)
    else:
        given_customer = pd.Series(False, index=grid.index)
    is_customer = given_customer | converted_by_cutoff

    if target == CONVERSION.name:
        eligible = in_population & ~is_customer
        label = (first_conversion <= window_end).fillna(False).astype(bool)
    else:
        eligible = in_population & is_customer
        label = (first_churn <= window_end).fillna(False).astype(bool)
        if churn_from_inactivity:
            active, silent = _inactivity(grid, events, cutoff_index, horizon)
            ends_in_window = (ended <= window_end).fillna(False).astype(bool)
            eligible &= active
            label |= silent & ~ends_in_window
    labels = grid.loc[eligible, ["entity_id", "as_of"]].assign(
        label=label[eligible].astype("int64")
    )
    labels = labels.sort_values(["as_of", "entity_id"]).reset_index(drop=True)
    log.info(
        "%s labels: %d rows over %d cutoffs, %d positives",
        target,
        len(labels),
        len(cutoff_index),
        int(labels["label"].sum()),
    )
    return labels


def _inactivity(
    grid: pd.DataFrame,
    events: pd.DataFrame,
    cutoffs: pd.DatetimeIndex,
    horizon: pd.Timedelta,
) -> tuple[pd.Series, pd.Series]:
    """Per grid row: active in ``[c - h, c)``, and silent for all of ``(c, c + h]``."""
    codes, known_ids = pd.factorize(events["entity_id"].astype("string"))
    times = pd.DatetimeIndex(_utc(events["event_time"])).as_unit("ns").asi8
    # Position of each grid entity among the ids seen in events (-1: no event ever).
    grid_codes = known_ids.get_indexer(pd.Index(grid["entity_id"]))
    active = np.zeros(len(grid), dtype=bool)
    silent = np.zeros(len(grid), dtype=bool)
    step = horizon.value
    for cutoff in cutoffs:
        c = cutoff.as_unit("ns").value
        rows = np.flatnonzero((grid["as_of"] == cutoff).to_numpy())
        seen_before = np.zeros(len(known_ids) + 1, dtype=bool)  # last slot: "no events"
        seen_after = np.zeros(len(known_ids) + 1, dtype=bool)
        seen_before[codes[(times >= c - step) & (times < c)]] = True
        seen_after[codes[(times > c) & (times <= c + step)]] = True
        active[rows] = seen_before[grid_codes[rows]]
        silent[rows] = ~seen_after[grid_codes[rows]]
    return pd.Series(active, index=grid.index), pd.Series(silent, index=grid.index)
