"""Score outputs of a run: Parquet partition, SQL score store, CRM import files, lead board.

Every output is written atomically (temp file or folder in the same place, then a
rename), so a crashed run leaves the previous output intact, and every output is
keyed by the run date or entity id, so re-running a date replaces, never duplicates:

- ``scores/as_of=YYYY-MM-DD/part-0.parquet``: the whole scored frame (``as_of`` is
  the Hive partition key, kept in the path only so the folder reads as a dataset);
- ``lead_scores`` (key ``entity_id``) and ``lead_score_history`` (key ``entity_id,
  as_of``) in the SQL database at ``database_url``;
- ``crm/as_of=YYYY-MM-DD/batch-0001.csv ...``: rows whose score or band changed,
  keyed by ``crm_id``, with CRM field names, in batches of ``crm_batch_size``;
- ``board/YYYY-MM-DD.html`` and ``board/index.html``: the lead board.

An entity without consent keeps no score anywhere: its probabilities, score, band and
reasons are blanked in every output, its score history is deleted, and its row says why.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import make_url

from models.reason_text import crm_reason_text
from pipelines.board import is_no_consent, render_board, write_board

log = logging.getLogger(__name__)

SCORES_TABLE = "lead_scores"
HISTORY_TABLE = "lead_score_history"
PARTITION_FILE = "part-0.parquet"
_PARTITION_RE = re.compile(r"^as_of=(\d{4}-\d{2}-\d{2})$")

#: Columns of the two score tables, in order (display attributes stay out of SQL).
SCORE_TABLE_COLUMNS = (
    "entity_id", "crm_id", "kind", "status", "conversion_probability",
    "churn_probability", "score", "band", "rule_score", "rule_band", "score_source",
    "model_versions", "scored_at", "as_of", "previous_band", "score_delta",
    "reasons_up", "reasons_down", "reasons_text", "reasons_computed_at",
)  # fmt: skip
#: What a missing consent blanks: nothing derived from profiling survives.
PROFILING_COLUMNS = (
    "conversion_probability", "churn_probability", "score", "band", "rule_score",
    "rule_band", "previous_band", "score_delta", "reasons_up", "reasons_down",
    "reasons_text", "reasons_computed_at",
)  # fmt: skip


@dataclass
class OutputPaths:
    """Where one run's outputs went (``items()`` gives printable pairs)."""

    partition: Path
    database: str
    crm_dir: Path
    crm_batches: list[Path] = field(default_factory=list)
    crm_rows: int = 0
    board: Path | None = None
    board_index: Path | None = None

    def items(self) -> Iterator[tuple[str, str]]:
        """``(name, location)`` pairs for summaries, passwords hidden."""
        yield "scores_parquet", str(self.partition)
        yield "score_tables", f"{self.database} ({SCORES_TABLE}, {HISTORY_TABLE})"
        yield "crm_export", f"{self.crm_dir} ({self.crm_rows} rows, {len(self.crm_batches)} files)"
        if self.board is not None:
            yield "lead_board", str(self.board)


def partition_dir(out_dir: Path, as_of: date) -> Path:
    """``out_dir/scores/as_of=YYYY-MM-DD``."""
    return Path(out_dir) / "scores" / f"as_of={as_of.isoformat()}"


def run_date(scored: pd.DataFrame) -> date:
    """The single ``as_of`` date of a scored frame.

    Raises:
        ValueError: If ``as_of`` is missing, empty or holds more than one date.
    """
    if "as_of" not in scored.columns or scored["as_of"].isna().all():
        raise ValueError("The scored frame has no as_of value; outputs are partitioned by it.")
    dates = pd.to_datetime(scored["as_of"], utc=True).dt.date.dropna().unique()
    if len(dates) != 1:
        raise ValueError(
            f"The scored frame mixes {len(dates)} as_of dates ({', '.join(map(str, dates[:5]))}); "
            "one run writes one date."
        )
    return dates[0]


def blank_without_consent(scored: pd.DataFrame) -> pd.DataFrame:
    """The frame with every profiling-derived value blanked for no-consent rows.

    The scorer should already have done this; doing it again here means no output
    can leak an earlier score of someone who withdrew consent.
    """
    out = scored.copy()
    mask = is_no_consent(out["status"])
    if mask.any():
        for column in PROFILING_COLUMNS:
            if column in out.columns:
                out[column] = out[column].mask(mask)
    return out


def score_table_rows(scored: pd.DataFrame) -> pd.DataFrame:
    """Rows for ``lead_scores``/``lead_score_history``: fixed columns and types."""
    missing = {"entity_id", "status", "as_of"} - set(scored.columns)
    if missing:
        raise ValueError(
            f"The scored frame lacks {', '.join(sorted(missing))}; the score tables need it."
        )
    rows = pd.DataFrame(index=scored.index)
    for column in SCORE_TABLE_COLUMNS:
        rows[column] = scored[column] if column in scored.columns else None
    # Stable SQL types whatever the frame's dtypes: text as str, numbers as float/Int64.
    for column in ("conversion_probability", "churn_probability", "rule_score", "score_delta"):
        rows[column] = pd.to_numeric(rows[column], errors="coerce").astype("float64")
    rows["score"] = pd.to_numeric(rows["score"], errors="coerce").round().astype("Int64")
    for column in ("scored_at", "as_of", "reasons_computed_at"):
        rows[column] = pd.to_datetime(rows[column], utc=True)
    text_columns = set(SCORE_TABLE_COLUMNS) - {
        "conversion_probability", "churn_probability", "rule_score", "score_delta", "score",
        "scored_at", "as_of", "reasons_computed_at",
    }  # fmt: skip
    for column in text_columns:
        rows[column] = rows[column].astype("string")
    return rows.reset_index(drop=True)


def write_partition(scored: pd.DataFrame, out_dir: Path, as_of: date) -> Path:
    """Replace this date's Parquet partition atomically; returns the file."""
    from pipelines.io import write_parquet_atomic

    path = partition_dir(out_dir, as_of) / PARTITION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(scored.drop(columns=["as_of"]), path)
    return path


def write_score_tables(scored: pd.DataFrame, database_url: str) -> None:
    """Upsert ``lead_scores`` and ``lead_score_history`` in one transaction.

    The history of entities without consent is deleted first (withdrawn consent
    removes earlier scores too).
    """
    from pipelines.io import sql_delete, sql_upsert_tables

    rows = score_table_rows(scored)
    withdrawn = rows.loc[is_no_consent(rows["status"]), "entity_id"].dropna().unique().tolist()
    if withdrawn:
        # Consent withdrawn: earlier scores of these people go too, not only today's.
        sql_delete(database_url, HISTORY_TABLE, "entity_id", withdrawn)
    sql_upsert_tables(
        database_url,
        [(rows, HISTORY_TABLE, ["entity_id", "as_of"]), (rows, SCORES_TABLE, ["entity_id"])],
    )
    log.info(
        "Upserted %d rows into %s and %s (%d without consent blanked).",
        len(rows), SCORES_TABLE, HISTORY_TABLE, len(withdrawn),
    )  # fmt: skip


def write_outputs(
    scored: pd.DataFrame,
    out_dir: Path,
    database_url: str,
    *,
    crm_batch_size: int,
    previous: pd.DataFrame | None,
    band_rule: str | None = None,
) -> OutputPaths:
    """Write every output of one scoring run, atomically and idempotently.

    The Parquet partition and the CRM batches are staged beside their final place,
    the score tables are upserted (both in one transaction, after the history of
    withdrawn consent is deleted), then the staged files are renamed in and the board
    written. A failure before or during the upserts leaves every score row and file
    as it was.

    Args:
        scored: One row per entity from ``models.scoring`` (a single ``as_of``).
        out_dir: Output folder (``scores/``, ``crm/`` and ``board/`` go under it).
        database_url: SQLAlchemy URL of the score store (SQLite, DuckDB, PostgreSQL).
        crm_batch_size: Most rows per CRM import file (CRM sync has hourly limits).
        previous: The last scores before this run (:func:`read_previous_scores`), to
            find what changed for the CRM; ``None`` on a first run.
        band_rule: One sentence on how bands are assigned, shown on the board.

    Returns:
        Where everything went.
    """
    from pipelines.io import atomic_path, replace_dir_atomic

    out_dir = Path(out_dir)
    as_of = run_date(scored)
    clean = blank_without_consent(scored)
    changes = crm_changes(clean, previous)
    html = render_board(clean, as_of, band_rule)
    crm_dir = out_dir / "crm" / f"as_of={as_of.isoformat()}"
    # Everything is staged first and the database upsert is the commit point: a
    # failure before it changes no store, and after it only renames remain.
    crm_staged = crm_dir.with_name(f".{crm_dir.name}.staged")
    shutil.rmtree(crm_staged, ignore_errors=True)
    partition = partition_dir(out_dir, as_of) / PARTITION_FILE
    new_partition = not partition.parent.exists()
    try:
        with atomic_path(partition) as staged_partition:
            clean.drop(columns=["as_of"]).to_parquet(staged_partition, index=False)
            staged = write_crm_batches(changes, crm_staged, crm_batch_size)
            write_score_tables(clean, database_url)
        replace_dir_atomic(crm_staged, crm_dir)
    except BaseException:
        if new_partition and partition.parent.is_dir() and not any(partition.parent.iterdir()):
            partition.parent.rmdir()  # no half-made date folder for readers to trip on
        raise
    finally:
        shutil.rmtree(crm_staged, ignore_errors=True)
    batches = [crm_dir / path.name for path in staged]
    board = write_board(clean, out_dir / "board", as_of, band_rule, html=html)
    paths = OutputPaths(
        partition=partition,
        database=make_url(database_url).render_as_string(hide_password=True),
        crm_dir=crm_dir,
        crm_batches=batches,
        crm_rows=len(changes),
        board=board.page,
        board_index=board.index,
    )
    log.info("Outputs for %s: %s", as_of, dict(paths.items()))
    return paths


def list_partitions(out_dir: Path) -> dict[date, Path]:
    """Complete score partitions under ``out_dir/scores`` by date."""
    root = Path(out_dir) / "scores"
    found: dict[date, Path] = {}
    if not root.is_dir():
        return found
    for child in root.iterdir():
        match = _PARTITION_RE.match(child.name)
        if match and (child / PARTITION_FILE).is_file():
            found[date.fromisoformat(match.group(1))] = child / PARTITION_FILE
    return found


def read_previous_scores(out_dir: Path, before: date | pd.Timestamp) -> pd.DataFrame | None:
    """The latest score partition strictly before ``before``, or ``None``.

    ``as_of`` comes back as a UTC timestamp column, from the partition's name.

    Raises:
        ValueError: If that partition cannot be read.
    """
    if isinstance(before, pd.Timestamp):  # run dates arrive as UTC timestamps too
        before = before.tz_convert("UTC").date() if before.tzinfo else before.date()
    earlier = {d: p for d, p in list_partitions(out_dir).items() if d < before}
    if not earlier:
        return None
    latest = max(earlier)
    try:
        frame = pd.read_parquet(earlier[latest])
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ValueError(
            f"Could not read the previous scores {earlier[latest]}: {exc}. Delete or restore "
            "that partition to go on."
        ) from exc
    frame["as_of"] = pd.Timestamp(latest, tz="UTC")
    return frame


# --- CRM import files -------------------------------------------------------------

#: Our column -> CRM field (Salesforce-style custom fields; ``Id`` is the record key).
CRM_FIELDS = {
    "crm_id": "Id",
    "score": "Leadscore_Score__c",
    "band": "Leadscore_Band__c",
    "reasons": "Leadscore_Reasons__c",
    "conversion_percent": "Leadscore_Conversion_Probability__c",
    "scored_at": "Leadscore_Scored_At__c",
    "status": "Leadscore_Status__c",
}


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    """Element-wise equality where two missing values count as equal."""
    both_missing = a.isna() & b.isna()
    equal = (a.astype("object") == b.astype("object")) & a.notna() & b.notna()
    return (both_missing | equal).astype(bool)


def crm_changes(scored: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """CRM rows for entities with a ``crm_id`` whose score or band changed.

    Compared with ``previous`` by ``entity_id``; on a first run every scored entity
    with a ``crm_id`` is a change. An entity that lost consent since the previous run
    is a change too: its CRM fields are blanked and its status says why.

    Returns:
        A frame with the CRM field names of :data:`CRM_FIELDS`, one row per record.
    """
    if "crm_id" not in scored.columns:
        log.warning("The scored frame has no crm_id column; the CRM export is empty.")
        return pd.DataFrame(columns=list(CRM_FIELDS.values()))
    has_crm_id = scored["crm_id"].astype("string").str.strip().fillna("").ne("")
    current = scored[has_crm_id].copy()
    score = pd.to_numeric(current["score"], errors="coerce").round().astype("Int64")
    band = current["band"].astype("string")
    comparable = previous is not None and {"entity_id", "score", "band"} <= set(previous.columns)
    if previous is not None and not comparable:
        log.warning(
            "The previous scores lack entity_id, score or band (columns: %s); every record "
            "counts as changed for the CRM export.", ", ".join(map(str, previous.columns[:10])),
        )  # fmt: skip
    if not comparable or previous.empty:
        prev_score = pd.Series(pd.NA, index=current.index, dtype="Int64")
        prev_band = pd.Series(pd.NA, index=current.index, dtype="string")
    else:
        last = previous.drop_duplicates("entity_id", keep="last").set_index("entity_id")
        ids = current["entity_id"]
        prev_score = pd.Series(
            pd.to_numeric(ids.map(last["score"]), errors="coerce").round().astype("Int64").array,
            index=current.index,
        )
        prev_band = pd.Series(ids.map(last["band"]).astype("string").array, index=current.index)
    changed = ~(_same(score, prev_score) & _same(band, prev_band))
    current = current[changed]
    score, band = score[changed], band[changed]
    conversion = pd.to_numeric(current.get("conversion_probability"), errors="coerce")
    out = pd.DataFrame(
        {
            CRM_FIELDS["crm_id"]: current["crm_id"].astype("string").str.strip(),
            CRM_FIELDS["score"]: score,
            CRM_FIELDS["band"]: band,
            CRM_FIELDS["reasons"]: [
                crm_reason_text(up, down)
                for up, down in zip(
                    current.get("reasons_up", pd.Series(None, index=current.index)),
                    current.get("reasons_down", pd.Series(None, index=current.index)),
                    strict=True,
                )
            ],
            CRM_FIELDS["conversion_percent"]: (conversion * 100).round(1),
            CRM_FIELDS["scored_at"]: pd.to_datetime(current["scored_at"], utc=True).dt.strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            CRM_FIELDS["status"]: current["status"].astype("string"),
        }
    )
    return out.sort_values(CRM_FIELDS["crm_id"], kind="stable").reset_index(drop=True)


def split_batches(frame: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Consecutive slices of at most ``batch_size`` rows (none for an empty frame)."""
    if batch_size < 1:
        raise ValueError(f"The CRM batch size must be at least 1, got {batch_size}.")
    count = math.ceil(len(frame) / batch_size)
    return [frame.iloc[i * batch_size : (i + 1) * batch_size] for i in range(count)]


def write_crm_batches(changes: pd.DataFrame, crm_dir: Path, batch_size: int) -> list[Path]:
    """Replace ``crm_dir`` with ``batch-0001.csv ...`` atomically; returns the files.

    The batches are written to a hidden folder beside ``crm_dir`` and swapped in at
    once, so a re-run with fewer changes leaves no stale batch behind and a crash
    leaves the previous folder whole.
    """
    from pipelines.io import replace_dir_atomic, sibling_temp_dir

    batches = split_batches(changes, batch_size)
    staging = sibling_temp_dir(crm_dir)
    names = []
    try:
        for number, batch in enumerate(batches, start=1):
            name = f"batch-{number:04d}.csv"
            batch.to_csv(staging / name, index=False, encoding="utf-8", lineterminator="\r\n")
            names.append(name)
        replace_dir_atomic(staging, crm_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "CRM export: %d changed records in %d files of at most %d under %s.",
        len(changes), len(names), batch_size, crm_dir,
    )  # fmt: skip
    return [crm_dir / name for name in names]
