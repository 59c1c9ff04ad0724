"""Score tables for board tests, generated straight into DuckDB (no pipeline run).

The rows have the columns and shapes a nightly run writes to ``lead_scores``
(reasons JSON with ``+N pts:`` texts, the base/other-factors tail of
``reasons_text``; base, reasons and other factors add up to the score), and
``board/entities.parquet`` the display columns.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq

OWNERS = 40
AS_OF = "2025-06-01"

_UP = (
    ("pricing page visits", "engagement", "{n} pricing page visits in the last 7 days"),
    ("demo requests", "engagement", "{n} demo requests in the last 30 days"),
    ("industry", "fit", "Industry: software"),
)
_DOWN = (
    ("unsubscribes", "engagement", "Unsubscribed from {n}.0% of delivered emails in 90 days"),
    ("recent activity", "engagement", "No activity of any kind for {n} days"),
)


def _reason_sql(pool: tuple[tuple[str, str, str], ...], sign: str) -> str:
    """SQL building a reasons JSON list of two reasons from ``pool`` per row."""
    items = []
    for k, (concept, group, text) in enumerate(pool[:2]):
        impact = f"{sign}(1 + (i * {7 + 6 * k}) % 19)"
        sentence = text.replace("{n}", "' || ((i * 3 + " + str(k) + ") % 12 + 1)::VARCHAR || '")
        items.append(
            f"""'{{"concept": "{concept}", "group": "{group}", "text": "' || """
            f"""printf('%+d', {impact}) || ' pts: {sentence}", "impact": ' """
            f"""|| ({impact})::VARCHAR || '}}'"""
        )
    return "'[' || " + " || ', ' || ".join(items) + " || ']'"


def write_score_table(database: Path, rows: int) -> None:
    """``lead_scores`` with ``rows`` scored leads in the DuckDB file ``database``."""
    up, down = _reason_sql(_UP, ""), _reason_sql(_DOWN, "-")
    with duckdb.connect(str(database)) as db:
        db.execute("SET enable_progress_bar = false")
        db.execute(
            f"""
            CREATE OR REPLACE TABLE lead_scores AS
            WITH base AS (
              SELECT i, ((hash(i) % 1000000) / 1000000.0) AS p FROM range({int(rows)}) t(i)
            )
            SELECT
              'e' || lpad(i::VARCHAR, 7, '0') AS entity_id,
              CASE WHEN i % 5 = 0 THEN NULL ELSE '00Q' || lpad(i::VARCHAR, 12, '0') END AS crm_id,
              CASE WHEN i % 10 < 7 THEN 'lead' ELSE 'customer' END AS kind,
              'scored' AS status,
              p AS conversion_probability,
              ((hash(i * 7) % 1000) / 2000.0) AS churn_probability,
              round(p * 100)::BIGINT AS score,
              CASE WHEN p >= 0.9 THEN 'high' WHEN i % 10 >= 7 AND p < 0.1 THEN 'at-risk'
                   ELSE 'medium' END AS band,
              (i % 150)::DOUBLE AS rule_score,
              'medium' AS rule_band,
              'model' AS score_source,
              '{{"churn": "2", "conversion": "3"}}' AS model_versions,
              TIMESTAMPTZ '{AS_OF} 02:00:00+00' AS scored_at,
              TIMESTAMPTZ '{AS_OF} 00:00:00+00' AS as_of,
              CASE WHEN i % 4 = 0 THEN NULL WHEN i % 3 = 0 THEN 'high' ELSE 'medium' END
                AS previous_band,
              CASE WHEN i % 4 = 0 THEN NULL ELSE ((i % 31) - 15)::DOUBLE END AS score_delta,
              {up} AS reasons_up,
              {down} AS reasons_down,
              'Up: ... (points of the 0-100 score: base 20, other factors '
                || printf('%+d', round(p * 100)::BIGINT - 20) || ')' AS reasons_text,
              TIMESTAMPTZ '{AS_OF} 00:00:00+00' AS reasons_computed_at
            FROM base
            """
        )


def write_board_entities(board_dir: Path, rows: int) -> Path:
    """``board_dir/entities.parquet``: name, company, owner, industry, employees."""
    board_dir.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as db:
        table = db.sql(
            f"""
            SELECT 'e' || lpad(i::VARCHAR, 7, '0') AS entity_id,
                   'Lead ' || i::VARCHAR AS name,
                   'Company ' || (i % 5000)::VARCHAR AS company,
                   'owner' || (i % {OWNERS})::VARCHAR || '@example.com' AS owner,
                   ['software', 'retail', 'finance', 'health'][i % 4 + 1] AS industry,
                   (10 + i % 990)::BIGINT AS employees
            FROM range({int(rows)}) t(i)
            """
        ).to_arrow_table()
    path = board_dir / "entities.parquet"
    pq.write_table(table, path)
    return path
