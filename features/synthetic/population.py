"""Who the synthetic entities are: ids, creation dates, fit attributes, habits.

Everything here is drawn once per entity, before the day-by-day simulation of
:mod:`features.synthetic.simulate`. Leads and customers are drawn with the same
attributes, so that a lead that converts simply starts behaving as a customer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

#: Fit attributes: values and their shares. The truth model reads some of them;
#: ``country`` is deliberately irrelevant to both outcomes.
FIT_VALUES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "industry": (
        ("software", "finance", "healthcare", "retail", "manufacturing", "education"),
        (0.30, 0.15, 0.15, 0.15, 0.15, 0.10),
    ),
    "company_size": (
        ("1-10", "11-50", "51-200", "201-1000", "1000+"),
        (0.20, 0.30, 0.25, 0.15, 0.10),
    ),
    "country": (
        ("US", "GB", "DE", "FR", "CA", "AU", "NL", "IN"),
        (0.40, 0.12, 0.12, 0.08, 0.08, 0.06, 0.06, 0.08),
    ),
    "lead_source": (
        ("organic", "paid_search", "paid_social", "referral", "event", "outbound"),
        (0.30, 0.20, 0.15, 0.10, 0.10, 0.15),
    ),
    "job_level": (
        ("individual", "manager", "director", "vp", "c_level"),
        (0.35, 0.30, 0.18, 0.10, 0.07),
    ),
}
N_FEATURES = 12
FEATURE_IDS: tuple[str, ...] = tuple(f"f{i:02d}" for i in range(1, N_FEATURES + 1))
#: Shares of entities: behind a mail privacy proxy (pre-opens mail), without consent,
#: with an address that hard-bounces, and (customers) subscribed to the newsletter.
PROXY_SHARE = 0.20
NO_CONSENT_SHARE = 0.01
BAD_ADDRESS_SHARE = 0.04
CUSTOMER_NEWSLETTER_SHARE = 0.5
#: Leads known before the start (the rest arrive during the history), and customers.
LEADS_BEFORE_START = 0.5
CUSTOMERS_BEFORE_START = 0.85
HISTORY_BEFORE_START_DAYS = 365


@dataclass
class Population:
    """Per-entity draws of one chunk; arrays are aligned by position.

    Attributes:
        entity_id: Ids (``L0000001`` leads, ``C0000001`` customers).
        is_lead: True for kind ``lead``.
        created_day: Day (from the start) of ``created_at``; negative before the start.
        created_offset_us: Microseconds into that day.
        consent: False for the small share never to be profiled.
        fit_codes: Per fit attribute, the index of the entity's value in ``FIT_VALUES``.
        intent_mean: Lead's long-run purchase intent (log-scale of activity rates).
        health_mean: Customer's long-run product engagement.
        proxy: Mail goes through a privacy proxy that opens nearly every mail.
        bad_address: The address hard-bounces.
        newsletter: Customer subscribed to the customer newsletter.
        adopted: Bit mask of the product features the entity uses as a customer.
        session_log_minutes: Log of the entity's typical session length in minutes.
        survey_phase: Day in the 90-day survey cycle when the entity gets its NPS survey.
    """

    entity_id: np.ndarray
    is_lead: np.ndarray
    created_day: np.ndarray
    created_offset_us: np.ndarray
    consent: np.ndarray
    fit_codes: dict[str, np.ndarray]
    intent_mean: np.ndarray
    health_mean: np.ndarray
    proxy: np.ndarray
    bad_address: np.ndarray
    newsletter: np.ndarray
    adopted: np.ndarray
    session_log_minutes: np.ndarray
    survey_phase: np.ndarray

    def __len__(self) -> int:
        return len(self.entity_id)

    def fit_values(self, column: str) -> np.ndarray:
        """The fit attribute's values as strings."""
        values = np.asarray(FIT_VALUES[column][0], dtype=object)
        return values[self.fit_codes[column]]


def draw_population(
    first: int, stop: int, n_leads: int, n_days: int, rng: np.random.Generator
) -> Population:
    """Draw entities ``first .. stop-1`` of the whole population (leads come first).

    Args:
        first: Global position of the chunk's first entity.
        stop: One past the global position of its last entity.
        n_leads: Leads in the whole population (positions below are leads).
        n_days: Length of the history in days.
        rng: The chunk's random generator.

    Returns:
        The chunk's entities.
    """
    positions = np.arange(first, stop)
    n = len(positions)
    is_lead = positions < n_leads
    ids = np.where(
        is_lead,
        np.char.add("L", np.char.zfill((positions + 1).astype(str), 7)),
        np.char.add("C", np.char.zfill((positions - n_leads + 1).astype(str), 7)),
    )
    before = rng.random(n) < np.where(is_lead, LEADS_BEFORE_START, CUSTOMERS_BEFORE_START)
    # New arrivals keep a month free at the end, so every entity has some history.
    late_day = rng.integers(0, max(n_days - 30, 1), n)
    early_day = -rng.integers(1, HISTORY_BEFORE_START_DAYS + 1, n)
    created_day = np.where(before, early_day, late_day).astype(np.int32)
    fit_codes = {
        column: rng.choice(len(values), size=n, p=shares).astype(np.int8)
        for column, (values, shares) in FIT_VALUES.items()
    }
    # Behaviour is independent of fit, so the fit effects of the true model are
    # information engagement rules cannot see, and no engagement signal is a proxy
    # for fit (which would blur the signal weights that rule recalibration recovers).
    intent_mean = -0.25 + rng.normal(0.0, 0.75, n)
    health_mean = 0.3 + rng.normal(0.0, 0.75, n)
    # Healthier customers adopt more features; popular features are adopted first.
    popularity = np.linspace(1.2, -1.6, N_FEATURES)
    adopt_logit = popularity[None, :] + 0.9 * health_mean[:, None] + rng.normal(0, 0.5, (n, 1))
    adopted_bits = rng.random((n, N_FEATURES)) < 1.0 / (1.0 + np.exp(-adopt_logit))
    adopted = (adopted_bits * (1 << np.arange(N_FEATURES))).sum(axis=1).astype(np.uint16)
    return Population(
        entity_id=ids.astype(object),
        is_lead=is_lead,
        created_day=created_day,
        created_offset_us=rng.integers(0, 86_400 * 1_000_000, n),
        consent=rng.random(n) >= NO_CONSENT_SHARE,
        fit_codes=fit_codes,
        intent_mean=intent_mean,
        health_mean=health_mean,
        proxy=rng.random(n) < PROXY_SHARE,
        bad_address=rng.random(n) < BAD_ADDRESS_SHARE,
        newsletter=rng.random(n) < CUSTOMER_NEWSLETTER_SHARE,
        adopted=adopted,
        session_log_minutes=2.3 + 0.35 * health_mean + rng.normal(0.0, 0.35, n),
        survey_phase=rng.integers(0, 90, n).astype(np.int32),
    )


def entities_table(population: Population, start: pd.Timestamp) -> pa.Table:
    """The chunk's rows of ``entities.parquet`` (data contract columns, then fit)."""
    start_us = int(start.as_unit("ns").value) // 1_000  # .value is always nanoseconds
    created_us = (
        start_us + population.created_day.astype(np.int64) * 86_400_000_000
        + population.created_offset_us
    )  # fmt: skip
    columns: dict[str, pa.Array] = {
        "entity_id": pa.array(population.entity_id, pa.string()),
        "created_at": pa.array(created_us, pa.timestamp("us", tz="UTC")),
        "crm_id": pa.array(np.char.add("CRM-", population.entity_id.astype(str)), pa.string()),
        "consent": pa.array(population.consent, pa.bool_()),
        "kind": pa.array(np.where(population.is_lead, "lead", "customer"), pa.string()),
    }
    for column in FIT_VALUES:
        columns[column] = pa.array(population.fit_values(column), pa.string())
    return pa.table(columns)
