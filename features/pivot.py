"""From the engine's long (entity, type) table to feature columns, with numpy.

:func:`features.engine.per_entity_and_type` returns one row per (entity, event type);
pivoting that to ~150 columns is cheaper as scatters into preallocated numpy blocks
than as a wide SQL pivot of filtered aggregates.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa

from features.engine import (
    ACTIVE_DAYS_WINDOW,
    DAY_US,
    EMAIL_BOUNCED,
    EMAIL_CLICKED,
    EMAIL_DELIVERED,
    EMAIL_OPENED,
    EMAIL_TYPES,
    EMAIL_UNSUBSCRIBED,
    KEY_FEATURES_WINDOW,
    LOGIN,
    LOGIN_DAYS_WINDOW,
    LOGIN_EDGE_DAY_BIT,
    LOGIN_WEEK_BIT,
    LOGIN_WEEKS,
    NPS_CLASSES,
    PURCHASE,
    SESSION,
    SESSION_WINDOW,
    TICKET_OPENED,
    TICKET_RESOLVED,
    generic_codes,
)
from features.spec import NPS_PASSIVE_MIN, NPS_PROMOTER_MIN, FeatureSpec, safe_name

#: Per undeclared type and window: the engine's column -> the feature's stat.
PAYLOAD_STATS = {"value_sum": "value_sum", "value_n": "value_mean", "items": "distinct_items"}

#: Threads that spread the long table into columns.
SPREAD_THREADS = 2


def zeros_in_small_pages(shape: tuple[int, int], dtype: str) -> np.ndarray:
    """A zero-filled array in anonymous memory the kernel zeroes page by page.

    ``np.zeros`` asks Linux for transparent huge pages on large arrays. For a block
    that is written once, the 2 MB page faults cost more than they save: 1.1-4.2 s
    of kernel time against 0.8 s with 4 KB pages for a 1.2 GB block on the 2-core
    benchmark machine (``benchmarks/features.py``).
    """
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size == 0:
        return np.zeros(shape, dtype)
    if hasattr(mmap, "MAP_PRIVATE"):
        # Private: a forked child's writes must not reach this table (shared is the default).
        memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            memory.madvise(mmap.MADV_NOHUGEPAGE)  # also where huge pages are "always"
    else:  # Windows: no flags, and no huge pages unless asked for
        memory = mmap.mmap(-1, size)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)


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
            kind: zeros_in_small_pages((len(names), n_rows), kind)
            for kind, names in self.names.items()
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


def nps_classes(scores: np.ndarray) -> pd.Categorical:
    """NPS class of 0-10 scores: promoter 9-10, passive 7-8, detractor 0-6, none (NaN).

    Returns:
        A categorical with the categories of :data:`NPS_CLASSES`, built from codes
        (a million rows of class names would take 30x longer to encode).
    """
    code = {name: i for i, name in enumerate(NPS_CLASSES)}
    codes = np.select(
        [np.isnan(scores), scores >= NPS_PROMOTER_MIN, scores >= NPS_PASSIVE_MIN],
        [code["none"], code["promoter"], code["passive"]],
        default=code["detractor"],
    )
    return pd.Categorical.from_codes(codes.astype("int8"), categories=list(NPS_CLASSES))


def _per_type_names(spec: FeatureSpec, event_types: Sequence[str]) -> dict[str, list[str]]:
    """Per-type column names grouped by statistic, types in order (one block region each)."""
    bases = [safe_name(name) for name in event_types]
    names = {f"n_{days}d": [f"{b}_count_{days}d" for b in bases] for days in spec.windows_days}
    for stat in ("days_since_last", "decayed", "trend"):
        names[stat] = [f"{b}_{stat}" for b in bases]
    return names


def _payload_names(spec: FeatureSpec, generic: Sequence[str]) -> dict[str, list[str]]:
    """Payload column names of undeclared types, by engine column (one region each)."""
    bases = [safe_name(name) for name in generic]
    return {f"{engine_column}_{days}d": [f"{b}_{stat}_{days}d" for b in bases]
            for engine_column, stat in PAYLOAD_STATS.items()
            for days in spec.windows_days}  # fmt: skip


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
        ``nps_latest``, ``nps_class``, ``key_features_used_30d``, ``purchases_total``
        and ``days_since_first_purchase`` (see :func:`with_nps_and_key_features`).
    """
    from features.spec import special_features

    per_type = _per_type_names(spec, event_types)
    code = dict(zip(codes["event_type"], codes["code"].astype(int), strict=True))
    undeclared = set(generic_codes(codes, spec))
    generic = [name for name in event_types if code[name] in undeclared]
    payload = _payload_names(spec, generic) if generic else {}
    dtypes = {name: ("int64" if stat.startswith(("n_", "items_")) else "float64")
              for stat, names in (per_type | payload).items() for name in names}  # fmt: skip
    dtypes |= {d.name: d.dtype for d in special_features(spec)
               if d.name != "tenure_days" and d.dtype != "category"}  # fmt: skip
    out = FeatureColumns(dtypes, n_rows)
    regions = {stat: out.region(names).reshape(-1) for stat, names in per_type.items()}
    regions["days_since_last"][:] = np.nan
    # Position of each code among the undeclared types (-1: declared or other).
    payload_position = np.full(len(codes) + 1, -1)
    payload_position[[code[name] for name in generic]] = np.arange(len(generic))
    payload_regions = {stat: out.region(names).reshape(-1) for stat, names in payload.items()}
    trend, kpi = spec.trend_window_days, spec.kpi_window_days
    # Type-specific values, spread over entity rows: (type, engine column) -> values.
    wanted = [(LOGIN, "day_mask"), (SESSION, "amount"), (SESSION, f"n_{SESSION_WINDOW}d"),
              (PURCHASE, "amount"),
              (TICKET_OPENED, "amount"), (TICKET_RESOLVED, "amount"),
              *((name, f"n_{kpi}d") for name in EMAIL_TYPES)]  # fmt: skip
    typed = {key: np.zeros(n_rows, long.schema.field(key[1]).type.to_pandas_dtype())
             for key in wanted}  # fmt: skip

    def spread_batches(batches: list[pa.RecordBatch]) -> tuple[np.ndarray, np.ndarray]:
        # Cells are unique per (entity, type), so threads write disjoint elements; the
        # per-entity reductions (last activity, active days) stay private until merged.
        last_age = np.full(n_rows, np.inf)
        active = np.zeros(n_rows, dtype="int64")
        for batch in batches:
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
            if generic:
                position = payload_position[type_codes_]  # code -1 reads the last slot
                has = position >= 0
                payload_cells = position[has] * n_rows + rows[has]
                for stat, region in payload_regions.items():
                    region[payload_cells] = column[stat][has]
            for event_type, name in wanted:
                chosen = type_codes_ == code[event_type]
                typed[event_type, name][rows[chosen]] = column[name][chosen]
            if not every:  # types neither featurised nor special: their events are activity too
                others = ~featurised
                np.minimum.at(
                    last_age, rows[others], column["min_age_us"][others].astype("float64")
                )
            np.bitwise_or.at(active, rows, column["day_mask"])

        return last_age, active

    batches = long.to_batches()
    # numpy releases the GIL while scattering: two threads halve the serial tail.
    with ThreadPoolExecutor(max_workers=SPREAD_THREADS) as pool:
        parts = list(
            pool.map(spread_batches, [batches[i::SPREAD_THREADS] for i in range(SPREAD_THREADS)])
        )
    last_age = np.minimum.reduce([part[0] for part in parts])
    active = np.bitwise_or.reduce([part[1] for part in parts])
    for days in spec.windows_days if generic else ():  # the mean of values present, or NaN
        for sums, counts in zip(payload[f"value_sum_{days}d"], payload[f"value_n_{days}d"],
                                strict=True):  # fmt: skip
            _ratio(out[sums], out[counts].copy(), out[counts])
    login = typed[LOGIN, "day_mask"]
    minutes = typed[SESSION, "amount"]
    last_days = np.fmin(np.fmin.reduce(out.region(per_type["days_since_last"]), axis=0),
                        np.where(np.isinf(last_age), np.nan, last_age / DAY_US))  # fmt: skip
    out["days_since_last_event"][:] = last_days
    # The masks' layout is documented in features.engine.per_entity_and_type.
    out[f"active_days_{ACTIVE_DAYS_WINDOW}d"][:] = np.bitwise_count(
        active & ((1 << (ACTIVE_DAYS_WINDOW + 1)) - 1)
    )
    days_fully_inside = login & ((1 << LOGIN_DAYS_WINDOW) - 1)
    out[f"login_active_days_{LOGIN_DAYS_WINDOW}d"][:] = np.bitwise_count(days_fully_inside) + (
        (login >> LOGIN_EDGE_DAY_BIT) & 1
    )
    out[f"login_active_weeks_{LOGIN_WEEKS}w"][:] = np.bitwise_count(
        (login >> LOGIN_WEEK_BIT) & ((1 << LOGIN_WEEKS) - 1)
    )
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
    purchases = _numpy(small, "purchases_total")
    columns["purchases_total"][rows] = purchases
    first = columns["days_since_first_purchase"]
    first[:] = np.nan
    bought = purchases > 0
    ages = small.column("first_purchase_age_us").to_numpy(zero_copy_only=False)
    first[rows[bought]] = ages[bought] / DAY_US
    scores = columns["nps_latest"]
    scores[:] = np.nan
    scores[rows] = small.column("nps_latest").to_numpy(zero_copy_only=False)
    frame = columns.frame()
    frame["nps_class"] = nps_classes(scores)
    return frame


def _numpy(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy()


def _ratio(numerator: np.ndarray, denominator: np.ndarray, out: np.ndarray) -> None:
    """``out = numerator / denominator``, NaN where the denominator is 0."""
    out[:] = np.nan
    np.divide(numerator, denominator, out=out, where=denominator > 0)
