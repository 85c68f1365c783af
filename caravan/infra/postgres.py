"""Run a local PostgreSQL cluster from the system's binaries, without Docker.

The cluster listens on 127.0.0.1 and on a unix socket in ``<root>/socket/``
(and inside the 0700 data folder, where our own ``psql`` finds a cluster started by an
earlier version of this module too).  The services and tools connect over the
public socket (a TCP loopback round trip costs measurably more CPU), as role
``caravan`` / password ``caravan`` (a superuser, owner of database ``caravan``) or
the roles made from it.  Authentication (``pg_hba.conf``, written at every
start): the cluster's own OS user by ``peer``; every other local or TCP
connection by scram-sha-256.  Nothing is trusted.

When running as root, every PostgreSQL command runs as the ``postgres`` OS user
and the data folder belongs to it.  If that user cannot reach ``base_dir`` (a
parent folder it may not traverse), the cluster lives under
``/var/tmp/caravan-<hash of base_dir>/`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import text
from sqlalchemy.pool import NullPool

from caravan.infra.logs import error_line, size, written_since
from caravan.infra.ports import HOST, port_open
from caravan.output import OperatorError
from shared.db.engine import async_engine

ROLE = "caravan"
PASSWORD = "caravan"
DATABASE = "caravan"
SERVICE_USER = "postgres"  # OS user that owns the cluster when we run as root
STOP_MODES = ("smart", "fast", "immediate")

_T = TypeVar("_T")

_REFUSED_A_CONNECTION = re.compile(
    r"FATAL:  (the database system is (starting up|shutting down|in recovery mode|not yet"
    r" accepting connections|not accepting connections)|sorry, too many clients already"
    r"|terminating connection due to administrator command|connection to client lost"
    r"|password authentication failed|no pg_hba.conf entry|role .* does not exist"
    r"|database .* does not exist)"
)
"""A server's FATAL line that a client's connection was refused or ended (the services keep
trying theirs while the server starts, recovers or stops): none says why it exited."""

# Kept at the end of postgresql.conf: rewritten (from the marker on) before every
# start.  fsync, synchronous_commit and full_page_writes are the defaults; they
# are spelled out because durability is a requirement and nobody should "speed
# up tests" by turning them off here.
_SETTINGS_MARKER = "# --- caravan local cluster ---"
_SETTINGS = f"""{_SETTINGS_MARKER}
listen_addresses = '{{host}}'
unix_socket_directories = {{socket_dirs}}
unix_socket_permissions = 0777
max_connections = 200
shared_buffers = 128MB
fsync = on
synchronous_commit = on
full_page_writes = on
password_encryption = 'scram-sha-256'
"""

# The whole of pg_hba.conf, rewritten before every start.
_HBA = """# written by caravan before every start: edits here are lost
# TYPE  DATABASE  USER  ADDRESS  METHOD
local   all  {cluster_user}  peer
local   all  all  scram-sha-256
host    all  all  127.0.0.1/32  scram-sha-256
host    all  all  ::1/128  scram-sha-256
"""

_BOOTSTRAP_SQL = f"""
SELECT 'CREATE ROLE {ROLE} LOGIN SUPERUSER'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')\\gexec
ALTER ROLE {ROLE} PASSWORD '{PASSWORD}';
SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec
"""


PACKAGED = Path("/usr/lib/postgresql")
"""Where Debian's and Ubuntu's packages put each version's server binaries (not on PATH)."""


def _bin_dir() -> Path:
    """Folder of the PostgreSQL server binaries (``initdb``, ``pg_ctl``, ...)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent  # /usr/local/bin/pg_ctl may be a symlink
    versions = sorted(
        PACKAGED.glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not versions:
        raise OperatorError("PostgreSQL server binaries (pg_ctl, initdb) are not installed")
    return versions[-1].parent


class DataFolderGone(OperatorError):
    """The cluster's data folder is gone (deleted under a running ``caravan up``): starting it
    again would make an empty cluster, every order lost, the services failing on schemas that
    are not there."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(
            f"PostgreSQL's data folder {data_dir} is gone: not made again, empty, while "
            "caravan up runs (every order would be lost). Put it back and it is started again; "
            "or stop caravan up, and its next start makes a new, empty cluster"
        )
        self.data_dir = data_dir


def why_it_exited(log: str) -> str:
    """A server's ``log`` without the lines of the connections it refused or ended
    (:data:`_REFUSED_A_CONNECTION`): written by the dozen while a crash recovery runs, before
    and after the line that says why it failed (a drill's ``pg_wal`` on a full disk: "could
    not write to file "pg_wal/xlogtemp.N": No space left on device", then "the database
    system is not yet accepting connections", which was said)."""
    return "\n".join(line for line in log.splitlines() if not _REFUSED_A_CONNECTION.search(line))


_PORT_TAKEN = re.compile(r"could not bind .*: Address already in use|could not create any TCP/IP")
"""A server's log lines of its port held by another program: it could not bind it, and then
had no socket to listen on ("could not create any TCP/IP sockets", said apart, as another
fault, where ``refuse_held_port`` said the port in use)."""


class LocalPostgres:
    """A local PostgreSQL cluster kept in ``base_dir`` (or its /var/tmp fallback).

    ``start()`` is idempotent: a cluster that is already running is reused.
    """

    def __init__(self, base_dir: Path, port: int = 15432) -> None:
        self.base_dir = base_dir.resolve()
        self.port = port
        self._as_service_user = os.geteuid() == 0

    @cached_property
    def root(self) -> Path:
        """Folder holding ``data/`` and ``postgres.log``: ``base_dir`` or its /var/tmp fallback."""
        digest = hashlib.sha256(str(self.base_dir).encode()).hexdigest()[:10]
        fallback = Path("/var/tmp") / f"caravan-{digest}"
        # The socket paths (<root>/data|socket/.s.PGSQL.<port>) must fit in sockaddr_un
        # (107 bytes), and have no comma: libpq (psql) and asyncpg read a comma in a host as
        # the end of one host of a list, with no way to escape it.
        socket_path = str(self.base_dir / "socket" / f".s.PGSQL.{self.port}")
        if len(os.fsencode(socket_path)) > 100 or "," in socket_path:  # bytes, not characters
            return fallback
        if self._as_service_user:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            reachable = subprocess.run(
                ["runuser", "-u", SERVICE_USER, "--", "test", "-x", str(self.base_dir)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
            if reachable.returncode != 0:
                return fallback
        return self.base_dir

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder (PGDATA); its private unix socket lives here too."""
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """Folder of the cluster's public unix socket, the one the services use."""
        return self.root / "socket"

    @property
    def cluster_user(self) -> str:
        """The OS user the server runs as, and the name of its bootstrap superuser."""
        return SERVICE_USER if self._as_service_user else _current_user()

    @property
    def logfile(self) -> Path:
        """Server log written by ``pg_ctl -l``."""
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy async URL of the ``caravan`` database: over the public unix socket
        when it exists, else over TCP (a cluster started before there was one)."""
        if (self.socket_dir / f".s.PGSQL.{self.port}").exists():
            where = f"@:{self.port}/{DATABASE}?host={quote(str(self.socket_dir))}"
        else:
            where = f"@{HOST}:{self.port}/{DATABASE}"
        return f"postgresql+asyncpg://{ROLE}:{PASSWORD}{where}"

    def start(self, make: bool = True) -> str:
        """Init (first use) and start the cluster unless it runs already; return ``url``.
        Not ``make``: a data folder with no cluster is refused (:class:`DataFolderGone`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:  # serialise concurrent launchers
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.data_dir / "PG_VERSION").exists():
                if not make:
                    raise DataFolderGone(self.data_dir)
                self._initdb()
            self._forget_stale_pid()
            if not self.is_running():
                self.refuse_held_port()
                self._configure()
                logged = size(self.logfile)
                args = ("-w", "-t", "60", "-l", str(self.logfile), "-o", f"-p {self.port}")
                started = self._pg_ctl("start", *args, check=False)
                if started.returncode != 0:
                    log = written_since(self.logfile, logged)
                    if _PORT_TAKEN.search(log):  # held, though no program answered on it
                        raise OperatorError(self._held_port())
                    said = error_line(
                        why_it_exited(written_since(self.logfile, logged)),
                        first=True,  # a crash recovery's PANIC or FATAL: what followed it
                        otherwise=started.stdout + started.stderr,  # pg_ctl's own
                        writes_to=[self.data_dir, self.data_dir / "pg_wal"],  # may be a mount
                    )
                    raise OperatorError(
                        f"PostgreSQL on port {self.port} did not start ({said}); see {self.logfile}"
                    )
            self._psql(_BOOTSTRAP_SQL)  # idempotent: role + database
        return self.url

    def refuse_held_port(self) -> None:
        """Refuse (:class:`OperatorError`) to start on a port another program holds (this
        cluster's own, running, is not refused)."""
        if port_open(self.port) and not self.is_running():
            raise OperatorError(self._held_port())

    def _held_port(self) -> str:
        """What is said of its port held by another program: found listening before the
        start, or found by the server failing to bind it (a program that holds it answering
        nothing: bound, not listening, or frozen), in the same words, what to do included."""
        return (
            f"port {self.port} is in use by a program other than the PostgreSQL of"
            f" {self.data_dir} (ss -ltnp 'sport = :{self.port}' names it if it listens): stop it,"
            " or name a running PostgreSQL in DATABASE_URL"
        )

    def is_running(self) -> bool:
        """Whether the postmaster of this data folder is running (``pg_ctl status``)."""
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._pg_ctl("status", check=False).returncode == 0

    def pid(self) -> int | None:
        """The postmaster's pid (its ``postmaster.pid``) while it runs, else None."""
        pid, command = self._recorded_pid()
        return pid if b"postgres" in command else None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the ``caravan`` database accepts a connection and answers ``select 1``.

        Safe to call from inside a running event loop (the check runs on a
        private loop in a worker thread).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                _run_sync(_select_one(self.url, max(deadline - time.monotonic(), 1.0)))
                return
            except Exception as exc:  # not up yet: refused, starting up, timeout, ...
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"PostgreSQL on port {self.port} not ready after {timeout:.0f}s: {exc!r}"
                    ) from exc
            time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster if it runs (``pg_ctl stop -m fast`` by default)."""
        if self.is_running():
            self._pg_ctl("stop", "-w", "-t", "60", "-m", _checked_mode(mode))

    def restart(self, mode: str = "fast") -> None:
        """Restart the cluster; ``mode="immediate"`` simulates a crash (recovery on start)."""
        if not self.is_running():
            self.start()
            return
        self._pg_ctl(
            "restart",
            "-w",
            "-t",
            "60",
            "-m",
            _checked_mode(mode),
            "-l",
            str(self.logfile),
            "-o",
            f"-p {self.port}",
        )

    # -- internals -----------------------------------------------------------

    def _initdb(self) -> None:
        """Make the cluster in a folder of its own, named ``data`` once initdb has finished:
        initdb writes ``PG_VERSION`` first, so an initdb cut short (Ctrl-C on a first start)
        left a ``data`` folder taken for a cluster, which failed every later start."""
        partial = self.data_dir.with_name(f"{self.data_dir.name}.initdb")
        shutil.rmtree(partial, ignore_errors=True)  # what an interrupted initdb left
        with contextlib.suppress(FileNotFoundError, OSError):
            self.data_dir.rmdir()  # an empty folder (a start that failed before initdb)
        partial.mkdir(parents=True, mode=0o700)
        self.logfile.touch()
        if self._as_service_user:
            for path in (partial, self.logfile):
                shutil.chown(path, SERVICE_USER, SERVICE_USER)
        self._run(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(partial),
                "--username",
                self.cluster_user,
                "--auth-local",
                "peer",  # _configure writes the whole pg_hba.conf before the first start
                "--auth-host",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ]
        )
        partial.rename(self.data_dir)

    def _forget_stale_pid(self) -> None:
        """Remove a ``postmaster.pid`` whose pid is now another program's: left by a
        postmaster that is gone (the machine or container restarted), it made ``pg_ctl``
        take that program for a running server (no start, then no connection), and the
        postmaster refuses to start beside a lock file of a live pid. A dead pid is left to
        them: they handle it."""
        pid, command = self._recorded_pid()
        if pid is not None and b"postgres" not in command:
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def _recorded_pid(self) -> tuple[int | None, bytes]:
        """The pid ``postmaster.pid`` records and that process's command line (None and
        nothing: no file, or no such process)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            return pid, Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None, b""

    def _configure(self) -> None:
        """Write our settings and ``pg_hba.conf`` (the cluster is stopped): also brings a
        cluster made by an earlier version of this module up to date."""
        self.socket_dir.mkdir(mode=0o755, exist_ok=True)
        self.socket_dir.chmod(0o755)
        conf_path = self.data_dir / "postgresql.conf"
        conf = conf_path.read_text().split(_SETTINGS_MARKER)[0]
        settings = _SETTINGS.format(
            host=HOST, socket_dirs=_conf_string(_directory_list(self.data_dir, self.socket_dir))
        )
        conf_path.write_text(conf.rstrip("\n") + "\n\n" + settings)
        (self.data_dir / "pg_hba.conf").write_text(_HBA.format(cluster_user=self.cluster_user))
        if self._as_service_user:
            shutil.chown(self.socket_dir, SERVICE_USER, SERVICE_USER)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), *args], check)

    def _psql(self, sql: str) -> None:
        command = [
            str(_bin_dir() / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-U",
            self.cluster_user,
            "-d",
            "postgres",
        ]
        self._run(command, input_text=sql)

    def _run(
        self, command: list[str], check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if self._as_service_user:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.root,  # a folder the service user can enter
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\nserver log: {self.logfile}"
            )
        return result


async def _select_one(url: str, time_limit: float) -> None:
    engine = async_engine(url, poolclass=NullPool)
    try:
        async with asyncio.timeout(time_limit), engine.connect() as conn:
            await conn.execute(text("select 1"))
    finally:
        await engine.dispose()


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion on a fresh event loop in a worker thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _checked_mode(mode: str) -> str:
    if mode not in STOP_MODES:
        raise ValueError(f"mode must be one of {STOP_MODES}, not {mode!r}")
    return mode


def _conf_string(value: str) -> str:
    """``value`` as a string in ``postgresql.conf``: quoted, a quote in it doubled."""
    return "'" + value.replace("'", "''") + "'"


def _directory_list(*dirs: Path) -> str:
    """``dirs`` as a list setting of directories takes them: each in double quotes, so that a
    comma or a space in a path is part of it, not the end of the entry."""
    return ",".join('"' + str(d).replace('"', '""') + '"' for d in dirs)


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def local_postgres(base_dir: Path, port: int) -> LocalPostgres:
    """The cluster on ``port`` kept under ``base_dir``: ``caravan up``'s under the checkout's
    ``.cache`` (caravan.checkout), the test session's under its own."""
    return LocalPostgres(base_dir / f"postgres-{port}", port=port)
