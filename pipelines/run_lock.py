"""One run at a time per output folder: a lock file naming its holder.

Every command that rewrites the output folder's stores (``nightly``, ``score``,
``train``, ``forget``) first creates ``OUTPUT/.leadscore.lock`` with
``O_CREAT | O_EXCL`` (atomic: of two runs, exactly one creates it) and writes into it
its process id, host, start time (UTC) and run date. A second run finds the file and
stops at once with a sentence naming the holder, having written nothing. A lock whose
process is gone (same host, no such live process) is stale: it is taken over, with a
warning in the log and in the run summary. The lock is released in a ``finally``; a
run killed with SIGKILL leaves it behind, which is what the stale check is for.

Within one process the lock is re-entrant (a backfill runs nightly after nightly).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

LOCK_FILE = ".leadscore.lock"
#: How long a lock file may stay empty (its holder between create and write).
_EMPTY_GRACE_SECONDS = 30.0
_held: dict[Path, int] = {}


class RunLockedError(RuntimeError):
    """Another live run holds the output folder's lock."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: process, host, start time (UTC ISO), command and run date."""

    pid: int
    host: str
    started: str
    command: str
    as_of: str

    def describe(self) -> str:
        """``pid 1234 on host, started 2025-..., nightly for 2025-12-08``."""
        return (
            f"pid {self.pid} on {self.host}, started {self.started}, "
            f"{self.command} for {self.as_of}"
        )


def lock_path(output_dir: Path) -> Path:
    """The lock file of an output folder."""
    return Path(output_dir) / LOCK_FILE


@contextmanager
def run_lock(output_dir: Path, as_of: object, command: str) -> Iterator[list[str]]:
    """Hold the output folder's run lock for the block.

    Args:
        output_dir: The output folder (created when missing).
        as_of: The run date (shown to a run that finds the lock taken).
        command: What runs (``nightly``, ``score``, ``train``, ``forget``).

    Yields:
        Warnings for the run summary (a stale lock taken over), else empty.

    Raises:
        RunLockedError: A live process holds the lock; nothing was written.
    """
    path = lock_path(output_dir).resolve()
    if _held.get(path):
        _held[path] += 1
        try:
            yield []
        finally:
            _held[path] -= 1
        return
    day = str(as_of.date()) if isinstance(as_of, pd.Timestamp) else str(as_of)
    me = LockHolder(
        pid=os.getpid(),
        host=socket.gethostname(),
        started=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        command=command,
        as_of=day,
    )
    notes = _acquire(path, me)
    _held[path] = 1
    try:
        yield notes
    finally:
        _held.pop(path, None)
        _release(path, me)


def _acquire(path: Path, me: LockHolder) -> list[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    for _ in range(5):
        if _create(path, me):
            return notes
        text, holder = _read(path)
        if text is None:
            continue  # released meanwhile: try again
        if holder is None or _alive(holder):
            raise RunLockedError(_refusal(path, holder))
        if _remove_if_unchanged(path, text):
            note = (
                f"Took over the stale run lock {path} of {holder.describe()}: that process "
                "is gone (killed or crashed); its leftovers are cleaned up by this run."
            )
            log.warning("%s", note)
            notes.append(note)
    raise RunLockedError(f"Could not take the run lock {path}: other runs keep taking it.")


def _create(path: Path, me: LockHolder) -> bool:
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(json.dumps(asdict(me)))
        file.flush()
        os.fsync(file.fileno())
    return True


def _read(path: Path) -> tuple[str | None, LockHolder | None]:
    """The lock's text and holder; ``(None, None)`` when gone, holder ``None`` if unreadable."""
    for _ in range(10):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        try:
            return text, LockHolder(**json.loads(text))
        except (ValueError, TypeError):
            time.sleep(0.1)  # its holder may be writing it right now
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None, None
    if age > _EMPTY_GRACE_SECONDS:  # an unfinished lock of a process killed at birth
        return text, LockHolder(-1, socket.gethostname(), "unknown", "unknown", "unknown")
    return text, None


def _alive(holder: LockHolder) -> bool:
    """Whether the holder may still run (another host's process is assumed alive)."""
    if holder.host != socket.gethostname():
        return True
    if holder.pid <= 0 or holder.pid == os.getpid():
        return False  # not a process, or this one (which does not hold it)
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return not _zombie_or_newer(holder)


def _zombie_or_newer(holder: LockHolder) -> bool:
    """A dead process not yet reaped, or a pid reused by a process started after the lock."""
    try:
        stat = Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, IndexError, StopIteration):
        return False  # not Linux: trust the pid
    if stat[0] in ("Z", "X"):
        return True
    started = boot + int(stat[19]) / os.sysconf("SC_CLK_TCK")
    try:
        locked = pd.Timestamp(holder.started).timestamp()
    except ValueError:
        return False
    return started > locked + 2  # one-second lock stamp, clock-tick process start


def _remove_if_unchanged(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") != text:
            return False  # another run took it over first
        path.unlink()
    except FileNotFoundError:
        pass
    return True


def _release(path: Path, me: LockHolder) -> None:
    _, holder = _read(path)
    if holder == me:
        path.unlink(missing_ok=True)
    else:
        log.warning("The run lock %s is no longer this run's; left as it is.", path)


def _refusal(path: Path, holder: LockHolder | None) -> str:
    who = holder.describe() if holder is not None else "being created right now"
    return (
        f"Another leadscore run ({who}) holds {path}; wait for it to finish, or, if no "
        "such process is running, delete that file and run again. Nothing was written."
    )
