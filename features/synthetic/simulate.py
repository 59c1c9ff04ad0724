"""Day-by-day simulation of one chunk of entities, vectorised over the entities.

Behaviour lives in daily count arrays (days x entities x event types, ``uint8``) plus
a few per-day side arrays (feature-use bit masks, session minutes, NPS answers) and
a list of support tickets. Latent states drift weekly (AR(1)): a lead's *intent*
drives its marketing activity, a customer's *health* its product usage. On each
draw date the outcome model of :mod:`features.synthetic.truth` reads the signals of
the days strictly before it and draws the outcome, which then changes behaviour: a
converted lead stops its lead activity and becomes a customer, a churned customer
stops everything. Event rows are expanded from these arrays afterwards
(:mod:`features.synthetic.expand`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features.spec import DEFAULT_EVENT_TYPES, NPS_PASSIVE_MIN, NPS_PROMOTER_MIN
from features.synthetic.population import Population
from features.synthetic.truth import HORIZON_DAYS, TRUE_MODELS, draw_days

DAY_US = 86_400 * 1_000_000
NEVER = np.iinfo(np.int64).max
EVENT_TYPES: tuple[str, ...] = tuple(e.name for e in DEFAULT_EVENT_TYPES)
TYPE_INDEX: dict[str, int] = {name: i for i, name in enumerate(EVENT_TYPES)}

# Calendar (day offsets from the start): weekly lead campaign, a customer newsletter
# every six weeks, a webinar every three weeks with registration open ten days before,
# and an NPS survey every 90 days per customer.
LEAD_CAMPAIGN_EVERY, LEAD_CAMPAIGN_PHASE = 7, 1
CUSTOMER_NEWSLETTER_EVERY, CUSTOMER_NEWSLETTER_PHASE = 42, 17
WEBINAR_EVERY, WEBINAR_PHASE, WEBINAR_REGISTRATION_DAYS = 21, 14, 10
SURVEY_EVERY = 90
# Weekly AR(1) drift of the latent states: persistence and stationary spread.
INTENT_PERSISTENCE, INTENT_SPREAD = 0.8, 0.9
HEALTH_PERSISTENCE, HEALTH_SPREAD = 0.85, 0.7


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def popcount16(masks: np.ndarray) -> np.ndarray:
    """Number of set bits of each ``uint16``."""
    bits = (masks[..., None].astype(np.uint16) >> np.arange(16, dtype=np.uint16)) & 1
    return bits.sum(axis=-1, dtype=np.int64)


def outcome_days(times_us: np.ndarray) -> np.ndarray:
    """Day (from the start) of each outcome time; ``NEVER`` stays ``NEVER``."""
    return np.where(times_us == NEVER, NEVER, times_us // DAY_US)


def nps_classes(latest: np.ndarray) -> np.ndarray:
    """NPS class of each latest answer (-1: none), as in the feature table."""
    classes = np.full(latest.shape, "none", dtype=object)
    answered = latest >= 0
    classes[answered] = "detractor"
    classes[answered & (latest >= NPS_PASSIVE_MIN)] = "passive"
    classes[answered & (latest >= NPS_PROMOTER_MIN)] = "promoter"
    return classes


@dataclass
class ChunkHistory:
    """What happened to one chunk of entities over the whole history.

    Attributes:
        counts: Events per (day, entity, event type), in the order of ``EVENT_TYPES``.
        feature_mask: Per (day, entity), bit ``j`` set when feature ``f{j+1:02d}`` was used.
        session_minutes: Per (day, entity), total whole minutes of that day's sessions.
        nps: Per (day, entity), the NPS answer given that day (-1: none).
        ticket_entity, ticket_open_day, ticket_resolve_day: One entry per support
            ticket; ``ticket_resolve_day`` is -1 for tickets never resolved, and a
            resolution at or after the entity's churn day never happens.
        conversion_us, churn_us: Outcome times in microseconds from the start
            (``NEVER`` when none).
        truth: Per target, the (entity positions, draw day, p_true) of every draw.
    """

    counts: np.ndarray
    feature_mask: np.ndarray
    session_minutes: np.ndarray
    nps: np.ndarray
    ticket_entity: np.ndarray
    ticket_open_day: np.ndarray
    ticket_resolve_day: np.ndarray
    conversion_us: np.ndarray
    churn_us: np.ndarray
    truth: dict[str, list[tuple[np.ndarray, int, np.ndarray]]] = field(default_factory=dict)

    @property
    def churn_day(self) -> np.ndarray:
        """Day of each entity's churn (a huge number when none)."""
        return outcome_days(self.churn_us)

    def resolved_tickets(self) -> np.ndarray:
        """Which tickets get a ``ticket_resolved`` event within the history."""
        n_days = self.counts.shape[0]
        day = self.ticket_resolve_day
        return (day >= 0) & (day < n_days) & (day < self.churn_day[self.ticket_entity])


def _count(days: np.ndarray, k: int) -> np.ndarray:
    return days[:, :, k].sum(axis=0, dtype=np.int64)


class _Simulation:
    """State of a running chunk simulation (internal: use :func:`simulate_chunk`)."""

    def __init__(self, population: Population, n_days: int, rng: np.random.Generator) -> None:
        n = len(population)
        self.pop, self.n_days, self.rng, self.n = population, n_days, rng, n
        self.counts = np.zeros((n_days, n, len(EVENT_TYPES)), dtype=np.uint8)
        self.feature_mask = np.zeros((n_days, n), dtype=np.uint16)
        self.session_minutes = np.zeros((n_days, n), dtype=np.uint16)
        self.nps = np.full((n_days, n), -1, dtype=np.int8)
        self.tickets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.conversion_us = np.full(n, NEVER, dtype=np.int64)
        self.churn_us = np.full(n, NEVER, dtype=np.int64)
        self.intent_dev = rng.normal(0.0, INTENT_SPREAD, n)
        self.health_dev = rng.normal(0.0, HEALTH_SPREAD, n)
        self.email_ok = np.ones(n, dtype=bool)  # bad addresses bounce once, then stop
        self.webinar_registered = np.zeros(n, dtype=bool)
        self.nps_latest = np.full(n, -1, dtype=np.int8)
        self.last_event_day = np.full(n, -1, dtype=np.int64)
        self.tickets_opened = np.zeros(n, dtype=np.int64)
        self.tickets_resolved = np.zeros(n, dtype=np.int64)
        self.truth: dict[str, list[tuple[np.ndarray, int, np.ndarray]]] = {
            "conversion": [],
            "churn": [],
        }

    # --- signals and draws --------------------------------------------------------------

    def conversion_columns(self, t: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Feature-table columns the conversion model reads, as of day ``t``."""
        last7, last30 = self.counts[max(t - 7, 0) : t], self.counts[max(t - 30, 0) : t]
        columns = {
            "form_submit_count_30d": _count(last30, TYPE_INDEX["form_submit"]),
            "demo_request_count_30d": _count(last30, TYPE_INDEX["demo_request"]),
            "pricing_page_view_count_7d": _count(last7, TYPE_INDEX["pricing_page_view"]),
            "webinar_attended_count_30d": _count(last30, TYPE_INDEX["webinar_attended"]),
            "content_download_count_30d": _count(last30, TYPE_INDEX["content_download"]),
            "email_clicked_count_30d": _count(last30, TYPE_INDEX["email_clicked"]),
        }
        return self.with_fit({name: values[rows] for name, values in columns.items()}, rows)

    def churn_columns(self, t: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Feature-table columns the churn model reads, as of day ``t``."""
        login = TYPE_INDEX["login"]
        logins = self.counts[max(t - 28, 0) : t, :, login] > 0
        weeks = sum(
            (self.counts[max(t - 7 * (k + 1), 0) : max(t - 7 * k, 0), :, login] > 0).any(axis=0)
            for k in range(4)
        )
        start30 = max(t - 30, 0)
        features = np.bitwise_or.reduce(self.feature_mask[start30:t], axis=0)
        sessions = _count(self.counts[start30:t], TYPE_INDEX["session"])
        minutes = self.session_minutes[start30:t].sum(axis=0, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            average = np.where(sessions > 0, minutes / np.maximum(sessions, 1), np.nan)
        # The true days since the last event lie inside (t-L-1, t-L) for last day L
        # (no event falls on midnight); the midpoint is on the right side of 30.
        since = np.where(self.last_event_day >= 0, t - self.last_event_day - 0.5, np.nan)
        columns = {
            "login_active_days_28d": logins.sum(axis=0),
            "login_active_weeks_4w": weeks,
            "key_features_used_30d": popcount16(features),
            "avg_session_minutes_30d": average,
            "days_since_last_event": since,
            "nps_class": nps_classes(self.nps_latest),
            "open_tickets": np.maximum(self.tickets_opened - self.tickets_resolved, 0),
        }
        return self.with_fit({n: np.asarray(v)[rows] for n, v in columns.items()}, rows)

    def with_fit(self, columns: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        """``columns`` plus every fit attribute (the models read the ones they weigh)."""
        return columns | {c: self.pop.fit_values(c)[rows] for c in self.pop.fit_codes}

    def draw(self, target: str, t: int) -> None:
        """Draw ``target`` outcomes for the entities at risk on draw day ``t``."""
        day_us = t * DAY_US
        exists = self.pop.created_day < t
        if target == "conversion":
            rows = np.flatnonzero(exists & self.pop.is_lead & (self.conversion_us == NEVER))
            columns = self.conversion_columns(t, rows)
        else:
            customer = ~self.pop.is_lead | (self.conversion_us <= day_us)
            rows = np.flatnonzero(exists & customer & (self.churn_us == NEVER))
            columns = self.churn_columns(t, rows)
        p_true = TRUE_MODELS[target].probability(columns)
        self.truth[target].append((rows, t, p_true))
        happened = rows[self.rng.random(len(rows)) < p_true]
        # Uniform in (d, d + horizon]: the label window of the draw date d.
        offsets = self.rng.integers(1, HORIZON_DAYS[target] * DAY_US + 1, len(happened))
        if target == "conversion":
            self.conversion_us[happened] = day_us + offsets
        else:
            self.churn_us[happened] = day_us + offsets
            # Resolutions already booked for days after the churn never happen.
            for row, churn_day in zip(happened, self.churn_us[happened] // DAY_US, strict=True):
                self.counts[churn_day:, row, TYPE_INDEX["ticket_resolved"]] = 0

    # --- one day of behaviour -----------------------------------------------------------

    def put(self, t: int, rows: np.ndarray, event_type: str, values: np.ndarray) -> None:
        """Add events of one type on day ``t`` for ``rows`` (saturating at 255)."""
        k = TYPE_INDEX[event_type]
        current = self.counts[t, rows, k].astype(np.int64)
        self.counts[t, rows, k] = np.minimum(current + values, 255).astype(np.uint8)

    def emails(self, t: int, rows: np.ndarray, engagement: np.ndarray, base: float) -> None:
        """A campaign to ``rows``: bounces, deliveries, real and proxy opens, clicks."""
        rows = rows[self.email_ok[rows]]
        engagement = engagement[rows]
        rng = self.rng
        bounced = self.pop.bad_address[rows] | (rng.random(len(rows)) < 0.01)
        self.put(t, rows[bounced], "email_bounced", 1)
        self.email_ok[rows[bounced & self.pop.bad_address[rows]]] = False
        delivered, engagement = rows[~bounced], engagement[~bounced]
        self.put(t, delivered, "email_delivered", 1)
        real_open = rng.random(len(delivered)) < _sigmoid(base + 0.9 * engagement)
        proxy_open = self.pop.proxy[delivered] & (rng.random(len(delivered)) < 0.97)
        self.put(t, delivered[real_open | proxy_open], "email_opened", 1)
        clicked = real_open & (rng.random(len(delivered)) < _sigmoid(-1.5 + 0.9 * engagement))
        self.put(t, delivered[clicked], "email_clicked", 1)
        unsubscribe = rng.random(len(delivered)) < np.where(engagement < -1.0, 0.009, 0.003)
        self.put(t, delivered[unsubscribe], "email_unsubscribed", 1)
        self.email_ok[delivered[unsubscribe]] = False

    def lead_day(self, t: int, leads: np.ndarray, intent: np.ndarray) -> None:
        """Marketing activity of the active leads on day ``t``."""
        rng, z = self.rng, intent[leads]
        rates = {
            "page_view": np.exp(-2.3 + 0.9 * z),
            "pricing_page_view": np.exp(-4.6 + 1.2 * z),
            "form_submit": np.exp(-5.6 + 1.1 * z),
            "content_download": np.exp(-5.0 + 0.9 * z),
            "demo_request": np.exp(-7.6 + 1.5 * z),
        }
        rates["form_error"] = 0.25 * rates["form_submit"] + 0.001
        for event_type, rate in rates.items():
            drawn = rng.poisson(rate)
            hit = drawn > 0
            self.put(t, leads[hit], event_type, drawn[hit])
        if t % LEAD_CAMPAIGN_EVERY == LEAD_CAMPAIGN_PHASE:
            self.emails(t, leads, intent, -0.9)
        days_to_webinar = (WEBINAR_PHASE - t) % WEBINAR_EVERY
        if days_to_webinar == 0:
            attended = leads[self.webinar_registered[leads] & (rng.random(len(leads)) < 0.5)]
            self.put(t, attended, "webinar_attended", 1)
            self.webinar_registered[:] = False
        elif days_to_webinar <= WEBINAR_REGISTRATION_DAYS:
            joins = ~self.webinar_registered[leads] & (
                rng.random(len(leads)) < 0.1 * _sigmoid(-2.0 + 1.0 * z)
            )
            self.webinar_registered[leads[joins]] = True
            self.put(t, leads[joins], "webinar_registered", 1)

    def customer_day(self, t: int, customers: np.ndarray, health: np.ndarray) -> None:
        """Product usage, surveys, tickets and purchases of active customers on day ``t``."""
        rng, h, pop = self.rng, health[customers], self.pop
        login = rng.random(len(customers)) < _sigmoid(-1.0 + 1.8 * h)
        users = customers[login]
        sessions = 1 + (rng.random(len(users)) < 0.25)
        self.put(t, users, "login", sessions)
        self.put(t, users, "session", sessions)
        typical = np.exp(pop.session_log_minutes[users])
        minutes = np.maximum(np.rint(typical * rng.lognormal(0.0, 0.45, (2, len(users)))), 1)
        total = minutes[0] + np.where(sessions == 2, minutes[1], 0)
        self.session_minutes[t, users] = np.minimum(total, 60_000).astype(np.uint16)
        used_bits = rng.random((len(users), 12)) < 0.3
        used = (used_bits * (1 << np.arange(12))).sum(axis=1).astype(np.uint16)
        used &= pop.adopted[users]
        self.feature_mask[t, users] = used
        self.put(t, users, "feature_use", popcount16(used))
        if t % CUSTOMER_NEWSLETTER_EVERY == CUSTOMER_NEWSLETTER_PHASE:
            self.emails(t, customers[pop.newsletter[customers]], health, -1.2)
        surveyed = (t - pop.survey_phase[customers]) % SURVEY_EVERY == 0
        answers = surveyed & (rng.random(len(customers)) < 0.35)
        scores = np.clip(np.rint(7.0 + 1.6 * h + rng.normal(0.0, 1.4, len(customers))), 0, 10)
        self.nps[t, customers[answers]] = scores[answers].astype(np.int8)
        self.nps_latest[customers[answers]] = scores[answers].astype(np.int8)
        self.put(t, customers[answers], "nps_answer", 1)
        self.open_tickets(t, customers[rng.random(len(customers)) < 0.006 * np.exp(-0.3 * h)])
        buyers = customers[rng.random(len(customers)) < 0.003 * np.exp(0.3 * h)]
        self.put(t, buyers, "purchase", 1)

    def open_tickets(self, t: int, rows: np.ndarray) -> None:
        """Open one ticket for each of ``rows``; most are resolved some days later."""
        rng = self.rng
        self.put(t, rows, "ticket_opened", 1)
        resolved = rng.random(len(rows)) < 0.85
        delay = 1 + rng.geometric(0.25, len(rows))
        resolve_day = np.where(resolved, t + delay, -1)
        booked = resolved & (resolve_day < self.n_days)
        booked &= resolve_day < outcome_days(self.churn_us)[rows]
        np.add.at(
            self.counts,
            (resolve_day[booked], rows[booked], TYPE_INDEX["ticket_resolved"]),
            np.uint8(1),
        )
        self.tickets.append((rows, np.full(len(rows), t), resolve_day))

    def run(self) -> ChunkHistory:
        """Simulate every day and return the history."""
        pop, rng = self.pop, self.rng
        draws = {target: set(draw_days(target, self.n_days)) for target in ("conversion", "churn")}
        for t in range(self.n_days):
            for target in ("conversion", "churn"):
                if t in draws[target]:
                    self.draw(target, t)
            if t % 7 == 0 and t > 0:
                self.intent_dev = INTENT_PERSISTENCE * self.intent_dev + rng.normal(
                    0.0, INTENT_SPREAD * np.sqrt(1 - INTENT_PERSISTENCE**2), self.n
                )
                self.health_dev = HEALTH_PERSISTENCE * self.health_dev + rng.normal(
                    0.0, HEALTH_SPREAD * np.sqrt(1 - HEALTH_PERSISTENCE**2), self.n
                )
            converted_day = outcome_days(self.conversion_us)
            churn_day = outcome_days(self.churn_us)
            started = pop.created_day < t
            # No event on the day of a conversion or churn: none can follow the outcome.
            leads = np.flatnonzero(started & pop.is_lead & (t < converted_day))
            customers = np.flatnonzero(
                started & (~pop.is_lead | (t > converted_day)) & (t < churn_day)
            )
            self.lead_day(t, leads, pop.intent_mean + self.intent_dev)
            self.customer_day(t, customers, pop.health_mean + self.health_dev)
            today = self.counts[t]
            self.last_event_day[today.any(axis=1)] = t
            self.tickets_opened += today[:, TYPE_INDEX["ticket_opened"]]
            self.tickets_resolved += today[:, TYPE_INDEX["ticket_resolved"]]
        tickets = self.tickets or [(np.zeros(0, np.int64),) * 3]
        return ChunkHistory(
            counts=self.counts,
            feature_mask=self.feature_mask,
            session_minutes=self.session_minutes,
            nps=self.nps,
            ticket_entity=np.concatenate([x[0] for x in tickets]).astype(np.int64),
            ticket_open_day=np.concatenate([x[1] for x in tickets]).astype(np.int64),
            ticket_resolve_day=np.concatenate([x[2] for x in tickets]).astype(np.int64),
            conversion_us=self.conversion_us,
            churn_us=self.churn_us,
            truth=self.truth,
        )


def simulate_chunk(population: Population, n_days: int, rng: np.random.Generator) -> ChunkHistory:
    """Simulate one chunk of entities over ``n_days`` days.

    Args:
        population: The chunk's entities.
        n_days: Days of history (day 0 is the start).
        rng: The chunk's random generator (its own stream: chunks are independent).

    Returns:
        The daily arrays, tickets, outcomes and true probabilities of the chunk.
    """
    return _Simulation(population, n_days, rng).run()
