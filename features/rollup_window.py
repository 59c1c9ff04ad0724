"""The roll-ups' window state: one row per (entity, event type), slid from night to night.

The ``daily`` roll-up (:mod:`features.rollup`) keeps one row per (entity, type, day) for
the days of the longest window, so computing the features from it still reads about
one row per event of those days. The window state keeps instead, per (entity, type),
the sums every feature reads as of one cutoff (midnight UTC):

* ``n_all``, ``first_us``, ``last_us``: all-time count and first and last event time;
* ``decayed``: the recency weights ``sum(exp(age * rate))`` as of the cutoff;
* ``day_bits``: bit ``d`` set when the entity had an event of the type ``d`` UTC days
  before the cutoff's day (``1 <= d <=`` :data:`~features.engine.ACTIVE_DAYS_WINDOW`);
* per count window ``W`` (:func:`features.engine.count_windows`): ``n_W`` events,
  ``vs_W`` the sum and ``vn_W`` the number of values present.

:func:`advanced` moves a state from its cutoff ``C`` to a later one ``C'`` with only
the days that change it: the new days ``[C, C')`` are added; for each window ``W``
the days that leave it, ``[C - W, C' - W)`` (before ``C``), are subtracted; the
recency weights are rescaled by ``exp(k days * rate)`` and the day bits shifted by
``k = C' - C`` days. Counts, times and bits are exact; sums of values and weights are
equal to rounding (a window left empty gets a value sum of exactly 0). So a night
reads the state (one row per (entity, type)) and a few days of the ``daily`` roll-up,
not the whole window. :func:`per_entity_and_type` gives the engine's long table
(:func:`features.engine.per_entity_and_type`) from a state.
"""

from __future__ import annotations

import math

import ibis
import ibis.expr.types as ir
import pandas as pd

from features import engine
from features.engine import (
    ACTIVE_DAYS_WINDOW,
    DAY_US,
    LOGIN,
    LOGIN_DAYS_WINDOW,
    LOGIN_EDGE_DAY_BIT,
    LOGIN_WEEK_BIT,
    LOGIN_WEEKS,
    PURCHASE,
    SESSION,
    SESSION_WINDOW,
    TICKET_OPENED,
    TICKET_RESOLVED,
)
from features.spec import FeatureSpec

#: ``day_bits`` keeps bits 1..ACTIVE_DAYS_WINDOW: ``day_bits % BITS_MODULUS`` drops the rest.
BITS_MODULUS = 1 << (ACTIVE_DAYS_WINDOW + 1)


def columns(spec: FeatureSpec) -> list[str]:
    """The state's columns, in order."""
    return ["entity_id", "event_type", "n_all", "first_us", "last_us", "decayed", "day_bits",
            *_sums(spec)]  # fmt: skip


def _whole(value: ir.NumericValue) -> ir.IntegerValue:
    return value.cast("int64")


def _contributions(daily: ir.Table, cutoff_day: int, spec: FeatureSpec) -> ir.Table:
    """Each ``daily`` row's share of the state at ``cutoff_day`` (its days are before it)."""
    d = cutoff_day - daily.day  # the day's offset: its events' ages are in (d - 1, d] days
    rate_per_day = ibis.literal(engine.decay_rate_per_us(spec) * DAY_US, "float64")
    sums = {}
    for w in engine.count_windows(spec):
        inside = d <= w
        sums[f"n_{w}"] = _whole(ibis.ifelse(inside, daily.n, 0))
        sums[f"vs_{w}"] = ibis.ifelse(inside, daily.value_sum.cast("float64"), 0.0)
        sums[f"vn_{w}"] = _whole(ibis.ifelse(inside, daily.value_n, 0))
    return daily.select(
        entity_id=daily.entity_id,
        event_type=daily.event_type,
        n_all=_whole(daily.n),
        first_us=daily.first_us.cast("int64"),
        last_us=daily.last_us.cast("int64"),
        decayed=daily.decay_sum.cast("float64") * ((d - 1).cast("float64") * rate_per_day).exp(),
        day_bits=_whole(ibis.ifelse(d <= ACTIVE_DAYS_WINDOW, engine._bit(d), 0)),
        **sums,
    )


def _leaving(daily: ir.Table, since_day: int, cutoff_day: int, spec: FeatureSpec) -> ir.Table:
    """Rows taking out of each window ``W`` the days ``[since - W, cutoff - W)`` before ``since``.

    Those days were inside ``W`` at ``since`` and are outside it at ``cutoff``; only
    they are read (a night moves each window by one day).
    """
    windows = engine.count_windows(spec)
    ranges = {w: (since_day - w, min(cutoff_day - w, since_day)) for w in windows}
    wanted = [(daily.day >= first) & (daily.day < end) for first, end in ranges.values()
              if first < end]  # fmt: skip
    rows = daily.filter(ibis.or_(*wanted)) if wanted else daily.limit(0)
    null_time = ibis.null("int64")
    sums = {}
    for w, (first, end) in ranges.items():
        leaves = (rows.day >= first) & (rows.day < end)
        sums[f"n_{w}"] = _whole(ibis.ifelse(leaves, -rows.n, 0))
        sums[f"vs_{w}"] = ibis.ifelse(leaves, -rows.value_sum.cast("float64"), 0.0)
        sums[f"vn_{w}"] = _whole(ibis.ifelse(leaves, -rows.value_n, 0))
    return rows.select(
        entity_id=rows.entity_id,
        event_type=rows.event_type,
        n_all=ibis.literal(0, "int64"),
        first_us=null_time,
        last_us=null_time,
        decayed=ibis.literal(0.0, "float64"),
        day_bits=ibis.literal(0, "int64"),
        **sums,
    )


def _shifted(state: ir.Table, days: int, spec: FeatureSpec) -> ir.Table:
    """``state`` seen ``days`` later: weights rescaled, day bits moved, sums as they were."""
    factor = ibis.literal(math.exp(engine.decay_rate_per_us(spec) * DAY_US * days), "float64")
    bits = (
        ibis.literal(0, "int64")
        if days > ACTIVE_DAYS_WINDOW
        else (state.day_bits * (1 << days)) % BITS_MODULUS
    )
    return state.mutate(decayed=state.decayed * factor, day_bits=bits)


def _sums(spec: FeatureSpec) -> list[str]:
    return [f"{stat}_{w}" for w in engine.count_windows(spec) for stat in ("n", "vs", "vn")]


def _no_residue(state: ir.Table, spec: FeatureSpec) -> ir.Table:
    """A window left empty sums to exactly 0 (a value added and taken out may leave 1e-16)."""
    empty = {f"vs_{w}": ibis.ifelse(state[f"vn_{w}"] == 0, 0.0, state[f"vs_{w}"])
             for w in engine.count_windows(spec)}  # fmt: skip
    return state.mutate(**empty).select(*columns(spec))


def _summed(rows: ir.Table, spec: FeatureSpec, *, state: bool = True) -> ir.Table:
    """One row per (entity, type) from contribution rows of the same cutoff.

    ``state=False`` for a delta, whose value sums may net to anything with no values.
    """
    whole = {name for name in _sums(spec) if not name.startswith("vs_")}
    # Counts summed as float64 (exact below 2**53): DuckDB sums int64 to 128 bits.
    sums = {name: _whole(rows[name].cast("float64").sum()) if name in whole else rows[name].sum()
            for name in _sums(spec)}  # fmt: skip
    grouped = rows.group_by(["entity_id", "event_type"]).aggregate(
        n_all=_whole(rows.n_all.cast("float64").sum()),
        first_us=rows.first_us.min(),
        last_us=rows.last_us.max(),
        decayed=rows.decayed.sum(),
        day_bits=engine._bit_or(rows.day_bits),
        **sums,
    )
    return _no_residue(grouped, spec) if state else grouped.select(*columns(spec))


def _plus(state: ir.Table, delta: ir.Table, spec: FeatureSpec) -> ir.Table:
    """``state`` with ``delta`` (one row per key, of the same cutoff) added, key by key.

    A join, not a grouping of the union: the state has a row per (entity, type) and
    the delta a few days' rows, so only the delta is hashed.
    """
    other = delta.rename({f"d_{c}": c for c in delta.columns})
    joined = state.outer_join(
        other,
        [state.entity_id == other.d_entity_id, state.event_type == other.d_event_type],
    )

    def total(name: str, zero: object) -> ir.Value:
        return joined[name].fill_null(zero) + joined[f"d_{name}"].fill_null(zero)

    first, last = joined.first_us, joined.last_us
    new_first, new_last = joined.d_first_us, joined.d_last_us
    summed = joined.select(
        entity_id=joined.entity_id.fill_null(joined.d_entity_id),
        event_type=joined.event_type.fill_null(joined.d_event_type),
        n_all=total("n_all", 0),
        first_us=ibis.least(first.fill_null(new_first), new_first.fill_null(first)),
        last_us=ibis.greatest(last.fill_null(new_last), new_last.fill_null(last)),
        decayed=total("decayed", 0.0),
        # The old days' bits moved past the new days': disjoint, so + is |.
        day_bits=total("day_bits", 0),
        **{name: total(name, 0.0 if name.startswith("vs_") else 0) for name in _sums(spec)},
    )
    return _no_residue(summed, spec)


def window_state(daily: ir.Table, as_of: pd.Timestamp, spec: FeatureSpec) -> ir.Table:
    """The state as of ``as_of`` (midnight UTC) from the ``daily`` rows before it."""
    cutoff_day = engine.day_of(as_of)
    return _summed(_contributions(daily.filter(daily.day < cutoff_day), cutoff_day, spec), spec)


def advanced(
    state: ir.Table,
    daily: ir.Table,
    since: pd.Timestamp,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
) -> ir.Table:
    """The state of ``since`` moved to ``as_of`` (both midnight UTC, ``since <= as_of``).

    Args:
        state: The state as of ``since``.
        daily: ``daily`` rows holding, day by day, at least the days ``[since - W, as_of)``
            for the longest window ``W`` (read before older days are merged).
        since: The state's cutoff.
        as_of: The new cutoff.
        spec: The feature set.
    """
    since_day, cutoff_day = engine.day_of(since), engine.day_of(as_of)
    if cutoff_day < since_day:
        raise ValueError(f"A window state moves forward only: {since} is after {as_of}.")
    new = daily.filter((daily.day >= since_day) & (daily.day < cutoff_day))
    delta = ibis.union(
        _contributions(new, cutoff_day, spec).select(*columns(spec)),
        _leaving(daily, since_day, cutoff_day, spec).select(*columns(spec)),
    )
    shifted = _shifted(state, cutoff_day - since_day, spec)
    return _plus(shifted, _summed(delta, spec, state=False), spec)


def _any_bit(bits: ir.IntegerValue, first: int, count: int) -> ir.BooleanValue:
    """Whether any of the ``count`` bits from bit ``first`` is set (no bitwise AND needed)."""
    return (bits // (1 << first)) % (1 << count) != 0


def per_entity_and_type(
    state: ir.Table, codes: pd.DataFrame, as_of: pd.Timestamp, spec: FeatureSpec
) -> ir.Table:
    """:func:`features.engine.per_entity_and_type`'s aggregates from a state as of ``as_of``.

    Returns:
        ``entity_id, code`` and the engine's aggregates but the distinct items. Types
        that are neither featurised nor special keep one row each (all with code
        :data:`~features.engine.OTHER_TYPE`), where the engine merges them: only their
        latest event and active days are read, which such rows give alike.
    """
    cutoff_us = engine.microseconds(as_of)
    coded = engine.coded_events(state, codes)
    names = dict(zip(codes["event_type"], codes["code"].astype(int), strict=True))
    code, bits = coded.code, coded.day_bits
    week_bits = sum(
        ibis.ifelse(_any_bit(bits, 7 * week + 1, 7), ibis.literal(1 << (LOGIN_WEEK_BIT + week),
                                                                  "int64"), 0)
        for week in range(LOGIN_WEEKS)
    )  # fmt: skip
    edge = ibis.ifelse(_any_bit(bits, LOGIN_DAYS_WINDOW, 1),
                       ibis.literal(1 << LOGIN_EDGE_DAY_BIT, "int64"), 0)  # fmt: skip
    login_bits = ibis.ifelse(code == names[LOGIN], week_bits + edge, 0)
    aggregates = {f"n_{w}d": coded[f"n_{w}"] for w in engine.count_windows(spec)}
    aggregates |= {
        "min_age_us": cutoff_us - coded.last_us,
        "decayed": coded.decayed,
        "amount": ibis.cases(
            (
                code.isin([names[TICKET_OPENED], names[TICKET_RESOLVED]]),
                coded.n_all.cast("float64"),
            ),
            (code == names[SESSION], coded[f"vs_{SESSION_WINDOW}"]),
            (code == names[PURCHASE], coded[f"vs_{spec.kpi_window_days}"]),
            else_=0.0,
        ),  # fmt: skip
        "day_mask": (bits + login_bits).cast("int64"),
    }
    if engine.generic_codes(codes, spec):
        for days in spec.windows_days:
            aggregates[f"value_sum_{days}d"] = coded[f"vs_{days}"]
            aggregates[f"value_n_{days}d"] = coded[f"vn_{days}"]
    return coded.select("entity_id", "code", **aggregates)
