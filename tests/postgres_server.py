"""A real PostgreSQL server for the tests: initdb into a temporary directory, listening on 127.0.0.1
on a free port (its unix socket in that directory too), trust authentication, stopped with
`pg_ctl stop -m fast`.

PostgreSQL refuses to run as root: as root, every server command runs as `nobody`, who is given
the temporary directory. The binaries come from PATH, else from Debian's /usr/lib/postgresql/*/bin
(the package `postgresql`, which .ci/run installs when initdb is missing).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUPERUSER = "postgres"
UNPRIVILEGED_UID = 65534  # nobody (and nogroup), as root
_TOOLS = ("initdb", "pg_ctl", "postgres")


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    on_path = [shutil.which(tool) for tool in _TOOLS]
    if all(on_path):
        directories = {Path(os.path.realpath(found)).parent for found in on_path if found}
        if len(directories) == 1:
            return directories.pop()
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p.parent.name), reverse=True
    )
    for directory in candidates:
        if all((directory / tool).is_file() for tool in _TOOLS):
            return directory
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One server; `dsn(dbname)` reaches a database on it over TCP loopback."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="orxaq-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        self.socket_dir.mkdir()
        if self._as_root:
            for path in (self.root, self.socket_dir):
                os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        self.running = False
        self._databases = itertools.count(1)

    def _run(self, tool: str, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        privileges: dict[str, Any] = (
            {"user": UNPRIVILEGED_UID, "group": UNPRIVILEGED_UID, "extra_groups": []} if self._as_root else {}
        )
        done = subprocess.run(
            [str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=self.root,
            env={**os.environ, "HOME": str(self.root), "LC_ALL": "C"},
            check=False,
            **privileges,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stderr}\n{log}")
        return done

    def start(self) -> None:
        # fsync off: the tests stop the server cleanly or kill clients, never the machine; the
        # service's own durability settings (synchronous_commit) are what the tests exercise.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        self._run("pg_ctl", "--pgdata", str(self.data), "--log", str(self.log), "-o", options, "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Fast shutdown: open sessions are ended, their transactions rolled back. "immediate": every
        session is killed at once, none can finish what it was doing (crash recovery at the next start)."""
        if self.running:
            self._run("pg_ctl", "--pgdata", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def dsn(self, dbname: str = SUPERUSER) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = SUPERUSER) -> list[tuple[Any, ...]]:
        """One statement in autocommit mode (CREATE DATABASE needs it); the rows it returned."""
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10) as db:
            cursor = db.execute(sql.encode())
            return cursor.fetchall() if cursor.description else []

    def create_database(self) -> str:
        """A new, empty database; its DSN."""
        name = f"ledger_{next(self._databases)}"
        self.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        """Starts the server again first if a test left it stopped."""
        if not self.running:
            self.start()
        self.execute(f"DROP DATABASE IF EXISTS {dsn.rsplit('/', 1)[1]} WITH (FORCE)")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_server(bin_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()
