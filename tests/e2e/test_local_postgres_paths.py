"""A local cluster (caravan/infra/postgres.py) kept under a path with a space and a quote in
it starts and answers over its unix socket (postgresql.conf quotes each socket directory,
so the quote does not end the setting); under a path with a comma, which clients would read
as a list of hosts, it is kept in its /var/tmp fallback and answers too."""

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from caravan.infra.postgres import SERVICE_USER, LocalPostgres
from caravan.output import OperatorError
from tests.harness import free_port, scratch_cluster


@pytest.fixture(params=["caravan o'pg ", "caravan pg, co "])
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalPostgres]:
    with scratch_cluster(request.param) as pg:
        yield pg


async def test_a_cluster_under_a_path_with_a_space_and_a_quote_or_a_comma_answers(
    cluster: LocalPostgres,
) -> None:
    pg = cluster
    if "," in str(pg.base_dir):
        assert pg.root != pg.base_dir and "," not in str(pg.root)
    else:
        assert pg.root == pg.base_dir
    assert "host=" in pg.url  # over the unix socket
    engine = create_async_engine(pg.url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("select 1")) == 1
            directories = await conn.scalar(text("show unix_socket_directories"))
    finally:
        await engine.dispose()
    assert directories == f'"{pg.data_dir}","{pg.socket_dir}"'


def test_a_first_start_cut_short_during_initdb_starts_the_next_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """initdb writes PG_VERSION first: cut short (Ctrl-C on a first ``caravan up``), it left
    a data folder taken for a cluster, and every later start failed on it."""
    base = Path(tempfile.mkdtemp(prefix="caravan-initdb-", dir="/tmp"))
    base.chmod(0o755)
    pg = LocalPostgres(base, port=free_port())
    run = pg._run

    def interrupted(
        args: list[str], check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if Path(args[0]).name != "initdb":
            return run(args, check, input_text)
        folder = Path(args[args.index("-D") + 1])
        (folder / "PG_VERSION").write_text("15\n")  # its first file, then Ctrl-C
        raise KeyboardInterrupt

    try:
        monkeypatch.setattr(pg, "_run", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pg.start()
        monkeypatch.setattr(pg, "_run", run)
        pg.start()  # the next time: a cluster made whole
        pg.wait_ready()
        assert (pg.data_dir / "global" / "pg_control").exists()
    finally:
        pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def test_a_lock_file_naming_another_program_s_pid_does_not_stop_a_start() -> None:
    """After a restart, the pid a postmaster left in ``postmaster.pid`` may be another
    program's, of the cluster's own user: pg_ctl took it for a running server, and nothing
    started (the postmaster, told to, would have refused beside it)."""
    # Alive, not a postgres, and of the user the cluster runs as (another user's pid is
    # not seen as alive by pg_ctl or the postmaster: they handle that themselves).
    as_cluster = {"user": SERVICE_USER} if os.geteuid() == 0 else {}
    other = subprocess.Popen(["sleep", "60"], **as_cluster)  # type: ignore[call-overload]
    try:
        with scratch_cluster("caravan-stale-pid-") as pg:
            pg.stop()
            pid_file = pg.data_dir / "postmaster.pid"
            pid_file.write_text(f"{other.pid}\n{pg.data_dir}\n")
            pg.start()
            pg.wait_ready(timeout=20)
            assert int(pid_file.read_text().split()[0]) != other.pid
    finally:
        other.kill()
        other.wait()


def test_its_port_held_by_another_program_is_said_in_one_message_however_it_is_held() -> None:
    """A drill held PostgreSQL's port while it was down: ``caravan up``'s restarts said "port
    in use" of one try and "did not start (FATAL: could not create any TCP/IP sockets)" of
    the next, two causes to an operator for one. Held by a program that listens, or one that
    bound it and answers nothing (found only by the server failing to bind it), it is said
    alike, naming how to find the program and what to do."""
    with scratch_cluster("caravan-held-port-") as pg:
        pg.stop()
        said = []
        for listens in (True, False):
            holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                holder.bind(("127.0.0.1", pg.port))
                if listens:
                    holder.listen()
                with pytest.raises(OperatorError) as refused:
                    pg.start()
                said.append(str(refused.value))
            finally:
                holder.close()
        pg.start()  # once it is let go
        pg.wait_ready(timeout=20)
    held = (
        f"port {pg.port} is in use by a program other than the PostgreSQL of {pg.data_dir}"
        f" (ss -ltnp 'sport = :{pg.port}' names it if it listens): stop it, or name a running"
        " PostgreSQL in DATABASE_URL"
    )
    assert said == [held, held]
