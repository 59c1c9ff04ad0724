"""What the lead board shows per lead: display columns, and one JSON-ready row per lead.

The static page (:mod:`pipelines.board`) and the served board
(:mod:`pipelines.board_server`) shape rows with the same :func:`lead_row`, so both
show the same thing. Names, companies, owners and fit attributes come from the
entities table through the ``board.display`` settings; the run keeps them, and only
them, in ``board/entities.parquet`` (:data:`ENTITIES_FILE`), which ``forget`` scrubs.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from features.arrow_text import all_different
from models.reason_text import parse_reasons
from pipelines.board_settings import BoardDisplay

log = logging.getLogger(__name__)

#: The board's copy of the display columns, beside the pages in ``board/``.
ENTITIES_FILE = "entities.parquet"
#: The dtype pandas infers for a column of Python strings.
_STR = pd.StringDtype("pyarrow", na_value=np.nan)
#: The display roles, in the order of :func:`board_entities`'s columns.
ROLES = ("name", "company", "owner")
#: Columns tried, in order, for a role the settings leave empty.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("full_name", "name", "contact_name", "lead_name"),
    "company": ("company", "company_name", "account_name", "organization"),
    "owner": ("owner_email", "owner", "owner_name", "account_owner"),
}
#: Fit attributes shown when the settings name none, those present in this order.
DEFAULT_ATTRIBUTES = (
    "industry", "employees", "company_size", "country", "job_level", "lead_source",
)  # fmt: skip
#: ``reasons_text``'s tail: ``(points of the 0-100 score: base 23, other factors +4)``.
_BREAKDOWN = re.compile(r"base (-?\d+), other factors ([+-]?\d+)\)")
#: A reason text's own points prefix (``+12 pts: ``); the board shows points apart.
_POINTS_PREFIX = re.compile(r"^[+\-−±]?\d+(?:\.\d+)? pts?: ")


def display_columns(columns: Iterable[str], display: BoardDisplay) -> dict[str, Any]:
    """The entity column behind each role, and the attribute columns, of those present.

    Args:
        columns: The entities table's columns.
        display: The ``board.display`` settings.

    Returns:
        ``{"name": column or None, "company": ..., "owner": ..., "attributes": [...]}``.
        A configured column that is missing is left out, with a warning.
    """
    present = list(columns)
    chosen: dict[str, Any] = {}
    for role in ROLES:
        configured = getattr(display, role)
        if configured is not None and configured not in present:
            log.warning("board.display.%s: no column %r in the entities table.", role, configured)
        candidates = (configured,) if configured is not None else DEFAULT_COLUMNS[role]
        chosen[role] = next((c for c in candidates if c in present), None)
    wanted = display.attributes if display.attributes is not None else DEFAULT_ATTRIBUTES
    missing = [c for c in wanted if c not in present]
    if display.attributes is not None and missing:
        log.warning("board.display.attributes: no column %s in the entities table.", missing)
    taken = {c for c in chosen.values() if c}
    chosen["attributes"] = [c for c in wanted if c in present and c not in taken]
    return chosen


def board_entities(entities: pd.DataFrame, display: BoardDisplay) -> pd.DataFrame:
    """The display columns of each entity: ``entity_id``, name, company, owner, attributes.

    Only these columns are kept (personal data stays minimal); roles without a
    column are empty. Attribute columns keep their names.
    """
    chosen = display_columns(entities.columns, display)
    out = pd.DataFrame({"entity_id": _values(entities["entity_id"], as_text=True)})
    for role in ROLES:
        column = chosen[role]
        # No column: pd.NA in every row, as ``string`` values turned to_numpy() give
        # (filled by pandas: from an array of a million pd.NA it would infer the type).
        empty = pd.Series(pd.NA, index=out.index, dtype=object)
        out[role] = _values(entities[column], as_text=True) if column else empty
    for column in chosen["attributes"]:
        out[column] = _values(entities[column], as_text=False)
    ids = out["entity_id"]
    if not ids.hasnans and all_different(ids):  # validated entities: no need to look
        return out
    return out.drop_duplicates("entity_id", keep="last").reset_index(drop=True)


def _values(values: pd.Series, as_text: bool) -> Any:
    """``values`` (as ``string`` first when ``as_text``) ``.to_numpy()``, as a new frame reads it.

    An Arrow-backed text column with a value is kept in Arrow: from its Python strings
    pandas infers the same ``str`` column back, at a Python string per row (seconds at
    a million entities).
    """
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow" and values.notna().any():
        return values.astype(_STR).array
    return (values.astype("string") if as_text else values).to_numpy()


def attribute_columns(entities: pd.DataFrame) -> list[str]:
    """The attribute columns of a :func:`board_entities` frame."""
    return [c for c in entities.columns if c not in ("entity_id", *ROLES)]


def clean(value: Any) -> Any:
    """A JSON-ready scalar: missing values become ``None``, timestamps ISO text."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, pd.Timestamp | date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return clean(value.item())
    return value


def _rounded(value: Any, digits: int = 4) -> float | None:
    cleaned = clean(value)
    return None if cleaned is None else round(float(cleaned), digits)


def score_breakdown(reasons_text: Any) -> tuple[int | None, int | None]:
    """``(base, other factors)`` in score points from ``reasons_text``, or ``None``s."""
    found = _BREAKDOWN.search(reasons_text) if isinstance(reasons_text, str) else None
    return (int(found.group(1)), int(found.group(2))) if found else (None, None)


def _reasons(raw: Any) -> list[dict[str, Any]]:
    """Parsed reasons with the points prefix taken off the text (points show apart)."""
    reasons = parse_reasons(raw)
    for reason in reasons:
        reason["text"] = _POINTS_PREFIX.sub("", reason["text"])
    return list(reasons)  # type: ignore[arg-type]


def lead_row(record: Mapping[str, Any], attributes: list[str]) -> dict[str, Any]:
    """One lead as the board page reads it, from a score row joined to its display columns.

    Args:
        record: Score table columns (``entity_id``, ``score``, ``reasons_up``...) and
            the :func:`board_entities` columns.
        attributes: The attribute columns shown as fit.
    """
    score = clean(record.get("score"))
    delta = clean(record.get("score_delta"))
    entity_id = clean(record.get("entity_id"))
    base, other = score_breakdown(record.get("reasons_text"))
    return {
        "id": entity_id,
        "crm_id": clean(record.get("crm_id")),
        "name": clean(record.get("name")) or clean(record.get("company")) or entity_id,
        "company": clean(record.get("company")),
        "kind": clean(record.get("kind")),
        "score": int(score) if score is not None else None,
        "band": clean(record.get("band")),
        "previous_band": clean(record.get("previous_band")),
        "delta": int(round(delta)) if delta is not None else None,
        "conversion": _rounded(record.get("conversion_probability")),
        "churn": _rounded(record.get("churn_probability")),
        "rule_score": clean(record.get("rule_score")),
        "rule_band": clean(record.get("rule_band")),
        "source": clean(record.get("score_source")),
        "base": base,
        "other": other,
        "fit": [[c.replace("_", " "), clean(record.get(c))] for c in attributes],
        "owner": clean(record.get("owner")) or "",
        "up": _reasons(record.get("reasons_up")),
        "down": _reasons(record.get("reasons_down")),
    }
