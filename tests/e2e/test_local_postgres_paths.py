"""A local cluster (caravan/infra/postgres.py) kept under a path with a space and a quote in
it starts and answers over its unix socket (postgresql.conf quotes each socket directory,
so the quote does not end the setting); under a path with a comma, which clients would read
as a list of hosts, it is kept in its /var/tmp fallback and answers too."""

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from caravan.infra.postgres import LocalPostgres
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
