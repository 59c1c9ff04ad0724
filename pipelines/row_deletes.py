"""Rows to delete from the score tables, for DuckDB and for SQLAlchemy databases.

A :class:`RowDelete` holds one condition in both forms (:func:`rows_matching`: ids that
withdrew consent or asked to be forgotten; :func:`rows_before`: rows past retention);
:mod:`pipelines.database_writes` runs them in the transaction of a write. Values are
bound as parameters: no SQL text is built from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from features.timeutil import as_utc
from pipelines.databases import duckdb_table_exists, parse_sql_url, quote


@dataclass(frozen=True)
class RowDelete:
    """Rows to delete from one table, as DuckDB SQL and as SQLAlchemy clauses.

    Build one with :func:`rows_matching` or :func:`rows_before`.

    Attributes:
        table: Table name, ``schema.table`` allowed.
        duckdb_condition: The condition as DuckDB SQL, with ``?`` parameters.
        duckdb_parameters: Its parameters.
        conditions: For SQLAlchemy databases, the WHERE clauses (one statement each)
            given the reflected table and the dialect name.
        description: What is deleted, for the log.
    """

    table: str
    duckdb_condition: str
    duckdb_parameters: list[Any]
    conditions: Callable[[sa.Table, str], list[Any]]
    description: str


def rows_matching(table: str, where_column: str, values: Sequence[object]) -> RowDelete:
    """The rows of ``table`` whose ``where_column`` is one of ``values``.

    Args:
        table: Table name, ``schema.table`` allowed.
        where_column: Column to match.
        values: Values to delete (e.g. the ids of people who withdrew consent).
    """
    values = list(dict.fromkeys(v.item() if hasattr(v, "item") else v for v in values))

    def chunks(table_obj: sa.Table, dialect: str) -> list[Any]:
        column = table_obj.c[where_column]
        # SQLite caps bound parameters.
        return [column.in_(values[start : start + 500]) for start in range(0, len(values), 500)]

    return RowDelete(
        table,
        f"{quote(where_column)} IN (SELECT unnest(?))" if values else "FALSE",
        [values] if values else [],
        chunks,
        f"where {where_column} matched ({len(values)} values)",
    )


def rows_before(table: str, time_column: str, before: pd.Timestamp) -> RowDelete:
    """The rows of ``table`` whose ``time_column`` is strictly before ``before``.

    Args:
        table: Table name, ``schema.table`` allowed.
        time_column: A timestamp column (UTC).
        before: The cutoff (naive values are UTC).
    """
    cutoff = as_utc(before)

    def older(table_obj: sa.Table, dialect: str) -> list[Any]:
        if dialect == "sqlite":
            # pandas writes SQLite timestamps as text: compare in the same format.
            bound: object = cutoff.tz_convert(None).strftime("%Y-%m-%d %H:%M:%S.%f")
        else:
            bound = cutoff.to_pydatetime()
        return [table_obj.c[time_column] < bound]

    return RowDelete(
        table,
        f"{quote(time_column)} < ?",
        [cutoff.to_pydatetime()],
        older,
        f"with {time_column} before {cutoff.isoformat()}",
    )


def duckdb_delete(connection: Any, url: str, delete: RowDelete) -> int:
    """``DELETE ... WHERE`` in the caller's transaction; 0 when the table is missing."""
    target = parse_sql_url(url, delete.table, override=True)
    if not duckdb_table_exists(connection, target):
        return 0
    rows = connection.execute(
        f"DELETE FROM {target.qualified} WHERE {delete.duckdb_condition}",
        delete.duckdb_parameters,
    ).fetchall()
    return int(rows[0][0]) if rows else 0


def sqlalchemy_delete(connection: sa.Connection, dialect: str, url: str, delete: RowDelete) -> int:
    """``DELETE ... WHERE`` in the caller's transaction; 0 when the table is missing."""
    schema, name = parse_sql_url(url, delete.table, override=True).schema_and_name
    if not sa.inspect(connection).has_table(name, schema=schema):
        return 0
    table_obj = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=connection)
    return sum(
        connection.execute(table_obj.delete().where(condition)).rowcount
        for condition in delete.conditions(table_obj, dialect)
    )
