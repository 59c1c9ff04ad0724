"""``leadscore check``: read the sources as a run would and say what is in them.

:func:`run_check` reads, maps and validates the three inputs exactly as a nightly
run does (a contract error is raised as a sentence) and counts what a new user needs
to know before the first run: rows per input, the events' date range, which event
types the features know (built in), which the config's ``value_map`` produced and
which will be featurised generically, entities without events, and per target the
outcomes in the history and the positive labels the rolling training cutoffs would
see against ``model.min_positive_labels``. :func:`print_check` shows it as tables.
Nothing is written: no output folder, database or model store is created.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from features.labels import label_events, make_labels
from features.targets import TARGETS, Target
from pipelines.context import parse_as_of
from pipelines.settings import Settings
from pipelines.sources import Inputs, load_inputs
from pipelines.training import training_cutoffs

if TYPE_CHECKING:
    from rich.console import Console

RECOGNISED, MAPPED, GENERIC = "built in", "mapped", "generic"


@dataclass(frozen=True)
class LabelCount:
    """The labels one target would train on.

    Attributes:
        target: The target's name.
        horizon_days: Its label window.
        outcomes: Its outcomes (``converted``/``churned``) up to the run date.
        cutoffs: Rolling training cutoffs whose label window is closed.
        labelled_rows: (entity, cutoff) rows with a label.
        positives: Those labelled 1: what ``model.min_positive_labels`` is compared to.
        needed: ``model.min_positive_labels``.
    """

    target: str
    horizon_days: int
    outcomes: int
    cutoffs: int
    labelled_rows: int
    positives: int
    needed: int

    @property
    def enough(self) -> bool:
        """Whether a model can be trained (otherwise the rule score is used)."""
        return self.positives >= self.needed


@dataclass(frozen=True)
class CheckReport:
    """What ``leadscore check`` found.

    Attributes:
        as_of: The run date the counts are for.
        as_of_given: Whether the user gave it (else: the day after the latest event,
            or today if earlier).
        sources: Input name -> where it was read from.
        inputs: The inputs as a run reads them, with their input report.
        event_types: One row per event type: ``event_type``, ``status`` (built in,
            mapped, generic), ``from_values`` (the user values mapped to it), ``rows``.
        entities_without_events: Entities no event mentions.
        labels: One count per target.
        builtin_types: The event types with built-in features.
    """

    as_of: pd.Timestamp
    as_of_given: bool
    sources: dict[str, str]
    inputs: Inputs
    event_types: pd.DataFrame
    entities_without_events: int
    labels: tuple[LabelCount, ...]
    builtin_types: tuple[str, ...]


def run_check(settings: Settings, as_of: pd.Timestamp | None = None) -> CheckReport:
    """Read the configured sources and count what a run and its training would see.

    Args:
        settings: The settings (``sources``, ``labels``, ``model``, ``features``).
        as_of: The run date (midnight UTC); ``None``: the day after the latest event,
            or today when that is earlier.

    Returns:
        The report.

    Raises:
        SourceNotFoundError: A source does not exist.
        features.column_checks.ContractError: The data breaks the contract.
    """
    today = parse_as_of(None, settings.schedule.timezone)
    given = as_of is not None
    inputs = load_inputs(settings, as_of if as_of is not None else today)
    events = inputs.events
    if as_of is None and inputs.snapshot_cutoff is not None:
        as_of = inputs.snapshot_cutoff + pd.Timedelta(days=1)
    elif as_of is None:
        last = events.time_range[1]
        as_of = today if last is None else min(today, last.normalize() + pd.Timedelta(days=1))
    builtin = tuple(e.name for e in settings.feature_spec().event_types)
    value_map = settings.sources.value_map.get("events", {}).get("event_type", {})
    without_events = ~inputs.entities["entity_id"].isin(events.entity_ids())
    return CheckReport(
        as_of=as_of,
        as_of_given=given,
        sources=_source_names(settings),
        inputs=inputs,
        event_types=event_type_table(events.type_counts(), builtin, value_map),
        entities_without_events=int(without_events.sum()),
        labels=tuple(label_count(settings, inputs, as_of, t) for t in TARGETS),
        builtin_types=builtin,
    )


def _source_names(settings: Settings) -> dict[str, str]:
    sources = settings.sources
    if sources.snapshot is not None:
        path = sources.snapshot.path
        return {
            "events": f"none (snapshot {path})",
            "entities": f"one per row of {path}",
            "outcomes": f"{sources.snapshot.outcome_column!r} of {path}",
        }
    return {
        "events": sources.events,
        "entities": sources.entities or "the events (sources.entities: null)",
        "outcomes": sources.outcomes or "none (sources.outcomes: null)",
    }


def event_type_table(
    counts: pd.Series, builtin: tuple[str, ...], value_map: dict[str, str | None]
) -> pd.DataFrame:
    """Rows per event type and where it comes from, most frequent first.

    Args:
        counts: Rows per event type after the value map, indexed by type.
        builtin: Event types with built-in features.
        value_map: ``sources.value_map.events.event_type`` (user value -> type).

    Returns:
        ``event_type``, ``status`` (``built in``, ``mapped`` or ``generic``),
        ``from_values`` (user values mapped to it, comma-separated) and ``rows``.
    """
    counts = counts.groupby(counts.index.astype("string")).sum()
    counts = counts.sort_values(ascending=False, kind="stable").rename_axis("event_type")
    table = counts.rename("rows").reset_index()
    sources = pd.Series(list(value_map), index=list(value_map.values()), dtype="string")
    from_values = sources.groupby(level=0).agg(", ".join) if len(sources) else pd.Series()
    # An empty map gives a numeric column of nulls: make it text before filling.
    table["from_values"] = table["event_type"].map(from_values).astype("string").fillna("")
    table["status"] = GENERIC
    table.loc[table["event_type"].isin(builtin), "status"] = RECOGNISED
    table.loc[table["from_values"] != "", "status"] = MAPPED
    return table[["event_type", "status", "from_values", "rows"]]


def label_count(
    settings: Settings, inputs: Inputs, as_of: pd.Timestamp, target: Target
) -> LabelCount:
    """The labels the rolling training cutoffs of ``target`` would see as of ``as_of``.

    The cutoffs are those of training: from the first event plus the longest feature
    window to ``as_of`` minus the horizon, every ``labels.cutoff_step_days``.
    """
    labels_settings = settings.labels
    horizon = labels_settings.horizon_days(target.name)
    outcomes = inputs.outcomes
    happened = (outcomes["outcome"] == target.outcome) & (outcomes["occurred_at"] <= as_of)
    cutoffs = training_cutoffs(
        inputs, as_of, horizon, labels_settings.cutoff_step_days,
        max(settings.features.windows_days),
    )  # fmt: skip
    rows = positives = 0
    if len(cutoffs):
        labels = make_labels(
            outcomes, inputs.entities, cutoffs, target.name, horizon,
            events=label_events(inputs.events, target.name, labels_settings.churn_from_inactivity),
            churn_from_inactivity=labels_settings.churn_from_inactivity,
        )  # fmt: skip
        rows, positives = len(labels), int(labels["label"].sum())
    return LabelCount(
        target=target.name,
        horizon_days=horizon,
        outcomes=int(happened.sum()),
        cutoffs=len(cutoffs),
        labelled_rows=rows,
        positives=positives,
        needed=settings.model.min_positive_labels,
    )


def print_check(report: CheckReport, console: Console) -> None:
    """Show the report as tables, with what to do about each finding."""
    from rich.table import Table

    events = report.inputs.events
    counts = report.inputs.report
    when = "given" if report.as_of_given else "the day after the latest event, or today"
    console.print(f"[bold]leadscore check[/] as of {report.as_of.date()} ({when})")
    inputs = Table(title="Inputs")
    for column in ("input", "rows", "source"):
        inputs.add_column(column, justify="right" if column == "rows" else "left")
    for name, rows in (("events", counts.events), ("entities", counts.entities),
                       ("outcomes", counts.outcomes)):  # fmt: skip
        inputs.add_row(name, f"{rows:,}", report.sources[name])
    console.print(inputs)
    first, last = events.time_range
    if first is not None:
        console.print(f"Events from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC.")
    for count, what in (
        (counts.duplicate_events, "exact duplicate events (dropped)"),
        (counts.future_events, "events after the run date (not used by features)"),
        (counts.events_of_unknown_entities, "events of entities not in the entities input"),
        (counts.entities_without_consent, "entities without consent (not scored)"),
        (report.entities_without_events, "entities without any event"),
    ):
        console.print(f"{count:,} {what}.")
    _print_event_types(report, console)
    labels = Table(title="Labels for training")
    for column in ("target", "horizon (days)", "outcomes", "cutoffs", "positives", "needed",
                   "enough to train"):  # fmt: skip
        labels.add_column(column)
    for count in report.labels:
        verdict = (
            "yes"
            if count.enough
            else (f"no: {count.needed - count.positives:,} more positives (rule score used)")
        )
        labels.add_row(count.target, str(count.horizon_days), f"{count.outcomes:,}",
                       str(count.cutoffs), f"{count.positives:,} of {count.labelled_rows:,}",
                       f"{count.needed:,}", verdict)  # fmt: skip
    console.print(labels)
    console.print(
        "Outcomes: those up to the run date. Positives: (entity, cutoff) labels equal to 1 "
        "at the rolling training cutoffs (labels.cutoff_step_days apart, each window "
        "closed by the run date), compared with model.min_positive_labels. Nothing was written."
    )


def _print_event_types(report: CheckReport, console: Console) -> None:
    from rich.table import Table

    table = Table(title="Event types")
    for column in ("event type", "status", "from your values", "rows"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for row in report.event_types.itertuples(index=False):
        table.add_row(row.event_type, row.status, row.from_values, f"{row.rows:,}")
    console.print(table)
    generic = report.event_types.loc[report.event_types["status"] == GENERIC, "event_type"]
    if len(generic):
        console.print(generic_types_hint(list(generic), report.builtin_types))


def generic_types_hint(generic: list[str], builtin: tuple[str, ...]) -> str:
    """What to do about event types without built-in features, with a value_map example."""
    example = generic[0]
    close = difflib.get_close_matches(example.lower().replace(" ", "_"), builtin, n=1)
    target = close[0] if close else "<a built-in type>"
    return (
        f"{len(generic)} event type(s) have no built-in features and are featurised "
        f"generically (counts, recency, trend): {', '.join(generic)}. To use the built-in "
        f'features, map them under sources.value_map.events.event_type, e.g. "{example}": '
        f"{target}. Built-in types: {', '.join(builtin)}."
    )
