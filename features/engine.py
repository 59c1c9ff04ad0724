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
        value=_missing_as_null(before.value) if "value" in has else ibis.null("float64"),
        item=before.item.cast("string") if "item" in has else ibis.null("string"),
    )


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
    # The two bit ranges are disjoint, so + is |; Ibis's PySpark compiler has no BitOr.
    # The clamps change nothing inside the window and keep the sum from overflowing
    # on rows outside it, which engines still evaluate.
    login_bits = _bit(ibis.least(day_offset, 31)) + _bit(ibis.least(week, 7) + LOGIN_WEEK_BIT)
    aggregates = {f"n_{days}d": coded.count(where=window) for days, window in in_days.items()}
    aggregates |= {
        "min_age_us": age.min(),
        "decayed": (age.cast("float64") * rate).exp().sum(),
        # CASE rather than FILTER: the engines then compute the value on its rows only.
        "amount": ibis.cases((is_ticket, 1.0), (amount_counted, coded.value)).sum(),
        "active_day_mask": _bit_or(
            ibis.ifelse(age <= ACTIVE_DAYS_WINDOW * DAY_US, _bit(day_offset), ibis.null("int64"))
        ),
        "login_mask": _bit_or(
            ibis.ifelse(
                (code == names[LOGIN]) & (age <= LOGIN_DAYS_WINDOW * DAY_US),
                login_bits,
                ibis.null("int64"),
            )
        ),
    }
    grouped = coded.group_by(["entity_id", "code"]).aggregate(**aggregates)
    # Empty sums and masks are NULL in SQL; 0 keeps every column integer or float.
    filled = grouped.mutate(
        **{
            column: grouped[column].fill_null(0)
            for column in ("amount", "active_day_mask", "login_mask")
        }  # fmt: skip
    )
    joined = filled.join(entity_rows, filled.entity_id == entity_rows.entity_id)
    return joined.drop("entity_id")


def nps_and_key_features(
    events: ir.Table,
    entity_rows: ir.Table,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
    backend: str,
) -> ir.Table:
    """``row, nps_latest, key_features_used`` of entities with NPS answers or feature use.

    ``nps_latest`` is the score of the latest NPS answer before ``as_of``; answers
    without a score are ignored and of answers at the same instant the highest
    score counts, so the result never depends on row order. ``key_features_used``
    counts distinct ``item`` of ``feature_use`` events in the last 30 days (only
    the spec's key features, when it lists them). Both read one filtered scan.
    """
    before = events_before(events, as_of, backend)
    relevant = before.filter(before.event_type.isin([NPS_ANSWER, FEATURE_USE]))
    answers = relevant.filter((relevant.event_type == NPS_ANSWER) & relevant.value.notnull())
    rank = ibis.row_number().over(
        group_by=answers.entity_id, order_by=[answers.age_us, answers.value.desc()]
    )
    latest = answers.mutate(rank=rank).filter(ibis._.rank == 0)
    latest = latest.select(
        "entity_id", nps_latest=latest.value, key_features_used=ibis.null("int64")
    )
    uses = relevant.filter(
        (relevant.event_type == FEATURE_USE)
        & (relevant.age_us <= KEY_FEATURES_WINDOW * DAY_US)
        & relevant.item.notnull()
    )
    if spec.key_features is not None:
        uses = uses.filter(uses.item.isin(list(spec.key_features)))
    # Deduplicate first: no engine needs count(DISTINCT ...).
    pairs = uses.select("entity_id", "item").distinct()
    counts = pairs.group_by("entity_id").aggregate(
        nps_latest=ibis.null("float64"), key_features_used=pairs.count()
    )
    stacked = latest.union(counts)
    both = stacked.group_by("entity_id").aggregate(
        nps_latest=stacked.nps_latest.max(),
        key_features_used=stacked.key_features_used.max().fill_null(0),
    )
    return both.join(entity_rows, both.entity_id == entity_rows.entity_id).select(
        "row", "nps_latest", "key_features_used"
    )


# --- from the engine's long (entity, type) table to feature columns ---------------------


class FeatureColumns:
    """Output columns as rows of one 2D block per dtype.

    The final DataFrame wraps them without copying (a feature table is ~150 columns:
    each is written exactly once).
    """

    def __init__(self, dtypes: dict[str, str], n_rows: int) -> None:
        self.names = {
            kind: [n for n, d in dtypes.items() if d == kind] for kind in ("int64", "float64")
        }
        self.blocks = {
            kind: np.zeros((len(names), n_rows), kind) for kind, names in self.names.items()
        }
        self.position = {name: i for names in self.names.values() for i, name in enumerate(names)}
        self.dtype = dtypes

    def __getitem__(self, name: str) -> np.ndarray:
        return self.blocks[self.dtype[name]][self.position[name]]

    def region(self, names: list[str]) -> np.ndarray:
        """Consecutive columns as one (len(names), n_rows) view."""
        first = self.position[names[0]]
        return self.blocks[self.dtype[names[0]]][first : first + len(names)]

    def frame(self) -> pd.DataFrame:
        """Every column, as one DataFrame over the blocks (not a copy)."""
        parts = [
            pd.DataFrame(self.blocks[k].T, columns=self.names[k], copy=False) for k in self.names
        ]
        return pd.concat(parts, axis=1)


def nps_classes(scores: np.ndarray) -> np.ndarray:
    """NPS class of 0-10 scores: promoter 9-10, passive 7-8, detractor 0-6, none (NaN)."""
    return np.select(
        [np.isnan(scores), scores >= NPS_PROMOTER_MIN, scores >= NPS_PASSIVE_MIN],
        ["none", "promoter", "passive"],
        default="detractor",
    )


def _per_type_names(spec: FeatureSpec, event_types: Sequence[str]) -> dict[str, list[str]]:
    """Per-type column names grouped by statistic, types in order (one block region each)."""
    bases = [safe_name(name) for name in event_types]
    names = {f"n_{days}d": [f"{b}_count_{days}d" for b in bases] for days in spec.windows_days}
    for stat in ("days_since_last", "decayed", "trend"):
        names[stat] = [f"{b}_{stat}" for b in bases]
    return names


def spread(
    long: pa.Table, n_rows: int, codes: pd.DataFrame, spec: FeatureSpec, event_types: Sequence[str]
) -> FeatureColumns:
    """Spread the long (entity, type) table into feature columns over entity rows.

    Args:
        long: Result of :func:`per_entity_and_type`.
        n_rows: Number of entity rows.
        codes: The type codes the engine used (see :func:`type_codes`); the
            featurised types must have codes ``0 .. len(event_types) - 1``.
        spec: The feature set.
        event_types: Featurised event types.

    Returns:
        Every engagement feature of the catalog except ``tenure_days``,
        ``nps_latest``, ``nps_class`` and ``key_features_used_30d`` (see
        :func:`with_nps_and_key_features`).
    """
    from features.spec import special_features

    per_type = _per_type_names(spec, event_types)
    dtypes = {name: ("int64" if stat.startswith("n_") else "float64")
              for stat, names in per_type.items() for name in names}  # fmt: skip
    dtypes |= {d.name: d.dtype for d in special_features(spec)
               if d.name != "tenure_days" and d.dtype != "category"}  # fmt: skip
    out = FeatureColumns(dtypes, n_rows)
    regions = {stat: out.region(names).reshape(-1) for stat, names in per_type.items()}
    regions["days_since_last"][:] = np.nan
    code = dict(zip(codes["event_type"], codes["code"].astype(int), strict=True))
    trend, kpi = spec.trend_window_days, spec.kpi_window_days
    # Type-specific values, spread over entity rows: (type, engine column) -> values.
    wanted = [(LOGIN, "login_mask"), (SESSION, "amount"), (SESSION, f"n_{SESSION_WINDOW}d"),
              (PURCHASE, "amount"), (TICKET_OPENED, "amount"), (TICKET_RESOLVED, "amount"),
              *((name, f"n_{kpi}d") for name in EMAIL_TYPES)]  # fmt: skip
    typed = {key: np.zeros(n_rows, long.schema.field(key[1]).type.to_pandas_dtype())
             for key in wanted}  # fmt: skip
    last_age = np.full(n_rows, np.inf)
    active = np.zeros(n_rows, dtype="int64")
    for batch in long.to_batches():
        column = {name: batch.column(name).to_numpy() for name in batch.schema.names}
        rows, type_codes_ = column["row"], column["code"]
        featurised = (type_codes_ >= 0) & (type_codes_ < len(event_types))
        every = bool(featurised.all())

        def of(values: np.ndarray, every: bool = every, featurised: np.ndarray = featurised):
            return values if every else values[featurised]

        cells = of(type_codes_) * n_rows + of(rows)
        for days in spec.windows_days:
            regions[f"n_{days}d"][cells] = of(column[f"n_{days}d"])
        regions["days_since_last"][cells] = of(column["min_age_us"]) / DAY_US
        regions["decayed"][cells] = of(column["decayed"])
        regions["trend"][cells] = of(2 * column[f"n_{trend}d"] - column[f"n_{2 * trend}d"])
        for event_type, name in wanted:
            chosen = type_codes_ == code[event_type]
            typed[event_type, name][rows[chosen]] = column[name][chosen]
        if not every:  # types neither featurised nor special: their events are activity too
            others = ~featurised
            np.minimum.at(last_age, rows[others], column["min_age_us"][others].astype("float64"))
        np.bitwise_or.at(active, rows, column["active_day_mask"])
    login = typed[LOGIN, "login_mask"]
    minutes = typed[SESSION, "amount"]
    last_days = np.fmin(np.fmin.reduce(out.region(per_type["days_since_last"]), axis=0),
                        np.where(np.isinf(last_age), np.nan, last_age / DAY_US))  # fmt: skip
    out["days_since_last_event"][:] = last_days
    out[f"active_days_{ACTIVE_DAYS_WINDOW}d"][:] = np.bitwise_count(active)
    out[f"login_active_days_{LOGIN_DAYS_WINDOW}d"][:] = np.bitwise_count(
        login & ((1 << LOGIN_WEEK_BIT) - 1)
    )
    out[f"login_active_weeks_{LOGIN_WEEKS}w"][:] = np.bitwise_count(login >> LOGIN_WEEK_BIT)
    out[f"session_minutes_{SESSION_WINDOW}d"][:] = minutes
    _ratio(minutes, typed[SESSION, f"n_{SESSION_WINDOW}d"],
           out[f"avg_session_minutes_{SESSION_WINDOW}d"])  # fmt: skip
    tickets = typed[TICKET_OPENED, "amount"] - typed[TICKET_RESOLVED, "amount"]
    out["open_tickets"][:] = np.maximum(tickets, 0)
    out[f"purchase_amount_{kpi}d"][:] = typed[PURCHASE, "amount"]
    email = {name: typed[name, f"n_{kpi}d"] for name in EMAIL_TYPES}
    delivered = email[EMAIL_DELIVERED]
    for rate, numerator, denominator in (
        ("delivery", delivered, delivered + email[EMAIL_BOUNCED]),
        ("open", email[EMAIL_OPENED], delivered),
        ("click", email[EMAIL_CLICKED], delivered),
        ("click_to_open", email[EMAIL_CLICKED], email[EMAIL_OPENED]),
        ("unsubscribe", email[EMAIL_UNSUBSCRIBED], delivered),
    ):
        _ratio(numerator, denominator, out[f"email_{rate}_rate_{kpi}d"])
    return out


def with_nps_and_key_features(columns: FeatureColumns, small: pa.Table) -> pd.DataFrame:
    """The output of :func:`spread` completed with :func:`nps_and_key_features`.

    Returns:
        All engagement features but ``tenure_days``, in no particular column order.
    """
    rows = _numpy(small, "row")
    columns[f"key_features_used_{KEY_FEATURES_WINDOW}d"][rows] = _numpy(small, "key_features_used")
    scores = columns["nps_latest"]
    scores[:] = np.nan
    scores[rows] = small.column("nps_latest").to_numpy(zero_copy_only=False)
    frame = columns.frame()
    frame["nps_class"] = pd.Categorical(nps_classes(scores), categories=list(NPS_CLASSES))
    return frame


def _numpy(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy()


def _ratio(numerator: np.ndarray, denominator: np.ndarray, out: np.ndarray) -> None:
    """``out = numerator / denominator``, NaN where the denominator is 0."""
    out[:] = np.nan
    np.divide(numerator, denominator, out=out, where=denominator > 0)
