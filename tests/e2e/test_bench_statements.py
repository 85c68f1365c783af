"""``bench/pipeline.py --statements`` loads ``pg_stat_statements`` into the bench's local
cluster and counts the statements run; the next run without the flag takes it out again, so
a kept cluster does not carry its cost into a headline run; a server the bench does not own
is left as it is. On a cluster of the test's own (the flag restarts PostgreSQL)."""

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench.pipeline import counted_statements, database_counters
from caravan.system import Infrastructure
from tests.harness import scratch_cluster


@pytest.fixture
def infra() -> Iterator[Infrastructure]:
    with scratch_cluster("caravan-bench-pg-") as pg:
        yield Infrastructure("", pg.url, "", "local", local_postgres=pg)


async def preloaded(url: str) -> str:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return str(await conn.scalar(text("show shared_preload_libraries")))
    finally:
        await engine.dispose()


async def run_statements(url: str, n: int) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            for i in range(n):
                await conn.execute(text("select cast(:i as int)"), {"i": i})
    finally:
        await engine.dispose()


async def test_statements_are_counted_with_the_flag_and_the_library_is_taken_out_without(
    infra: Infrastructure,
) -> None:
    url = infra.database_url
    assert await counted_statements(infra, False) is False  # nothing to undo: no restart
    commits, statements = await database_counters(url, False)
    assert commits > 0 and statements == 0

    assert await counted_statements(infra, True) is True
    assert await preloaded(url) == "pg_stat_statements"

    async def counted(n: int) -> int:
        _, before = await database_counters(url, True)
        await run_statements(url, n)
        _, after = await database_counters(url, True)
        return after - before  # with the same few of a session's setup and of the counting

    few, more = await counted(25), await counted(125)
    assert few >= 25 and more - few == 100

    assert await counted_statements(infra, True) is True  # kept as it is
    # A server named by DATABASE_URL (not the bench's own) is left as it is.
    external = Infrastructure("", url, "", "external")
    assert await counted_statements(external, False) is True
    assert await preloaded(url) == "pg_stat_statements"

    assert await counted_statements(infra, False) is False
    assert await preloaded(url) == ""
    with pytest.raises(SystemExit, match="must preload pg_stat_statements"):
        await counted_statements(external, True)
