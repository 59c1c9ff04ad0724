"""Real servers for tests, started on 127.0.0.1 and stopped by pid.

``start_postgres`` runs a throwaway PostgreSQL cluster with ``initdb`` and
``pg_ctl``. PostgreSQL refuses to run as root, so under root the cluster lives
in a fresh folder owned by the ``postgres`` user (created by Debian's package)
or, failing that, ``nobody``, and the server runs as that user. The session
fixture ``postgres_url`` of ``tests/pipelines/conftest.py`` exposes it.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger(__name__)

DATABASE = "leadscore"
SUPERUSER = "leadscore"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


@dataclass(frozen=True)
class PostgresServer:
    """A running test server.

    Attributes:
        url: SQLAlchemy URL of an empty database (``postgresql+psycopg://...``).
        port: TCP port on 127.0.0.1.
        data_dir: The cluster's folder.
        pid: Process id of the postmaster.
    """

    url: str
    port: int
    data_dir: Path
    pid: int


def find_postgres_bin() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Raises:
        PostgresUnavailable: No PostgreSQL server installation was found.
    """
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or under "
        "/usr/lib/postgresql/*/bin; run scripts/system-deps.sh to install them."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as, or ``None`` to stay as we are."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("Running as root and neither 'postgres' nor 'nobody' exists.")


@contextmanager
def start_postgres(
    tmp_dir: str | os.PathLike[str], timeout: float = 60.0
) -> Iterator[PostgresServer]:
    """Run a PostgreSQL server on a free port of 127.0.0.1 for the ``with`` block.

    Args:
        tmp_dir: A folder for the cluster. Under root a fresh folder under the
            system temp dir is used instead, since pytest's folders are private to
            root and the server runs as another user.
        timeout: Seconds to wait for the server to accept connections.

    Yields:
        The running server; it is stopped (by its pid) and its files removed on exit.

    Raises:
        PostgresUnavailable: PostgreSQL is not installed.
        RuntimeError: The server did not start; the message carries its log.
    """
    bin_dir = find_postgres_bin()
    account = _run_as()
    if account is None:
        root = Path(tempfile.mkdtemp(prefix="pg-", dir=tmp_dir))
    else:
        root = Path(tempfile.mkdtemp(prefix="leadscore-pg-"))
        os.chown(root, account.pw_uid, account.pw_gid)
    data_dir, log_file, port = root / "data", root / "server.log", free_port()

    as_account = (
        {} if account is None
        else {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    )  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir / args[0]), *args[1:]],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C", "HOME": str(root)},
            **as_account,
        )

    pid = None
    try:
        init = run("initdb", "-D", str(data_dir), "-U", SUPERUSER, "--auth=trust",
                   "-E", "UTF8", "--no-locale", "--no-sync")  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{data_dir}'",
            # A test server: durability costs time and buys nothing.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        started = run("pg_ctl", "-D", str(data_dir), "-l", str(log_file), "-w",
                      "-t", str(int(timeout)), "start")  # fmt: skip
        pid = _postmaster_pid(data_dir)
        if started.returncode != 0 or pid is None:
            raise RuntimeError(
                f"PostgreSQL did not start on port {port}:\n{started.stderr}\n{_tail(log_file)}"
            )
        admin_url = f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/postgres"
        _wait_for(admin_url, timeout, log_file)
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{DATABASE}"'))
        engine.dispose()
        url = f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"
        log.info("PostgreSQL %s running as pid %d at %s.", bin_dir.parent.name, pid, url)
        yield PostgresServer(url=url, port=port, data_dir=data_dir, pid=pid)
    finally:
        if pid is not None:
            _stop(pid)
        shutil.rmtree(root, ignore_errors=True)


def _postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    first_line = pid_file.read_text().splitlines()[:1]
    return int(first_line[0]) if first_line and first_line[0].isdigit() else None


def _wait_for(url: str, timeout: float, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text("SELECT 1"))
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections within {timeout:.0f}s:\n"
                        f"{_tail(log_file)}"
                    ) from None
                time.sleep(0.2)
    finally:
        engine.dispose()


def _stop(pid: int, grace: float = 15.0) -> None:
    """Stop the postmaster: SIGINT is PostgreSQL's "fast" shutdown."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    log.warning("PostgreSQL pid %d ignored SIGINT for %.0fs; killing it.", pid, grace)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    # A container's init may never reap the orphaned postmaster: a zombie is dead too.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no server log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
