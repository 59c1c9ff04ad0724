"""Time the "write outputs" step, old code against new, on one captured scored frame.

Step 1 captures what a real next-day run hands to ``output_commit.write_outputs``
(scored frame, previous scores, board entities) into a pickle, by running the CLI
in this process with that function wrapped:

    .venv/bin/python benchmarks/write_outputs.py capture /tmp/args.pkl -- \
        nightly --config leadscore.yaml --as-of 2025-06-04

Step 2 runs the write in one process with the modules of an older commit (read
with ``git show``, the baseline) and with the working tree, alternating, each into a
fresh folder with a copy of the same score database, then prints the medians and
whether every output is the same (files byte for byte, score tables row for row):

    .venv/bin/python benchmarks/write_outputs.py compare /tmp/args.pkl \
        output/leadscore.duckdb --baseline f9a08aa --repeat 3
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def capture(path: Path, cli_args: list[str]) -> None:
    """Run the CLI here, pickling ``write_outputs``' arguments to ``path``."""
    import pipelines.output_commit as output_commit
    from pipelines.cli import app

    original = output_commit.write_outputs

    def wrapped(scored: Any, out_dir: Any, database_url: str, **kwargs: Any) -> Any:
        with open(path, "wb") as handle:
            pickle.dump({"scored": scored, "kwargs": kwargs}, handle)
        return original(scored, out_dir, database_url, **kwargs)

    output_commit.write_outputs = wrapped
    sys.argv = ["leadscore", *cli_args]
    app()


def _old_module(commit: str, path: str, name: str, **names: Any) -> types.ModuleType:
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)  # noqa: S102
    for key, value in names.items():
        setattr(module, key, value)
    return module


def old_write_outputs(commit: str) -> Any:
    """``write_outputs`` of ``commit`` with that commit's CRM, board and database modules."""
    reasons = _old_module(commit, "models/reason_text.py", "old_reason_text")
    crm = _old_module(
        commit, "pipelines/crm_export.py", "old_crm_export", crm_reason_text=reasons.crm_reason_text
    )
    board = _old_module(commit, "pipelines/board.py", "old_board")
    writes = _old_module(commit, "pipelines/database_writes.py", "old_database_writes")
    outputs = _old_module(commit, "pipelines/outputs.py", "old_outputs")
    commit_module = _old_module(
        commit, "pipelines/output_commit.py", "old_output_commit",
        crm_files=crm.crm_files, write_crm_batches=crm.write_crm_batches,
        render_board=board.render_board, write_board=board.write_board,
        is_no_consent=board.is_no_consent, sql_upsert_tables=writes.sql_upsert_tables,
        rows_matching=writes.rows_matching, blank_without_consent=outputs.blank_without_consent,
        score_table_rows=outputs.score_table_rows,
    )  # fmt: skip
    return commit_module.write_outputs


def same_outputs(a: Path, b: Path) -> bool:
    """Print and return whether two output folders hold the same outputs."""
    import duckdb

    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.suffix != ".duckdb")
    other = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.suffix != ".duckdb")
    same = files == other
    print(f"same files: {same} ({len(files)})")
    for path in files:
        equal = (b / path).is_file() and filecmp.cmp(a / path, b / path, shallow=False)
        same &= equal
        print(f"  {path}: {'identical' if equal else 'DIFFERENT'}")
    for table in ("lead_scores", "lead_score_history"):
        query = f"SELECT * FROM {table} ORDER BY ALL"
        rows = [duckdb.connect(str(d / "scores.duckdb")).execute(query).fetchall() for d in (a, b)]
        equal = rows[0] == rows[1]
        same &= equal
        print(f"  {table}: {len(rows[0])} rows, {'identical' if equal else 'DIFFERENT'}")
    return same


def compare(pickled: Path, database: Path, baseline: str, repeat: int) -> None:
    """Old and new ``write_outputs`` alternately on the same input; medians and sameness."""
    import pipelines.output_commit as output_commit

    with open(pickled, "rb") as handle:
        captured = pickle.load(handle)  # noqa: S301 (our own capture)
    logging.disable(logging.WARNING)
    writers = {"old": old_write_outputs(baseline), "new": output_commit.write_outputs}
    root = Path(tempfile.mkdtemp(prefix="write-outputs-"))
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    for round_ in range(repeat):
        for label in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
            out = root / label
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            shutil.copy(database, out / "scores.duckdb")
            start = time.perf_counter()
            writers[label](
                captured["scored"], out, f"duckdb:///{out}/scores.duckdb", **captured["kwargs"]
            )
            seconds[label].append(time.perf_counter() - start)
            print(f"{label}: {seconds[label][-1]:.2f} s", flush=True)
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    print(f"median old {medians['old']:.2f} s, new {medians['new']:.2f} s "
          f"({len(captured['scored']):,} entities, baseline {baseline})")  # fmt: skip
    same = same_outputs(root / "old", root / "new")
    shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if same else 1)


def main() -> None:
    """Command line: ``capture`` or ``compare``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("pickle", type=Path)
    cap.add_argument("cli", nargs=argparse.REMAINDER)
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("pickle", type=Path)
    cmp_.add_argument("database", type=Path)
    cmp_.add_argument("--baseline", default="f9a08aa")
    cmp_.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.command == "capture":
        capture(args.pickle, [a for a in args.cli if a != "--"])
    else:
        compare(args.pickle, args.database, args.baseline, args.repeat)


if __name__ == "__main__":
    main()
