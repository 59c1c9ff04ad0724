"""Every reason text people read, and the one writer and parser of the reasons JSON.

* Sentences: each feature's description rendered with the entity's own value.
  Rendering is the slow part of reason codes for millions of rows, so every distinct
  value is rendered once and impacts are formatted through a lookup table.
* The ``reasons_up`` / ``reasons_down`` columns: a JSON list per entity of
  ``{"concept", "group", "text", "impact"}`` objects, written by
  :func:`reason_lists` and read back by :func:`parse_reasons` (lead board, CRM).
* ``reasons_text`` (:func:`reasons_text`) and the short CRM field
  (:func:`crm_reason_text`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from features.spec import FeatureDef
from features.wording import capitalised, humanised, looks_like_an_id
from models.concepts import ConceptMap
from models.rulefile import Signal
from models.text_arrays import TextArray, arrow_text, as_text, concat, impact_text, joined, pick

if TYPE_CHECKING:
    from pandas.api.extensions import ExtensionArray

log = logging.getLogger(__name__)

#: The unit every impact is stated in.
IMPACT_UNIT = "points of the 0-100 score"
#: Salesforce text fields hold 255 characters.
CRM_TEXT_LIMIT = 255
#: Spreadsheet apps run cells starting with these as formulas.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_EMPTY_NOTE = re.compile(r"\s*\(empty:\s*([^)]*)\)")
#: Closing part of one reason's JSON object.
_JSON_TAIL = '", "impact": {:d}}}'


def _decimals(description: str) -> int | None:
    """Decimals the description shows of ``{value}`` (``.0f`` -> 0, ``.1%`` -> 3)."""
    for _, name, spec, _ in string.Formatter().parse(description):
        if name == "value" and spec:
            match = re.search(r"\.(\d+)([f%])", spec)
            if match:
                return int(match.group(1)) + (2 if match.group(2) == "%" else 0)
    return None


#: A category with more levels than this is described as a group, never by its value
#: (ISO 3166 lists 249 countries: a country column is still shown as it is).
MANY_LEVELS = 250


def sentence(
    definition: FeatureDef,
    value: object,
    levels: frozenset[str] | None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """The feature's description with ``value``, in plain words.

    * A missing value reads as the description's ``(empty: ...)`` note: a note
      starting with a capital is the whole sentence ("No NPS answer yet"), otherwise
      it follows the concept ("Logins: never").
    * A category value is looked up in ``labels`` (``reasons.lookups``); without a
      label, an identifier-like value (:func:`features.wording.looks_like_an_id`) or
      any value of a category with more than :data:`MANY_LEVELS` levels is described
      as a group ("Campaign: one of 312 values"), and other values are humanised
      (``c_level`` -> ``C-level``).
    * A value the model did not see in training says so.
    """
    missing = value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
    if missing:
        note = _EMPTY_NOTE.search(definition.description)
        words = note.group(1) if note else "no value"
        return words if words[:1].isupper() else f"{capitalised(definition.concept)}: {words}"
    unseen = levels is not None and str(value) not in levels
    if labels and str(value) in labels:
        value = labels[str(value)]
    elif definition.dtype == "category" or levels is not None:
        grouped = _group(definition, value, levels, unseen)
        if grouped is not None:
            return grouped
        value = humanised(str(value))
    text = _EMPTY_NOTE.sub("", definition.describe(value))
    if unseen:
        text += " (new value, scored as unknown)"
    return text


def _group(
    definition: FeatureDef, value: object, levels: frozenset[str] | None, unseen: bool
) -> str | None:
    """A category value described as its group, or ``None`` to show the value itself."""
    many = levels is not None and len(levels) > MANY_LEVELS
    if not many and not looks_like_an_id(value):
        return None
    label = capitalised(definition.concept)
    if unseen:
        return f"{label}: a value new since training, scored as unknown"
    return f"{label}: one of {len(levels)} values" if levels else f"{label}: one of many values"


def entity_values(
    features: pd.DataFrame,
    concepts: ConceptMap,
    rows: np.ndarray | None = None,
    numbers: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Per feature, the own values of ``features``' ``rows`` (default: all), as shown.

    Floats are rounded as the sentence shows them. ``numbers``: those rows' booster
    input (:meth:`models.model.ModelInput.rows`, exact), which holds every numeric
    feature's values: they are read from it, and only the category columns are taken
    from ``features`` (taking every column of a million-row table cost 0.1 s per 50,000
    rows).
    """
    category = [name in concepts.categorical_levels or definition.dtype == "category"
                for name, definition in zip(concepts.feature_names, concepts.definitions,
                                            strict=True)]  # fmt: skip
    block = features
    if numbers is not None:
        taken = [n for n, c in zip(concepts.feature_names, category, strict=True) if c]
        block = features[[n for n in taken if n in features]]
    if rows is not None:
        block = block.iloc[rows]
    values = []
    for j, (name, definition) in enumerate(
        zip(concepts.feature_names, concepts.definitions, strict=True)
    ):
        if numbers is not None and not category[j]:
            column = numbers[:, j].copy()  # the caller's buffer is reused
        elif name not in block:
            values.append(np.full(len(block), np.nan))
            continue
        elif category[j]:
            values.append(block[name].to_numpy(dtype=object))
            continue
        else:
            column = pd.to_numeric(block[name], errors="coerce").to_numpy(dtype="float64")
        decimals = _decimals(definition.description)
        # Rounding first lets equal-looking values share one rendered sentence.
        values.append(column if decimals is None else np.round(column, decimals))
    return values


def sentences(
    rows: np.ndarray, features: np.ndarray, values: list[np.ndarray], concepts: ConceptMap
) -> tuple[np.ndarray, list[str]]:
    """The sentence of each (row, feature) pair, each distinct value rendered once.

    Args:
        rows: Row of each pair.
        features: Feature index of each pair.
        values: Per feature, the rows' own values (see :func:`entity_values`).
        concepts: The model's concept map.

    Returns:
        ``(codes, texts)``: per pair the index of its sentence in ``texts``.
    """
    codes = np.empty(len(rows), dtype=np.int64)
    texts: list[str] = []
    for feature in np.unique(features):
        chosen = np.flatnonzero(features == feature)
        found, uniques = pd.factorize(values[feature][rows[chosen]], use_na_sentinel=True)
        name = concepts.feature_names[feature]
        definition = concepts.definitions[feature]
        levels = concepts.categorical_levels.get(name)
        labels = concepts.value_labels.get(name)
        # Code -1 (missing) picks the last entry, the sentence for a missing value.
        codes[chosen] = len(texts) + np.where(found < 0, len(uniques), found)
        texts += [sentence(definition, u, levels, labels) for u in [*uniques, None]]
    return codes, texts


def reason_lists(
    impact: np.ndarray,
    valid: np.ndarray,
    picked: np.ndarray,
    codes: np.ndarray,
    texts: list[str],
    concepts: ConceptMap,
) -> tuple[np.ndarray, np.ndarray]:
    """One direction's reasons per row: the JSON list and the plain-text line.

    Args:
        impact: ``(rows, k)`` whole points of the picked concepts.
        valid: ``(rows, k)`` which of them are shown (a prefix of each row).
        picked: ``(rows, k)`` concept index of each reason.
        codes: ``(rows, k)`` index of each reason's sentence in ``texts``.
        texts: The sentences (see :func:`sentences`).
        concepts: The model's concept map.

    Returns:
        ``(json, line)`` pandas ``str`` arrays: the ``reasons_up``/``reasons_down`` JSON text
        (parsed by :func:`parse_reasons`) and ``[group] +12 pts: sentence; ...``.
    """
    # Per-concept fixed parts of each reason, built once (string work dominates otherwise).
    json_head = [
        f'{{"concept": {json.dumps(c)}, "group": {json.dumps(g)}, "text": "'
        for c, g in zip(concepts.concepts, concepts.groups, strict=True)
    ]
    group_tag = [f"[{g}] " for g in concepts.groups]
    r, j = np.nonzero(valid)
    c, code, points = picked[r, j], codes[r, j], impact[r, j]
    prefix = impact_text(points, "{:+d} pts: ")
    escaped = pick([json.dumps(t)[1:-1] for t in [*texts, ""]], code)
    items = concat(pick(json_head, c), prefix, escaped, impact_text(points, _JSON_TAIL))
    listed = concat("[", joined(items, r, j, valid, ", "), "]")
    line = joined(concat(pick(group_tag, c), prefix, pick([*texts, ""], code)), r, j, valid, "; ")
    return as_text(listed), as_text(line)


def reasons_text(
    up: TextArray, down: TextArray, base: int | np.ndarray, other: np.ndarray
) -> ExtensionArray:
    """``reasons_text``: ``Up: ... Down: ... (points of the 0-100 score: base, other)``.

    Returns a pandas ``str`` array (Arrow text).

    Args:
        up: Plain lines of the raising reasons (:func:`reason_lists`).
        down: Plain lines of the lowering reasons.
        base: The base score, for all rows or per row (reasons every entity shares
            are part of it, see :mod:`models.explain`).
        other: Per row, the points of the factors not shown.
    """
    base = np.broadcast_to(np.asarray(base, dtype=np.int64), np.shape(other))
    tail = concat(
        impact_text(base, f"({IMPACT_UNIT}: base {{:d}}, other factors "),
        impact_text(other, "{:+d})"),
    )
    up, down = arrow_text(up), arrow_text(down)
    up = pc.if_else(pc.not_equal(up, ""), concat("Up: ", up, ". "), "")
    down = pc.if_else(pc.not_equal(down, ""), concat("Down: ", down, ". "), "")
    return as_text(concat(up, down, tail))


def signal_sentence(signal: Signal, units: float) -> str:
    """What a rule signal counted for one entity, e.g. ``Page views: 12 page views``.

    Args:
        signal: The rule file's signal.
        units: Its units for the entity (a count for ``per_unit``, 1 when a flag fired).
    """
    if signal.kind != "per_unit":
        return signal.label
    count = f"{units:g}"
    what = signal.unit_label or "unit"
    if units == 1:
        return f"{signal.label}: 1 {what}"
    if any(ch.isdigit() for ch in what):
        return f"{signal.label}: {count} x {what}"
    return f"{signal.label}: {count} {what if what.endswith('s') else what + 's'}"


def listed_reasons(
    impact: np.ndarray, valid: np.ndarray, concepts: np.ndarray, texts: np.ndarray
) -> tuple[ExtensionArray, ExtensionArray]:
    """Reasons given as text per (row, rank): the JSON list and the plain-text line.

    The same forms as :func:`reason_lists`, for reasons that are not feature
    sentences (the rule score's signals), all in the ``engagement`` group, as pandas
    ``str`` arrays.

    Args:
        impact: ``(rows, k)`` whole points of the 0-100 score.
        valid: ``(rows, k)`` which entries are shown.
        concepts: ``(rows, k)`` concept names.
        texts: ``(rows, k)`` sentences.
    """
    r, j = np.nonzero(valid)
    codes, uniques = pd.factorize(pd.Series(concepts[r, j], dtype=object))
    heads = [f'{{"concept": {json.dumps(c)}, "group": "engagement", "text": "' for c in uniques]
    text_codes, text_uniques = pd.factorize(pd.Series(texts[r, j], dtype=object))
    escaped = pick([json.dumps(t)[1:-1] for t in text_uniques], text_codes)
    points = impact[r, j]
    prefix = impact_text(points, "{:+d} pts: ")
    items = concat(pick(heads, codes), prefix, escaped, impact_text(points, _JSON_TAIL))
    listed = concat("[", joined(items, r, j, valid, ", "), "]")
    plain = concat("[engagement] ", prefix, pick(text_uniques, text_codes))
    return as_text(listed), as_text(joined(plain, r, j, valid, "; "))


class Reason(TypedDict):
    """One reason as :func:`parse_reasons` reads it.

    Attributes:
        concept: The concept (e.g. ``pricing page visits``).
        group: ``fit`` or ``engagement``.
        text: The sentence shown, ``+12 pts: ...``.
        impact: Signed score points (one decimal), ``None`` when missing.
    """

    concept: str
    group: str
    text: str
    impact: float | None


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def parse_reasons(raw: object) -> list[Reason]:
    """The reason list from its JSON text (see :func:`reason_lists`).

    Empty when missing or unreadable; impacts are rounded to one decimal.
    """
    if _missing(raw):
        return []
    try:
        items = json.loads(raw) if isinstance(raw, str) else list(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        log.warning("Unreadable reasons value %r; shown as none.", str(raw)[:80])
        return []
    reasons: list[Reason] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        impact = item.get("impact")
        reasons.append(
            {
                "concept": str(item.get("concept") or ""),
                "group": "fit" if item.get("group") == "fit" else "engagement",
                "text": str(item.get("text") or item.get("concept") or ""),
                "impact": None if _missing(impact) else round(float(impact), 1),
            }
        )
    return reasons


#: A JSON string's body as ``json.loads`` accepts it (no raw control characters).
_JSON_TEXT = r'(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*'
#: One reason object exactly as :func:`reason_lists` writes it: concept and impact kept.
_REASON_ITEM = re.compile(
    f'\\{{"concept": "({_JSON_TEXT})", "group": "{_JSON_TEXT}", "text": "{_JSON_TEXT}", '
    '"impact": (-?(?:0|[1-9][0-9]*))\\}'
)


def _written_reasons(raw: str) -> list[tuple[str, float]] | None:
    """``(concept, impact)`` of a list exactly as :func:`reason_lists` writes it, else None.

    The same values :func:`parse_reasons` reads from such text, without a JSON parse.
    """
    found = list(_REASON_ITEM.finditer(raw))
    if "[" + ", ".join(m.group(0) for m in found) + "]" != raw:
        return None
    return [
        (json.loads(f'"{concept}"') if "\\" in concept else concept, round(float(int(i)), 1))
        for concept, i in (m.groups() for m in found)
    ]


def crm_items(raw: object) -> tuple[str, ...]:
    """One direction's CRM items (``reasons_up``/``down``), strongest first: ``("demos +12",)``."""
    reasons = _written_reasons(raw) if isinstance(raw, str) else None
    if reasons is None:
        reasons = [(r["concept"], r["impact"]) for r in parse_reasons(raw)]
    reasons.sort(key=lambda r: -abs(r[1] or 0.0))
    return tuple(c + (f" {i:+.0f}" if i is not None else "") for c, i in reasons if c)


def crm_line(up: tuple[str, ...], down: tuple[str, ...], limit: int = CRM_TEXT_LIMIT) -> str:
    """The CRM text of both directions' items (:func:`crm_items`), cut at a comma to fit."""
    text = ""
    for label, items in (("Up", up), ("Down", down)):
        kept: list[str] = []
        for item in items:
            candidate = text + ("" if not text else " ") + f"{label}: " + ", ".join([*kept, item])
            if len(candidate) + 1 > limit:
                break
            kept.append(item)
        if kept:
            text = (text + " " if text else "") + f"{label}: " + ", ".join(kept) + "."
    if text.startswith(_FORMULA_PREFIXES):
        text = "'" + text
    return text[:limit]


def crm_reason_text(reasons_up: object, reasons_down: object, limit: int = CRM_TEXT_LIMIT) -> str:
    """Short plain text for the CRM, e.g. ``Up: demo requests +12, webinars +5. Down: ...``.

    Concepts keep it under the CRM's text limit; strongest first, cut at a comma.
    """
    return crm_line(crm_items(reasons_up), crm_items(reasons_down), limit)
