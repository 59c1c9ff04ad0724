"""Turning failures into sentences a person can act on."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from types import TracebackType

#: The OS errors a person fixes outside leadscore, and what to do about each.
_DISK_ERRORS = {
    errno.ENOSPC: (
        "No space left on device",
        "while writing",
        "free space or point output.dir elsewhere",
    ),
    errno.EACCES: ("Permission denied", "on", "give the user running leadscore access to it"),
    errno.EPERM: ("Operation not permitted", "on", "give the user running leadscore access to it"),
    errno.EROFS: (
        "Read-only file system",
        "while writing",
        "point output.dir at a writable folder",
    ),
}
#: Database drivers (DuckDB) report disk errors as text: "... file "PATH": No space ...".
_DRIVER_DISK_ERROR = re.compile(
    r'file "(?P<path>[^"]+)"[^"]*?: (?P<cause>No space left on device|Permission denied|'
    r"Read-only file system)"
)
#: SQLite's SQLITE_FULL, which names no file.
_SQLITE_FULL = "database or disk is full"
_STEP_PREFIX = re.compile(r"^Step '[^']+' failed: ")
#: Local names under which the writers of a traceback hold the file they write.
_PATH_NAMES = ("temp", "path", "where", "target", "final", "file", "filename")


def user_facing_message(exc: BaseException) -> str:
    """One readable sentence for an error, without a traceback.

    Errors of the project's own (contract, leakage, too little data) already carry a
    full sentence; a full disk, a denied permission or a read-only file system
    anywhere in the error's chain becomes one sentence naming the path and the
    cause (after the failed step's name); for anything else the exception's type and
    message are shown.
    """
    text = str(exc).strip()
    disk = disk_error_message(exc)
    if disk:
        step = _STEP_PREFIX.match(text)
        return (step.group(0) if step else "") + disk
    if isinstance(exc, FileNotFoundError) and getattr(exc, "filename", None):
        return f"File or folder not found: {exc.filename}."
    if isinstance(exc, (ValueError, LookupError, RuntimeError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def disk_error_message(exc: BaseException) -> str | None:
    """The sentence for a disk-full, permission or read-only error in ``exc``'s chain.

    The path is the error's ``filename``; when the library left it out (pyarrow,
    ``Path.write_text``), the file a writer in the traceback was writing; for
    database drivers, the file named in their message (DuckDB) or the database of
    the engine in the traceback (SQLite's "database or disk is full").

    Returns:
        ``"No space left on device while writing PATH: free space or point
        output.dir elsewhere; ..."``, or ``None`` when the chain holds no such error.
    """
    for error in _chain(exc):
        if isinstance(error, OSError) and error.errno in _DISK_ERRORS:
            path = error.filename or _path_in_traceback(error.__traceback__)
            return _sentence(*_DISK_ERRORS[error.errno], path)
        match = _DRIVER_DISK_ERROR.search(str(error))
        if match:
            known = next(k for k in _DISK_ERRORS.values() if k[0] == match.group("cause"))
            return _sentence(*known, match.group("path"))
        if _SQLITE_FULL in str(error):
            database = _database_in_traceback(error.__traceback__)
            return _sentence(*_DISK_ERRORS[errno.ENOSPC], database)
    return None


def _sentence(cause: str, doing: str, fix: str, path: str | os.PathLike[str] | None) -> str:
    where = f" {doing} {os.fspath(path)}" if path else ""
    return (
        f"{cause}{where}: {fix}, then run again; every write is atomic, so the previous "
        "outputs are intact."
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts, each once."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        stack += [e for e in (error.__context__, error.__cause__) if e is not None]


def _database_in_traceback(tb: TracebackType | None) -> str | None:
    """The file of the innermost SQLAlchemy engine or connection in ``tb``'s frames."""
    found = None
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            engine = getattr(value, "engine", None)
            url = getattr(value, "url", None) or getattr(engine, "url", None)
            database = getattr(url, "database", None)
            if isinstance(database, str) and os.path.isabs(database):
                found = database
        tb = tb.tb_next
    return found


def _path_in_traceback(tb: TracebackType | None) -> str | None:
    """The absolute path held by the innermost frame of ``tb`` that names one."""
    found = None
    while tb is not None:
        names = tb.tb_frame.f_locals
        for name in _PATH_NAMES:
            value = names.get(name)
            if isinstance(value, (str, os.PathLike)) and os.path.isabs(os.fspath(value)):
                found = os.fspath(value)
                break
        tb = tb.tb_next
    return found
