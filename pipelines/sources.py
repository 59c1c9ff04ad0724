"""Reading a run's inputs: files or SQL tables, the column map, the data contract.

:func:`read_source` reads one input (a file, folder, glob or SQL table), renames its
columns with the column map and checks it against :mod:`features.schemas`;
:func:`load_inputs` reads all three inputs of a run, applies the suppression list
and drops entities erased earlier (:mod:`pipelines.forgotten`), and reports counts
in an :class:`~features.input_report.InputReport`.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from features.column_checks import ContractError
from features.event_report import events_input_report, without_duplicates
from features.event_table import EventTable
from features.feed_checks import FeedReport
from features.input_report import InputReport
from features.mapping import InputMapping, apply_column_map, apply_mapping, column_pairs
from features.schemas import VALIDATORS
from features.snapshot import SnapshotInputs
from features.timeutil import as_utc
from pipelines.databases import SourceNotFoundError, is_sql_url, sql_read
from pipelines.feeds import check_csv_rows, ends_early
from pipelines.forgotten import drop_forgotten
from pipelines.settings import Settings
from pipelines.settings_sections import SnapshotSettings
from pipelines.snapshot_source import snapshot_tables

log = logging.getLogger(__name__)

TableName = Literal["events", "entities", "outcomes"]

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
#: Where the events' checks are remembered (:func:`pipelines.engine_events.read_events`).
CHECKS_FILE = "checks/events.json"
#: Contract columns read from CSV as text, so ids like ``00123`` keep their zeros.
ID_COLUMNS = ("entity_id", "crm_id")


def list_source_files(source: str, table: str = "input") -> list[Path]:
    """The Parquet/CSV files a file, folder (recursive) or glob stands for, sorted.

    Names starting with ``.`` or ``_`` inside a folder (``_SUCCESS``) are skipped.

    Raises:
        SourceNotFoundError: Nothing, or no Parquet/CSV file, exists there.
        ValueError: A file of another format, or a folder mixing Parquet and CSV.
    """
    path = Path(source).expanduser()
    if any(char in str(source) for char in "*?["):
        files = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
        files = [f for f in files if f.is_file() and _kind(f)]
        if not files:
            raise SourceNotFoundError(f"The {table} glob {source} matches no Parquet or CSV file.")
    elif path.is_file():
        if not _kind(path):
            raise ValueError(
                f"The {table} source {source} is neither Parquet ({', '.join(PARQUET_SUFFIXES)}) "
                f"nor CSV ({', '.join(CSV_SUFFIXES)})."
            )
        return [path]
    elif path.is_dir():
        files = sorted(
            f
            for f in path.rglob("*")
            if f.is_file()
            and _kind(f)
            and not any(part.startswith((".", "_")) for part in f.relative_to(path).parts)
        )
        if not files:
            raise SourceNotFoundError(f"The {table} folder {source} holds no Parquet or CSV file.")
    else:
        raise SourceNotFoundError(
            f"The {table} source {source} does not exist (no file or folder at {path.resolve()})."
        )
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise ValueError(
            f"The {table} source {source} mixes Parquet and CSV files; keep one format."
        )
    return files


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def read_files(
    source: str, table: str = "input", text_columns: tuple[str, ...] = ID_COLUMNS
) -> pd.DataFrame:
    """Read and stack every Parquet or CSV file of a file, folder or glob.

    Parts may differ in columns (missing ones become empty). Inside a folder,
    ``key=value`` folder names become string columns, as Hive partitioning does.
    ``text_columns`` of CSV files are read as text rather than guessed (ids).

    Raises:
        ValueError: A file cannot be parsed; the message names it.
    """
    files = list_source_files(source, table)
    root = Path(source).expanduser()
    frames = []
    for file in files:
        try:
            if _kind(file) == "parquet":
                frame = pd.read_parquet(file)
            else:
                check_csv_rows(file, table)
                frame = pd.read_csv(file, dtype=dict.fromkeys(text_columns, "str"))
        except ContractError:
            raise
        except EOFError as exc:
            raise ValueError(ends_early(table, file, exc)) from exc
        except (ValueError, OSError, pa.ArrowException) as exc:
            if isinstance(exc, OSError) and "truncated" in str(exc).lower():
                raise ValueError(ends_early(table, file, exc)) from exc
            raise ValueError(f"Could not read the {table} file {file}: {exc}") from exc
        if root.is_dir():
            for part in file.relative_to(root).parent.parts:
                key, sep, value = part.partition("=")
                if sep and key not in frame.columns:
                    frame[key] = value
        frames.append(frame)
    non_empty = [f for f in frames if len(f)] or frames[:1]
    combined = non_empty[0] if len(non_empty) == 1 else pd.concat(non_empty, ignore_index=True)
    log.info("Read %d %s rows from %d file(s) at %s.", len(combined), table, len(files), source)
    return combined.reset_index(drop=True)


def read_source(
    source: str,
    table: TableName,
    mapping: InputMapping | None = None,
    *,
    validate: bool = True,
) -> pd.DataFrame:
    """Read one input, map its columns and values to the contract's and check it.

    Args:
        source: A Parquet/CSV file, a folder of them, a glob, or a SQL URL with
            ``?table=NAME`` (``duckdb:///``, ``postgresql://``, ``sqlite:///``).
        table: Which input this is: ``events``, ``entities`` or ``outcomes``.
        mapping: The user's column names, values and timestamp format
            (``sources.column_map``, ``value_map``, ``timestamp_format``), applied
            before validation.
        validate: Run the data contract (normalise types, reject bad rows).

    Returns:
        The input, with contract column names (normalised when ``validate``).

    Raises:
        SourceNotFoundError: The file, folder, database or table does not exist.
        features.column_checks.ContractError: The data breaks the contract.
    """
    if is_sql_url(source):
        frame = sql_read(source, table)
    else:
        pairs = column_pairs(mapping.columns if mapping else None)
        mapped_ids = tuple(user for user, ours in pairs if ours in ID_COLUMNS)
        frame = read_files(source, table, text_columns=ID_COLUMNS + mapped_ids)
    frame = apply_mapping(frame, mapping, table, source)
    return VALIDATORS[table](frame, source) if validate else frame


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
    """

    events: EventTable
    entities: pd.DataFrame
    outcomes: pd.DataFrame
    report: InputReport
    feed: FeedReport | None = None
    snapshot_cutoff: pd.Timestamp | None = None
    row_order: pd.Series | None = None


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
    snapshot = None
    if sources.snapshot is not None:
        snapshot = read_snapshot(sources.snapshot)
        events = EventTable.from_frame(snapshot.events, con)
        entities, outcomes = snapshot.entities, snapshot.outcomes
    else:
        events, entities, outcomes = _read_three(settings, con, outcomes_required)
    inputs = _finish(settings, now, events, entities, outcomes)
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
) -> tuple[EventTable, pd.DataFrame, pd.DataFrame]:
    """Events (held by the engine ``con``), entities and outcomes from their own sources."""
    from pipelines.engine_events import read_events

    sources = settings.sources
    checks = Path(settings.output.dir) / CHECKS_FILE
    events = read_events(sources.events, sources.mapping("events"), con, checks)
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
    return events, entities, outcomes


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

        events = read_events(sources.events, sources.mapping("events"), engine_connection())
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
