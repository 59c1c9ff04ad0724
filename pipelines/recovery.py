"""Crash recovery: what a killed run left is cleaned or completed before the next run goes on.

Every run that holds the run lock (:mod:`pipelines.run_lock`) calls :func:`recover`
first. Since no other run can be writing then, everything below is a leftover of a
run that died (SIGKILL, power cut, out of memory), and the crash points of the commit
protocol (:mod:`pipelines.output_commit`) each leave one of these:

- staging folders (``.NAME.staged*``) and temporary files (``.NAME.*.tmp``) anywhere
  under the output folder: deleted (they are full copies of personal data);
- a folder set aside by an interrupted swap (``.NAME.previous``): put back when the
  new folder never arrived, deleted when it did;
- ``lead_scores`` on a date whose files are missing (a crash after the database
  commit): the CRM folder, board page and ``index.html`` of that date are rewritten
  from its score partition; when the partition itself is missing, a warning says so
  and that re-running the date repairs it;
- a model version registered by a run that died before its promotion decision:
  tagged an orphan (:func:`models.tracking_registry.mark_orphans`), never promoted or
  loaded as a champion.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from pipelines.atomic_files import (
    is_staging_dir,
    is_temp_file,
    replace_dir_atomic,
    restore_interrupted_dir,
    staging_dir,
    swapped_final,
    write_text_atomic,
)
from pipelines.board import write_board
from pipelines.crm_export import crm_files, write_crm_batches
from pipelines.crm_profiles import crm_profile
from pipelines.databases import duckdb_connection, duckdb_table_exists, parse_sql_url, sql_engine
from pipelines.outputs import (
    PARTITION_FILE,
    SCORES_TABLE,
    crm_dir,
    partition_dir,
    read_previous_scores,
)
from pipelines.scrubbing import board_band_rule
from pipelines.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Recovery:
    """What recovery found and did (counts; ``warnings`` go into the run summary)."""

    staged_removed: int = 0
    temp_files_removed: int = 0
    swaps_undone: int = 0
    swaps_finished: int = 0
    files_rewritten: int = 0
    orphan_versions: int = 0
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The non-zero counts, for the run summary."""
        counts = {
            "staged_removed": self.staged_removed,
            "temp_files_removed": self.temp_files_removed,
            "swaps_undone": self.swaps_undone,
            "swaps_finished": self.swaps_finished,
            "files_rewritten": self.files_rewritten,
            "orphan_versions": self.orphan_versions,
        }
        return {name: count for name, count in counts.items() if count}


def recover(settings: Settings) -> Recovery:
    """Clean up and complete what an interrupted run left; call it holding the run lock.

    Args:
        settings: The run's settings (output folder, score database, MLflow store).

    Returns:
        What was found and done.
    """
    out = Path(settings.output.dir)
    report = Recovery()
    if not out.is_dir():
        return report
    clear_leftovers(out, report)
    _agree_with_score_table(out, settings, report)
    _mark_orphans(settings.tracking_uri, report)
    if report.counts():
        note = f"Recovered from an interrupted run: {report.counts()}."
        log.warning("%s", note)
        report.warnings.insert(0, note)
    return report


def clear_leftovers(out: Path, report: Recovery | None = None) -> Recovery:
    """Delete staging folders and temporary files under ``out``; settle interrupted swaps."""
    report = report if report is not None else Recovery()
    for folder, dirnames, filenames in os.walk(out):
        here = Path(folder)
        for name in list(dirnames):
            path = here / name
            final = swapped_final(path)
            if is_staging_dir(path):
                shutil.rmtree(path)
                report.staged_removed += 1
            elif final is not None and not final.exists():
                restore_interrupted_dir(final)
                report.swaps_undone += 1
                continue  # restored under its own name; not walked again
            elif final is not None:
                shutil.rmtree(path)  # the swap was done; only the cleanup was missed
                report.swaps_finished += 1
            else:
                continue
            dirnames.remove(name)
        for name in filenames:
            if is_temp_file(here / name):
                (here / name).unlink()
                report.temp_files_removed += 1
    return report


def latest_score_date(database_url: str) -> date | None:
    """The latest ``as_of`` in ``lead_scores``, or ``None`` when there is none yet."""
    target = parse_sql_url(database_url, SCORES_TABLE, override=True)
    if target.duckdb_path is not None:
        if not target.duckdb_path.exists():
            return None
        with duckdb_connection(target.duckdb_path, read_only=True) as connection:
            if not duckdb_table_exists(connection, target):
                return None
            query = f"SELECT max(as_of) FROM {target.qualified}"  # noqa: S608 - quoted name
            value = connection.execute(query).fetchall()[0][0]
    else:
        database = sa.engine.make_url(target.url).database
        if target.url.startswith("sqlite") and database and not Path(database).exists():
            return None
        schema, name = target.schema_and_name
        with sql_engine(target) as engine, engine.connect() as connection:
            if not sa.inspect(connection).has_table(name, schema=schema):
                return None
            table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=connection)
            value = connection.execute(sa.select(sa.func.max(table.c.as_of))).scalar()
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return (stamp.tz_convert("UTC") if stamp.tzinfo else stamp).date()


def _agree_with_score_table(out: Path, settings: Settings, report: Recovery) -> None:
    """Rewrite the files of the score table's date that a crash after its commit left out."""
    day = latest_score_date(settings.database_url)
    if day is None:
        return
    partition = partition_dir(out, day) / PARTITION_FILE
    crm = crm_dir(out, day)
    board = out / "board"
    page, index = board / f"{day.isoformat()}.html", board / "index.html"
    latest_page = not any(p.stem > day.isoformat() for p in board.glob("????-??-??.html"))
    index_behind = (
        latest_page
        and page.is_file()
        and (not index.is_file() or index.read_bytes() != page.read_bytes())
    )
    if crm.is_dir() and page.is_file() and not index_behind:
        return
    if not partition.is_file():
        report.warnings.append(
            f"The score table {SCORES_TABLE} is on {day} but the partition {partition} is "
            f"missing (a run stopped after its database commit): run the date {day} again "
            "to rewrite its partition, CRM export and board."
        )
        return
    scored = pd.read_parquet(partition)
    scored["as_of"] = pd.Timestamp(day, tz="UTC")
    if not crm.is_dir():
        staged = staging_dir(crm)
        profile = crm_profile(settings.crm.profile, settings.crm.fields)
        files = crm_files(scored, read_previous_scores(out, day), profile)
        write_crm_batches(files, staged, settings.output.crm_batch_size)
        replace_dir_atomic(staged, crm)
        report.files_rewritten += 1
    if not page.is_file():
        pages = sorted(board.glob("????-??-??.html"))
        rule = board_band_rule(pages[-1].read_text(encoding="utf-8")) if pages else None
        write_board(scored, board, day, rule)
        report.files_rewritten += 1
    elif index_behind:
        write_text_atomic(page.read_text(encoding="utf-8"), index)
        report.files_rewritten += 1
    report.warnings.append(
        f"The score table {SCORES_TABLE} was on {day} but not all files were: a run stopped "
        f"after its database commit. The CRM export and board of {day} were rewritten from "
        f"{partition}."
    )


def _mark_orphans(tracking_uri: str, report: Recovery) -> None:
    if (
        tracking_uri.startswith("sqlite:///")
        and not Path(tracking_uri.removeprefix("sqlite:///")).exists()
    ):
        return
    from models.tracking_index import undecided_versions

    if undecided_versions(tracking_uri) == 0:
        return  # nothing to mark: no need to import mlflow
    from models import tracking, tracking_registry

    tracking.configure(tracking_uri)
    orphans = tracking_registry.mark_orphans()
    report.orphan_versions += len(orphans)
    if orphans:
        report.warnings.append(
            f"Model version(s) {', '.join(orphans)} were registered by a run that stopped "
            f"before its promotion decision: tagged {tracking_registry.ORPHAN_TAG}=true, "
            "never promoted."
        )
