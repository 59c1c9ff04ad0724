"""The CRM export: which records changed, as CSV import files with CRM field names.

:func:`crm_changes` picks the records (a ``crm_id``, and a score or band that moved
since the previous run, or lost consent); :func:`crm_files` splits them into the
files of a CRM profile (:mod:`pipelines.crm_profiles`: Salesforce Lead and Contact,
HubSpot contacts, or one generic series); :func:`write_crm_batches` writes each as
``STEM-0001.csv ...`` of at most ``crm_batch_size`` rows. Every text cell a
spreadsheet would run as a formula (:data:`FORMULA_PREFIXES`) is written with a
leading ``'`` (:func:`csv_safe`), whatever its column; numeric columns stay numbers.
Where the files go, and when, is the commit protocol's (:mod:`pipelines.output_commit`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from models.reason_text import crm_reason_text
from pipelines.crm_profiles import CRM_FIELDS, PROFILES, CrmProfile

log = logging.getLogger(__name__)

#: Most entity ids a warning names.
EXAMPLES = 5


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    """Element-wise equality where two missing values count as equal."""
    both_missing = a.isna() & b.isna()
    equal = (a.astype("object") == b.astype("object")) & a.notna() & b.notna()
    return (both_missing | equal).astype(bool)


def crm_changes(
    scored: pd.DataFrame,
    previous: pd.DataFrame | None,
    fields: Mapping[str, str] = CRM_FIELDS,
) -> pd.DataFrame:
    """CRM rows for entities with a ``crm_id`` whose score or band changed.

    Compared with ``previous`` by ``entity_id``; on a first run every scored entity
    with a ``crm_id`` is a change. An entity that lost consent since the previous run
    is a change too: its CRM fields are blanked and its status says why.

    Args:
        scored: One row per entity (``models.scoring``), consent already blanked.
        previous: The last scores before this run, or ``None``.
        fields: Column of :data:`~pipelines.crm_profiles.RECORD_COLUMNS` -> CRM field.

    Returns:
        A frame with the CRM field names of ``fields``, in its order, one row per record.
    """
    if "crm_id" not in scored.columns:
        return pd.DataFrame(columns=list(fields.values()))
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
    records = pd.DataFrame(
        {
            "crm_id": current["crm_id"].astype("string").str.strip(),
            "score": score,
            "band": band,
            "reasons": [
                crm_reason_text(up, down)
                for up, down in zip(
                    current.get("reasons_up", pd.Series(None, index=current.index)),
                    current.get("reasons_down", pd.Series(None, index=current.index)),
                    strict=True,
                )
            ],
            "conversion_percent": _percent(current, "conversion_probability"),
            "churn_percent": _percent(current, "churn_probability"),
            "as_of": pd.to_datetime(current["as_of"], utc=True).dt.strftime("%Y-%m-%d"),
            "scored_at": pd.to_datetime(current["scored_at"], utc=True).dt.strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "status": current["status"].astype("string"),
        }
    ).sort_values("crm_id", kind="stable")
    return records[list(fields)].rename(columns=dict(fields)).reset_index(drop=True)


def _percent(frame: pd.DataFrame, column: str) -> pd.Series:
    """A probability column in percent with one decimal (empty where missing)."""
    if column not in frame.columns:
        return pd.Series(float("nan"), index=frame.index)
    return (pd.to_numeric(frame[column], errors="coerce") * 100).round(1)


def crm_files(
    scored: pd.DataFrame, previous: pd.DataFrame | None, profile: CrmProfile = PROFILES["generic"]
) -> dict[str, pd.DataFrame]:
    """The changed records (:func:`crm_changes`) split into the files of ``profile``.

    Each entity goes to the file of its kind as of the run date (``kind`` of the
    scored frame, ``lead`` when missing), so a lead converted by then is a customer
    and never in a Salesforce Lead file.

    Returns:
        ``{file stem: records}`` for every file of the profile, empty ones included.
    """
    if "crm_id" not in scored.columns:
        log.warning("The scored frame has no crm_id column; the CRM export is empty.")
    kind = (
        scored["kind"].astype("string").fillna("lead")
        if "kind" in scored.columns
        else pd.Series("lead", index=scored.index, dtype="string")
    )
    return {
        stem: crm_changes(
            scored if kinds is None else scored[kind.isin(kinds).to_numpy(bool)],
            previous,
            profile.fields,
        )
        for stem, kinds in profile.files.items()
    }


def missing_crm_id_warnings(scored: pd.DataFrame) -> list[str]:
    """A sentence for the run summary when entities have no ``crm_id`` (else none).

    Such entities are scored but never in the CRM export; the sentence counts them
    and names up to :data:`EXAMPLES` of their entity ids.
    """
    crm_id = scored["crm_id"] if "crm_id" in scored.columns else pd.Series(pd.NA, scored.index)
    missing = crm_id.astype("string").str.strip().fillna("").eq("").to_numpy(bool)
    count = int(missing.sum())
    if not count:
        return []
    ids = scored.loc[missing, "entity_id"].astype("string").head(EXAMPLES).tolist()
    more = ", ..." if count > EXAMPLES else ""
    return [
        f"{count:,} of {len(scored):,} entities have no crm_id and are not in the CRM export "
        f"(entity_id {', '.join(ids)}{more}); give the entities input a crm_id column, or map "
        "one to it with sources.column_map."
    ]


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


def write_crm_batches(
    files: Mapping[str, pd.DataFrame], folder: Path, batch_size: int
) -> list[Path]:
    """Write each frame of ``files`` into ``folder`` as ``STEM-0001.csv ...``.

    Every column goes through :func:`csv_safe`; an empty frame writes no file.
    ``folder`` is normally a staging folder that :mod:`pipelines.output_commit`
    swaps in afterwards.

    Returns:
        The files written.
    """
    written = []
    for stem, changes in files.items():
        safe = pd.DataFrame({column: csv_safe(changes[column]) for column in changes.columns})
        for number, batch in enumerate(split_batches(safe, batch_size), start=1):
            path = Path(folder) / f"{stem}-{number:04d}.csv"
            batch.to_csv(path, index=False, encoding="utf-8", lineterminator="\r\n")
            written.append(path)
    log.info(
        "CRM export: %s changed records in %d files of at most %d.",
        ", ".join(f"{stem} {len(rows)}" for stem, rows in files.items()), len(written), batch_size,
    )  # fmt: skip
    return written
