"""The feature table in plain pandas: the reference the engine is tested against.

Every feature is computed here straight from its definition in
``docs/ARCHITECTURE.md`` (timestamps compared with timestamps, distinct days
deduplicated, the latest NPS answer found by sorting), with vectorised group-bys
and no loop over entities. It is slower than :func:`features.build.build_features`
but obviously right, and it is the pandas side of ``benchmarks/features.py``.
Only the final shaping (:func:`features.table.finish_table`) is shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.backend import check_events_frame
from features.engine import (
    ACTIVE_DAYS_WINDOW,
    EMAIL_BOUNCED,
    EMAIL_CLICKED,
    EMAIL_DELIVERED,
    EMAIL_OPENED,
    EMAIL_UNSUBSCRIBED,
    FEATURE_USE,
    KEY_FEATURES_WINDOW,
    LOGIN,
    LOGIN_DAYS_WINDOW,
    LOGIN_WEEKS,
    NPS_ANSWER,
    PURCHASE,
    SESSION,
    SESSION_WINDOW,
    TICKET_OPENED,
    TICKET_RESOLVED,
)
from features.pivot import nps_classes
from features.spec import FeatureSpec, safe_name
from features.table import (
    columns_for,
    existing_entities,
    featurised_types,
    finish_table,
    fit_columns,
)
from features.timeutil import engine_timestamp

ONE_DAY = pd.Timedelta(days=1)


def build_features_pandas(
    events: pd.DataFrame,
    entities: pd.DataFrame,
    as_of: Any,
    spec: FeatureSpec = FeatureSpec(),  # noqa: B008 - frozen dataclass, safe default
    *,
    event_types: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The feature table as of one cutoff, computed with pandas alone.

    Args:
        events: Events with the contract columns (``value`` and ``item`` optional).
        entities: Entities; non-contract columns are fit attributes.
        as_of: The cutoff; naive values are UTC.
        spec: The feature set.
        event_types: As in :func:`features.build.build_features`.

    Returns:
        The same table as :func:`features.build.build_features`.
    """
    cutoff = engine_timestamp(as_of)
    events = check_events_frame(events)
    before = events[events["event_time"] < cutoff]
    if event_types is None:
        event_types = sorted(before["event_type"].dropna().astype("str").unique())
    fits = fit_columns(entities)
    catalog = columns_for(spec, event_types, fits)
    featurised = featurised_types(spec, event_types)
    existing = existing_entities(entities, cutoff)
    n_rows = len(existing)
    recent = _with_entity_rows(before, existing["entity_id"])
    features = _per_type_features(recent, cutoff, spec, featurised, n_rows)
    features |= _payload_features(recent, cutoff, spec, featurised[len(spec.event_types) :], n_rows)
    features |= _activity_features(recent, cutoff, n_rows)
    features |= _typed_features(recent, cutoff, spec, n_rows)
    features["tenure_days"] = ((cutoff - existing["created_at"]) / ONE_DAY).to_numpy()
    engagement = pd.DataFrame(features, copy=False)
    return finish_table(engagement, existing, cutoff, catalog, fits, entities)


def _with_entity_rows(events: pd.DataFrame, entity_ids: pd.Series) -> pd.DataFrame:
    """Events of the given entities, with ``row`` = the entity's row number."""
    # Look up each distinct id once, not every event's.
    codes, distinct = pd.factorize(events["entity_id"])
    distinct_rows = pd.Index(entity_ids).get_indexer(pd.Index(distinct).astype("str"))
    rows = np.where(codes < 0, -1, distinct_rows[codes])
    known = rows >= 0
    # Text columns as categories before filtering: rows then move as small codes.
    text = {c: events[c].astype("category") for c in ("event_type", "item") if c in events}
    kept = events.drop(columns="entity_id").assign(**text, row=rows)
    return kept if known.all() else kept.loc[known]


def _since(events: pd.DataFrame, cutoff: pd.Timestamp, days: float) -> pd.Series:
    """``cutoff - days <= event_time`` (events are already before the cutoff)."""
    return events["event_time"] >= cutoff - pd.Timedelta(days=days)


def _spread(values: pd.Series, n_rows: int, fill: float, dtype: str = "float64") -> np.ndarray:
    """Values indexed by entity row as an array over all rows."""
    out = np.full(n_rows, fill, dtype=dtype)
    out[values.index.to_numpy()] = values.to_numpy(dtype=dtype)
    return out


def _per_type_features(
    events: pd.DataFrame,
    cutoff: pd.Timestamp,
    spec: FeatureSpec,
    event_types: Sequence[str],
    n_rows: int,
) -> dict[str, np.ndarray]:
    """Counts per window, days since last, decayed count and trend, per event type."""
    trend = spec.trend_window_days
    types = events["event_type"].cat.categories
    # One integer key per (entity row, event type): pandas groups one int column fastest.
    key = events["row"].to_numpy() * len(types) + events["event_type"].cat.codes.to_numpy()
    age_days = (cutoff - events["event_time"]) / ONE_DAY
    flags = {f"count_{days}d": _since(events, cutoff, days) for days in spec.windows_days}
    flags["trend_last"] = _since(events, cutoff, trend)
    flags["trend_before"] = _since(events, cutoff, 2 * trend) & ~flags["trend_last"]
    stats = (
        events[["event_time"]]
        .assign(**flags, decayed=0.5 ** (age_days / spec.half_life_days))
        .groupby(key, sort=False)
        .agg(
            **{name: (name, "sum") for name in flags},
            last=("event_time", "max"),
            decayed=("decayed", "sum"),
        )
    )
    stats["days_since_last"] = (cutoff - stats.pop("last")) / ONE_DAY
    stats["trend"] = stats.pop("trend_last") - stats.pop("trend_before")
    rows, type_codes = np.divmod(stats.index.to_numpy(), len(types))
    stats.index = rows
    out: dict[str, np.ndarray] = {}
    for name in event_types:
        base = safe_name(name)
        of_type = stats[type_codes == (types.get_loc(name) if name in types else -1)]
        for days in spec.windows_days:
            out[f"{base}_count_{days}d"] = _spread(of_type[f"count_{days}d"], n_rows, 0, "int64")
        out[f"{base}_days_since_last"] = _spread(of_type["days_since_last"], n_rows, np.nan)
        out[f"{base}_decayed"] = _spread(of_type["decayed"], n_rows, 0.0)
        out[f"{base}_trend"] = _spread(of_type["trend"], n_rows, 0.0)
    return out


def _payload_features(
    events: pd.DataFrame,
    cutoff: pd.Timestamp,
    spec: FeatureSpec,
    undeclared: Sequence[str],
    n_rows: int,
) -> dict[str, np.ndarray]:
    """Sum and mean of ``value`` and distinct ``item`` per window, per undeclared type."""
    out: dict[str, np.ndarray] = {}
    for name in undeclared:
        base = safe_name(name)
        of_type = events[events["event_type"] == name]
        for days in spec.windows_days:
            recent = of_type[_since(of_type, cutoff, days)]
            value = recent["value"] if "value" in recent else pd.Series(np.nan, recent.index)
            values = value.dropna()
            grouped = values.groupby(recent.loc[values.index, "row"])
            out[f"{base}_value_sum_{days}d"] = _spread(grouped.sum(), n_rows, 0.0)
            out[f"{base}_value_mean_{days}d"] = _spread(grouped.mean(), n_rows, np.nan)
            item = recent["item"] if "item" in recent else pd.Series(None, recent.index, "str")
            used = recent[["row"]].assign(item=item.astype("str"))[item.notna()]
            distinct = used.drop_duplicates().groupby("row").size()
            out[f"{base}_distinct_items_{days}d"] = _spread(distinct, n_rows, 0, "int64")
    return out


def _distinct_days(events: pd.DataFrame, n_rows: int) -> np.ndarray:
    """Number of distinct UTC calendar days with events, per entity row."""
    days = events[["row"]].assign(day=events["event_time"].dt.floor("D")).drop_duplicates()
    return _spread(days.groupby("row").size(), n_rows, 0, "int64")


def _activity_features(events: pd.DataFrame, cutoff: pd.Timestamp, n_rows: int) -> dict:
    """Days since any event, active days, login days and login weeks."""
    last = events.groupby("row")["event_time"].max()
    logins = events[(events["event_type"] == LOGIN) & _since(events, cutoff, LOGIN_DAYS_WINDOW)]
    # Week k (1..4) is [cutoff - 7k days, cutoff - 7(k-1) days).
    week = (cutoff - logins["event_time"] - pd.Timedelta(microseconds=1)) // pd.Timedelta(days=7)
    weeks = logins[["row"]].assign(week=week).drop_duplicates()
    return {
        "days_since_last_event": _spread((cutoff - last) / ONE_DAY, n_rows, np.nan),
        f"active_days_{ACTIVE_DAYS_WINDOW}d": _distinct_days(
            events[_since(events, cutoff, ACTIVE_DAYS_WINDOW)], n_rows
        ),
        f"login_active_days_{LOGIN_DAYS_WINDOW}d": _distinct_days(logins, n_rows),
        f"login_active_weeks_{LOGIN_WEEKS}w": _spread(
            weeks.groupby("row").size(), n_rows, 0, "int64"
        ),
    }


def _typed_features(
    events: pd.DataFrame, cutoff: pd.Timestamp, spec: FeatureSpec, n_rows: int
) -> dict[str, np.ndarray]:
    """Sessions, key features, NPS, tickets, purchases and email rates."""
    kpi = spec.kpi_window_days
    event_type = events["event_type"]
    value = events["value"] if "value" in events else pd.Series(np.nan, index=events.index)

    def total(name: str, days: float | None, column: pd.Series | None = None) -> np.ndarray:
        chosen = event_type == name
        if days is not None:
            chosen &= _since(events, cutoff, days)
        summed = (column if column is not None else chosen.astype("int64"))[chosen]
        return _spread(summed.groupby(events.loc[chosen, "row"]).sum(), n_rows, 0.0)

    sessions = total(SESSION, SESSION_WINDOW)
    minutes = total(SESSION, SESSION_WINDOW, value)
    uses = events[(event_type == FEATURE_USE) & _since(events, cutoff, KEY_FEATURES_WINDOW)]
    if "item" in uses:
        uses = uses[uses["item"].notna()]
        if spec.key_features is not None:
            uses = uses[uses["item"].isin(list(spec.key_features))]
        key_features = _spread(uses.groupby("row")["item"].nunique(), n_rows, 0, "int64")
    else:
        key_features = np.zeros(n_rows, dtype="int64")
    answers = events.assign(value=value)[(event_type == NPS_ANSWER) & value.notna()]
    # Latest answer; of answers at the same instant, the highest score.
    latest = answers.sort_values(["row", "event_time", "value"]).groupby("row")["value"].last()
    nps = _spread(latest, n_rows, np.nan)
    bought = events[event_type == PURCHASE]
    first_purchase = (cutoff - bought.groupby("row")["event_time"].min()) / ONE_DAY
    email = {name: total(name, kpi) for name in (EMAIL_DELIVERED, EMAIL_OPENED, EMAIL_CLICKED,
                                                  EMAIL_BOUNCED, EMAIL_UNSUBSCRIBED)}  # fmt: skip
    delivered = email[EMAIL_DELIVERED]
    return {
        f"session_minutes_{SESSION_WINDOW}d": minutes,
        f"avg_session_minutes_{SESSION_WINDOW}d": _ratio(minutes, sessions),
        f"key_features_used_{KEY_FEATURES_WINDOW}d": key_features,
        "nps_latest": nps,
        "nps_class": nps_classes(nps),
        "open_tickets": np.maximum(
            total(TICKET_OPENED, None) - total(TICKET_RESOLVED, None), 0
        ).astype("int64"),
        f"purchase_amount_{kpi}d": total(PURCHASE, kpi, value),
        "purchases_total": total(PURCHASE, None).astype("int64"),
        "days_since_first_purchase": _spread(first_purchase, n_rows, np.nan),
        f"email_delivery_rate_{kpi}d": _ratio(delivered, delivered + email[EMAIL_BOUNCED]),
        f"email_open_rate_{kpi}d": _ratio(email[EMAIL_OPENED], delivered),
        f"email_click_rate_{kpi}d": _ratio(email[EMAIL_CLICKED], delivered),
        f"email_click_to_open_rate_{kpi}d": _ratio(email[EMAIL_CLICKED], email[EMAIL_OPENED]),
        f"email_unsubscribe_rate_{kpi}d": _ratio(email[EMAIL_UNSUBSCRIBED], delivered),
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)
