"""The point-in-time aggregation: one Ibis expression for DuckDB and Spark alike.

The pass over the events is written once in Ibis, so the same definitions compile
to DuckDB (the default) and to Spark SQL. Its shape was chosen for speed:

* events are reduced to one row per (entity, event type) with cheap filtered
  aggregates; the type is an integer code from a small join, because hashing
  integers is cheaper than hashing the type names;
* that long table (entities x types, far smaller than the events) is pivoted to
  one column per feature with numpy (:mod:`features.pivot`), where a wide SQL pivot
  of ~150 filtered aggregates per entity would cost more than the whole pass over
  the events;
* distinct UTC days and weeks are collected as bit masks (``bit_or(1 << day)``)
  instead of ``count(DISTINCT ...)``;
* times are integer microseconds before the cutoff (``age_us``): exact on both
  engines, and every window is an integer comparison. Events are first filtered
  to ``event_time < c``, so "last N days" is ``age_us <= N days``;
* undeclared types' values and distinct items (:func:`features.spec.payload_features`)
  are aggregated only when such types are featurised, so the declared types alone
  cost nothing more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import pandas as pd

from features.spec import FeatureSpec

DAY_US = 86_400 * 1_000_000
#: Fixed windows of the special features (their names carry them: ``active_days_30d``).
ACTIVE_DAYS_WINDOW = 30
LOGIN_DAYS_WINDOW = 28
LOGIN_WEEKS = LOGIN_DAYS_WINDOW // 7
LOGIN_WEEK_BIT = 32
#: Bit of "a login on day 28 within the last 28 days" (see :func:`per_entity_and_type`).
LOGIN_EDGE_DAY_BIT = 36
SESSION_WINDOW = 30
KEY_FEATURES_WINDOW = 30
#: Event types the special features read.
LOGIN, SESSION, FEATURE_USE, NPS_ANSWER = "login", "session", "feature_use", "nps_answer"
TICKET_OPENED, TICKET_RESOLVED, PURCHASE = "ticket_opened", "ticket_resolved", "purchase"
EMAIL_DELIVERED, EMAIL_OPENED, EMAIL_CLICKED = "email_delivered", "email_opened", "email_clicked"
EMAIL_BOUNCED, EMAIL_UNSUBSCRIBED = "email_bounced", "email_unsubscribed"
NPS_CLASSES: tuple[str, ...] = ("promoter", "passive", "detractor", "none")
EMAIL_TYPES = (EMAIL_DELIVERED, EMAIL_OPENED, EMAIL_CLICKED, EMAIL_BOUNCED, EMAIL_UNSUBSCRIBED)
SPECIAL_TYPES = (LOGIN, SESSION, PURCHASE, TICKET_OPENED, TICKET_RESOLVED, *EMAIL_TYPES)
#: Code of event types that are neither featurised nor special (still activity).
OTHER_TYPE = -1
#: Name of "microseconds since the Unix epoch" per backend: the one primitive Ibis
#: lacks (``delta`` works too but goes through DuckDB's calendar code, 20x slower).
EPOCH_MICROSECONDS = {"duckdb": "epoch_us", "pyspark": "unix_micros"}


def count_windows(spec: FeatureSpec) -> tuple[int, ...]:
    """Count windows (days) needed per event type: the spec's, trend spans and KPIs."""
    trend = spec.trend_window_days
    windows = {*spec.windows_days, trend, 2 * trend, spec.kpi_window_days, SESSION_WINDOW}
    return tuple(sorted(windows))


def decay_rate_per_us(spec: FeatureSpec) -> float:
    """The rate with ``0.5 ** (age_days / half_life) == exp(age_us * rate)``."""
    return -math.log(2.0) / (spec.half_life_days * DAY_US)


def microseconds(moment: pd.Timestamp) -> int:
    """Microseconds since the Unix epoch of a UTC timestamp (any resolution)."""
    return int((moment - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1))


def day_of(moment: pd.Timestamp) -> int:
    """Days since the Unix epoch of a UTC moment (the UTC day it falls on)."""
    return microseconds(moment) // DAY_US


def type_codes(event_types: Sequence[str]) -> pd.DataFrame:
    """Integer code of each featurised event type, then of the special types."""
    names = list(dict.fromkeys([*event_types, *SPECIAL_TYPES]))
    return pd.DataFrame({"event_type": names, "code": range(len(names))}).astype(
        {"event_type": "str", "code": "int64"}
    )


def generic_codes(codes: pd.DataFrame, spec: FeatureSpec) -> list[int]:
    """Codes of the featurised types the spec does not declare (they carry their values)."""
    declared = {e.name for e in spec.event_types} | set(SPECIAL_TYPES)
    return [int(c) for n, c in zip(codes["event_type"], codes["code"], strict=True)
            if n not in declared]  # fmt: skip


def epoch_microseconds(moment: ir.TimestampValue, backend: str) -> ir.IntegerValue:
    """Microseconds since the Unix epoch, with the backend's own function."""

    def epoch_us(moment: dt.Timestamp) -> int:  # pragma: no cover - never called
        """Placeholder: Ibis only reads the signature of builtin functions."""

    function = ibis.udf.scalar.builtin(
        epoch_us,
        name=EPOCH_MICROSECONDS[backend],
        signature=((dt.Timestamp(timezone="UTC"),), dt.int64),
    )
    return function(moment)


def events_before(events: ir.Table, as_of: pd.Timestamp, backend: str) -> ir.Table:
    """Events strictly before the cutoff: ``entity_id, event_type, age_us, value, item``."""
    cutoff = ibis.literal(as_of.to_pydatetime(), type="timestamp('UTC')")
    before = events.filter(events.event_time < cutoff)
    age_us = microseconds(as_of) - epoch_microseconds(before.event_time, backend)
    return before.select(
        entity_id=before.entity_id,
        event_type=before.event_type,
        age_us=age_us,
        **payload_columns(before, backend),
    )


def payload_columns(events: ir.Table, backend: str) -> dict[str, ir.Value]:
    """``value`` (float64) and ``item`` (text) of the events, missing ones NULL, or NULL columns."""
    has = set(events.columns)
    return {
        "value": _missing_as_null(events.value) if "value" in has else ibis.null("float64"),
        "item": _missing_item(events.item, backend) if "item" in has else ibis.null("string"),
    }


def _missing_item(item: ir.Value, backend: str) -> ir.StringValue:
    """``item`` as text with missing items NULL.

    A missing text of a pandas frame reaches Spark as the string ``'NaN'``, which
    would count as one more distinct item there and not in DuckDB or pandas.
    """
    text = item.cast("string")
    return ibis.ifelse(text == "NaN", ibis.null("string"), text) if backend == "pyspark" else text


def _missing_as_null(value: ir.Value) -> ir.FloatingValue:
    """``value`` as float64 with NaN as NULL.

    Pandas writes missing floats as NaN, which Spark keeps (and sums to NaN) where
    DuckDB and pandas skip them.
    """
    number = value.cast("float64")
    return ibis.ifelse(number.isnan(), ibis.null("float64"), number)


def _bit_or(bits: ir.IntegerValue) -> ir.IntegerScalar:
    """``bit_or`` aggregate; Ibis compiles it for DuckDB only, both engines have it."""

    def bit_or(bits: dt.int64) -> dt.int64:  # pragma: no cover - never called
        """Placeholder: Ibis only reads the signature of builtin functions."""

    return ibis.udf.agg.builtin(bit_or, name="bit_or")(bits)


def _bit(position: ir.IntegerValue) -> ir.IntegerValue:
    """``1 << position``, capped at bit 62.

    Engines also evaluate it on rows an aggregate's filter drops, where the position
    may exceed 63 (those bits are never read).
    """
    # An explicit cast: Spark reads a bare 1 as a 32-bit int and would wrap at bit 32.
    return ibis.literal(1).cast("int64") << ibis.least(position, 62)


def per_entity_and_type(
    events: ir.Table,
    entity_rows: ir.Table,
    codes: pd.DataFrame,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
    backend: str,
) -> ir.Table:
    """One row per (entity, event type) of filtered aggregates over events before ``as_of``.

    Args:
        events: ``entity_id, event_time, event_type`` and optional ``value``, ``item``.
        entity_rows: ``entity_id, row``: the entities to featurise and their row
            number in the output; events of other entities are dropped.
        codes: ``event_type, code`` (see :func:`type_codes`); other types get
            :data:`OTHER_TYPE`.
        as_of: The cutoff (UTC).
        spec: The feature set.
        backend: Backend name, for :func:`epoch_microseconds`.

    Returns:
        ``row, code`` and the aggregates of :func:`aggregate_per_type`.
    """
    return aggregate_per_type(
        coded_events(with_entity_rows(events_before(events, as_of, backend), entity_rows), codes),
        ["row"], codes, microseconds(as_of), spec,
    )  # fmt: skip


def with_entity_rows(table: ir.Table, entity_rows: ir.Table) -> ir.Table:
    """``table`` with ``entity_id`` replaced by the entity's ``row``; other entities dropped.

    Joining before grouping makes every grouping key an integer: grouping by the text
    id costs about twice as much (DuckDB, 9.2M events of 200k entities: 2.4 s of CPU
    against 1.2 s including this join).
    """
    joined = table.join(entity_rows, table.entity_id == entity_rows.entity_id)
    return joined.select("row", *[c for c in table.columns if c != "entity_id"])


def coded_events(before: ir.Table, codes: pd.DataFrame) -> ir.Table:
    """``before`` with ``event_type`` replaced by its integer ``code`` (:data:`OTHER_TYPE`)."""
    code_table = ibis.memtable(codes)
    kept = [column for column in before.columns if column != "event_type"]
    return before.left_join(code_table, before.event_type == code_table.event_type).select(
        *kept, code=ibis.coalesce(code_table.code, OTHER_TYPE)
    )


def aggregate_per_type(
    coded: ir.Table,
    keys: list[str],
    codes: pd.DataFrame,
    cutoff_us: int | ir.IntegerValue,
    spec: FeatureSpec,
) -> ir.Table:
    """One row per (``keys``, event type) of filtered aggregates over coded events.

    Args:
        coded: ``keys``, ``age_us``, ``value``, ``item`` and ``code`` (see
            :func:`coded_events`); ages are microseconds before the cutoff.
        keys: The columns naming an entity at a cutoff (``row`` for one cutoff).
        codes: ``event_type, code`` (see :func:`type_codes`).
        cutoff_us: The cutoff in microseconds since the epoch: a number, or a
            column of ``coded`` when the rows belong to several cutoffs.
        spec: The feature set.

    Returns:
        ``keys``, ``code``, ``n_{N}d`` per count window, ``min_age_us`` (the
        latest event; a purchase's count and first time come from
        :func:`features.engine_small.latest_nps_and_key_features`), ``decayed``,
        ``amount`` (session minutes, purchase amounts or the all-time count of
        tickets, by type), with undeclared types (:func:`generic_codes`) also
        ``value_sum_{N}d``, ``value_n_{N}d`` (values present) and ``items_{N}d``
        (distinct ``item``) per window of the spec, and ``day_mask``: bit d (d <= 30)
        is set when the entity was active d UTC days before the cutoff's day within
        the last 30 days; on login
        rows, bits 32-35 are the login weeks of the last 28 days and bit 36 a login on
        day 28 within them.
    """
    age, code = coded.age_us, coded.code
    names = dict(zip(codes["event_type"], codes["code"].astype(int), strict=True))
    # UTC day offset from the cutoff's day: ceil((age - time of day of the cutoff) / day).
    day_offset = (age + (DAY_US - 1 - cutoff_us % DAY_US)) // DAY_US
    week = (age - 1) // (7 * DAY_US)  # ages in (7k, 7(k+1)] days are week k (0-based)
    in_days = {days: age <= days * DAY_US for days in count_windows(spec)}
    rate = ibis.literal(decay_rate_per_us(spec), "float64")
    is_ticket = code.isin([names[TICKET_OPENED], names[TICKET_RESOLVED]])
    # Rows are grouped by type, so one sum serves three types (every aggregate costs
    # a pass over the hash table): session minutes, purchase amounts, ticket counts.
    amount_counted = (
        ((code == names[SESSION]) & (age <= SESSION_WINDOW * DAY_US))
        | ((code == names[PURCHASE]) & (age <= spec.kpi_window_days * DAY_US))
        | is_ticket
    )
    # One mask for active days and logins. Bits 0-30: active UTC days (last 30 days,
    # every type). Login rows of the last 28 days add their week (bits 32-35) and, for
    # day 28, bit 36: that day is only partly inside the 28 days, so bit 28 (any login
    # that day) cannot tell. Each bit range is disjoint from the others, so + is |
    # (Ibis's PySpark compiler has no BitOr); the clamps change nothing inside the
    # windows and keep shifts in range on rows outside them, which engines evaluate.
    is_recent_login = (code == names[LOGIN]) & (age <= LOGIN_DAYS_WINDOW * DAY_US)
    login_bits = _bit(ibis.least(week, 7) + LOGIN_WEEK_BIT) + ibis.ifelse(
        day_offset == LOGIN_DAYS_WINDOW, ibis.literal(1 << LOGIN_EDGE_DAY_BIT, "int64"), 0
    )
    day_bits = _bit(day_offset) + ibis.ifelse(is_recent_login, login_bits, 0)
    aggregates = {f"n_{days}d": coded.count(where=window) for days, window in in_days.items()}
    # No all-time count nor first event per type: only purchases read them, and every
    # aggregate costs a pass over 44M rows (0.5 s of 4.9 s); the small query's scan of
    # NPS answers reads the purchases too (features.engine_small).
    aggregates |= {
        "min_age_us": age.min(),
        "decayed": (age.cast("float64") * rate).exp().sum(),
        # CASE rather than FILTER: the engines then compute the value on its rows only.
        "amount": ibis.cases((is_ticket, 1.0), (amount_counted, coded.value)).sum(),
        "day_mask": _bit_or(
            ibis.ifelse(age <= ACTIVE_DAYS_WINDOW * DAY_US, day_bits, ibis.null("int64"))
        ),
    }
    generic = generic_codes(codes, spec)
    if generic:
        for days in spec.windows_days:
            window = in_days[days]
            aggregates[f"value_sum_{days}d"] = coded.value.sum(where=window)
            aggregates[f"value_n_{days}d"] = coded.value.count(where=window)
    grouped = coded.group_by([*keys, "code"]).aggregate(**aggregates)
    zeroed = ["amount", "day_mask"]
    if generic:
        grouped = _with_distinct_items(grouped, coded, keys, generic, spec)
        zeroed += [f"{stat}_{days}d" for stat in ("value_sum", "items")
                   for days in spec.windows_days]  # fmt: skip
    # Empty sums and masks are NULL in SQL; 0 keeps every column integer or float.
    return grouped.mutate(**{column: grouped[column].fill_null(0) for column in zeroed})


def _with_distinct_items(
    grouped: ir.Table, coded: ir.Table, keys: list[str], generic: list[int], spec: FeatureSpec
) -> ir.Table:
    """``grouped`` with ``items_{N}d``: distinct ``item`` of undeclared types per window.

    An item counts in a window when its latest use falls in it; deduplicating
    (entity, type, item) first means no engine needs ``count(DISTINCT ...)``.
    """
    used = coded.filter(coded.code.isin(generic) & coded.item.notnull())
    latest = used.group_by([*keys, "code", "item"]).aggregate(age=used.age_us.min())
    renamed = {f"item_{key}": key for key in [*keys, "code"]}
    items = (
        latest.group_by([*keys, "code"])
        .aggregate(
            **{
                f"items_{d}d": latest.count(where=latest.age <= d * DAY_US)
                for d in spec.windows_days
            }
        )
        .rename(renamed)
    )
    same = [grouped[key] == items[item_key] for item_key, key in renamed.items()]
    return grouped.left_join(items, same).drop(*renamed)
