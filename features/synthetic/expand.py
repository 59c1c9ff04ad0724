"""Event rows from the daily arrays of a simulated chunk, one block of days at a time.

Each daily count becomes that many rows at random times of the day (never exactly
midnight, so that no event sits on a cutoff), with the ``item`` and ``value`` the
event type calls for: page paths, content and form names, campaign and webinar ids,
feature ids from the day's feature bit mask, ticket ids that pair each resolution
with its ticket, session minutes that add up to the day's total, NPS scores and
purchase amounts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.synthetic.population import FEATURE_IDS, N_FEATURES
from features.synthetic.simulate import (
    DAY_US,
    EVENT_TYPES,
    TYPE_INDEX,
    WEBINAR_EVERY,
    WEBINAR_PHASE,
    ChunkHistory,
)

EVENTS_SCHEMA = pa.schema(
    [
        ("entity_id", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("event_type", pa.string()),
        ("value", pa.float64()),
        ("item", pa.string()),
    ]
)
PAGES: tuple[str, ...] = ("/", "/product", "/blog", "/customers", "/docs", "/about", "/careers")
PAGE_SHARES: tuple[float, ...] = (0.25, 0.2, 0.25, 0.1, 0.1, 0.06, 0.04)
CONTENT: tuple[str, ...] = (
    "ebook-roi-guide", "whitepaper-security", "report-benchmark", "case-study-retail",
    "checklist-onboarding",
)  # fmt: skip
FORMS: tuple[str, ...] = ("contact", "trial", "newsletter", "gated-content")
HOUR_US = 3_600 * 1_000_000
#: Hours of the day (UTC) each event type happens in; mail events follow each other.
TIME_WINDOWS_HOURS: dict[str, tuple[int, int]] = {
    "email_delivered": (8, 10),
    "email_bounced": (8, 10),
    "email_opened": (10, 16),
    "email_clicked": (16, 20),
    "email_unsubscribed": (20, 24),
    "webinar_attended": (15, 17),
}


class ItemVocabulary:
    """All ``item`` strings of a history but ticket ids, with their positions."""

    def __init__(self, start: pd.Timestamp, n_days: int) -> None:
        dates = pd.date_range(start, periods=n_days + WEBINAR_EVERY, freq="D")
        labels = dates.strftime("%Y-%m-%d")
        self.groups: dict[str, int] = {}
        values: list[str] = []
        for name, group in (
            ("page", PAGES), ("pricing", ("/pricing",)), ("content", CONTENT), ("form", FORMS),
            ("feature", FEATURE_IDS), ("campaign", tuple(f"campaign-{d}" for d in labels)),
            ("webinar", tuple(f"webinar-{d}" for d in labels)),
        ):  # fmt: skip
            self.groups[name] = len(values)
            values.extend(group)
        self.values = values

    def offset(self, group: str) -> int:
        """Position of the first string of a group."""
        return self.groups[group]


def _time_windows() -> tuple[np.ndarray, np.ndarray]:
    low = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    high = np.full(len(EVENT_TYPES), 24 * HOUR_US, dtype=np.int64)
    for name, (first, last) in TIME_WINDOWS_HOURS.items():
        low[TYPE_INDEX[name]], high[TYPE_INDEX[name]] = first * HOUR_US, last * HOUR_US
    return np.maximum(low, 1), high  # never exactly midnight


def _group_starts(day: np.ndarray, entity: np.ndarray) -> np.ndarray:
    """Start of every run of equal (day, entity) in rows sorted by them."""
    change = np.ones(len(day), dtype=bool)
    change[1:] = (day[1:] != day[:-1]) | (entity[1:] != entity[:-1])
    return np.flatnonzero(change)


def _split_minutes(
    totals: np.ndarray, starts: np.ndarray, n_rows: int, rng: np.random.Generator
) -> np.ndarray:
    """Whole minutes per session, at least 1 each, adding up to each group's total."""
    sizes = np.diff(np.append(starts, n_rows))
    group = np.repeat(np.arange(len(starts)), sizes)
    weights = rng.random(n_rows) + 1e-9
    spare = (totals - sizes)[group]
    share = weights / np.add.reduceat(weights, starts)[group]
    values = 1 + np.floor(spare * share)
    last = np.append(starts[1:], n_rows) - 1
    # The last session takes the remainder, so the day's total is exact.
    values[last] += totals - np.add.reduceat(values, starts)
    return values


def ticket_ids(history: ChunkHistory, entity_ids: np.ndarray) -> np.ndarray:
    """Ticket ids ``{entity_id}-T{n}``, unique across chunks since entity ids are."""
    owners = np.asarray(entity_ids, dtype=str)[history.ticket_entity]
    return np.char.add(owners, np.char.add("-T", np.arange(len(owners)).astype(str)))


def _ticket_order(entity: np.ndarray, day: np.ndarray, keep: np.ndarray) -> np.ndarray:
    positions = np.flatnonzero(keep)
    return positions[np.lexsort((entity[positions], day[positions]))]


def expand_block(
    history: ChunkHistory,
    entity_ids: pa.Array,
    start_us: int,
    days: tuple[int, int],
    vocabulary: ItemVocabulary,
    ticket_ids: np.ndarray,
    rng: np.random.Generator,
) -> pa.Table:
    """The event rows of days ``[first, stop)`` of a chunk.

    Args:
        history: The simulated chunk.
        entity_ids: The chunk's ids, by position.
        start_us: Microseconds since the epoch of day 0.
        days: ``(first, stop)`` day offsets of the block.
        vocabulary: The item strings but ticket ids.
        ticket_ids: Id of every ticket of the chunk (see :func:`ticket_ids`).
        rng: Random generator for times, items and values.

    Returns:
        A table with :data:`EVENTS_SCHEMA`, sorted by day then entity.
    """
    first, stop = days
    block = history.counts[first:stop]
    _, n_entities, n_types = block.shape
    # A flat scan is much faster than a 3-d nonzero; positions are (day, entity, type).
    flat = np.flatnonzero(block.reshape(-1))
    repeats = block.reshape(-1)[flat].astype(np.int64)
    flat = np.repeat(flat, repeats)
    day = flat // (n_entities * n_types) + first
    entity = (flat // n_types) % n_entities
    kind = flat % n_types
    del flat
    n_rows = len(day)
    low, high = _time_windows()
    offset = low[kind] + (rng.random(n_rows) * (high - low)[kind]).astype(np.int64)
    event_time = start_us + day * DAY_US + offset

    value = np.full(n_rows, np.nan)
    item = np.full(n_rows, -1, dtype=np.int64)

    def rows_of(name: str) -> np.ndarray:
        return np.flatnonzero(kind == TYPE_INDEX[name])

    rows = rows_of("session")
    if len(rows):
        starts = _group_starts(day[rows], entity[rows])
        totals = history.session_minutes[day[rows][starts], entity[rows][starts]]
        value[rows] = _split_minutes(totals.astype(np.float64), starts, len(rows), rng)
    rows = rows_of("nps_answer")
    value[rows] = history.nps[day[rows], entity[rows]]
    rows = rows_of("purchase")
    value[rows] = np.round(rng.lognormal(5.0, 0.8, len(rows)), 2)

    rows = rows_of("page_view")
    item[rows] = vocabulary.offset("page") + rng.choice(len(PAGES), len(rows), p=PAGE_SHARES)
    item[rows_of("pricing_page_view")] = vocabulary.offset("pricing")
    rows = rows_of("content_download")
    item[rows] = vocabulary.offset("content") + rng.integers(0, len(CONTENT), len(rows))
    for name in ("form_submit", "form_error"):
        rows = rows_of(name)
        item[rows] = vocabulary.offset("form") + rng.integers(0, len(FORMS), len(rows))
    for name in ("email_delivered", "email_bounced", "email_opened", "email_clicked",
                 "email_unsubscribed"):  # fmt: skip
        rows = rows_of(name)
        item[rows] = vocabulary.offset("campaign") + day[rows]
    for name in ("webinar_registered", "webinar_attended"):
        rows = rows_of(name)
        next_webinar = day[rows] + (WEBINAR_PHASE - day[rows]) % WEBINAR_EVERY
        item[rows] = vocabulary.offset("webinar") + next_webinar
    rows = rows_of("feature_use")
    if len(rows):
        starts = _group_starts(day[rows], entity[rows])
        masks = history.feature_mask[day[rows][starts], entity[rows][starts]]
        bits = (masks[:, None] >> np.arange(N_FEATURES, dtype=np.uint16)) & 1
        _, feature = np.nonzero(bits)  # row-major: groups in order, features ascending
        item[rows] = vocabulary.offset("feature") + feature

    strings = list(vocabulary.values)
    for name, ticket_day, keep in (
        ("ticket_opened", history.ticket_open_day, np.ones(len(ticket_ids), dtype=bool)),
        ("ticket_resolved", history.ticket_resolve_day, history.resolved_tickets()),
    ):
        rows = rows_of(name)
        in_block = keep & (ticket_day >= first) & (ticket_day < stop)
        order = _ticket_order(history.ticket_entity, ticket_day, in_block)
        if len(order) != len(rows):
            raise RuntimeError(
                f"Synthetic generator bug: {len(rows)} {name} events on days {first}-{stop} "
                f"but {len(order)} tickets."
            )
        item[rows] = len(strings) + np.arange(len(order))
        strings.extend(ticket_ids[order].tolist())

    item_array = pa.array(strings, pa.string()).take(pa.array(item, mask=item < 0))
    type_names = pa.array(EVENT_TYPES, pa.string())
    return pa.table(
        {
            "entity_id": entity_ids.take(pa.array(entity)),
            "event_time": pa.array(event_time, pa.timestamp("us", tz="UTC")),
            "event_type": type_names.take(pa.array(kind)),
            "value": pa.array(value, pa.float64(), mask=np.isnan(value)),
            "item": item_array,
        },
        schema=EVENTS_SCHEMA,
    )
