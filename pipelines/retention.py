"""Retention: what a run removes because it is old, or because consent was withdrawn.

:func:`purge_score_history` deletes score history older than
``retention.max_score_history_days``: history rows, stale current rows, score
partitions, feature snapshots, CRM export folders and board pages of older dates.
:func:`purge_withdrawn_consent` removes the earlier scores of entities whose consent
is now withdrawn from the file stores (the run's own writes already cleared the
database). Erasure on request is :mod:`pipelines.erasure`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.timeutil import as_utc
from models.entity_status import NO_CONSENT
from pipelines.database_writes import sql_delete_rows
from pipelines.outputs import HISTORY_TABLE, SCORES_TABLE, list_partitions
from pipelines.row_deletes import rows_before
from pipelines.scrubbing import (
    crm_ids_in,
    dated_before,
    regenerate_boards,
    scrub_crm,
    scrub_parquet,
)
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def withdrawn_consent(out_dir: Path, refused: Iterable[str], before: date) -> list[str]:
    """The ``refused`` entities that an earlier score partition holds with consent.

    Every partition before ``before`` counts, not only the last: a purge that failed
    once is caught up at the next run. A row whose status is not "no consent" (an
    empty one included) was profiled. Arrow kernels, not a Python set of every id.

    Args:
        out_dir: The output folder.
        refused: Ids of the entities without consent in this run.
        before: The run date; its own partition and later ones are not read.

    Returns:
        Those entity ids, sorted.
    """
    wanted = pa.array(sorted({str(i) for i in refused}), pa.string())
    found: set[str] = set()
    if not len(wanted):
        return []
    for day, path in sorted(list_partitions(out_dir).items()):
        if day >= before:
            continue
        rows = pq.read_table(path, columns=["entity_id", "status"])
        ids = pc.cast(rows["entity_id"], pa.string())
        status = pc.cast(rows["status"], pa.string())
        profiled = pc.fill_null(pc.not_equal(status, NO_CONSENT), True)
        hit = pc.and_(profiled, pc.fill_null(pc.is_in(ids, value_set=wanted), False))
        found.update(ids.filter(hit).to_pylist())
    return sorted(found)


def purge_withdrawn_consent(
    settings: Settings, entity_ids: list[str], as_of: pd.Timestamp | str
) -> dict[str, int]:
    """Remove the earlier scores of entities that withdrew consent from file stores.

    The run of ``as_of`` already blanks their row and deletes their score history in
    the database; this removes their rows from the score partitions, feature
    snapshots, CRM exports and board pages of earlier dates. Files of ``as_of``
    itself are left alone (their "not scored: no consent" row tells the CRM why).

    Args:
        settings: Run settings.
        entity_ids: Entities whose consent is now false.
        as_of: The current run date.

    Returns:
        Rows removed per store (for the run summary's retention counts).
    """
    ids = list(dict.fromkeys(str(i) for i in entity_ids))
    if not ids:
        return {}
    before = as_utc(as_of).date()
    out = Path(settings.output.dir)
    partitions = [p for d, p in sorted(list_partitions(out).items()) if d < before]
    features = dated_before(sorted((out / "features").glob("as_of=*.parquet")), before)
    crm_ids = crm_ids_in(partitions, ids)
    stores = [
        scrub_parquet(partitions, ids, "withdrawn_score_rows", out),
        scrub_parquet(features, ids, "withdrawn_feature_rows", out),
        scrub_crm(out / "crm", sorted(crm_ids), before),
        regenerate_boards(out, ids, before),
    ]
    keys = (
        "withdrawn_score_rows",
        "withdrawn_feature_rows",
        "withdrawn_crm_rows",
        "withdrawn_board_rows",
    )
    return {key: store.rows_deleted for key, store in zip(keys, stores, strict=True)}


def purge_score_history(settings: Settings, as_of: pd.Timestamp | str) -> dict[str, int]:
    """Delete scores and derived files older than ``retention.max_score_history_days``.

    Older means a run date strictly before ``as_of - max_score_history_days``. The rows
    of both score tables are deleted in one transaction, before the files.

    Args:
        settings: Run settings.
        as_of: The run date (naive values are UTC).

    Returns:
        Counts per kind: ``score_history_rows``, ``current_score_rows`` (entities
        not scored since), ``score_partitions``, ``feature_snapshots``,
        ``crm_exports``, ``board_pages``; empty when no maximum is set.
    """
    max_days = settings.retention.max_score_history_days
    if max_days is None:
        return {}
    cutoff = as_utc(as_of) - pd.Timedelta(days=max_days)
    out = Path(settings.output.dir)
    # Both tables in one transaction: the purge removes a date everywhere or nowhere.
    history_rows, current_rows = sql_delete_rows(
        settings.database_url,
        [rows_before(HISTORY_TABLE, "as_of", cutoff), rows_before(SCORES_TABLE, "as_of", cutoff)],
    )
    counts = {
        "score_history_rows": history_rows,
        "current_score_rows": current_rows,
        "score_partitions": 0,
        "feature_snapshots": 0,
        "crm_exports": 0,
        "board_pages": 0,
    }
    for day, path in list_partitions(out).items():
        if day < cutoff.date():
            shutil.rmtree(path.parent)
            counts["score_partitions"] += 1
    for key, pattern in (
        ("feature_snapshots", "features/as_of=*.parquet"),
        ("crm_exports", "crm/as_of=*"),
        ("board_pages", "board/????-??-??.html"),
    ):
        for path in dated_before(sorted(out.glob(pattern)), cutoff.date()):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            counts[key] += 1
    log.info("Score history older than %s purged: %s", cutoff.date(), counts)
    return counts
