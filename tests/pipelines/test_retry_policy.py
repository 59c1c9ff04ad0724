"""Only I/O that a second try may cure is retried."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest

from features.column_checks import ContractError
from pipelines.retry_policy import is_transient, retry_condition


class IOException(Exception):
    """Shaped like DuckDB's I/O error (matched by class name)."""


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("timed out"), True),
        (IOException("could not set lock on file"), True),
        (ContractError("events", "events.csv", ["no column event_type"]), False),
        (ValueError("too few labels"), False),
        (FileNotFoundError(errno.ENOENT, "missing", "events.parquet"), False),
        (PermissionError(errno.EACCES, "denied", "/out"), False),
        (OSError(errno.ENOSPC, "No space left on device", "/out/x.parquet"), False),
        (IOException("IO Error: No space left on device"), False),
    ],
)
def test_only_io_that_may_succeed_again_is_retried(exc, retried):
    assert is_transient(exc) is retried
    assert retry_condition(None, None, SimpleNamespace(data=exc)) is retried


def test_a_state_without_an_exception_is_not_retried():
    assert retry_condition(None, None, SimpleNamespace(data=None)) is False
