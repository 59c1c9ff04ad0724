"""Which row of a frame belongs to which entity: ids checked unique, or rows known.

Scoring matches the feature table (and the rule scores) to the entities table. Ids are
hashed once per frame (:func:`unique_ids`, :func:`models.previous_run.positions`),
unless the feature table says which entity each of its rows is (:func:`aligned_rows`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.arrow_text import arrow_strings


def sample(values: object, n: int = 5) -> str:
    """The first ``n`` values, as a message shows them."""
    return ", ".join(map(repr, pd.Series(values).head(n).tolist()))


def unique_ids(frame: pd.DataFrame, name: str) -> pd.Index:
    """The frame's ``entity_id`` as an index (its own dtype), checked present and unique.

    The index keeps the hash table the uniqueness check built, so looking other ids
    up in it (:func:`models.previous_run.positions`) does not hash them again.
    """
    if "entity_id" not in frame.columns:
        raise ValueError(f"The {name} frame has no entity_id column (columns: {list(frame)[:10]}).")
    index = pd.Index(frame["entity_id"])
    if not index.is_unique:
        duplicated = index[index.duplicated()]
        raise ValueError(
            f"The {name} frame holds {len(duplicated)} duplicate entity_id values, e.g. "
            f"{sample(duplicated)}; scoring needs one row per entity."
        )
    return index


def aligned_rows(
    ids: pd.Series, features: pd.DataFrame, feature_rows: np.ndarray | None
) -> np.ndarray | None:
    """Each entity's feature row (-1: none) from ``feature_rows``, if they hold.

    They hold when they name distinct entities and the feature ids are exactly the
    entity ``ids`` at those rows (compared as Arrow text, without hashing a million
    ids); ``None`` otherwise.
    """
    if feature_rows is None or len(feature_rows) != len(features) or "entity_id" not in features:
        return None
    rows = np.asarray(feature_rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(ids)):
        return None
    theirs, ours = arrow_strings(features["entity_id"]), arrow_strings(ids)
    if theirs is None or ours is None or not ours.take(rows).equals(theirs):
        return None
    feature_row = np.full(len(ids), -1)
    feature_row[rows] = np.arange(len(rows))
    if int((feature_row >= 0).sum()) != len(rows):  # a row named twice: ids repeat
        return None
    return feature_row
