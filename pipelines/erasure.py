"""Erasure on request (``leadscore forget``) across every store the pipeline writes.

:func:`forget` first adds the entities' keyed hashes to the list of erased entities
(:mod:`pipelines.forgotten`, when a pseudonym key is configured), then deletes them
from everything the pipeline writes under the output folder (:mod:`pipelines.scrubbing`)
and in the score database (compacting a DuckDB file afterwards), deletes the incremental
roll-ups (the next run rebuilds them), replaces their unique
attribute values inside stored models, deletes any MLflow run or model whose artifacts
still hold their data, runs ``mlflow gc`` and writes a receipt
(``output/erasure/receipt-*.json``) that holds counts, places and keyed-hash
pseudonyms, never an id or attribute. Retention purges are :mod:`pipelines.retention`.
It holds the output folder's run lock (:mod:`pipelines.run_lock`), and first deletes
what killed runs left (staging folders, temporary files: full copies of personal data).

Every file is rewritten atomically (temporary sibling, then rename); no SQL text is
built from a path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import make_url

from models.privacy import PSEUDONYM_KEY_ENV, pseudonymise_one, resolve_pseudonym_key
from pipelines.atomic_files import write_text_atomic
from pipelines.database_writes import sql_delete
from pipelines.databases import SourceNotFoundError, compact_duckdb, parse_sql_url
from pipelines.forgotten import FORGOTTEN_LIST, record_forgotten
from pipelines.outputs import HISTORY_TABLE, SCORES_TABLE, list_partitions
from pipelines.recovery import clear_leftovers
from pipelines.run_lock import run_lock
from pipelines.scrubbing import (
    StoreErasure,
    crm_ids_in,
    regenerate_boards,
    rows_of_entities,
    scrub_crm,
    scrub_parquet,
)
from pipelines.settings import Settings
from pipelines.sources import read_entities

log = logging.getLogger(__name__)

RECEIPT_DIR = "erasure"
#: Entity columns that are ids or times, not attributes a person could be found by.
_NOT_ATTRIBUTES = ("entity_id", "created_at", "consent", "kind")
#: What stays outside the pipeline's reach; said in every receipt.
NOT_COVERED = (
    "The input sources (events, entities, outcomes) belong to the systems that export "
    "them: erase the entities there too. Until then each run reads them again; with a "
    "configured pseudonym key it recognises them and drops their rows unprofiled.",
    "CRM records already imported from earlier export files must be cleared in the CRM.",
    "Training snapshots are built in memory at each retrain and never stored.",
)


@dataclass
class Identity:
    """What identifies the entities being forgotten (kept in memory only)."""

    ids: list[str]
    crm_ids: list[str]
    #: Attribute values no other entity has (a company name), raw -> pseudonym.
    unique_values: dict[str, str]
    earliest_created: pd.Timestamp | None

    @property
    def needles(self) -> list[str]:
        """Every raw value to search for."""
        return [*self.ids, *self.crm_ids, *self.unique_values]


def forget(
    settings: Settings, entity_ids: list[str], *, collect_garbage: bool = True
) -> tuple[dict[str, Any], Path]:
    """Erase entities from every store the pipeline writes and write a receipt.

    Args:
        settings: Run settings (output folder, score database, MLflow store, key).
        entity_ids: The ids to forget (duplicates and blanks ignored).
        collect_garbage: Run ``mlflow gc`` at the end (leave on outside tests).

    Returns:
        The receipt and its path.

    Raises:
        ValueError: No id was given.
    """
    ids = list(dict.fromkeys(str(i).strip() for i in entity_ids if str(i).strip()))
    if not ids:
        raise ValueError("forget needs at least one entity id; nothing was deleted.")
    requested = pd.Timestamp.now(tz="UTC")
    with run_lock(Path(settings.output.dir), requested.date(), "forget"):
        return _forget(settings, ids, requested, collect_garbage)


def _forget(
    settings: Settings, ids: list[str], requested: pd.Timestamp, collect_garbage: bool
) -> tuple[dict[str, Any], Path]:
    key = resolve_pseudonym_key(settings.pseudonym_key, allow_ephemeral=True)
    out = Path(settings.output.dir)
    pseudonyms = [pseudonymise_one(i, key) for i in ids]
    key_configured = bool(settings.pseudonym_key or os.environ.get(PSEUDONYM_KEY_ENV))
    if key_configured:
        # First: a failure below must not leave the erased ids free to come back.
        record_forgotten(out, pseudonyms, key)
    leftovers = clear_leftovers(out)  # the run lock is held: no live run owns them
    identity = _identity(settings, ids, key)
    stores = [
        StoreErasure(
            "staged and temporary files of interrupted runs", str(out),
            files_deleted=leftovers.staged_removed + leftovers.temp_files_removed,
        ),
        scrub_parquet(sorted((out / "features").glob("as_of=*.parquet")), ids, "feature snapshots",
                       out / "features"),
        scrub_parquet([p for _, p in sorted(list_partitions(out).items())], ids,
                       "score partitions", out / "scores"),
        *_scrub_database(settings.database_url, ids),
        scrub_crm(out / "crm", identity.crm_ids),
        regenerate_boards(out, ids),
        _scrub_text(out, identity, key),
        _drop_rollups(out),
    ]  # fmt: skip
    mlflow_part = _erase_mlflow(settings, identity, collect_garbage)
    receipt = {
        "receipt_id": uuid.uuid4().hex,
        "requested_at": requested.isoformat(),
        "completed_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "entities": {
            "count": len(ids),
            "pseudonyms": pseudonyms,
            "pseudonym_key": "configured"
            if key_configured
            else "ephemeral: these pseudonyms cannot be linked to anyone",
            "reimport_blocked": (
                f"yes: their keyed hashes are in {FORGOTTEN_LIST}, and runs that read them "
                "again from a source drop their rows"
                if key_configured
                else f"no: without {PSEUDONYM_KEY_ENV} there is no stable keyed hash to "
                "recognise them by, so erase them in the source systems"
            ),
            "unique_attribute_values_replaced": len(identity.unique_values),
        },  # fmt: skip
        "stores": [asdict(s) for s in stores],
        "mlflow": mlflow_part,
        "not_covered": list(NOT_COVERED),
    }
    stamp = requested.strftime("%Y%m%dT%H%M%SZ")
    path = out / RECEIPT_DIR / f"receipt-{stamp}-{receipt['receipt_id'][:8]}.json"
    write_text_atomic(json.dumps(receipt, indent=2), path)
    log.info("Forgot %d entities; receipt %s", len(ids), path)
    return receipt, path


def _identity(settings: Settings, ids: list[str], key: bytes) -> Identity:
    """CRM ids, unique attribute values and creation time of the entities to forget."""
    crm_ids: set[str] = set()
    unique: dict[str, str] = {}
    earliest = None
    try:
        entities = read_entities(settings)
    except (SourceNotFoundError, ValueError) as exc:
        log.warning("Entities source unreadable (%s); erasing by id and score data only.", exc)
        entities = None
    if entities is not None:
        mine = rows_of_entities(entities, ids)
        if "crm_id" in entities:
            crm_ids.update(entities.loc[mine, "crm_id"].dropna().astype(str))
        if mine.any():
            earliest = pd.Timestamp(entities.loc[mine, "created_at"].min())
        for column in entities.columns.difference([*_NOT_ATTRIBUTES, "crm_id"]):
            values = entities[column]
            if not (
                pd.api.types.is_string_dtype(values)
                or isinstance(values.dtype, pd.CategoricalDtype)
            ):
                continue
            text = values.astype("string")
            counts = text.value_counts()
            for value in text[mine].dropna().unique():
                # Shared values (an industry) identify nobody; only values no one else has.
                if counts.get(value, 0) == int((text[mine] == value).sum()):
                    unique[str(value)] = pseudonymise_one(f"{column}={value}", key)
    crm_ids |= crm_ids_in(list(list_partitions(Path(settings.output.dir)).values()), ids)
    return Identity(ids, sorted(c for c in crm_ids if c.strip()), unique, earliest)


def _scrub_database(database_url: str, ids: list[str]) -> list[StoreErasure]:
    shown = make_url(database_url).render_as_string(hide_password=True)
    results = [
        StoreErasure(table, f"{shown} ({table})", sql_delete(database_url, table, "entity_id", ids))
        for table in (SCORES_TABLE, HISTORY_TABLE)
    ]
    duckdb_path = parse_sql_url(database_url, SCORES_TABLE).duckdb_path
    if duckdb_path is not None and duckdb_path.exists():
        compact_duckdb(duckdb_path)
    return results


def _drop_rollups(out: Path) -> StoreErasure:
    """Delete the incremental roll-ups (``OUTPUT/rollups/``): the next run rebuilds them.

    They hold per-entity daily aggregates, items and NPS answers; rebuilt from the events
    a run reads (without the forgotten entities once their keyed hashes are listed).
    """
    root = out / "rollups"
    result = StoreErasure("incremental roll-ups (rebuilt by the next run)", str(root))
    if root.is_dir():
        result.files_deleted = sum(1 for path in root.rglob("*") if path.is_file())
        shutil.rmtree(root)
    return result


def _scrub_text(out: Path, identity: Identity, key: bytes) -> StoreErasure:
    """Replace the values in run summaries and recalibration reports (counts only, normally)."""
    result = StoreErasure("run summaries and reports", str(out))
    files = [out / "summary.json", *(out / "summaries").glob("*.json")]
    files += [p for p in (out / "recalibration").rglob("*") if p.is_file()]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        new = text
        for value in identity.needles:
            new = new.replace(value, pseudonymise_one(value, key))
        if new != text:
            write_text_atomic(new, path)
            result.files_rewritten += 1
    return result


def _erase_mlflow(settings: Settings, identity: Identity, collect: bool) -> dict[str, Any]:
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return {"store": "none yet", "models_trained_with_data": []}
    from models import tracking, tracking_erasure, tracking_registry

    tracking.configure(uri)
    rewritten = tracking_erasure.replace_model_levels(identity.unique_values)
    hits = tracking_erasure.find_artifacts_containing(identity.needles)
    deleted = tracking_erasure.delete_hits(hits)
    if collect:
        tracking_erasure.collect_garbage(uri)
    versions = tracking_registry.model_versions_with_windows()
    if identity.earliest_created is not None and len(versions):
        # A version used the entity when it existed before the version's last cutoff.
        unknown = versions["last_cutoff"].isna()
        versions = versions[unknown | (versions["last_cutoff"] > identity.earliest_created)]
    trained_with = [
        {
            "model": row.model,
            "version": int(row.version),
            "aliases": row.aliases,
            "run_id": row.run_id,
            "action": "retrained without these entities at the next scheduled retrain",
        }
        for row in versions.itertuples()
    ]
    return {
        "store": make_url(uri).render_as_string(hide_password=True),
        "models_with_levels_replaced": rewritten,
        "runs_deleted": deleted["runs"],
        "logged_models_deleted": deleted["logged_models"],
        "model_versions_deleted": deleted["model_versions"],
        "garbage_collected": collect,
        "models_trained_with_data": trained_with,
    }
