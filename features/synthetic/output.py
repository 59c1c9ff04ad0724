"""The folder a synthetic history is written to: its layout, tables and writers.

A generated folder holds ``events/part-*.parquet``, ``entities.parquet``,
``outcomes.parquet``, ``true_probabilities.parquet`` and ``generator.json``.
:class:`OutputWriters` writes them under temporary names and moves them into place
together; :func:`source_paths` and :func:`true_weights` read the layout back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.synthetic.expand import EVENTS_SCHEMA
from features.synthetic.simulate import DAY_US, NEVER, ChunkHistory

#: Where a generated folder keeps the three inputs of the data contract.
EVENTS_DIR, ENTITIES_FILE, OUTCOMES_FILE = "events", "entities.parquet", "outcomes.parquet"
#: ... the true probabilities at each draw date, and the generator's description.
TRUTH_FILE, GENERATOR_FILE = "true_probabilities.parquet", "generator.json"
OUTCOMES_SCHEMA = pa.schema(
    [
        ("entity_id", pa.string()),
        ("outcome", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
    ]
)
TRUTH_SCHEMA = pa.schema(
    [
        ("entity_id", pa.string()),
        ("as_of", pa.timestamp("us", tz="UTC")),
        ("target", pa.string()),
        ("p_true", pa.float64()),
    ]
)


def outcome_rows(history: ChunkHistory, ids: np.ndarray, start_us: int) -> pa.Table:
    """The outcomes of a simulated chunk as rows of ``outcomes.parquet``.

    Args:
        history: The chunk's simulated history.
        ids: Entity id of each of its entities.
        start_us: Start of the history, in microseconds since the epoch.

    Returns:
        ``converted`` rows, then ``churned`` rows.
    """
    parts = []
    for outcome, times in (("converted", history.conversion_us), ("churned", history.churn_us)):
        rows = np.flatnonzero(times != NEVER)
        parts.append(
            pa.table(
                {
                    "entity_id": pa.array(ids[rows], pa.string()),
                    "outcome": pa.array([outcome] * len(rows), pa.string()),
                    "occurred_at": pa.array(start_us + times[rows], OUTCOMES_SCHEMA[2].type),
                },
                schema=OUTCOMES_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def truth_rows(history: ChunkHistory, ids: np.ndarray, start_us: int) -> pa.Table:
    """The true probabilities drawn for a chunk as rows of ``true_probabilities.parquet``.

    Args:
        history: The chunk's simulated history.
        ids: Entity id of each of its entities.
        start_us: Start of the history, in microseconds since the epoch.

    Returns:
        One row per entity, draw date and target.
    """
    parts = []
    for target, draws in history.truth.items():
        for rows, day, p_true in draws:
            parts.append(
                pa.table(
                    {
                        "entity_id": pa.array(ids[rows], pa.string()),
                        "as_of": pa.array(
                            np.full(len(rows), start_us + day * DAY_US), TRUTH_SCHEMA[1].type
                        ),
                        "target": pa.array([target] * len(rows), pa.string()),
                        "p_true": pa.array(p_true, pa.float64()),
                    },
                    schema=TRUTH_SCHEMA,
                )
            )
    return pa.concat_tables(parts) if parts else TRUTH_SCHEMA.empty_table()


def source_paths(out_dir: str | Path) -> dict[str, str]:
    """The inputs of a generated folder as ``sources`` settings (events, entities, outcomes).

    Args:
        out_dir: A folder written by :func:`features.synthetic.generate`.

    Returns:
        ``{"events": ..., "entities": ..., "outcomes": ...}`` paths as strings.
    """
    folder = Path(out_dir)
    return {
        "events": str(folder / EVENTS_DIR),
        "entities": str(folder / ENTITIES_FILE),
        "outcomes": str(folder / OUTCOMES_FILE),
    }


def true_weights(out_dir: Path) -> dict[str, Any]:
    """The contents of a generated folder's ``generator.json``.

    Keys include ``seed``, the sizes, ``start``/``end``, ``draw_dates`` per target,
    ``churn_signal_weights`` and ``conversion_signal_weights`` (signal name to effect
    on the log-odds; negative is protective), ``*_intercept``, ``*_fit_weights`` and
    ``models`` (the full signal definitions, read by
    :meth:`features.synthetic.truth.TargetModel.from_json`).

    Args:
        out_dir: A folder written by :func:`features.synthetic.generate`.

    Returns:
        The parsed JSON.
    """
    path = Path(out_dir) / GENERATOR_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {out_dir} was not written by the synthetic generator "
            "(run `leadscore generate` or features.synthetic.generate first)."
        )
    return json.loads(path.read_text())


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


class OutputWriters:
    """Writers to temporary files, moved into place together by :meth:`commit`.

    Args:
        out_dir: The folder of the generated history (created if missing).
    """

    def __init__(self, out_dir: Path) -> None:
        self.events_dir = out_dir / EVENTS_DIR
        self.events_dir.mkdir(parents=True, exist_ok=True)
        self.paths = {
            "entities": out_dir / ENTITIES_FILE,
            "outcomes": out_dir / OUTCOMES_FILE,
            "truth": out_dir / TRUTH_FILE,
        }
        self.json_path = out_dir / GENERATOR_FILE
        self.tables: dict[str, pq.ParquetWriter] = {}
        self.event_files: list[Path] = []

    def write(self, name: str, table: pa.Table) -> None:
        """Append a chunk's rows (one row group) to one of the tables."""
        if name not in self.tables:
            self.tables[name] = pq.ParquetWriter(_temporary(self.paths[name]), table.schema)
        self.tables[name].write_table(table)

    def event_writer(self, chunk: int) -> pq.ParquetWriter:
        """A writer for the chunk's event part (the caller closes it)."""
        path = self.events_dir / f"part-{chunk:05d}.parquet"
        self.event_files.append(path)
        return pq.ParquetWriter(_temporary(path), EVENTS_SCHEMA)

    def _finals(self) -> list[Path]:
        return [*self.paths.values(), *self.event_files, self.json_path]

    def commit(self, description: dict[str, Any]) -> None:
        """Close the tables, write ``generator.json`` and move every file into place.

        Event parts of an earlier, bigger run are removed, so the events folder
        holds exactly this run's parts.
        """
        for writer in self.tables.values():
            writer.close()
        self.tables.clear()
        _temporary(self.json_path).write_text(json.dumps(description, indent=2) + "\n")
        keep = set(self.event_files)
        for stale in self.events_dir.glob("part-*.parquet"):
            if stale not in keep:
                stale.unlink()
        for path in self._finals():
            os.replace(_temporary(path), path)

    def abort(self) -> None:
        """Close and delete every temporary file; earlier outputs stay untouched."""
        for writer in self.tables.values():
            writer.close()
        for path in self._finals():
            _temporary(path).unlink(missing_ok=True)
