"""The atomic writers: a file or a folder is replaced whole or not at all.

A file is written to a hidden temporary sibling, flushed to disk and renamed over
the old one (:func:`atomic_path`, :func:`write_parquet_atomic`,
:func:`write_text_atomic`): a failed write leaves the previous file as it was. A
folder is filled under a hidden staging name (:func:`staging_dir`) and swapped in
with two renames (:func:`replace_dir_atomic`); a crash between them is undone by
:func:`restore_interrupted_dir`, which every later swap of that folder runs first.

What a killed run leaves is recognisable by name, so that the next run's recovery
(:mod:`pipelines.recovery`) and ``forget`` find it: temporary files are hidden and end
in ``.tmp`` (:func:`is_temp_file`), staging folders are hidden and carry ``.staged``
(:func:`is_staging_dir`, a process id and a random part make each run's name its own),
and a folder set aside during a swap is ``.NAME.previous``.

:func:`kill_point` is a test hook: the crash tests (``tests/acceptance/test_kill.py``)
set ``LEADSCORE_TEST_KILL_AT`` to a step name and the process kills itself with
SIGKILL when it reaches that step. Unset, it does nothing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

#: Environment variable naming the step at which :func:`kill_point` kills the process.
KILL_AT_ENV = "LEADSCORE_TEST_KILL_AT"
_TEMP_FILE = re.compile(r"^\..+\.tmp$")
#: ``.NAME.staged`` (older runs) or ``.NAME.staged-PID-RANDOM``.
_STAGING_DIR = re.compile(r"^\..+\.staged(-[0-9a-z-]+)?$")
_BACKUP_DIR = re.compile(r"^\.(?P<final>.+)\.previous$")


def kill_point(step: str) -> None:
    """Test hook: SIGKILL this process when ``LEADSCORE_TEST_KILL_AT`` names ``step``.

    Used only by the crash tests, to stop a run at an exact moment the way a power
    cut or ``kill -9`` would (no ``finally`` block, no exit handler runs).
    """
    if os.environ.get(KILL_AT_ENV) == step:
        log.warning("Killing this process at %r (%s is set).", step, KILL_AT_ENV)
        os.kill(os.getpid(), signal.SIGKILL)


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is named like the temporary file of an atomic write."""
    return bool(_TEMP_FILE.match(path.name))


def is_staging_dir(path: Path) -> bool:
    """Whether ``path`` is named like a staging folder of :func:`staging_dir`."""
    return bool(_STAGING_DIR.match(path.name))


def swapped_final(path: Path) -> Path | None:
    """The folder a ``.NAME.previous`` folder was set aside from, else ``None``."""
    match = _BACKUP_DIR.match(path.name)
    return path.with_name(match.group("final")) if match else None


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling of ``path`` that replaces it when the block succeeds.

    If the block raises, the temporary file is removed and ``path`` keeps its
    old content. The new file keeps the old one's permissions (0644 when new).

    Args:
        path: The final file; its folder is created when missing.

    Yields:
        The temporary path to write to.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        mode = final.stat().st_mode & 0o777 if final.exists() else 0o644
        os.chmod(temp, mode)
        _fsync(temp)
        os.replace(temp, final)
        _fsync(final.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    # Flush to disk before the rename, so a power cut cannot leave an empty file.
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to Parquet at ``path`` atomically (without the index); returns ``path``."""
    with atomic_path(path) as temp:
        df.to_parquet(temp, index=False)
    return Path(path)


def write_text_atomic(text: str, path: str | os.PathLike[str], encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as temp:
        temp.write_text(text, encoding=encoding)
    return Path(path)


def staging_dir(final_dir: str | os.PathLike[str]) -> Path:
    """An empty hidden folder next to ``final_dir``, to fill and then swap in.

    Its name is unique to this call (``.NAME.staged-PID-RANDOM``), so two runs never
    share one; what a killed run left is removed by the next run's recovery
    (:func:`pipelines.recovery.clear_leftovers`).

    Args:
        final_dir: The folder that :func:`replace_dir_atomic` will replace.

    Returns:
        The staging folder (on the same file system, so renames are atomic).
    """
    final = Path(final_dir)
    staged = final.with_name(f".{final.name}.staged-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    staged.mkdir(parents=True)
    return staged


def _backup_of(final: Path) -> Path:
    return final.with_name(f".{final.name}.previous")


def restore_interrupted_dir(final_dir: str | os.PathLike[str]) -> bool:
    """Undo a swap that a crash interrupted between its two renames.

    Args:
        final_dir: The folder :func:`replace_dir_atomic` was replacing.

    Returns:
        Whether the previous folder had to be put back.
    """
    final = Path(final_dir)
    backup = _backup_of(final)
    if backup.is_dir() and not final.exists():
        os.rename(backup, final)
        log.warning("Restored %s from an interrupted replacement.", final)
        return True
    return False


def replace_dir_atomic(tmp_dir: str | os.PathLike[str], final_dir: str | os.PathLike[str]) -> Path:
    """Swap a fully written sibling folder in place of ``final_dir``.

    The old folder is renamed aside, the new one renamed in, then the old one
    removed. If the second rename fails the old folder is put back; if the
    process dies between the renames, :func:`restore_interrupted_dir` (called
    here on the next run) puts it back.

    Args:
        tmp_dir: The new content, a sibling of ``final_dir`` (see :func:`staging_dir`).
        final_dir: Where the content must end up.

    Returns:
        ``final_dir``.

    Raises:
        FileNotFoundError: ``tmp_dir`` is not a folder.
        ValueError: The two folders are not siblings.
    """
    new, final = Path(tmp_dir), Path(final_dir)
    if not new.is_dir():
        raise FileNotFoundError(f"Cannot replace {final}: the new folder {new} does not exist.")
    if new.resolve().parent != final.resolve().parent:
        raise ValueError(
            f"Cannot swap {new} into {final}: they must be in the same folder for the "
            "rename to be atomic (use staging_dir)."
        )
    restore_interrupted_dir(final)
    backup = _backup_of(final)
    if backup.exists():  # left by a run that died after its swap, before the cleanup
        shutil.rmtree(backup)
    if final.exists():
        os.rename(final, backup)
    kill_point("dir-swap")
    try:
        os.rename(new, final)
    except BaseException:
        if backup.exists():
            os.rename(backup, final)
        raise
    _fsync(final.parent)
    shutil.rmtree(backup, ignore_errors=True)
    return final
