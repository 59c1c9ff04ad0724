"""Where a run's score outputs live, what their rows hold, and reading them back.

Every output is keyed by the run date or entity id, so re-running a date replaces,
never duplicates (how a run writes them: :mod:`pipelines.output_commit`):

- ``scores/as_of=YYYY-MM-DD/part-0.parquet``: the whole scored frame (``as_of`` is
  the Hive partition key, kept in the path only so the folder reads as a dataset);
- ``lead_scores`` (key ``entity_id``) and ``lead_score_history`` (key ``entity_id,
  as_of``) in the SQL database at ``database_url``;
- ``crm/as_of=YYYY-MM-DD/batch-0001.csv ...``: rows whose score or band changed,
  keyed by ``crm_id``, with CRM field names, in batches of ``crm_batch_size``
  (:mod:`pipelines.crm_export`);
- ``board/YYYY-MM-DD.html`` and ``board/index.html``: the lead board.

An entity without consent keeps no score anywhere: its probabilities, score, band and
reasons are blanked in every output, its score history is deleted, and its row says why.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from features.arrow_text import as_arrow_text
from pipelines.board import is_no_consent

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


def partition_dir(out_dir: Path, as_of: date) -> Path:
    """``out_dir/scores/as_of=YYYY-MM-DD``."""
    return Path(out_dir) / "scores" / f"as_of={as_of.isoformat()}"


def crm_dir(out_dir: Path, as_of: date) -> Path:
    """``out_dir/crm/as_of=YYYY-MM-DD``."""
    return Path(out_dir) / "crm" / f"as_of={as_of.isoformat()}"


def run_date(scored: pd.DataFrame) -> date:
    """The single ``as_of`` date of a scored frame.

    Raises:
        ValueError: If ``as_of`` is missing, empty or holds more than one date.
    """
    if "as_of" not in scored.columns or scored["as_of"].isna().all():
        raise ValueError("The scored frame has no as_of value; outputs are partitioned by it.")
    # Days as timestamps first: a million Python dates cost 0.2 s at 1M rows.
    days = pd.to_datetime(scored["as_of"], utc=True).dropna().dt.floor("D").unique()
    dates = [day.date() for day in days]
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
    out = scored.copy(deep=False)  # copy-on-write: replaced columns never reach ``scored``
    mask = is_no_consent(out["status"])
    if mask.any():
        rows = mask.to_numpy(dtype=bool)
        for column in PROFILING_COLUMNS:
            # Only a column holding a value on such a row is rewritten (copied whole). Not
            # out.loc[mask, column]: a take of chunked Arrow text joins all its chunks.
            if column in out.columns and (out[column].notna().to_numpy(bool) & rows).any():
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
        rows[column] = as_arrow_text(rows[column], "string")
    return rows.reset_index(drop=True)


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


#: What a run reads of the previous scores: the entity, its status, score, band and
#: model (scoring, the CRM comparison, first-scoring drift) and its reasons (kept
#: when still valid, :mod:`models.previous_run`). Reading only these saves the
#: probability, rule and display columns (about a fifth of the read).
PREVIOUS_COLUMNS = (
    "entity_id", "status", "score", "band", "model_versions", "score_source",
    "reasons_up", "reasons_down", "reasons_text", "base_score", "other_factors_points",
    "reasons_computed_at",
)  # fmt: skip


def read_previous_scores(
    out_dir: Path,
    before: date | pd.Timestamp,
    columns: tuple[str, ...] | None = PREVIOUS_COLUMNS,
) -> pd.DataFrame | None:
    """The latest score partition strictly before ``before``, or ``None``.

    ``as_of`` comes back as a UTC timestamp column, from the partition's name.

    Args:
        out_dir: The output folder.
        before: The run date.
        columns: The columns to read (those the partition has), or ``None`` for all.

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
        wanted = None
        if columns is not None:
            present = set(pq.read_schema(earlier[latest]).names)
            wanted = [name for name in columns if name in present]
        frame = pd.read_parquet(earlier[latest], columns=wanted)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ValueError(
            f"Could not read the previous scores {earlier[latest]}: {exc}. Delete or restore "
            "that partition to go on."
        ) from exc
    frame["as_of"] = pd.Timestamp(latest, tz="UTC")
    return frame
