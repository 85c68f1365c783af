"""The benchmark reports PostgreSQL's durability as the database has it, and a relaxed run
(``bench/pipeline.py --relax-synchronous-commit``) is undone by the next run's reset."""

from bench.pipeline import database_durability
from tests.harness import System


async def test_the_durability_report_is_read_back_and_a_relaxed_setting_is_reset(
    caravan: System,
) -> None:
    url = caravan.infra.database_url
    try:
        relaxed = await database_durability(url, "off")
        assert relaxed == {"postgres_fsync": "on", "postgres_synchronous_commit": "off"}
    finally:
        durable = await database_durability(url, None)  # what every headline run does first
    assert durable == {"postgres_fsync": "on", "postgres_synchronous_commit": "on"}
