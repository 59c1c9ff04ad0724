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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models.reason_text import CRM_TEXT_LIMIT, crm_items, crm_line
from pipelines.crm_profiles import CRM_FIELDS, PROFILES, CrmProfile

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
    if "crm_id" not in scored.columns:
        return pd.DataFrame(columns=list(fields.values()))
    has_crm_id = scored["crm_id"].astype("string").str.strip().fillna("").ne("").to_numpy(bool)
    if among is not None:
        has_crm_id &= among
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
    if not comparable or previous.empty:
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
    used = ("crm_id", "as_of", "scored_at", "status", "conversion_probability",
            "churn_probability")  # fmt: skip
    taken = [scored.columns.get_loc(c) for c in used if c in scored.columns]
    rows = np.flatnonzero(has_crm_id)[changed]
    # Columns first: taking rows of the whole frame would copy every reason column.
    current = scored.iloc[:, taken].iloc[rows]
    wanted = np.zeros(len(scored), dtype=bool)
    wanted[rows] = True
    absent = pd.Series(None, index=current.index)
    reasons = {name: _rows_of(scored[name], wanted) if name in scored.columns else absent
               for name in ("reasons_up", "reasons_down")}  # fmt: skip
    score, band = score[changed], band[changed]
    records = pd.DataFrame(
        {
            "crm_id": current["crm_id"].astype("string").str.strip(),
            "score": score,
            "band": band,
            "reasons": crm_reason_texts(reasons["reasons_up"], reasons["reasons_down"]),
            "conversion_percent": _percent(current, "conversion_probability"),
            "churn_percent": _percent(current, "churn_probability"),
            "as_of": _strftime(current["as_of"], "%Y-%m-%d"),
            "scored_at": _strftime(current["scored_at"], "%Y-%m-%dT%H:%M:%SZ"),
            "status": current["status"].astype("string"),
        }
    ).sort_values("crm_id", kind="stable")
    return records[list(fields)].rename(columns=dict(fields)).reset_index(drop=True)


#: A JSON string's body as ``json.loads`` accepts it (RE2 syntax).
_TEXT = r'(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*'
#: One reason object between its braces, exactly as ``models.reason_text.reason_lists``
#: writes it; impacts of up to 15 digits are exact as floats.
_ITEM = (
    f'^"concept": "(?P<concept>{_TEXT})", "group": "{_TEXT}", "text": "{_TEXT}", '
    '"impact": (?P<impact>0|-?[1-9][0-9]{0,14})$'
)


@dataclass
class _Items:
    """One direction's reasons read in bulk: rows read, and their items strongest first."""

    ok: np.ndarray  # per row: read here (else it goes through crm_items one by one)
    row: np.ndarray  # per item, sorted by row then strength (stable)
    text: pa.Array  # per item, "concept +12"
    length: np.ndarray  # per item, characters of text


def _choice(pick: np.ndarray, texts: list[str]) -> pa.Array:
    """``texts[pick[i]]`` per row as an Arrow string array."""
    return pa.DictionaryArray.from_arrays(pa.array(pick.astype(np.int8)), texts).cast(pa.string())


def _bools(array: pa.Array) -> np.ndarray:
    return array.fill_null(False).to_numpy(zero_copy_only=False)


def _written_items(values: pa.Array) -> _Items:
    """The CRM items of lists written by ``reason_lists``; other rows are marked not ok.

    Such a list is ``[{...}, {...}]`` with every object matching :data:`_ITEM`, so
    splitting at ``}, {`` and matching each piece reads what ``json.loads`` reads.
    """
    framed = _bools(pc.and_(pc.starts_with(values, "[{"), pc.ends_with(values, "}]")))
    pieces = pc.split_pattern(pc.utf8_slice_codeunits(values, 2, -2), "}, {")
    parents = pc.list_parent_indices(pieces).to_numpy()
    parts = pc.extract_regex(pc.list_flatten(pieces), _ITEM)
    concept = parts.field("concept")
    good = _bools(parts.is_valid()) & ~_bools(pc.match_substring(concept, "\\"))
    bad_rows = np.bincount(parents[~good], minlength=len(values)) > 0
    ok = _bools(values.is_null()) | _bools(pc.equal(values, "[]")) | (framed & ~bad_rows)
    keep = good & ok[parents]
    keep[keep] = pc.utf8_length(concept.filter(pa.array(keep))).to_numpy() > 0
    impact = parts.field("impact").filter(pa.array(keep))
    points = pc.cast(impact, pa.int64()).to_numpy()
    text = pc.binary_join_element_wise(
        concept.filter(pa.array(keep)), _choice(points >= 0, [" ", " +"]), impact, ""
    )
    row = parents[keep]
    order = np.lexsort((-np.abs(points), row))  # stable: equal strength keeps list order
    text = text.take(pa.array(order))
    return _Items(ok, row[order], text, pc.utf8_length(text).to_numpy())


def _kept(items: _Items, n: int, used: np.ndarray, label: str, limit: int) -> pa.Array:
    """`` label: a, b.`` per row (null if none) with the items that fit after ``used``."""
    start = np.searchsorted(items.row, np.arange(n))
    rank = np.arange(len(items.row)) - start[items.row]
    total = np.cumsum(items.length)
    before = np.concatenate([[0], total])[start][items.row]
    prefix = used[items.row] + (used[items.row] > 0)  # the text so far and a space
    # The candidate "label: " + kept items must leave room for the closing ".".
    fits = prefix + len(label) + 2 + (total - before) + 2 * rank + 1 <= limit
    counts = np.bincount(items.row[fits], minlength=n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    kept = items.text.filter(pa.array(fits))  # each row's fitting items are a prefix
    lists = pa.ListArray.from_arrays(offsets, kept, mask=pa.array(counts == 0))
    heads = _choice(used > 0, [f"{label}: ", f" {label}: "])
    return pc.binary_join_element_wise(heads, pc.binary_join(lists, ", "), ".", "")


def crm_reason_texts(
    reasons_up: object, reasons_down: object, limit: int = CRM_TEXT_LIMIT
) -> np.ndarray:
    """:func:`models.reason_text.crm_reason_text` of every row, without a loop over rows.

    Lists as the scorer writes them are read with Arrow string kernels; any other
    value (hand-edited JSON, parsed lists) goes through ``crm_reason_text``'s own
    reader, row by row.

    Args:
        reasons_up: The rows' ``reasons_up`` values (array-like).
        reasons_down: Their ``reasons_down`` values, as many.
        limit: Most characters of a text.

    Returns:
        An object array of the texts, one per row.
    """
    n = len(reasons_up)
    out = np.empty(n, dtype=object)
    try:
        arrays = [_arrow_text(values) for values in (reasons_up, reasons_down)]
    except (pa.ArrowException, TypeError, UnicodeError):  # not all text, lone surrogates
        up_items = down_items = _Items(np.zeros(n, bool), *[np.array([], np.int64)] * 3)
    else:
        up_items, down_items = (_written_items(values) for values in arrays)
        # Texts start "Up" or "Down" and end within the limit: no formula prefix, no cut.
        up_text = _kept(up_items, n, np.zeros(n, np.int64), "Up", limit)
        used = pc.utf8_length(up_text).fill_null(0).to_numpy()
        down_text = _kept(down_items, n, used, "Down", limit)
        out[:] = pc.binary_join_element_wise(
            up_text, down_text, "", null_handling="replace", null_replacement=""
        ).to_numpy(zero_copy_only=False)
    rest = np.flatnonzero(~(up_items.ok & down_items.ok))
    if len(rest):
        up, down = (_objects(values) for values in (reasons_up, reasons_down))
        for i in rest:
            out[i] = crm_line(crm_items(up[i]), crm_items(down[i]), limit)
    return out


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


def _arrow_text(values: object) -> pa.Array:
    """``values`` as an Arrow string array; Arrow-backed text is taken as it is."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        return array.cast(pa.string())
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":  # no str per row
        array = pa.array(values.array)  # type: ignore[attr-defined]
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        return array.cast(pa.string())
    return pa.array(np.asarray(values, dtype=object), pa.string(), from_pandas=True)


def _objects(values: object) -> np.ndarray:
    """``values`` as an object array (``None`` for missing values)."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return np.array(values.to_pylist(), dtype=object)
    return np.asarray(values, dtype=object)


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
    kind = (
        scored["kind"].astype("string").fillna("lead")
        if "kind" in scored.columns
        else pd.Series("lead", index=scored.index, dtype="string")
    )
    return {
        stem: crm_changes(
            scored,
            previous,
            profile.fields,
            previous_rows,
            among=None if kinds is None else kind.isin(kinds).to_numpy(bool),
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
