"""Reading a run's inputs: the three tables, the suppression list, the input report.

:func:`load_inputs` reads all three inputs of a run (events through
:mod:`pipelines.engine_events`, entities and outcomes with
:func:`pipelines.source_files.read_source`), applies the suppression list and drops
entities erased earlier (:mod:`pipelines.forgotten`), and reports counts in an
:class:`~features.input_report.InputReport`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.column_checks import ContractError
from features.event_report import events_input_report, without_duplicates
from features.event_table import EventTable
from features.feed_checks import FeedReport
from features.input_report import InputReport
from features.mapping import apply_column_map
from features.schemas import VALIDATORS
from features.snapshot import SnapshotInputs
from features.timeutil import as_utc
from pipelines.databases import SourceNotFoundError, is_sql_url, sql_read
from pipelines.forgotten import drop_forgotten
from pipelines.settings import Settings
from pipelines.settings_sections import SnapshotSettings
from pipelines.snapshot_source import snapshot_tables
from pipelines.source_files import (  # noqa: F401 - the reading edge's names, used here and by callers
    ID_COLUMNS,
    TableName,
    list_source_files,
    read_files,
    read_source,
)

if TYPE_CHECKING:
    from pipelines.checks_memo import ChecksMemo

log = logging.getLogger(__name__)

#: Where the events' checks are remembered (:func:`pipelines.engine_events.read_events`).
CHECKS_FILE = "checks/events.json"


@dataclass
class Inputs:
    """The validated inputs of a run.

    Attributes:
        events: Events, held by the engine (:class:`~features.event_table.EventTable`),
            exact duplicates dropped (future events kept: the point-in-time rule
            keeps them out of features).
        entities: Entities.
        outcomes: Outcomes (empty when not required and absent).
        report: Counts of what was read and set aside.
        feed: What the feed checks found (:func:`pipelines.feeds.check_feeds`).
        snapshot_cutoff: The one training cutoff of a snapshot export
            (``sources.snapshot``), else ``None``: rolling cutoffs over the events.
        row_order: Each entity's row in a snapshot declared in time order.
        checks_memo: The events' checks to remember once the run has written its
            outputs (:func:`pipelines.checks_memo.remember_checks`).
    """

    events: EventTable
    entities: pd.DataFrame
    outcomes: pd.DataFrame
    report: InputReport
    feed: FeedReport | None = None
    snapshot_cutoff: pd.Timestamp | None = None
    row_order: pd.Series | None = None
    checks_memo: ChecksMemo | None = None


def load_inputs(
    settings: Settings,
    as_of: pd.Timestamp | str | None = None,
    *,
    outcomes_required: bool = True,
) -> Inputs:
    """Read, map and validate events, entities and outcomes named by the settings.

    Args:
        settings: Run settings (``settings.sources``).
        as_of: The run's "now" (naive values are UTC); default: the current time.
        outcomes_required: When false, a missing outcomes source gives an empty
            table (scoring needs no outcomes). A null ``sources.outcomes`` always
            does; a null ``sources.entities`` derives the entities from the events.

    Returns:
        The inputs and their :class:`~features.input_report.InputReport`.
    """
    from pipelines.engine_events import engine_connection

    sources = settings.sources
    now = as_utc(pd.Timestamp.now(tz="UTC") if as_of is None else as_of)
    spill = Path(tempfile.gettempdir()) / f"leadscore-spill-{os.getpid()}"
    con = engine_connection(settings.features.engine_memory_gb, spill)
    snapshot, memo = None, None
    if sources.snapshot is not None:
        snapshot = read_snapshot(sources.snapshot)
        events = EventTable.from_frame(snapshot.events, con)
        entities, outcomes = snapshot.entities, snapshot.outcomes
    else:
        events, entities, outcomes, memo = _read_three(settings, con, outcomes_required)
    inputs = _finish(settings, now, events, entities, outcomes)
    inputs.checks_memo = memo
    if snapshot is not None:
        inputs.snapshot_cutoff, inputs.row_order = snapshot.cutoff, snapshot.row_order
    return inputs


def read_snapshot(snapshot: SnapshotSettings) -> SnapshotInputs:
    """The validated tables of a snapshot export (``sources.snapshot``).

    Raises:
        SourceNotFoundError: The export does not exist.
        features.column_checks.ContractError: It breaks the contract.
    """
    if is_sql_url(snapshot.path):
        frame = sql_read(snapshot.path, "snapshot")
    else:
        ids = () if snapshot.id_column is None else (snapshot.id_column,)
        frame = read_files(snapshot.path, "snapshot", text_columns=ids)
    return snapshot_tables(snapshot, frame)


def _read_three(
    settings: Settings, con: Any, outcomes_required: bool
) -> tuple[EventTable, pd.DataFrame, pd.DataFrame, ChecksMemo | None]:
    """Events (held by the engine ``con``), entities and outcomes from their own sources."""
    from pipelines.engine_events import read_checked_events

    sources = settings.sources
    checks = Path(settings.output.dir) / CHECKS_FILE
    events, memo = read_checked_events(
        sources.events, sources.mapping("events"), con, checks, csv_reader=sources.csv_reader
    )
    entities = read_entities(settings, events)
    if sources.outcomes is None:
        outcomes = no_outcomes("sources.outcomes (null)")
    else:
        try:
            outcomes = read_source(sources.outcomes, "outcomes", sources.mapping("outcomes"))
        except SourceNotFoundError:
            if outcomes_required:
                raise
            log.info("No outcomes at %s; continuing without them.", sources.outcomes)
            outcomes = no_outcomes(sources.outcomes)
    return events, entities, outcomes, memo


def _finish(
    settings: Settings,
    now: pd.Timestamp,
    events: EventTable,
    entities: pd.DataFrame,
    outcomes: pd.DataFrame,
) -> Inputs:
    sources = settings.sources
    maps = sources.column_map
    suppressed = 0
    if sources.suppression_list:
        listed = read_suppression_list(sources.suppression_list, maps.get("suppression_list"))
        entities, suppressed = apply_suppression(entities, listed)
    events, entities, outcomes, forgotten = drop_forgotten(events, entities, outcomes, settings)
    # The feed check (pipelines.feeds) counts events before the previous run's date:
    # the scan that profiles the events around this run's date profiles it too.
    events.profile_moments([now, *_previous_run_date(settings)])
    report = events_input_report(events, now, entities, outcomes)
    dropping = not sources.keep_duplicates
    if dropping:
        report.rejected["duplicate_events"] = report.duplicate_events
    if dropping and report.duplicate_events:
        # Computed once into an engine table: every later query reads the kept rows.
        from pipelines.engine_events import materialise

        events = materialise(without_duplicates(events), "events_without_duplicates")
    report.duplicates_kept = sources.keep_duplicates
    report.entities_on_suppression_list = suppressed
    report.entities_forgotten_earlier = forgotten
    log.info(
        "Inputs as of %s: %d events (%d exact duplicates dropped, %d after as_of), "
        "%d entities, %d outcomes.", now.isoformat(), report.events, report.duplicate_events,
        report.future_events, report.entities, report.outcomes,
    )  # fmt: skip
    return Inputs(events=events, entities=entities, outcomes=outcomes, report=report)


def _previous_run_date(settings: Settings) -> list[pd.Timestamp]:
    """The previous run's date as :func:`pipelines.feeds.check_feeds` will read it, if any.

    Only a hint for :meth:`EventTable.profile_moments`: a problem reading the summary
    is for the feed check to report.
    """
    from pipelines.feeds import previous_feed

    previous = previous_feed(Path(settings.output.dir) / "summary.json", warn=False)
    return [] if previous is None or previous[0] is None else [previous[0]]


def read_entities(settings: Settings, events: EventTable | None = None) -> pd.DataFrame:
    """The validated entities: ``sources.entities``, or derived from the events when null.

    Args:
        settings: Run settings (``settings.sources``).
        events: The validated events, when already read; read when needed otherwise.

    Returns:
        The entities; with ``sources.entities`` null, one per entity id of the events,
        created at its first event (its first ``crm_id`` too, when the events carry one).
    """
    sources = settings.sources
    if sources.entities is not None:
        return read_source(sources.entities, "entities", sources.mapping("entities"))
    if events is None:
        from pipelines.engine_events import engine_connection, read_events

        events = read_events(
            sources.events, sources.mapping("events"), engine_connection(),
            csv_reader=sources.csv_reader,
        )  # fmt: skip
    entities = VALIDATORS["entities"](events.first_event_times(), sources.events)
    log.info("sources.entities is null: %d entities from the events.", len(entities))
    return entities


def no_outcomes(source: str) -> pd.DataFrame:
    """An empty, validated outcomes table (``source`` names where none were found)."""
    return VALIDATORS["outcomes"](
        pd.DataFrame(columns=["entity_id", "outcome", "occurred_at"]), source
    )


def read_suppression_list(source: str, column_map: dict[str, str] | None = None) -> set[str]:
    """The entity ids of a suppression list (people who objected to profiling).

    Args:
        source: A CSV/Parquet file, folder or glob, or a SQL URL with ``?table=``;
            it needs an ``entity_id`` column (after ``column_map``).
        column_map: User column name -> ``entity_id``.

    Returns:
        The listed ids as text (blank values ignored).

    Raises:
        SourceNotFoundError: The list does not exist.
        ContractError: It has no ``entity_id`` column; the columns present are named.
    """
    if is_sql_url(source):
        frame = sql_read(source, "suppression_list")
    else:
        frame = read_files(source, "suppression list", text_columns=("entity_id",))
    frame = apply_column_map(frame, column_map, "suppression_list", source)
    if "entity_id" not in frame.columns:
        present = ", ".join(repr(str(c)) for c in frame.columns) or "none"
        raise ContractError(
            "suppression_list",
            source,
            [f"it has no entity_id column (columns present: {present}); add one or map it "
             "with column_map.suppression_list"],
        )  # fmt: skip
    ids = frame["entity_id"].dropna().astype("string").str.strip()
    return set(ids[ids != ""].tolist())


def apply_suppression(entities: pd.DataFrame, listed: set[str]) -> tuple[pd.DataFrame, int]:
    """Entities with ``consent`` set to false for everyone on the suppression list.

    Everything downstream already treats consent false as "never profiled, trained
    on or scored", so this is the only place the list needs to act.

    Returns:
        The new entities table and how many of its entities are on the list.
    """
    on_list = entities["entity_id"].astype("string").isin(listed).fillna(False).to_numpy(bool)
    consent = (
        entities["consent"].astype("boolean").fillna(True)
        if "consent" in entities.columns
        else pd.Series(True, index=entities.index, dtype="boolean")
    )
    out = entities.assign(consent=(consent & ~on_list).astype(bool))
    log.info("Suppression list: %d of %d entities set to no consent.", on_list.sum(), len(out))
    return out, int(on_list.sum())
