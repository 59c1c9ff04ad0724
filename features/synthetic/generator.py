"""Write a synthetic history to a folder, chunk by chunk, in bounded memory.

Entities are independent, so each chunk of ``chunk_entities`` entities is drawn,
simulated over the whole history, expanded to event rows and written (one Parquet
file per chunk under ``events/``, one row group per block of days) before the next
chunk starts. ``engagement_shift`` moves every entity's long-run engagement (a lead's
intent, a customer's health) on the log scale of its activity rates, for histories
with fewer events per entity (large benchmarks) that still have outcomes to learn.
Every file is first written under a temporary name in its own folder
and moved into place (``os.replace``) once all chunks succeeded (see
:mod:`features.synthetic.output`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.synthetic import population as population_module
from features.synthetic.expand import ItemVocabulary, expand_block, ticket_ids
from features.synthetic.output import OutputWriters, outcome_rows, truth_rows
from features.synthetic.population import draw_population, entities_table
from features.synthetic.simulate import NEVER, ChunkHistory, simulate_chunk
from features.synthetic.truth import draw_days, weights_summary
from features.timeutil import as_utc

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
#: Target size of an event row group: large enough for fast scans, small enough to
#: keep the expansion of one block in little memory.
ROWS_PER_GROUP = 250_000
Progress = Callable[[int, int], Any]


@dataclass(frozen=True)
class GeneratedData:
    """Where a generated history was written, and how big it is.

    Attributes:
        out_dir: The folder.
        events_dir: Folder of the event Parquet parts.
        event_files: The parts, in order.
        entities_path: ``entities.parquet``.
        outcomes_path: ``outcomes.parquet``.
        true_probabilities_path: ``true_probabilities.parquet``.
        generator_path: ``generator.json`` (seed, sizes, draw dates, true weights).
        n_leads: Leads written.
        n_customers: Customers written.
        n_events: Event rows written.
        n_conversions: ``converted`` outcomes.
        n_churns: ``churned`` outcomes.
        n_true_probabilities: Rows of ``true_probabilities.parquet``.
    """

    out_dir: Path
    events_dir: Path
    event_files: tuple[Path, ...]
    entities_path: Path
    outcomes_path: Path
    true_probabilities_path: Path
    generator_path: Path
    n_leads: int
    n_customers: int
    n_events: int
    n_conversions: int
    n_churns: int
    n_true_probabilities: int


def _start_day(start: str | pd.Timestamp) -> pd.Timestamp:
    stamp = as_utc(start)
    if stamp != stamp.normalize():
        raise ValueError(
            f"The synthetic history must start at midnight UTC (draw dates are whole days); "
            f"got start={start!s}. Pass a date such as '2025-01-01'."
        )
    return stamp.as_unit("us")


def _check_sizes(
    n_leads: int,
    n_customers: int,
    months: int,
    chunk_entities: int,
    seed: int,
    engagement_shift: float = 0.0,
) -> None:
    problems = []
    if n_leads < 0 or n_customers < 0 or n_leads + n_customers == 0:
        problems.append(f"n_leads={n_leads} and n_customers={n_customers} (need some entities)")
    if months < 1:
        problems.append(f"months={months} (need at least 1)")
    if chunk_entities < 1:
        problems.append(f"chunk_entities={chunk_entities} (need at least 1)")
    if seed < 0:
        problems.append(f"seed={seed} (need a non-negative integer)")
    if not -5.0 <= engagement_shift <= 5.0:
        problems.append(f"engagement_shift={engagement_shift} (need a number from -5 to 5)")
    if problems:
        raise ValueError("Cannot generate synthetic data with " + "; ".join(problems) + ".")


def _day_blocks(history: ChunkHistory) -> list[tuple[int, int]]:
    """Consecutive day ranges of about :data:`ROWS_PER_GROUP` events each."""
    per_day = history.counts.sum(axis=(1, 2), dtype=np.int64)
    blocks, first, rows = [], 0, 0
    for day, count in enumerate(per_day):
        if rows and rows + count > ROWS_PER_GROUP:
            blocks.append((first, day))
            first, rows = day, 0
        rows += int(count)
    blocks.append((first, len(per_day)))
    return blocks


def _description(
    seed: int,
    sizes: dict[str, int],
    start_day: pd.Timestamp,
    end_day: pd.Timestamp,
    n_days: int,
    counts: dict[str, int],
) -> dict[str, Any]:
    """Contents of ``generator.json``: inputs, draw dates, true model, behaviour, sizes."""
    draw_dates = {
        target: [(start_day + pd.Timedelta(days=d)).isoformat() for d in draw_days(target, n_days)]
        for target in ("conversion", "churn")
    }
    return {
        "generator": "features.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        **sizes,
        "start": start_day.isoformat(),
        "end": end_day.isoformat(),
        "n_days": n_days,
        "draw_dates": draw_dates,
        **weights_summary(),
        "behaviour": {
            "proxy_share": population_module.PROXY_SHARE,
            "no_consent_share": population_module.NO_CONSENT_SHARE,
            "bad_address_share": population_module.BAD_ADDRESS_SHARE,
            "feature_ids": list(population_module.FEATURE_IDS),
            "key_features": None,
            "fit_values": {c: list(v) for c, (v, _) in population_module.FIT_VALUES.items()},
        },
        "counts": counts,
    }


def _write_chunk(
    writers: OutputWriters,
    chunk: int,
    positions: tuple[int, int],
    n_leads: int,
    start_day: pd.Timestamp,
    n_days: int,
    vocabulary: ItemVocabulary,
    seed: int,
    engagement_shift: float = 0.0,
) -> dict[str, int]:
    """Draw, simulate, expand and write one chunk; return what it wrote."""
    # Each chunk has its own stream, so a chunk never depends on the ones before it.
    streams = np.random.SeedSequence(seed, spawn_key=(chunk,)).spawn(3)
    draw_rng, simulation_rng, expansion_rng = (np.random.default_rng(s) for s in streams)
    start_us = int(start_day.as_unit("ns").value) // 1_000  # .value is in nanoseconds
    population = draw_population(*positions, n_leads, n_days, draw_rng)
    if engagement_shift:
        # After the draws, so that the random streams (and fit, adoption, session
        # lengths) are those of the unshifted history.
        population = replace(
            population,
            intent_mean=population.intent_mean + engagement_shift,
            health_mean=population.health_mean + engagement_shift,
        )
    history = simulate_chunk(population, n_days, simulation_rng)
    ids = population.entity_id
    id_array, tickets = pa.array(ids, pa.string()), ticket_ids(history, ids)
    n_events = 0
    writer = writers.event_writer(chunk)
    try:
        for block in _day_blocks(history):
            table = expand_block(
                history, id_array, start_us, block, vocabulary, tickets, expansion_rng
            )
            writer.write_table(table)
            n_events += table.num_rows
    finally:
        writer.close()
    writers.write("entities", entities_table(population, start_day))
    writers.write("outcomes", outcome_rows(history, ids, start_us))
    truth = truth_rows(history, ids, start_us)
    writers.write("truth", truth)
    return {
        "events": n_events,
        "conversions": int(np.sum(history.conversion_us != NEVER)),
        "churns": int(np.sum(history.churn_us != NEVER)),
        "true_probabilities": truth.num_rows,
    }


def generate(
    out_dir: Path,
    *,
    n_leads: int = 12_000,
    n_customers: int = 9_000,
    start: str | pd.Timestamp = "2025-01-01",
    months: int = 12,
    seed: int = 0,
    chunk_entities: int = 20_000,
    progress: Progress | None = None,
    engagement_shift: float = 0.0,
) -> GeneratedData:
    """Generate a synthetic lead and customer history with known outcome probabilities.

    Same arguments, same bytes: every chunk has its own random stream derived from
    ``seed`` and its position, so the output depends on ``seed``, the sizes,
    ``chunk_entities`` and ``engagement_shift`` only.

    Args:
        out_dir: Folder to write to (created; earlier generated files are replaced).
        n_leads: B2B leads (kind ``lead``).
        n_customers: Customers (kind ``customer``).
        start: First day of the history (midnight UTC; naive values are UTC).
        months: Length of the history in calendar months.
        seed: Random seed (non-negative).
        chunk_entities: Entities simulated at once; memory grows with it (about
            ``chunk_entities x days x 24`` bytes for the daily arrays).
        progress: Called as ``progress(entities_done, entities_total)`` after each chunk.
        engagement_shift: Added to every entity's long-run intent (leads) and health
            (customers). 0 (the default) is the usual history; -1.5 has about a third
            of its events per entity over 6 months (53 instead of 169 for 60% leads),
            with fewer conversions and more churn. The true probabilities still follow
            from the simulated signals. A non-zero shift is recorded in
            ``generator.json``.

    Returns:
        Paths and counts of what was written.
    """
    _check_sizes(n_leads, n_customers, months, chunk_entities, seed, engagement_shift)
    out_dir = Path(out_dir)
    start_day = _start_day(start)
    end_day = start_day + pd.DateOffset(months=months)
    n_days = int((end_day - start_day) / pd.Timedelta(days=1))
    total = n_leads + n_customers
    if not draw_days("conversion", n_days):
        log.warning(
            "A %d-month history has no draw date (the first is %d days in plus a 30-day "
            "window): no outcome will be drawn.", months, 90,
        )  # fmt: skip
    vocabulary = ItemVocabulary(start_day, n_days)
    writers = OutputWriters(out_dir)
    counts = dict.fromkeys(("events", "conversions", "churns", "true_probabilities"), 0)
    try:
        for chunk, first in enumerate(range(0, total, chunk_entities)):
            stop = min(first + chunk_entities, total)
            written = _write_chunk(
                writers, chunk, (first, stop), n_leads, start_day, n_days, vocabulary, seed,
                engagement_shift,
            )  # fmt: skip
            counts = {name: counts[name] + written[name] for name in counts}
            log.info("Synthetic chunk %d: entities %d-%d of %d written.", chunk, first, stop, total)
            if progress is not None:
                progress(stop, total)
        counts["event_files"] = len(writers.event_files)
        sizes = {"n_leads": n_leads, "n_customers": n_customers, "months": months,
                 "chunk_entities": chunk_entities}  # fmt: skip
        if engagement_shift:
            sizes["engagement_shift"] = engagement_shift
        writers.commit(_description(seed, sizes, start_day, end_day, n_days, counts))
    except BaseException:
        writers.abort()
        raise
    log.info("Synthetic history written to %s: %s.", out_dir, counts)
    return GeneratedData(
        out_dir=out_dir,
        events_dir=writers.events_dir,
        event_files=tuple(writers.event_files),
        entities_path=writers.paths["entities"],
        outcomes_path=writers.paths["outcomes"],
        true_probabilities_path=writers.paths["truth"],
        generator_path=writers.json_path,
        n_leads=n_leads,
        n_customers=n_customers,
        n_events=counts["events"],
        n_conversions=counts["conversions"],
        n_churns=counts["churns"],
        n_true_probabilities=counts["true_probabilities"],
    )
