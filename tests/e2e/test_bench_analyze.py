"""The benchmark's warm-up ends with statistics of every service's tables
(``bench.pipeline.analyze``), as autovacuum's first analyze would give a running system:
the database role the bench connects as may analyze them all, none is skipped."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.pipeline import analyze
from services import SERVICES
from tests.harness import System


async def test_every_service_table_is_analyzed(caravan: System) -> None:
    url = caravan.infra.database_url
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            started = await conn.scalar(text("select clock_timestamp()"))
        await analyze(url)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "select schemaname, relname, last_analyze from pg_stat_user_tables"
                        " where schemaname = any(:schemas)"
                    ),
                    {"schemas": list(SERVICES)},
                )
            ).all()
    finally:
        await engine.dispose()
    assert {row.schemaname for row in rows} == set(SERVICES)
    stale = [
        f"{r.schemaname}.{r.relname}"
        for r in rows
        if not r.last_analyze or r.last_analyze < started
    ]
    assert not stale, f"not analyzed: {stale}"
