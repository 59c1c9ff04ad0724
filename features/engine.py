"""The point-in-time aggregation: one Ibis expression for DuckDB and Spark alike.

The pass over the events is written once in Ibis, so the same definitions compile
to DuckDB (the default) and to Spark SQL. Its shape was chosen for speed:

* events are reduced to one row per (entity, event type) with cheap filtered
  aggregates; the type is an integer code from a small join, because hashing
  integers is cheaper than hashing the type names;
* that long table (entities x types, far smaller than the events) is pivoted to
  one column per feature with numpy, where a wide SQL pivot of ~150 filtered
  aggregates per entity would cost more than the whole pass over the events;
* distinct UTC days and weeks are collected as bit masks (``bit_or(1 << day)``)
  instead of ``count(DISTINCT ...)``;
* times are integer microseconds before the cutoff (``age_us``): exact on both
  engines, and every window is an integer comparison. Events are first filtered
  to ``event_time < c``, so "last N days" is ``age_us <= N days``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa

from features.spec import NPS_PASSIVE_MIN, NPS_PROMOTER_MIN, FeatureSpec, safe_name

DAY_US = 86_400 * 1_000_000
#: Fixed windows of the special features (their names carry them: ``active_days_30d``).
ACTIVE_DAYS_WINDOW = 30
LOGIN_DAYS_WINDOW = 28
LOGIN_WEEKS = LOGIN_DAYS_WINDOW // 7
LOGIN_WEEK_BIT = 32
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


def type_codes(event_types: Sequence[str]) -> pd.DataFrame:
    """Integer code of each featurised event type, then of the special types."""
    names = list(dict.fromkeys([*event_types, *SPECIAL_TYPES]))
    return pd.DataFrame({"event_type": names, "code": range(len(names))}).astype(
        {"event_type": "str", "code": "int64"}
    )


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
    has = set(events.columns)
    return before.select(
        entity_id=before.entity_id,
        event_type=before.event_type,
        age_us=age_us,
        value=before.value.cast("float64") if "value" in has else ibis.null("float64"),
        item=before.item.cast("string") if "item" in has else ibis.null("string"),
    )


def _bit(position: ir.IntegerValue) -> ir.IntegerValue:
    """``1 << position``, capped: engines also evaluate it on rows an aggregate's
    filter drops, where the position may exceed 63 (those bits are never read).
    """
    return ibis.literal(1, "int64") << ibis.least(position, 62)


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
        ``row, code``, ``n_{N}d`` per count window, ``min_age_us``, ``decayed``,
        ``amount`` (session minutes, purchase amounts or the all-time count of
        tickets, by type), ``active_day_mask`` (bit d: active d UTC days before the
        cutoff's day, last 30 days) and ``login_mask`` (login days, then weeks).
    """
    before = events_before(events, as_of, backend)
    code_table = ibis.memtable(codes)
    coded = before.left_join(code_table, before.event_type == code_table.event_type).select(
        "entity_id", "age_us", "value", code=ibis.coalesce(code_table.code, OTHER_TYPE)
    )
    age, code = coded.age_us, coded.code
    names = dict(zip(codes["event_type"], codes["code"].astype(int), strict=True))
    cutoff_us = microseconds(as_of)
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
    # Login days in bits 0-28, login weeks in bits 32-35 (same 28-day window).
    login_bits = _bit(day_offset) | _bit(week + LOGIN_WEEK_BIT)
    aggregates = {f"n_{days}d": coded.count(where=window) for days, window in in_days.items()}
    aggregates |= {
        "min_age_us": age.min(),
        "decayed": (age.cast("float64") * rate).exp().sum(),
        "amount": ibis.ifelse(is_ticket, 1.0, coded.value).sum(where=amount_counted),
        "active_day_mask": _bit(day_offset).bit_or(where=age <= ACTIVE_DAYS_WINDOW * DAY_US),
        "login_mask": login_bits.bit_or(
            where=(code == names[LOGIN]) & (age <= LOGIN_DAYS_WINDOW * DAY_US)
        ),
    }
    grouped = coded.group_by(["entity_id", "code"]).aggregate(**aggregates)
    # Empty sums and masks are NULL in SQL; 0 keeps every column integer or float.
    filled = grouped.mutate(
        **{column: grouped[column].fill_null(0) for column in ("amount", "active_day_mask",
                                                               "login_mask")}  # fmt: skip
    )
    joined = filled.join(entity_rows, filled.entity_id == entity_rows.entity_id)
    return joined.drop("entity_id")


def latest_nps(
    events: ir.Table, entity_rows: ir.Table, as_of: pd.Timestamp, backend: str
) -> ir.Table:
    """``row, nps_latest``: the score of each entity's latest NPS answer before ``as_of``.

    Answers without a score are ignored; of answers at the same instant the
    highest score counts, so the result never depends on row order.
    """
    before = events_before(events, as_of, backend)
    answers = before.filter((before.event_type == NPS_ANSWER) & before.value.notnull())
    rank = ibis.row_number().over(
        group_by=answers.entity_id, order_by=[answers.age_us, answers.value.desc()]
    )
    latest = answers.mutate(rank=rank).filter(ibis._.rank == 0)
    return latest.join(entity_rows, latest.entity_id == entity_rows.entity_id).select(
        "row", nps_latest=latest.value
    )


def key_features_used(
    events: ir.Table,
    entity_rows: ir.Table,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
    backend: str,
) -> ir.Table:
    """``row, key_features_used``: distinct ``item`` of recent ``feature_use`` events.

    Only the spec's key features count when it lists them.
    """
    before = events_before(events, as_of, backend)
    uses = before.filter(
        (before.event_type == FEATURE_USE)
        & (before.age_us <= KEY_FEATURES_WINDOW * DAY_US)
        & before.item.notnull()
    )
    if spec.key_features is not None:
        uses = uses.filter(uses.item.isin(list(spec.key_features)))
    # Deduplicate first: no engine needs count(DISTINCT ...).
    pairs = uses.select("entity_id", "item").distinct()
    counts = pairs.group_by("entity_id").aggregate(key_features_used=pairs.count())
    return counts.join(entity_rows, counts.entity_id == entity_rows.entity_id).select(
        "row", "key_features_used"
    )


# --- from the engine's long (entity, type) table to feature columns ---------------------


class _Columns:
    """The output columns, written in place into one 2D block per dtype.

    Feature tables have ~150 columns per entity: allocating each once, in the
    block the final DataFrame wraps without copying, halves the memory traffic.
    """

    def __init__(self, names: dict[str, str], n_rows: int) -> None:
        ints = [name for name, dtype in names.items() if dtype == "int64"]
        floats = [name for name, dtype in names.items() if dtype == "float64"]
        self.int_block = np.zeros((len(ints), n_rows), dtype="int64")
        self.float_block = np.zeros((len(floats), n_rows), dtype="float64")
        self.column = {name: self.int_block[i] for i, name in enumerate(ints)}
        self.column |= {name: self.float_block[i] for i, name in enumerate(floats)}
        self.ints, self.floats = ints, floats

    def frame(self) -> pd.DataFrame:
        """Both blocks as one DataFrame (no copy)."""
        return pd.concat(
            [
                pd.DataFrame(self.int_block.T, columns=self.ints, copy=False),
                pd.DataFrame(self.float_block.T, columns=self.floats, copy=False),
            ],
            axis=1,
        )


class _LongTable:
    """The engine's (entity row, type code) rows, sliced by type code."""

    def __init__(self, long: pa.Table) -> None:
        self.long = long
        codes = _numpy(long, "code")
        # Codes are small integers: a stable sort on int16 is a radix sort.
        self.order = np.argsort(codes.astype(np.int16), kind="stable")
        edges = np.arange(OTHER_TYPE, codes.max(initial=OTHER_TYPE) + 2)
        self.bounds = np.searchsorted(codes[self.order], edges)
        self.rows = _numpy(long, "row")
        self._values: dict[str, np.ndarray] = {}

    def values(self, column: str) -> np.ndarray:
        if column not in self._values:
            self._values[column] = _numpy(self.long, column)
        return self._values[column]

    def of_type(self, code: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions in the long table of one type code, and their entity rows."""
        position = code - OTHER_TYPE
        if position + 1 >= len(self.bounds):
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        picked = self.order[self.bounds[position] : self.bounds[position + 1]]
        return picked, self.rows[picked]


def _numpy(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy()


def nps_classes(scores: np.ndarray) -> np.ndarray:
    """NPS class of 0-10 scores: promoter 9-10, passive 7-8, detractor 0-6, none (NaN)."""
    return np.select(
        [np.isnan(scores), scores >= NPS_PROMOTER_MIN, scores >= NPS_PASSIVE_MIN],
        ["none", "promoter", "passive"],
        default="detractor",
    )


def output_dtypes(spec: FeatureSpec, event_types: Sequence[str]) -> dict[str, str]:
    """Name and dtype of every column :func:`assemble` writes, from the spec."""
    from features.spec import per_type_features, special_features

    dtypes = {d.name: d.dtype for name in event_types for d in per_type_features(spec, name)}
    dtypes |= {d.name: d.dtype for d in special_features(spec) if d.name != "tenure_days"}
    return dtypes


def assemble(
    long: pa.Table,
    nps: pa.Table,
    keys: pa.Table,
    n_rows: int,
    codes: pd.DataFrame,
    spec: FeatureSpec,
    event_types: Sequence[str],
) -> pd.DataFrame:
    """The engagement features (one row per entity row) from the engine's three results.

    Args:
        long: Result of :func:`per_entity_and_type`.
        nps: Result of :func:`latest_nps`.
        keys: Result of :func:`key_features_used`.
        n_rows: Number of entity rows.
        codes: The type codes the engine used (see :func:`type_codes`).
        spec: The feature set.
        event_types: Featurised event types.

    Returns:
        Every engagement feature of the catalog except ``tenure_days``.
    """
    out = _Columns(output_dtypes(spec, event_types), n_rows)
    column = out.column
    table = _LongTable(long)
    code = dict(zip(codes["event_type"], codes["code"].astype(int), strict=True))
    trend, kpi = spec.trend_window_days, spec.kpi_window_days
    counts = {days: table.values(f"n_{days}d") for days in count_windows(spec)}
    ages, decayed = table.values("min_age_us"), table.values("decayed")
    for name in event_types:
        base = safe_name(name)
        picked, rows = table.of_type(code[name])
        for days in spec.windows_days:
            column[f"{base}_count_{days}d"][rows] = counts[days][picked]
        since = column[f"{base}_days_since_last"]
        since.fill(np.nan)
        since[rows] = ages[picked] / DAY_US
        column[f"{base}_decayed"][rows] = decayed[picked]
        column[f"{base}_trend"][rows] = 2 * counts[trend][picked] - counts[2 * trend][picked]

    def special(event_type: str, values: str) -> np.ndarray:
        picked, rows = table.of_type(code[event_type])
        spread = np.zeros(n_rows, dtype=table.values(values).dtype)
        spread[rows] = table.values(values)[picked]
        return spread

    last_age = np.full(n_rows, np.inf)
    np.minimum.at(last_age, table.rows, ages.astype("float64"))
    active = np.zeros(n_rows, dtype="int64")
    np.bitwise_or.at(active, table.rows, table.values("active_day_mask"))
    column["days_since_last_event"][:] = np.where(np.isinf(last_age), np.nan, last_age / DAY_US)
    column[f"active_days_{ACTIVE_DAYS_WINDOW}d"][:] = np.bitwise_count(active)
    login = special(LOGIN, "login_mask")
    column[f"login_active_days_{LOGIN_DAYS_WINDOW}d"][:] = np.bitwise_count(
        login & ((1 << LOGIN_WEEK_BIT) - 1)
    )
    column[f"login_active_weeks_{LOGIN_WEEKS}w"][:] = np.bitwise_count(login >> LOGIN_WEEK_BIT)
    minutes = special(SESSION, "amount")
    column[f"session_minutes_{SESSION_WINDOW}d"][:] = minutes
    _ratio(minutes, special(SESSION, f"n_{SESSION_WINDOW}d"), column[f"avg_session_minutes_{SESSION_WINDOW}d"])
    column[f"key_features_used_{KEY_FEATURES_WINDOW}d"][_numpy(keys, "row")] = _numpy(
        keys, "key_features_used"
    )
    scores = column["nps_latest"]
    scores.fill(np.nan)
    scores[_numpy(nps, "row")] = _numpy(nps, "nps_latest")
    opened = special(TICKET_OPENED, "amount") - special(TICKET_RESOLVED, "amount")
    column["open_tickets"][:] = np.maximum(opened, 0)
    column[f"purchase_amount_{kpi}d"][:] = special(PURCHASE, "amount")
    email = {name: special(name, f"n_{kpi}d") for name in EMAIL_TYPES}
    delivered = email[EMAIL_DELIVERED]
    for rate, numerator, denominator in (
        ("delivery", delivered, delivered + email[EMAIL_BOUNCED]),
        ("open", email[EMAIL_OPENED], delivered),
        ("click", email[EMAIL_CLICKED], delivered),
        ("click_to_open", email[EMAIL_CLICKED], email[EMAIL_OPENED]),
        ("unsubscribe", email[EMAIL_UNSUBSCRIBED], delivered),
    ):
        _ratio(numerator, denominator, column[f"email_{rate}_rate_{kpi}d"])
    frame = out.frame()
    frame["nps_class"] = pd.Categorical(nps_classes(scores), categories=list(NPS_CLASSES))
    return frame


def _ratio(numerator: np.ndarray, denominator: np.ndarray, out: np.ndarray) -> None:
    """``out = numerator / denominator``, NaN where the denominator is 0."""
    out.fill(np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
