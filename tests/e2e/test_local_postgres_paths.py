"""A local cluster (caravan/infra/postgres.py) kept under a path with a space and a quote in
it starts and answers over its unix socket (postgresql.conf quotes each socket directory,
so the quote does not end the setting); under a path with a comma, which clients would read
as a list of hosts, it is kept in its /var/tmp fallback and answers too."""

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from caravan.infra.postgres import LocalPostgres
from tests.harness import scratch_cluster


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
