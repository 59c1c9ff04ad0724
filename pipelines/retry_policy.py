"""Which failures a retry can cure: I/O hiccups yes, bad input and full disks no.

Prefect retries a storage task only when :func:`retry_condition` says so, so a
contract error, a missing file, denied permission or a full disk fails at once with
its sentence instead of three times with three tracebacks.
"""

from __future__ import annotations

import errno
from typing import Any

#: OSErrors a second try cannot cure.
PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
#: ``errno`` values a second try cannot cure (full disk, quota, read-only file system).
PERMANENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})
#: Database errors (by class name, whichever driver raised them) worth a second try.
TRANSIENT_NAMES = frozenset({"OperationalError", "IOException", "ConnectionException"})
#: Words of a database error that say a second try cannot cure it.
PERMANENT_WORDS = ("No space left", "disk is full", "read-only", "Permission denied")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an I/O failure that a second try may cure."""
    if any(word in str(exc) for word in PERMANENT_WORDS):
        return False
    if isinstance(exc, OSError):
        return not isinstance(exc, PERMANENT_OS_ERRORS) and exc.errno not in PERMANENT_ERRNOS
    return type(exc).__name__ in TRANSIENT_NAMES


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only what :func:`is_transient` allows."""
    del task, task_run
    exc = getattr(state, "data", None)
    return isinstance(exc, BaseException) and is_transient(exc)
