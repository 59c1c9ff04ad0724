"""The CRM export: which records changed, as CSV import files with CRM field names.

:func:`crm_changes` picks the records (a ``crm_id``, and a score or band that moved
since the previous run, or lost consent); :func:`write_crm_batches` writes them as
``batch-0001.csv ...`` of at most ``crm_batch_size`` rows. Every text cell a
spreadsheet would run as a formula (:data:`FORMULA_PREFIXES`) is written with a
leading ``'`` (:func:`csv_safe`), whatever its column; numeric columns stay numbers.
Where the files go, and when, is the commit protocol's (:mod:`pipelines.output_commit`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from models.reason_text import crm_reason_text

log = logging.getLogger(__name__)

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


#: Spreadsheet apps run a cell starting with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(values: pd.Series) -> pd.Series:
    """``values`` with a ``'`` before every text a spreadsheet would run as a formula.

    Only text is changed: a numeric column (a score, a negative percentage) is
    returned as it is, so its numbers stay numbers in the file.
    """
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return values
    text = values.astype("string")
    risky = text.str.startswith(FORMULA_PREFIXES).fillna(False).to_numpy(bool)
    return text.mask(risky, "'" + text) if risky.any() else values


def write_crm_batches(changes: pd.DataFrame, folder: Path, batch_size: int) -> list[Path]:
    """Write ``changes`` into ``folder`` as ``batch-0001.csv ...``; returns the files.

    Every column goes through :func:`csv_safe`. ``folder`` is normally a staging
    folder that :mod:`pipelines.output_commit` swaps in afterwards.
    """
    safe = pd.DataFrame({column: csv_safe(changes[column]) for column in changes.columns})
    files = []
    for number, batch in enumerate(split_batches(safe, batch_size), start=1):
        path = Path(folder) / f"batch-{number:04d}.csv"
        batch.to_csv(path, index=False, encoding="utf-8", lineterminator="\r\n")
        files.append(path)
    log.info(
        "CRM export: %d changed records in %d files of at most %d.",
        len(changes), len(files), batch_size,
    )  # fmt: skip
    return files
