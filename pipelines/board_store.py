"""The served lead board's data: a snapshot of the score table, queried a page at a time.

:class:`BoardStore` copies the scored rows of ``lead_scores`` (DuckDB, PostgreSQL or
SQLite), joined to the board's display columns (``board/entities.parquet``), into a
private DuckDB file, so the server never holds the score database open while the
nightly run writes it; the snapshot is rebuilt when the database or the display
columns change. Every filter value from a request is a bound parameter: the SQL
text is built only from constants and the table's own column names.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from pipelines.board import board_header
from pipelines.board_data import ENTITIES_FILE, ROLES, lead_row
from pipelines.databases import SourceNotFoundError, parse_sql_url, quote, sql_read
from pipelines.outputs import SCORES_TABLE
from pipelines.scrubbing import board_band_rule

log = logging.getLogger(__name__)

#: Most rows one page may ask for.
MAX_LIMIT = 500
#: Sort keys a request may name, and the SQL each stands for.
SORTS = {
    "score": "score",
    "name": "lower(coalesce(name, company, entity_id))",
    "band": "band_rank",
    "delta": "score_delta",
    "owner": "lower(owner)",
}
#: Change filters and their conditions.
CHANGES = {
    "band": "previous_band IS NOT NULL AND previous_band <> band",
    "up": "score_delta > 0",
    "down": "score_delta < 0",
    "new": "previous_band IS NULL AND score_delta IS NULL",
}
_SEARCHED = ("haystack", "lower(reasons_up)", "lower(reasons_down)")


@dataclass(frozen=True)
class LeadQuery:
    """One page request: filters, sort (``-score``: descending) and the window."""

    band: str = ""
    owner: str = ""
    kind: str = ""
    change: str = ""
    q: str = ""
    sort: str = "-score"
    offset: int = 0
    limit: int = 100

    @classmethod
    def from_params(cls, params: dict[str, list[str]]) -> LeadQuery:
        """Read a parsed query string (``urllib.parse.parse_qs``).

        Raises:
            ValueError: An unknown parameter, sort key or change filter, or an offset
                or limit that is not a whole number in range.
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"Unknown parameter {unknown[0]!r}; use {', '.join(sorted(known))}.")
        values = {k: v[-1] for k, v in params.items()}
        try:
            offset, limit = int(values.get("offset", 0)), int(values.get("limit", 100))
        except ValueError as exc:
            raise ValueError("offset and limit are whole numbers.") from exc
        if offset < 0 or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"offset is 0 or more and limit between 1 and {MAX_LIMIT}.")
        query = cls(**{**values, "offset": offset, "limit": limit})
        if query.sort.removeprefix("-") not in SORTS:
            raise ValueError(f"Unknown sort {query.sort!r}; use one of {', '.join(SORTS)}.")
        if query.change and query.change not in CHANGES:
            raise ValueError(f"Unknown change {query.change!r}; use one of {', '.join(CHANGES)}.")
        return query

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause (constant text) and its parameters."""
        conditions, params = ["TRUE"], []
        for column in ("band", "owner", "kind"):
            if getattr(self, column):
                conditions.append(f"{column} = ?")
                params.append(getattr(self, column))
        if self.change:
            conditions.append(CHANGES[self.change])
        if self.q.strip():
            pattern = "%" + _like_escaped(self.q.strip().lower()) + "%"
            conditions.append("(" + " OR ".join(f"{s} LIKE ? ESCAPE '\\'" for s in _SEARCHED) + ")")
            params += [pattern] * len(_SEARCHED)
        return " AND ".join(conditions), params

    def order(self) -> str:
        """The ORDER BY clause, from :data:`SORTS` only."""
        direction = "DESC" if self.sort.startswith("-") else "ASC"
        return f"{SORTS[self.sort.removeprefix('-')]} {direction} NULLS LAST, score DESC, entity_id"


def _frame(db: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> pd.DataFrame:
    """A query's rows as a frame."""
    with warnings.catch_warnings():
        # DuckDB 2.0's pandas conversion trips a pandas 3.1 deprecation of its own.
        warnings.filterwarnings("ignore", message="The inplace keyword")
        return db.execute(sql, params).df()


def _like_escaped(text: str) -> str:
    """``text`` with LIKE's wildcards taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class BoardStore:
    """The scored leads of the score table, with their display columns, for the server.

    Args:
        database_url: The score database (``Settings.database_url``).
        board_dir: The run's ``board/`` folder (display columns, band rule).
    """

    def __init__(self, database_url: str, board_dir: Path) -> None:
        self.database_url = database_url
        self.target = parse_sql_url(database_url, SCORES_TABLE, override=True)
        if self.target.duckdb_path is not None and not self.target.duckdb_path.exists():
            raise SourceNotFoundError(
                f"There is no score table at {self.target.duckdb_path} yet: run "
                "`leadscore nightly` with this config first."
            )
        self.board_dir = Path(board_dir)
        self._folder = Path(tempfile.mkdtemp(prefix="leadscore-board-"))
        self._lock = threading.Lock()
        self._db: duckdb.DuckDBPyConnection | None = None
        self._stamp: tuple[float, ...] | None = None
        self.attributes: list[str] = []
        self.header: dict[str, Any] = {}
        self.refresh()

    def close(self) -> None:
        """Drop the snapshot."""
        if self._db is not None:
            self._db.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _sources(self) -> list[Path]:
        paths = [self.board_dir / ENTITIES_FILE, self.board_dir / "index.html"]
        return paths + ([self.target.duckdb_path] if self.target.duckdb_path else [])

    def refresh(self) -> None:
        """Rebuild the snapshot when the score database or the display columns changed."""
        stamp = tuple(p.stat().st_mtime if p.exists() else 0.0 for p in self._sources())
        with self._lock:
            if stamp == self._stamp:
                return
            self._stamp = stamp
            path = self._folder / f"snapshot-{len(list(self._folder.iterdir()))}.duckdb"
            db = duckdb.connect(str(path))
            db.execute("SET TimeZone = 'UTC'")
            self._load(db)
            old, self._db = self._db, db
            if old is not None:
                old.close()

    def _load(self, db: duckdb.DuckDBPyConnection) -> None:
        table = quote(SCORES_TABLE)
        if self.target.duckdb_path is not None:
            db.execute("ATTACH ? AS src (READ_ONLY)", [str(self.target.duckdb_path)])
            db.execute(f"CREATE TEMP VIEW scores AS SELECT * FROM src.{table}")
        else:
            db.register("scores", sql_read(self.database_url, SCORES_TABLE))
        display = self.board_dir / ENTITIES_FILE
        if display.is_file():
            db.execute("CREATE TABLE entities AS SELECT * FROM read_parquet(?)", [str(display)])
        else:
            columns = ", ".join(f"NULL::VARCHAR AS {r}" for r in ROLES)
            db.execute(f"CREATE TABLE entities AS SELECT NULL::VARCHAR AS entity_id, {columns}")
        names = [row[0] for row in db.execute("DESCRIBE entities").fetchall()]
        self.attributes = [c for c in names if c not in ("entity_id", *ROLES)]
        shown = [quote(c) for c in names if c != "entity_id"]
        searched = ["e.name", "e.company", "s.entity_id", "s.crm_id", "e.owner", "s.kind"]
        searched += [f"CAST(e.{c} AS VARCHAR)" for c in map(quote, self.attributes)]
        db.execute(
            "CREATE TABLE leads AS SELECT s.*, "
            + "".join(f"e.{c}, " for c in shown)
            + "CASE s.band WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'at-risk' THEN 1 "
            "ELSE 0 END AS band_rank, "
            f"lower(concat_ws(' ', {', '.join(searched)})) AS haystack "
            "FROM scores s LEFT JOIN entities e ON CAST(s.entity_id AS VARCHAR) = "
            "CAST(e.entity_id AS VARCHAR) WHERE s.status = 'scored'"
        )
        self.header = self._header(db)
        if self.target.duckdb_path is not None:
            db.execute("DROP VIEW scores")
            db.execute("DETACH src")
        else:
            db.unregister("scores")
        log.info("Board snapshot: %d scored leads.", self.header["scored"])

    def _header(self, db: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """:func:`pipelines.board.board_header` from grouped counts of the score table."""
        counts = _frame(
            db,
            "SELECT status, band, model_versions, score_source, max(as_of) AS as_of, "
            "count(*) AS n FROM scores GROUP BY ALL",
            [],
        )
        rows = counts.loc[counts.index.repeat(counts["n"])].drop(columns="n")
        as_of = pd.to_datetime(counts["as_of"], utc=True).max() if len(counts) else None
        known = as_of is not None and not pd.isna(as_of)
        day = as_of.date() if known else pd.Timestamp.now(tz="UTC").date()
        index = self.board_dir / "index.html"
        rule = board_band_rule(index.read_text(encoding="utf-8")) if index.is_file() else None
        return board_header(rows.reset_index(drop=True), day, rule)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        self.refresh()
        assert self._db is not None
        return self._db.cursor()

    def page(self, query: LeadQuery) -> dict[str, Any]:
        """``{"total", "offset", "rows"}``: one page of leads as the board reads them."""
        where, params = query.where()
        cursor = self._cursor()
        try:
            total = cursor.execute(f"SELECT count(*) FROM leads WHERE {where}", params).fetchall()
            frame = _frame(
                cursor,
                f"SELECT * EXCLUDE (haystack, band_rank) FROM leads WHERE {where} "
                f"ORDER BY {query.order()} LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            )
        finally:
            cursor.close()
        records = frame.to_dict("records")
        return {
            "total": int(total[0][0]),
            "offset": query.offset,
            "rows": [lead_row(record, self.attributes) for record in records],
        }

    def options(self) -> dict[str, list[str]]:
        """The owners and kinds to filter by (at most 2,000 owners)."""
        cursor = self._cursor()
        try:
            owners = cursor.execute(
                "SELECT DISTINCT owner FROM leads WHERE owner IS NOT NULL AND owner <> '' "
                "ORDER BY owner LIMIT 2000"
            ).fetchall()
            kinds = cursor.execute(
                "SELECT DISTINCT kind FROM leads WHERE kind IS NOT NULL ORDER BY kind"
            ).fetchall()
        finally:
            cursor.close()
        return {"owners": [r[0] for r in owners], "kinds": [r[0] for r in kinds]}
