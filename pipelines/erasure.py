"""Erasure (``leadscore forget``) and score-history retention across every store.

:func:`forget` deletes entities from everything the pipeline writes under the output
folder and in the score database, replaces their unique attribute values inside
stored models, deletes any MLflow run or model whose artifacts still hold their
data, runs ``mlflow gc`` and writes a receipt (``output/erasure/receipt-*.json``)
that holds counts, places and keyed-hash pseudonyms, never an id or attribute.

:func:`purge_score_history` deletes score history older than
``retention.max_score_history_days``: history rows, stale current rows, score
partitions, feature snapshots, CRM export folders and board pages of older dates.

Every file is rewritten atomically (temporary sibling, then rename).
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import make_url

from features.timeutil import as_utc
from models.privacy import PSEUDONYM_KEY_ENV, pseudonymise_one, resolve_pseudonym_key
from pipelines.board import render_board
from pipelines.io import (
    FORGOTTEN_LIST,
    check_forgotten_key,
    forgotten_list_text,
    read_forgotten,
    read_source,
    sql_delete,
    write_parquet_atomic,
    write_text_atomic,
)
from pipelines.outputs import HISTORY_TABLE, SCORES_TABLE, list_partitions
from pipelines.settings import Settings
from pipelines.sources import SourceNotFoundError, parse_sql_url, sql_delete_before

log = logging.getLogger(__name__)

RECEIPT_DIR = "erasure"
#: Entity columns that are ids or times, not attributes a person could be found by.
_NOT_ATTRIBUTES = ("entity_id", "created_at", "consent", "kind")
_DATED_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
_BAND_RULE = re.compile(r"<li>Band rule: (.*?)</li>", re.DOTALL)
_BOARD_DATA = re.compile(
    r'(<script type="application/json" id="board-data">)(.*?)(</script>)', re.DOTALL
)
#: What stays outside the pipeline's reach; said in every receipt.
NOT_COVERED = (
    "The input sources (events, entities, outcomes) belong to the systems that export "
    "them: erase the entities there too. Until then each run reads them again; with a "
    "configured pseudonym key it recognises them and drops their rows unprofiled.",
    "CRM records already imported from earlier export files must be cleared in the CRM.",
    "Training snapshots are built in memory at each retrain and never stored.",
)


@dataclass
class StoreErasure:
    """What one store lost: rows and files, never which ones."""

    store: str
    location: str
    rows_deleted: int = 0
    files_rewritten: int = 0


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
    key = resolve_pseudonym_key(settings.pseudonym_key, allow_ephemeral=True)
    out = Path(settings.output.dir)
    pseudonyms = [pseudonymise_one(i, key) for i in ids]
    key_configured = bool(settings.pseudonym_key or os.environ.get(PSEUDONYM_KEY_ENV))
    if key_configured:
        # First: a failure below must not leave the erased ids free to come back.
        _record_forgotten(out, pseudonyms, key)
    identity = _identity(settings, ids, key)
    stores = [
        _scrub_parquet(sorted((out / "features").glob("as_of=*.parquet")), ids, "feature snapshots",
                       out / "features"),
        _scrub_parquet([p for _, p in sorted(list_partitions(out).items())], ids,
                       "score partitions", out / "scores"),
        *_scrub_database(settings.database_url, ids),
        _scrub_crm(out / "crm", identity.crm_ids),
        _regenerate_boards(out, ids),
        _scrub_text(out, identity, key),
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


def _record_forgotten(out: Path, pseudonyms: list[str], key: bytes) -> None:
    """Add keyed hashes to the list of erased entities (see :func:`pipelines.io.read_forgotten`).

    Raises:
        PseudonymKeyError: The list was written with another key (nothing is erased).
    """
    listing = read_forgotten(out)
    if listing.pseudonyms:
        check_forgotten_key(listing, key)
    write_text_atomic(forgotten_list_text(listing.pseudonyms | set(pseudonyms), key), listing.path)


def _identity(settings: Settings, ids: list[str], key: bytes) -> Identity:
    """CRM ids, unique attribute values and creation time of the entities to forget."""
    crm_ids: set[str] = set()
    unique: dict[str, str] = {}
    earliest = None
    try:
        entities = read_source(
            settings.sources.entities, "entities", settings.sources.column_map.get("entities")
        )
    except (SourceNotFoundError, ValueError) as exc:
        log.warning("Entities source unreadable (%s); erasing by id and score data only.", exc)
        entities = None
    if entities is not None:
        mine = entities["entity_id"].astype("string").isin(ids).fillna(False).to_numpy(bool)
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
    for _, path in list_partitions(Path(settings.output.dir)).items():
        frame = pd.read_parquet(path, columns=None)
        if "crm_id" in frame:
            rows = frame["entity_id"].astype("string").isin(ids).fillna(False).to_numpy(bool)
            crm_ids.update(frame.loc[rows, "crm_id"].dropna().astype(str))
    return Identity(ids, sorted(c for c in crm_ids if c.strip()), unique, earliest)


def _without(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    keep = ~frame["entity_id"].astype("string").isin(ids).fillna(False).to_numpy(bool)
    kept = frame.loc[keep].reset_index(drop=True)
    for column in kept.columns:
        # Parquet stores a category's whole dictionary: drop levels no row uses any more.
        if isinstance(kept[column].dtype, pd.CategoricalDtype):
            kept[column] = kept[column].cat.remove_unused_categories()
    return kept


def _scrub_parquet(files: list[Path], ids: list[str], store: str, root: Path) -> StoreErasure:
    result = StoreErasure(store, str(root))
    for path in files:
        frame = pd.read_parquet(path)
        kept = _without(frame, ids)
        if len(kept) < len(frame):
            write_parquet_atomic(kept, path)
            result.rows_deleted += len(frame) - len(kept)
            result.files_rewritten += 1
    return result


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


def compact_duckdb(path: Path) -> None:
    """Rewrite a DuckDB file with only its live rows, then swap it in atomically.

    A DELETE only marks rows; their bytes stay in the file's blocks until they happen
    to be reused. Copying the database into a fresh file leaves nothing behind.
    """
    import duckdb

    fresh = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.compact")
    try:
        with duckdb.connect() as connection:
            connection.execute(f"ATTACH '{path}' AS old_db (READ_ONLY)")
            connection.execute(f"ATTACH '{fresh}' AS new_db")
            connection.execute("COPY FROM DATABASE old_db TO new_db")
            connection.execute("DETACH old_db")
            connection.execute("DETACH new_db")
        os.replace(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)
        fresh.with_name(fresh.name + ".wal").unlink(missing_ok=True)
    log.info("Compacted %s so deleted rows leave no trace in the file.", path)


def _dated_before(paths: list[Path], before: date | None) -> list[Path]:
    """The paths whose name (or folder name) carries a date before ``before``; all when None."""
    if before is None:
        return paths
    kept = []
    for path in paths:
        found = _DATED_NAME.search(f"{path.parent.name}/{path.name}")
        if found and date.fromisoformat(found.group(1)) < before:
            kept.append(path)
    return kept


def _scrub_crm(crm_root: Path, crm_ids: list[str], before: date | None = None) -> StoreErasure:
    result = StoreErasure("CRM export files", str(crm_root))
    if not crm_ids:
        return result
    for path in _dated_before(sorted(crm_root.glob("as_of=*/batch-*.csv")), before):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        keep = ~frame["Id"].isin(crm_ids)
        if keep.all():
            continue
        text = frame[keep].to_csv(index=False, lineterminator="\r\n")
        write_text_atomic(text, path)
        result.rows_deleted += int((~keep).sum())
        result.files_rewritten += 1
    return result


def _regenerate_boards(out: Path, ids: list[str], before: date | None = None) -> StoreErasure:
    """Rebuild every board page from its (already scrubbed) score partition."""
    board_dir = out / "board"
    result = StoreErasure("lead board pages", str(board_dir))
    partitions = list_partitions(out)
    pages = _dated_before(sorted(board_dir.glob("????-??-??.html")), before)
    for page in pages:
        old = page.read_text(encoding="utf-8")
        day = date.fromisoformat(page.stem)
        if day in partitions:
            rule = _BAND_RULE.search(old)
            band_rule = html.unescape(rule.group(1)) if rule else None
            new = render_board(pd.read_parquet(partitions[day]), day, band_rule)
        else:  # partition purged: drop the rows from the page's data block instead
            new = _BOARD_DATA.sub(
                lambda m: m.group(1) + _drop_rows(m.group(2), ids) + m.group(3), old
            )
        if new != old:
            write_text_atomic(new, page)
            result.files_rewritten += 1
        result.rows_deleted += old.count('"id":') - new.count('"id":')
    if before is None and pages and (board_dir / "index.html").exists():
        write_text_atomic(pages[-1].read_text(encoding="utf-8"), board_dir / "index.html")
    return result


def _drop_rows(data: str, ids: list[str]) -> str:
    from pipelines.board import embed_json

    rows = [row for row in json.loads(data) if str(row.get("id")) not in set(ids)]
    return str(embed_json(rows))


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
    features = _dated_before(sorted((out / "features").glob("as_of=*.parquet")), before)
    crm_ids: set[str] = set()
    for path in partitions:
        frame = pd.read_parquet(path)
        if "crm_id" in frame:
            rows = frame["entity_id"].astype("string").isin(ids).fillna(False).to_numpy(bool)
            crm_ids.update(frame.loc[rows, "crm_id"].dropna().astype(str))
    stores = [
        _scrub_parquet(partitions, ids, "withdrawn_score_rows", out),
        _scrub_parquet(features, ids, "withdrawn_feature_rows", out),
        _scrub_crm(out / "crm", sorted(crm_ids), before),
        _regenerate_boards(out, ids, before),
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

    Older means a run date strictly before ``as_of - max_score_history_days``.

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
    url = settings.database_url
    counts = {
        "score_history_rows": sql_delete_before(url, HISTORY_TABLE, "as_of", cutoff),
        "current_score_rows": sql_delete_before(url, SCORES_TABLE, "as_of", cutoff),
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
        for path in out.glob(pattern):
            found = _DATED_NAME.search(path.name)
            if found and date.fromisoformat(found.group(1)) < cutoff.date():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                counts[key] += 1
    log.info("Score history older than %s purged: %s", cutoff.date(), counts)
    return counts
