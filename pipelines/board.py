"""The lead board: one self-contained HTML page per run for sales.

The page carries its data as JSON in a ``<script type="application/json">`` block
and renders the table in the browser with ``textContent`` only, so nothing from the
data can become markup. Everything else goes through Jinja2 with autoescape on. No
CDN, no network: the file opens from a disk, a share or an email attachment.

Above ``board.embed_limit`` scored leads the page carries no rows and says how to
open the served board instead (``leadscore board``, :mod:`pipelines.board_server`),
which renders the same template and pages through the score table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from markupsafe import Markup

from features.arrow_text import same_texts
from pipelines.board_data import ENTITIES_FILE, attribute_columns, board_entities, lead_row
from pipelines.board_settings import BoardDisplay, BoardSettings

log = logging.getLogger(__name__)

#: Most leads the static page carries by default (``board.embed_limit``).
EMBED_LIMIT = BoardSettings().embed_limit
BAND_ORDER = ("high", "medium", "at-risk")
NO_CONSENT_STATUS = "not scored: no consent"
DEFAULT_BAND_RULE = (
    "Bands come from calibrated probabilities: high = likely to convert within the "
    "conversion horizon, at-risk = likely to churn, medium = everyone else scored."
)
#: Characters that could end a ``<script>`` block or start an HTML entity.
_JSON_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


@dataclass(frozen=True)
class BoardPaths:
    """Where a run's board went."""

    page: Path
    index: Path | None


def is_no_consent(status: pd.Series) -> pd.Series:
    """True where a status says the entity withheld or withdrew consent."""
    return status.astype("string").str.startswith(NO_CONSENT_STATUS).fillna(False).astype(bool)


def embed_json(data: Any) -> Markup:
    """JSON safe to place inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` are written as JSON unicode escapes so a value such as
    ``</script><script>...`` cannot close the block; ``json.loads`` and
    ``JSON.parse`` read them back unchanged.
    """
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    for char, escaped in _JSON_HTML_ESCAPES.items():
        text = text.replace(char, escaped)
    return Markup(text)


def is_scored(status: pd.Series) -> np.ndarray:
    """Which rows the board lists: status ``scored`` (no consent is never shown)."""
    return status.astype("string").eq("scored").fillna(False).to_numpy(bool)


def scored_only(scored: pd.DataFrame) -> pd.DataFrame:
    """The rows the board lists (:func:`is_scored`)."""
    return scored[is_scored(scored["status"])]


def shown_entities(scored: pd.DataFrame, entities: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``entities`` (display columns) for the entities the board lists."""
    listed = np.asarray(is_scored(scored["status"]), dtype=bool)
    ids = entities["entity_id"].astype(str)
    if same_texts(ids, scored["entity_id"].astype(str)):  # a row each, in their order
        return entities[listed]
    shown = scored.loc[listed, "entity_id"].astype(str)
    # Arrow's hash lookup: pandas' isin takes seconds for a million string ids.
    found = pc.is_in(pa.array(ids, pa.string()), value_set=pa.array(shown, pa.string()))
    return entities[found.fill_null(False).to_numpy(zero_copy_only=False)]


def board_rows(scored: pd.DataFrame, entities: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One JSON-ready dict per scored entity (:func:`pipelines.board_data.lead_row`).

    Args:
        scored: The scored frame; not-scored entities are left out (entities without
            consent are counted in the header instead).
        entities: The display columns (:func:`pipelines.board_data.board_entities`);
            by default the ones the scored frame itself carries.
    """
    shown = scored_only(scored)
    if entities is None:
        entities = board_entities(shown, BoardDisplay())
    own = [c for c in shown.columns if c == "entity_id" or c not in entities.columns]
    joined = shown[own].assign(entity_id=shown["entity_id"].astype("string"))
    joined = joined.merge(entities, on="entity_id", how="left")
    attributes = attribute_columns(entities)
    return [lead_row(record, attributes) for record in joined.to_dict("records")]


def describe_models(model_versions: list[str]) -> str:
    """The model versions behind the scores as a phrase, e.g. ``churn v2, conversion v3``.

    Args:
        model_versions: Distinct ``model_versions`` values of the scored rows, each the
            JSON of ``{target: version}`` (``rules`` for a target without a champion).

    Returns:
        One entry per target (several versions joined by "or"), or a note that only
        rule scores were used; a value that is not such JSON is shown as it is.
    """
    versions: dict[str, set[str]] = {}
    unreadable: list[str] = []
    for raw in model_versions:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            unreadable.append(str(raw))
            continue
        for target, version in parsed.items():
            versions.setdefault(str(target), set()).add(str(version))
    parts = [
        f"{target} "
        + " or ".join("rule score (no model)" if v == "rules" else f"v{v}" for v in sorted(found))
        for target, found in sorted(versions.items())
    ]
    if not parts and not unreadable:
        return "none (rule scores only)"
    return ", ".join(parts + unreadable)


def board_header(scored: pd.DataFrame, as_of: date, band_rule: str | None) -> dict[str, Any]:
    """Numbers and text for the page header: counts, not-scored reasons, models, rule."""
    # Counted first, worded after: a few distinct values, not a million strings.
    statuses = scored["status"].value_counts(dropna=False)
    statuses.index = pd.Index(statuses.index, dtype="string").fillna("not scored: unknown")
    statuses = statuses.groupby(level=0, sort=False).sum()
    scored_mask = is_scored(scored["status"])
    bands = scored.loc[scored_mask, "band"].value_counts()
    bands.index = pd.Index(bands.index, dtype="string")
    others = statuses[statuses.index != "scored"]
    wording = others.index.str.removeprefix("not scored:").str.strip()
    not_scored = (
        others.groupby(wording, sort=False).sum().sort_values(ascending=False, kind="stable")
    )
    versions = (
        [str(v) for v in scored.loc[scored_mask, "model_versions"].dropna().unique()]
        if "model_versions" in scored.columns
        else []
    )
    sources = (
        scored.loc[scored_mask, "score_source"].dropna().value_counts()
        if "score_source" in scored.columns
        else pd.Series(dtype="int64")
    )
    sources = sources.groupby(sources.index.astype(str), sort=False).sum().to_dict()
    return {
        "as_of": as_of.isoformat(),
        "scored": int(scored_mask.sum()),
        "total": len(scored),
        "bands": [(band, int(bands.get(band, 0))) for band in BAND_ORDER],
        "not_scored": [(str(why), int(n)) for why, n in not_scored.items()],
        "models": describe_models(versions),
        "score_sources": {str(k): int(v) for k, v in sources.items()},
        "band_rule": band_rule or DEFAULT_BAND_RULE,
    }


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the board templates (autoescape on)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_board(
    scored: pd.DataFrame,
    as_of: date,
    band_rule: str | None = None,
    *,
    entities: pd.DataFrame | None = None,
    embed_limit: int = EMBED_LIMIT,
) -> str:
    """The lead board of one run as a self-contained HTML document.

    Args:
        scored: The scored frame (one row per entity, see ``models.scoring``).
        as_of: The run date shown in the title.
        band_rule: One sentence on how bands are assigned
            (``models.bands.BandRule.describe``); defaults to a generic description.
        entities: The display columns (:func:`pipelines.board_data.board_entities`).
        embed_limit: Most leads the page carries; above it, it carries none and says
            how to open the served board.

    Returns:
        The HTML text.
    """
    missing = {"entity_id", "status"} - set(scored.columns)
    if missing:
        raise ValueError(
            f"The scored frame has no {', '.join(sorted(missing))} column; the lead board "
            f"needs it (columns present: {', '.join(map(str, scored.columns[:12]))})."
        )
    header = board_header(scored, as_of, band_rule)
    served = header["scored"] > embed_limit
    rows = [] if served else board_rows(scored, entities)
    return (
        environment()
        .get_template("board.html.j2")
        .render(header=header, data_json=embed_json(rows), mode="static", served=served,
                embed_limit=embed_limit)
    )  # fmt: skip


def write_board(
    scored: pd.DataFrame,
    board_dir: Path,
    as_of: date,
    band_rule: str | None = None,
    html: str | None = None,
    entities: pd.DataFrame | None = None,
    shown: pd.DataFrame | None = None,
) -> BoardPaths:
    """Write ``YYYY-MM-DD.html`` and, when this is the latest run, ``index.html``.

    Re-running an older date rewrites that date's page but leaves ``index.html``
    pointing at the newest run. Both writes are atomic. ``html`` is the page when
    already rendered by :func:`render_board`. ``entities`` (the display columns of
    the scored leads) go to ``entities.parquet`` with ``index.html``, for
    ``leadscore board``; ``shown`` is their rows when already picked by
    :func:`shown_entities`.
    """
    from pipelines.atomic_files import write_parquet_atomic, write_text_atomic

    board_dir = Path(board_dir)
    board_dir.mkdir(parents=True, exist_ok=True)
    if html is None:
        html = render_board(scored, as_of, band_rule, entities=entities)
    page = board_dir / f"{as_of.isoformat()}.html"
    write_text_atomic(html, page)
    newer = [p for p in board_dir.glob("????-??-??.html") if p.stem > as_of.isoformat()]
    index = None
    if not newer:
        if entities is not None:
            kept = shown_entities(scored, entities) if shown is None else shown
            write_parquet_atomic(kept.reset_index(drop=True), board_dir / ENTITIES_FILE)
        index = board_dir / "index.html"
        write_text_atomic(html, index)
    else:
        log.info("Kept index.html on %s: it is newer than %s.", max(newer).stem, as_of)
    log.info("Lead board written to %s (%d leads).", page, (scored["status"] == "scored").sum())
    return BoardPaths(page=page, index=index)
