"""The events of a run as an engine table: counts and slices without a pandas frame.

A run's events can be tens of millions of rows. :class:`EventTable` keeps them as an
Ibis table of the run's engine connection (DuckDB over the source's Parquet files, or
a pandas frame registered with the engine) and answers the questions the pipeline asks
of them with queries that return a few numbers or rows: how many, how many before a
date, the time range, the rows per type, the distinct entities. Only the steps that
need rows (the labels of a training run) fetch them, and only the columns they need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from features.arrow_text import arrow_strings
from features.event_days import is_midnight, profile_from_days
from features.timeutil import UTC_TIMESTAMP, as_utc

EVENT_COLUMNS: tuple[str, ...] = ("entity_id", "event_time", "event_type", "value", "item")
#: The Ibis type of ``event_time`` on every engine: UTC, microseconds.
UTC_TYPE = "timestamp('UTC')"


def utc_literal(moment: pd.Timestamp | str) -> ir.Scalar:
    """An engine literal of a moment (naive means UTC), typed as ``event_time`` is."""
    return ibis.literal(as_utc(moment).to_pydatetime(), type=UTC_TYPE)


def empty_events() -> pd.DataFrame:
    """An empty events frame with the contract's columns and types."""
    return pd.DataFrame(
        {
            "entity_id": pd.Series([], dtype="str"),
            "event_time": pd.Series([], dtype=UTC_TIMESTAMP),
            "event_type": pd.Series([], dtype="str"),
        }
    )


@dataclass(frozen=True)
class KnownDuplicates:
    """Exact duplicates already counted for these very rows (the source unchanged since).

    Attributes:
        count: Rows equal in every column to another row, beyond the first of each.
        sample: A few of them (contract columns, as text).
    """

    count: int
    sample: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class EventTable:
    """Validated events held by an engine.

    Attributes:
        table: The events: the contract's columns (``entity_id``, ``event_time`` in
            UTC, ``event_type``, optional ``value`` and ``item``) and any other
            columns of the source.
        con: The Ibis connection that runs the queries (DuckDB or Spark).
        duplicates: The exact duplicates of exactly these rows, when the reader knows
            them; every slice of the table forgets them.
        day_counts: Gives :func:`features.event_days.day_counts` of exactly these
            rows (by source file, remembered between runs), when the reader can: the
            profile at a midnight then adds them up instead of scanning the events.
            Every slice of the table forgets it.
    """

    table: ir.Table
    con: Any = field(repr=False)
    duplicates: KnownDuplicates | None = None
    day_counts: Callable[[], pd.DataFrame] | None = field(default=None, repr=False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, con: Any = None) -> EventTable:
        """The events of a pandas frame (validated contract columns), registered with ``con``.

        Args:
            frame: Events; an empty frame may lack the optional columns.
            con: An Ibis connection; default: a new in-memory DuckDB.
        """
        connection = ibis.duckdb.connect() if con is None else con
        if frame.empty and "event_time" not in frame.columns:
            frame = empty_events()
        if frame["event_time"].dtype != UTC_TIMESTAMP:
            frame = frame.assign(event_time=pd.to_datetime(frame["event_time"], utc=True)
                                 .astype(UTC_TIMESTAMP))  # fmt: skip
        return cls(ibis.memtable(frame.reset_index(drop=True)), connection)

    @property
    def columns(self) -> list[str]:
        """The table's column names."""
        return list(self.table.columns)

    @property
    def contract_columns(self) -> list[str]:
        """The contract's event columns the table has, in contract order."""
        return [c for c in EVENT_COLUMNS if c in self.table.columns]

    @cached_property
    def rows(self) -> int:
        """How many events (one count query, remembered)."""
        profile = self._any_profile()
        if profile is not None:
            return int(profile["rows"].sum())
        return int(self.con.execute(self.table.count()))

    def __len__(self) -> int:
        return self.rows

    @property
    def empty(self) -> bool:
        """No events at all."""
        return self.rows == 0

    def _scalar(self, expr: ir.Scalar) -> Any:
        value = self.con.execute(expr)
        return None if value is None or pd.isna(value) else value

    @cached_property
    def _profiles(self) -> dict[pd.Timestamp, pd.DataFrame]:
        return {}

    def profile(self, moment: pd.Timestamp | str) -> pd.DataFrame:
        """Per event type: ``rows``, rows ``before`` and ``after`` a moment, ``first``, ``last``.

        One grouped scan answers the questions a run asks of its events around its run
        date (how many, how many before and after it, which types, first and last
        time), each of which was a scan of its own; remembered per moment. At
        midnights, :attr:`day_counts` answers them when the reader gave it.
        """
        key = as_utc(moment)
        if key not in self._profiles:
            self.profile_moments([key])
        return self._profiles[key]

    def profile_moments(self, moments: Iterable[pd.Timestamp | str]) -> None:
        """Compute and remember the :meth:`profile` of several moments in one grouped scan.

        A run asks about its run date and its previous run's date (the feed check):
        one scan answers both (0.9 s of a run at 52.9M events).
        """
        keys = list(dict.fromkeys(as_utc(moment) for moment in moments))
        keys = [key for key in keys if key not in self._profiles]
        if not keys:
            return
        if self.day_counts is not None and all(is_midnight(key) for key in keys):
            days = self.day_counts()
            for key in keys:
                self._profiles[key] = profile_from_days(days, key)
            return
        table = self.table
        time = table.event_time
        counts: dict[str, Any] = {"rows": table.count()}
        for number, key in enumerate(keys):
            at = utc_literal(key)
            counts[f"before_{number}"] = table.count(where=time < at)
            counts[f"after_{number}"] = table.count(where=time > at)
        bounds = []
        if "value" in table.columns:
            # The feed check's quarantine needs no scan of its own when these are in range.
            value = table.value
            counts |= {"values": value.count(), "value_low": value.min(),
                       "value_high": value.max()}  # fmt: skip
            bounds = ["values", "value_low", "value_high"]
        frame = self.con.execute(
            table.group_by("event_type").aggregate(**counts, first=time.min(), last=time.max())
        )
        for number, key in enumerate(keys):
            renamed = {f"before_{number}": "before", f"after_{number}": "after"}
            columns = ["event_type", "rows", f"before_{number}", f"after_{number}", "first", "last"]
            self._profiles[key] = frame[columns + bounds].rename(columns=renamed)

    def value_bounds(self) -> pd.DataFrame | None:
        """Per event type, how many values are present, and the smallest and largest.

        ``event_type, values, value_low, value_high`` from a profile already computed
        (:meth:`profile`); ``None`` without one, or without a ``value`` column. The
        engines order NaN above every number, so a NaN value makes ``value_high`` NaN.
        """
        frame = self._any_profile()
        if frame is None or "value_low" not in frame.columns:
            return None
        return frame[["event_type", "values", "value_low", "value_high"]]

    def _any_profile(self) -> pd.DataFrame | None:
        return next(iter(self._profiles.values()), None)

    def before(self, moment: pd.Timestamp | str) -> int:
        """Events strictly before ``moment`` (naive means UTC)."""
        return int(self.profile(moment)["before"].sum())

    def after(self, moment: pd.Timestamp | str) -> int:
        """Events strictly after ``moment`` (naive means UTC)."""
        return int(self.profile(moment)["after"].sum())

    @cached_property
    def time_range(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """The first and last event time (UTC), ``(None, None)`` without events."""
        frame = self._any_profile()
        if frame is None:
            table = self.table
            frame = self.con.execute(
                table.aggregate(first=table.event_time.min(), last=table.event_time.max())
            )
        first, last = frame["first"].min(), frame["last"].max()
        if pd.isna(first):
            return None, None
        return as_utc(pd.Timestamp(first)), as_utc(pd.Timestamp(last))

    def type_counts(self, before: pd.Timestamp | None = None) -> pd.Series:
        """Rows per event type (before ``before`` if given), most frequent first."""
        if before is not None:
            frame = self.profile(before)
            counts = frame.loc[frame["before"] > 0, ["event_type", "before"]]
            counts = counts.rename(columns={"before": "rows"})
        elif (frame := self._any_profile()) is not None:
            counts = frame[["event_type", "rows"]]
        else:
            table = self.table
            counts = self.con.execute(table.group_by("event_type").aggregate(rows=table.count()))
        series = counts.set_index("event_type")["rows"].astype("int64")
        return series.sort_values(ascending=False, kind="stable")

    def types_seen(self, before: pd.Timestamp | None = None) -> list[str]:
        """The distinct event types (those before ``before`` if given), sorted."""
        return sorted(str(t) for t in self.type_counts(before).index if not pd.isna(t))

    def entity_ids(self) -> pd.Series:
        """The distinct entity ids of the events, as text."""
        ids = self.con.execute(self.table.select("entity_id").distinct())["entity_id"]
        return ids.astype("str").reset_index(drop=True)

    def first_event_times(self) -> pd.DataFrame:
        """``entity_id``, ``created_at`` (first event) and the earliest ``crm_id`` if any, by id."""
        table = self.table
        metrics: dict[str, Any] = {"created_at": table.event_time.min()}
        if "crm_id" in table.columns:
            metrics["crm_id"] = table.crm_id.first(order_by=[table.event_time, table.crm_id])
        frame = self.con.execute(table.group_by("entity_id").aggregate(**metrics))
        return frame.sort_values("entity_id", kind="stable").reset_index(drop=True)

    def where(self, predicate: ir.BooleanValue) -> EventTable:
        """The events for which ``predicate`` (an expression over :attr:`table`) holds."""
        return EventTable(self.table.filter(predicate), self.con)

    def since(self, moment: pd.Timestamp) -> EventTable:
        """The events at or after ``moment``."""
        return self.where(self.table.event_time >= utc_literal(moment))

    def of_types(self, types: Iterable[str]) -> EventTable:
        """The events of the given types."""
        return self.where(self.table.event_type.isin(list(types)))

    def without_entities(self, ids: Iterable[str]) -> EventTable:
        """The events of every entity but ``ids``."""
        listed = list(ids)
        if not listed:
            return self
        dropped = ibis.memtable(pd.DataFrame({"entity_id": pd.Series(listed, dtype="str")}))
        return EventTable(self.table.anti_join(dropped, "entity_id"), self.con)

    def unknown_entities(self, known: pd.Series) -> int:
        """Events whose ``entity_id`` is not among ``known``."""
        text = known.astype("str")
        # Arrow text goes to the engine as it is: through numpy it would become a
        # million Python strings and back (0.16 s at 1M entities).
        if (column := arrow_strings(text)) is not None:
            import pyarrow as pa

            ids = ibis.memtable(pa.table({"entity_id": column}))
        else:
            ids = ibis.memtable(pd.DataFrame({"entity_id": text.to_numpy()}))
        return int(self.con.execute(self.table.anti_join(ids, "entity_id").count()))

    def to_pandas(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The events (or only ``columns``) as a pandas frame: for small tables and tests.

        ``event_time`` comes back as ``datetime64[us, UTC]``.
        """
        table = self.table if columns is None else self.table.select(*columns)
        frame = self.con.execute(table)
        if "event_time" in frame.columns and frame["event_time"].dtype != UTC_TIMESTAMP:
            frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).astype(
                UTC_TIMESTAMP
            )
        return frame
