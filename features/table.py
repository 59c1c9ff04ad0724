"""The feature table's rows and columns: who gets a row, which columns, which dtypes.

Shared by the Ibis builder (:mod:`features.build`) and the pandas reference
(:mod:`features.reference`): :func:`existing_entities` picks the rows,
:func:`fit_columns` and :func:`columns_for` the columns, and :func:`finish_table`
puts computed values in the form of the contract in ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from features.arrow_text import arrow_strings
from features.engine import NPS_CLASSES
from features.spec import FeatureDef, FeatureSpec, feature_catalog, safe_name
from features.timeutil import utc_microseconds

log = logging.getLogger(__name__)

#: Entity columns of the data contract; every other entity column is a fit attribute.
CONTRACT_ENTITY_COLUMNS: frozenset[str] = frozenset(
    {"entity_id", "created_at", "crm_id", "consent", "kind", "ended_at"}
)


def fit_columns(entities: pd.DataFrame) -> dict[str, Literal["float64", "category"]]:
    """Fit attributes of an entities table and their feature dtypes.

    Every column outside the data contract (``entity_id, created_at, crm_id,
    consent, kind, ended_at``) is a fit attribute: numbers and booleans become ``float64``,
    strings and categories ``category``. Other types (timestamps) are skipped with
    a warning, since no model can use them as they are, and so are text columns
    with a different value for most entities (names, e-mails, ids), and whole numbers
    different for every entity (record numbers): they carry no pattern to learn and
    would keep personal data inside the model.

    Args:
        entities: The entities table.

    Returns:
        Column name to dtype, in the table's column order.
    """
    columns: dict[str, Literal["float64", "category"]] = {}
    for column in entities.columns:
        if column in CONTRACT_ENTITY_COLUMNS:
            continue
        dtype = entities[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            if _is_running_number(entities[column]):
                log.warning(
                    "Entities column %r holds a different whole number for every entity (a "
                    "lead or record number?): it is not used as a fit attribute.", column,
                )  # fmt: skip
                continue
            columns[column] = "float64"
        elif pd.api.types.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
            if _looks_like_an_identifier(entities[column]):
                log.warning(
                    "Entities column %r holds a different value for most entities (a name, "
                    "e-mail or id?): it is not used as a fit attribute, so no model learns "
                    "or stores it.", column,
                )  # fmt: skip
                continue
            columns[column] = "category"
        else:
            log.warning(
                "Entities column %r has type %s, neither numeric nor text: "
                "it is not used as a fit attribute.", column, dtype,
            )  # fmt: skip
    return columns


#: A text column with more distinct values than this share of its rows is per-entity.
IDENTIFIER_DISTINCT_SHARE = 0.5
#: ... and more than this many distinct values (small tables repeat little by chance).
IDENTIFIER_MIN_DISTINCT = 20


#: Words naming a record number (``Lead Number``, ``customer_no``, ``AccountID``).
_ID_NAME = re.compile(r"(?i:(^|[^a-z])(id|number|no|nr|num|key)($|[^a-z]))|[a-z](Id|ID|Number|No)$")


def _is_running_number(values: pd.Series) -> bool:
    """Named like an id, whole numbers, every one different: a record number, not a measure.

    The name matters: a measure can be all different by chance (employees of 50 firms).
    """
    if not _ID_NAME.search(str(values.name)):
        return False
    present = values.dropna()
    if pd.api.types.is_bool_dtype(present.dtype) or len(present) <= IDENTIFIER_MIN_DISTINCT:
        return False
    numbers = present.to_numpy(dtype="float64")
    return bool((numbers == numbers.round()).all() and present.is_unique)


def _looks_like_an_identifier(values: pd.Series) -> bool:
    present = values.dropna()
    distinct = present.nunique()
    share = IDENTIFIER_DISTINCT_SHARE * len(present)
    return distinct > IDENTIFIER_MIN_DISTINCT and distinct > share


def existing_rows(entities: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    """Rows of the entities that exist at the cutoff and consent, in ``entity_id`` order.

    The positions (in ``entities``) of :func:`existing_entities`' rows: a feature table
    built from them is aligned to ``entities`` without matching ids again.

    Raises:
        ValueError: ``entity_id`` or ``created_at`` is missing.
    """
    missing = [c for c in ("entity_id", "created_at") if c not in entities.columns]
    if missing:
        raise ValueError(
            f"The entities table has no column {', '.join(map(repr, missing))}; it has "
            f"{list(entities.columns)}. Map its columns to the data contract first."
        )
    keep = utc_microseconds(entities["created_at"]) < as_of
    if "consent" in entities.columns:
        keep &= entities["consent"].fillna(True).astype(bool)
    rows = np.flatnonzero(keep.to_numpy(dtype=bool))
    ids = entities["entity_id"].iloc[rows].astype("str")
    return rows if ids.is_monotonic_increasing else rows[_stable_order(ids)]


def existing_entities(
    entities: pd.DataFrame, as_of: pd.Timestamp, rows: np.ndarray | None = None
) -> pd.DataFrame:
    """Entities that exist at the cutoff (``created_at < as_of``) and consent.

    ``consent`` false means never profiled, so such entities get no feature row.

    Args:
        entities: The entities table (contract column names).
        as_of: The cutoff, in UTC.
        rows: :func:`existing_rows` of the same table and cutoff, when already known.

    Returns:
        The kept rows sorted by ``entity_id`` (as strings) with a fresh index,
        ``created_at`` in UTC microseconds.

    Raises:
        ValueError: ``entity_id`` or ``created_at`` is missing, or an id repeats.
    """
    # The kept rows in id order are picked first and taken once: filtering every
    # column and then sorting every column took each column twice (1.5 s of CPU at 1M).
    if rows is None:
        rows = existing_rows(entities, as_of)
    index = pd.RangeIndex(len(rows))
    kept = (
        entities.iloc[rows]
        .set_axis(index)
        .assign(
            created_at=utc_microseconds(entities["created_at"].iloc[rows]).set_axis(index),
            entity_id=entities["entity_id"].iloc[rows].astype("str").set_axis(index),
        )
    )
    ids = kept["entity_id"]
    # Sorted, so a repeated id sits next to itself.
    repeated = ids[(ids == ids.shift()).to_numpy()]
    if len(repeated):
        raise ValueError(
            f"The entities table repeats entity_id {list(repeated.unique()[:5])}: "
            "each entity must appear once."
        )
    return kept


def _stable_order(ids: pd.Series) -> np.ndarray:
    """Positions that sort text ids (ties in their order), as ``sort_values(kind="stable")``.

    Arrow sorts its strings by code point, as Python compares them, in a third of
    pandas' time; other arrays go through pandas.
    """
    strings = arrow_strings(ids)
    if strings is not None:
        import pyarrow.compute as pc

        return pc.sort_indices(strings).to_numpy()
    return ids.argsort(kind="stable").to_numpy()


def featurised_types(spec: FeatureSpec, event_types: Iterable[str]) -> list[str]:
    """The declared event types in their order, then the other ``event_types`` sorted."""
    declared = [e.name for e in spec.event_types]
    return declared + sorted(set(event_types) - set(declared))


def columns_for(
    spec: FeatureSpec, event_types: Iterable[str], fits: dict[str, Literal["float64", "category"]]
) -> list[FeatureDef]:
    """The feature catalog, refusing event types whose column names would collide.

    Args:
        spec: The feature set.
        event_types: Event types seen besides the declared ones.
        fits: The fit attributes and their dtypes (see :func:`fit_columns`).

    Returns:
        The feature definitions in column order.

    Raises:
        ValueError: Two event types differ only in case or punctuation.
    """
    declared = [e.name for e in spec.event_types]
    types = declared + sorted(set(event_types) - set(declared))
    by_column: dict[str, list[str]] = {}
    for name in types:
        by_column.setdefault(safe_name(name), []).append(name)
    clashes = {column: names for column, names in by_column.items() if len(names) > 1}
    if clashes:
        described = "; ".join(f"{names} all become {column!r}" for column, names in clashes.items())
        raise ValueError(
            f"Event types differ only in case or punctuation, so their feature columns "
            f"would collide: {described}. Rename them in the events table."
        )
    return feature_catalog(spec, types, fits)


def finish_table(
    engagement: pd.DataFrame,
    entities: pd.DataFrame,
    as_of: pd.Timestamp,
    catalog: list[FeatureDef],
    fits: dict[str, Literal["float64", "category"]],
    all_entities: pd.DataFrame,
) -> pd.DataFrame:
    """Put computed features in contract form: columns, order and dtypes.

    Args:
        engagement: Every engagement feature (``tenure_days`` included), one row
            per row of ``entities``, in the same order; its index is ignored.
        entities: The existing entities (see :func:`existing_entities`).
        as_of: The cutoff.
        catalog: The feature definitions, in column order.
        fits: The fit attributes and their dtypes.
        all_entities: The whole entities table; category levels come from it, so
            tables of different cutoffs stack without losing the category dtype.

    Returns:
        The feature table.

    Raises:
        ValueError: A feature of the catalog was not computed.
    """
    missing = [d.name for d in catalog if d.name not in fits and d.name not in engagement]
    if missing:
        raise ValueError(
            f"No values were computed for the features {missing}: the spec declares "
            "features the feature engine does not know."
        )
    n_rows = len(entities)
    columns: dict[str, Any] = {
        # The string array itself: through numpy it would become Python objects and back.
        "entity_id": entities["entity_id"].astype("str").array,
        "as_of": pd.DatetimeIndex(
            np.full(n_rows, as_of.tz_localize(None).as_unit("us").asm8)
        ).tz_localize("UTC"),
    }
    for feature in catalog:
        if feature.name in fits:
            columns[feature.name] = _fit_values(entities, all_entities, feature.name, fits)
            continue
        values = engagement[feature.name]
        if feature.dtype == "category":
            if not isinstance(values.dtype, pd.CategoricalDtype):
                values = pd.Categorical(values.astype("str"), categories=list(NPS_CLASSES))
            columns[feature.name] = pd.Categorical(values)
        else:
            columns[feature.name] = np.asarray(values, dtype=feature.dtype)
    # No copy: each column stays the array it was computed in (a 1M-row table is
    # ~1.2 GB; consolidating it into blocks would copy all of it once more).
    return pd.DataFrame(columns, index=pd.RangeIndex(n_rows), copy=False)


def _fit_values(
    entities: pd.DataFrame,
    all_entities: pd.DataFrame,
    column: str,
    fits: dict[str, Literal["float64", "category"]],
) -> pd.Series | pd.Categorical:
    values = entities[column]
    if fits[column] == "float64":
        return pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    every = pd.Series(all_entities[column])
    strings, every_strings = arrow_strings(values), arrow_strings(every)
    if strings is not None and every_strings is not None and every.notna().any():
        return _arrow_categorical(strings, every_strings)
    levels = every.dropna().astype("str").unique()
    return pd.Categorical(values.astype("str").where(values.notna()), categories=sorted(levels))


def _arrow_categorical(values: pa.ChunkedArray, every: pa.ChunkedArray) -> pd.Categorical:
    """The categorical of :func:`_fit_values` for Arrow text, from dictionary codes.

    The same categories (every entity's values, sorted) and codes, without hashing a
    million strings through pandas twice (1.2 s of CPU for five columns at 1M).
    """
    import pyarrow.compute as pc

    levels = sorted(pc.unique(every).drop_null().to_pylist())
    encoded = pc.dictionary_encode(values).combine_chunks()
    position = {level: i for i, level in enumerate(levels)}
    # Values are a subset of every entity's; one that were not would be missing (-1).
    to_level = np.array([position.get(v, -1) for v in encoded.dictionary.to_pylist()] + [-1])
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    codes = to_level[indices]
    return pd.Categorical.from_codes(codes, categories=levels)


def describe_table(table: pd.DataFrame, as_of: pd.Timestamp, seconds: float) -> str:
    """A few lines describing a feature table."""
    numeric = table.select_dtypes("number")
    busiest = (numeric.filter(like="_count_30d") > 0).mean().sort_values(ascending=False).head(5)
    lines = [
        f"Feature table as of {as_of.date()}: {len(table):,} entities x "
        f"{table.shape[1] - 2} features, built in {seconds:.1f} s",
        "Most common activity in the last 30 days (share of entities): "
        + ", ".join(f"{c.removesuffix('_count_30d')} {v:.0%}" for c, v in busiest.items()),
    ]
    return "\n".join(lines)
