"""The CRM export: which records changed, as CSV import files with CRM field names.

:func:`crm_changes` picks the records (a ``crm_id``, and a score or band that moved
since the previous run, or lost consent: :func:`changed_rows`, found once per run, and
:func:`crm_records`, with the reason text of :mod:`pipelines.crm_reasons`);
:func:`crm_files` splits them into the
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

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.crm_profiles import CRM_FIELDS, PROFILES, CrmProfile
from pipelines.crm_reasons import crm_reason_texts
from pipelines.csv_text import write_csv

log = logging.getLogger(__name__)

#: Most entity ids a warning names.
EXAMPLES = 5


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    """Element-wise equality where two missing values count as equal."""
    return (a == b).fillna(False).astype(bool) | (a.isna() & b.isna())


def crm_changes(
    scored: pd.DataFrame,
    previous: pd.DataFrame | None,
    fields: Mapping[str, str] = CRM_FIELDS,
    previous_rows: np.ndarray | None = None,
    among: np.ndarray | None = None,
) -> pd.DataFrame:
    """CRM rows for entities with a ``crm_id`` whose score or band changed.

    Compared with ``previous`` by ``entity_id``; on a first run every scored entity
    with a ``crm_id`` is a change. An entity that lost consent since the previous run
    is a change too: its CRM fields are blanked and its status says why.

    Args:
        scored: One row per entity (``models.scoring``), consent already blanked.
        previous: The last scores before this run, or ``None``.
        fields: Column of :data:`~pipelines.crm_profiles.RECORD_COLUMNS` -> CRM field.
        previous_rows: Per row of ``scored``, its entity's row in ``previous`` (-1: not
            there), when scoring found them already; else the ids are looked up.
        among: A mask of the rows of ``scored`` to export (``None``: all); a mask, not
            a filtered frame, so the reason texts are filtered once, chunk by chunk.

    Returns:
        A frame with the CRM field names of ``fields``, in its order, one row per record.
    """
    rows = changed_rows(scored, previous, previous_rows)
    return crm_records(scored, rows if among is None else rows[among[rows]], fields)


def changed_rows(
    scored: pd.DataFrame, previous: pd.DataFrame | None, previous_rows: np.ndarray | None = None
) -> np.ndarray:
    """Rows of ``scored`` (in order) with a ``crm_id`` whose score or band changed.

    See :func:`crm_changes`; computed once for every file of a profile.
    """
    if "crm_id" not in scored.columns:
        return np.empty(0, dtype=np.int64)
    has_crm_id = scored["crm_id"].astype("string").str.strip().fillna("").ne("").to_numpy(bool)
    # What changed is found on three columns; the others are taken for those rows only.
    current = scored[["entity_id", "score", "band"]]
    current = current if has_crm_id.all() else current[has_crm_id]
    score = pd.to_numeric(current["score"], errors="coerce").round().astype("Int64")
    band = current["band"].astype("string")
    comparable = previous is not None and {"entity_id", "score", "band"} <= set(previous.columns)
    if previous is not None and not comparable:
        log.warning(
            "The previous scores lack entity_id, score or band (columns: %s); every record "
            "counts as changed for the CRM export.", ", ".join(map(str, previous.columns[:10])),
        )  # fmt: skip
    if not comparable or previous.empty:  # a record with neither score nor band: no change
        prev_score = pd.Series(pd.NA, index=current.index, dtype="Int64")
        prev_band = pd.Series(pd.NA, index=current.index, dtype="string")
    else:
        # The three columns only: the previous frame carries every reason text too.
        last = previous[["entity_id", "score", "band"]]
        if previous_rows is not None:
            rows = previous_rows if has_crm_id.all() else previous_rows[has_crm_id]
        else:
            ids = pd.Index(last["entity_id"])
            if not ids.is_unique:  # a partition has one row per entity; else: the last
                last = last.drop_duplicates("entity_id", keep="last")
                ids = pd.Index(last["entity_id"])
            rows = ids.get_indexer(current["entity_id"])  # -1: new
        before = pd.Series(last["score"].array.take(rows, allow_fill=True), index=current.index)
        prev_score = pd.to_numeric(before, errors="coerce").round().astype("Int64")
        prev_band = pd.Series(
            last["band"].array.take(rows, allow_fill=True), index=current.index
        ).astype("string")
    changed = (~(_same(score, prev_score) & _same(band, prev_band))).to_numpy(bool)
    return np.flatnonzero(has_crm_id)[changed]


def crm_records(
    scored: pd.DataFrame, rows: np.ndarray, fields: Mapping[str, str] = CRM_FIELDS
) -> pd.DataFrame:
    """The CRM records of ``scored``'s ``rows`` (:func:`changed_rows`), by ``crm_id``."""
    if "crm_id" not in scored.columns:
        return pd.DataFrame(columns=list(fields.values()))
    used = ("crm_id", "as_of", "scored_at", "status", "conversion_probability",
            "churn_probability", "score", "band")  # fmt: skip
    taken = [scored.columns.get_loc(c) for c in used if c in scored.columns]
    # Columns first: taking rows of the whole frame would copy every reason column.
    current = scored.iloc[:, taken].iloc[rows]
    wanted = np.zeros(len(scored), dtype=bool)
    wanted[rows] = True
    absent = pd.Series(None, index=current.index)
    reasons = {name: _rows_of(scored[name], wanted) if name in scored.columns else absent
               for name in ("reasons_up", "reasons_down")}  # fmt: skip
    records = pd.DataFrame(
        {
            "crm_id": current["crm_id"].astype("string").str.strip(),
            "score": pd.to_numeric(current["score"], errors="coerce").round().astype("Int64"),
            "band": current["band"].astype("string"),
            "reasons": crm_reason_texts(reasons["reasons_up"], reasons["reasons_down"]),
            "conversion_percent": _percent(current, "conversion_probability"),
            "churn_percent": _percent(current, "churn_probability"),
            "as_of": _strftime(current["as_of"], "%Y-%m-%d"),
            "scored_at": _strftime(current["scored_at"], "%Y-%m-%dT%H:%M:%SZ"),
            "status": current["status"].astype("string"),
        }
    ).sort_values("crm_id", kind="stable")
    return records[list(fields)].rename(columns=dict(fields)).reset_index(drop=True)


def _rows_of(values: pd.Series, wanted: np.ndarray) -> pd.Series | pa.ChunkedArray:
    """``values[wanted]``; Arrow text as Arrow, filtered chunk by chunk.

    A take (``iloc``) of a chunked text column first joins its chunks: for the reason
    texts of a million scored entities that is a 280 MB copy per column, whatever the
    rows taken (1-2.5 s in a nightly at 1M, most of it fresh memory).
    """
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return pa.chunked_array(pa.array(values.array)).filter(pa.array(wanted))
    return values[wanted]


def _strftime(values: pd.Series, pattern: str) -> pd.Series:
    """``to_datetime(values, utc=True).dt.strftime(pattern)``, formatting each value once."""
    stamps = pd.to_datetime(values, utc=True)
    codes, uniques = pd.factorize(stamps)  # a run has one as_of and few scored_at values
    texts = pd.Series(uniques.strftime(pattern))
    return pd.Series(texts.array.take(codes, allow_fill=True), index=values.index)


def _percent(frame: pd.DataFrame, column: str) -> pd.Series:
    """A probability column in percent with one decimal (empty where missing)."""
    if column not in frame.columns:
        return pd.Series(float("nan"), index=frame.index)
    return (pd.to_numeric(frame[column], errors="coerce") * 100).round(1)


def crm_files(
    scored: pd.DataFrame,
    previous: pd.DataFrame | None,
    profile: CrmProfile = PROFILES["generic"],
    previous_rows: np.ndarray | None = None,
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
    changed = changed_rows(scored, previous, previous_rows)  # once for every file
    kind = (
        scored["kind"].iloc[changed]
        if "kind" in scored.columns
        else pd.Series([None] * len(changed))
    )
    of_kind = kind.astype("string").fillna("lead")
    return {
        stem: crm_records(
            scored,
            changed if kinds is None else changed[of_kind.isin(kinds).to_numpy(bool)],
            profile.fields,
        )  # fmt: skip
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
            write_csv(batch, path)  # pandas' bytes, made by Arrow (7x faster at 150,000 rows)
            written.append(path)
    log.info(
        "CRM export: %s changed records in %d files of at most %d.",
        ", ".join(f"{stem} {len(rows)}" for stem, rows in files.items()), len(written), batch_size,
    )  # fmt: skip
    return written
