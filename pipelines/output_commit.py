"""The commit protocol of a run's outputs: stage everything, then commit in a fixed order.

:func:`write_outputs` writes the four outputs of one run date (layout in
:mod:`pipelines.outputs`) in this order:

1. **Stage**, changing nothing a reader sees: the Parquet partition goes to a hidden
   temporary file beside ``scores/as_of=DATE/part-0.parquet``, the CRM batches to
   the hidden folder ``crm/.as_of=DATE.staged/``, and the board page is rendered in
   memory.
2. **Withdrawn consent**: the score history of entities whose consent is withdrawn
   is deleted, in the transaction of step 3 (what every run of the date does again).
3. **Commit point**: ``lead_score_history`` and ``lead_scores`` are upserted, and
   that one transaction commits. Steps 2 and 3 run in a thread
   (:class:`ScoreTablesWrite`) started before step 1: the rows are deleted and
   inserted while the files are staged, and the transaction waits, uncommitted,
   until they are; a failure on either side rolls it back.
4. The staged partition is renamed in (one atomic rename).
5. The staged CRM folder is swapped in for ``crm/as_of=DATE/`` (two renames; see
   recovery below).
6. The board page ``board/DATE.html`` and then ``board/index.html`` are written,
   each atomically (``index.html`` only when DATE is the latest run).

Guarantees: a failure in steps 1 to 3 leaves every score row and file as it was
(on SQLite, a table the failed upsert had just created, or its staging table, can
remain, empty). Steps 4 to 6 are each atomic but not atomic together: a crash among them
leaves the score tables on the new date while the partition, CRM export or board
can still be the previous one's. Every output is keyed by date or entity, so
re-running the date repairs that and never duplicates rows.

Recovery: staging is hidden (names start with ``.``, unique per run) and removed
when the write ends; a new date folder left empty by a failure is removed. What a
killed run leaves is handled by the next run, which holds the run lock
(:mod:`pipelines.run_lock`) and first calls :func:`pipelines.recovery.recover`:

- killed in step 1 or 2: staged files and folders are deleted; the stores are as
  before (the withdrawn history is deleted in step 3's transaction);
- killed after step 3: the same, and since ``lead_scores`` is then on DATE while
  files may not be, the CRM folder and board of DATE are rewritten from the DATE
  partition when it exists (killed after step 4), or a warning names the missing
  partition (killed between 3 and 4; re-running DATE rewrites everything);
- killed inside step 5: the set-aside CRM folder is put back (or, when the new one
  is in place, deleted) by :func:`~pipelines.atomic_files.restore_interrupted_dir`.

The crash tests stop a run at the points marked ``kill_point`` here.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.engine import make_url

from models.previous_run import TEXT_COLUMNS
from pipelines.atomic_files import atomic_path, kill_point, replace_dir_atomic, staging_dir
from pipelines.board import (
    EMBED_LIMIT,
    is_no_consent,
    render_board,
    shown_entities,
    write_board,
)
from pipelines.crm_export import crm_files, write_crm_batches
from pipelines.crm_profiles import PROFILES, CrmProfile
from pipelines.database_writes import sql_upsert_tables
from pipelines.outputs import (
    HISTORY_TABLE,
    PARTITION_FILE,
    SCORES_TABLE,
    blank_without_consent,
    crm_dir,
    partition_dir,
    run_date,
    score_table_rows,
)
from pipelines.row_deletes import rows_matching

log = logging.getLogger(__name__)


@dataclass
class OutputPaths:
    """Where one run's outputs went (``items()`` gives printable pairs)."""

    partition: Path
    database: str
    crm_dir: Path
    crm_batches: list[Path] = field(default_factory=list)
    crm_rows: int = 0
    board: Path | None = None
    board_index: Path | None = None

    def items(self) -> Iterator[tuple[str, str]]:
        """``(name, location)`` pairs for summaries, passwords hidden."""
        yield "scores_parquet", str(self.partition)
        yield "score_tables", f"{self.database} ({SCORES_TABLE}, {HISTORY_TABLE})"
        yield "crm_export", f"{self.crm_dir} ({self.crm_rows} rows, {len(self.crm_batches)} files)"
        if self.board is not None:
            yield "lead_board", str(self.board)


def write_score_tables(
    scored: pd.DataFrame, database_url: str, before_commit: Callable[[], None] | None = None
) -> None:
    """Steps 2 and 3: delete withdrawn history and upsert both score tables, one transaction.

    ``before_commit`` is called just before the commit; what it raises rolls back.
    """
    rows = score_table_rows(scored)
    withdrawn = rows.loc[is_no_consent(rows["status"]), "entity_id"].dropna().unique().tolist()
    # Consent withdrawn: earlier scores of these people go too, not only today's.
    deletes = [rows_matching(HISTORY_TABLE, "entity_id", withdrawn)] if withdrawn else []
    sql_upsert_tables(
        database_url,
        [(rows, HISTORY_TABLE, ["entity_id", "as_of"]), (rows, SCORES_TABLE, ["entity_id"])],
        deletes=deletes,
        before_commit=before_commit,
        zstd_columns=TEXT_COLUMNS,  # most of the bytes: zstd writes them faster, smaller
    )
    log.info(
        "Upserted %d rows into %s and %s (%d without consent blanked).",
        len(rows), SCORES_TABLE, HISTORY_TABLE, len(withdrawn),
    )  # fmt: skip


class _Abandoned(Exception):
    """Raised at the commit point of a score-table write the run no longer wants."""


class ScoreTablesWrite:
    """Steps 2 and 3 in a thread while step 1 stages the files, committed on request.

    The thread deletes and inserts the rows (DuckDB, Arrow and the database drivers
    release the GIL while they work), then waits at the commit point: :meth:`commit`
    lets it commit, :meth:`abandon` rolls it back. Nothing is committed before the
    files are staged, so the order of the protocol is unchanged. :meth:`commit` lets
    the thread commit only once it waits at the commit point, so an interrupt (Ctrl-C)
    while the rows are still being inserted rolls them back, as a failure does. Both
    wait on events, not ``Thread.join`` (an interrupted ``join`` can report the thread
    ended while it still runs).
    """

    def __init__(self, scored: pd.DataFrame, database_url: str) -> None:
        self._ready = threading.Event()  # the thread waits at the commit point
        self._go = threading.Event()  # the decision is made
        self._done = threading.Event()  # the thread has ended
        self._wanted = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(scored, database_url), name="score-tables", daemon=True
        )
        self._thread.start()

    def _gate(self) -> None:
        self._ready.set()
        self._go.wait()
        if not self._wanted:
            raise _Abandoned

    def _run(self, scored: pd.DataFrame, database_url: str) -> None:
        try:
            write_score_tables(scored, database_url, before_commit=self._gate)
        except BaseException as exc:  # handed to the caller by commit()
            self._error = exc
        finally:
            self._done.set()

    def commit(self) -> None:
        """Let the transaction commit and wait for it; raises what the write raised."""
        while not (self._ready.wait(0.05) or self._done.is_set()):
            pass  # the rows are still being written: an interrupt here rolls them back
        self._wanted = self._ready.is_set()
        self._go.set()
        self._done.wait()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Roll back unless already committed, and wait for the thread to end."""
        self._go.set()
        self._done.wait()
        if self._error is not None and not isinstance(self._error, _Abandoned):
            log.debug("The score tables were not written: %r", self._error)


def write_outputs(
    scored: pd.DataFrame,
    out_dir: Path,
    database_url: str,
    *,
    crm_batch_size: int,
    previous: pd.DataFrame | None,
    previous_rows: np.ndarray | None = None,
    band_rule: str | None = None,
    crm_profile: CrmProfile = PROFILES["generic"],
    board_entities: pd.DataFrame | None = None,
    board_embed_limit: int = EMBED_LIMIT,
) -> OutputPaths:
    """Write every output of one scoring run by the protocol of this module.

    Args:
        scored: One row per entity from ``models.scoring`` (a single ``as_of``).
        out_dir: Output folder (``scores/``, ``crm/`` and ``board/`` go under it).
        database_url: SQLAlchemy URL of the score store (SQLite, DuckDB, PostgreSQL).
        crm_batch_size: Most rows per CRM import file (CRM sync has hourly limits).
        previous: The last scores before this run
            (:func:`pipelines.outputs.read_previous_scores`), to find what changed for
            the CRM; ``None`` on a first run.
        previous_rows: Per row of ``scored``, its row in ``previous`` (-1: not there;
            :attr:`models.scoring.ScoreResult.previous_rows`), or ``None`` to look the
            ids up.
        band_rule: One sentence on how bands are assigned, shown on the board.
        crm_profile: The CRM files and field names (:mod:`pipelines.crm_profiles`).
        board_entities: The board's display columns
            (:func:`pipelines.board_data.board_entities`), kept in ``board/``.
        board_embed_limit: Most leads the static board page carries.

    Returns:
        Where everything went.
    """
    out_dir = Path(out_dir)
    as_of = run_date(scored)
    clean = blank_without_consent(scored)
    partition = partition_dir(out_dir, as_of) / PARTITION_FILE
    new_partition = not partition.parent.exists()
    crm_final = crm_dir(out_dir, as_of)
    crm_staged = None
    tables = ScoreTablesWrite(clean, database_url)  # steps 2 and 3, up to their commit
    try:
        crm_staged = staging_dir(crm_final)
        with atomic_path(partition) as staged_partition:  # step 4 when the block ends
            # First: Arrow encodes it mostly without the GIL while the table thread,
            # in Python, prepares its rows; the Python work below overlaps its inserts.
            clean.drop(columns=["as_of"]).to_parquet(staged_partition, index=False)
            changes = crm_files(clean, previous, crm_profile, previous_rows)
            html = render_board(
                clean, as_of, band_rule, entities=board_entities, embed_limit=board_embed_limit
            )
            # Picked while the tables are written, for step 6 (after the commit).
            shown = None if board_entities is None else shown_entities(clean, board_entities)
            staged = write_crm_batches(changes, crm_staged, crm_batch_size)
            kill_point("staged")
            tables.commit()  # the commit point
            kill_point("committed")
        kill_point("partition")
        replace_dir_atomic(crm_staged, crm_final)  # step 5
    except BaseException:
        if new_partition and partition.parent.is_dir() and not any(partition.parent.iterdir()):
            partition.parent.rmdir()  # no half-made date folder for readers to trip on
        raise
    finally:
        tables.abandon()
        if crm_staged is not None:
            shutil.rmtree(crm_staged, ignore_errors=True)
    kill_point("crm")
    board = write_board(
        clean, out_dir / "board", as_of, band_rule, html=html, entities=board_entities, shown=shown
    )  # step 6
    paths = OutputPaths(
        partition=partition,
        database=make_url(database_url).render_as_string(hide_password=True),
        crm_dir=crm_final,
        crm_batches=[crm_final / path.name for path in staged],
        crm_rows=sum(len(rows) for rows in changes.values()),
        board=board.page,
        board_index=board.index,
    )
    log.info("Outputs for %s: %s", as_of, dict(paths.items()))
    return paths
