"""A user's export mapped to the contract inside the engine: the twin of :mod:`features.mapping`.

The same :class:`~features.mapping.InputMapping` (column names, constant columns,
value renames) applied to an Ibis table instead of a pandas frame, with the same
checks and sentences: renames are a projection, constants literal columns, the value
map one ``CASE`` per mapped column and a filter for values mapped to null. Text
timestamps are parsed by the contract checks (:mod:`features.event_checks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import ibis.expr.types as ir

from features.column_checks import ContractError
from features.mapping import InputMapping, column_feeds


def map_table(
    table: ir.Table,
    mapping: InputMapping | None,
    name: str,
    source: str,
    hidden: Sequence[str] = (),
) -> ir.Table:
    """Columns renamed, constants added and values mapped (:func:`features.mapping.apply_mapping`).

    Args:
        table: The export as the engine reads it.
        mapping: The user's column names, constants and values.
        name: Which input (``events``).
        source: Where it came from, named in error messages.
        hidden: The reader's own columns (file, row): never named as columns present.

    Raises:
        ContractError: A mapped column is missing or collides, a constant names a
            column the input has, or the value map names a column it lacks.
    """
    mapping = mapping or InputMapping()
    columns = [c for c in table.columns if c not in hidden]
    feeds = column_feeds(columns, mapping.columns, name, source)
    if feeds:
        fed = set(feeds.values())
        kept = [c for c in columns if c not in fed]
        table = table.select(*kept, **{ours: table[user] for ours, user in feeds.items()})
    present = [column for column in mapping.constants if column in table.columns]
    if present:
        raise ContractError(name, source, [
            f"sources.constant sets column '{column}', which the input already has; "
            "remove the constant or the column" for column in present
        ])  # fmt: skip
    if mapping.constants:
        table = table.mutate(
            **{column: ibis.literal(str(value)) for column, value in mapping.constants.items()}
        )
    return _map_values(table, mapping, name, source, hidden)


def _map_values(
    table: ir.Table, mapping: InputMapping, name: str, source: str, hidden: Sequence[str]
) -> ir.Table:
    missing = [column for column in mapping.values if column not in table.columns]
    if missing:
        present = ", ".join(repr(str(c)) for c in table.columns if c not in hidden)
        raise ContractError(name, source, [
            f"value_map names column '{column}', which the input does not have after "
            f"column_map; the columns present are {present}" for column in missing
        ])  # fmt: skip
    for column, renames in mapping.values.items():
        text = table[column].cast("string").strip()
        dropped = [user for user, ours in renames.items() if ours is None]
        kept = {user: ours for user, ours in renames.items() if ours is not None}
        if dropped:
            table = table.filter(text.isnull() | ~text.isin(dropped))
            text = table[column].cast("string").strip()
        if kept:
            original = table[column].cast("string")
            table = table.mutate(**{column: text.substitute(kept, else_=original)})
    return table
