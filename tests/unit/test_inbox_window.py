"""How long a service keeps its inbox rows covers its topics' dead-letter twins: a redrive
(`caravan dlq redrive`, `--again` above all) brings a letter's event back for as long as its
``.dlq`` topic keeps it, and the inbox row that makes it a no-op must still be there. The
window was sized from the topics the service reads alone, so a letter kept longer than them
was acted on twice once its event's row was pruned."""

import importlib
from collections.abc import Iterable

import pytest

from services import SERVICES
from shared.messaging import kafka_admin
from shared.messaging.retention import Retention
from shared.settings import Settings

# What the broker says: a topic keeps records 14 days (Kafka's 7 and a segment of 7), a
# dead-letter topic 37 (30 and a segment).
KEPT_HOURS = {False: 14 * 24.0, True: 37 * 24.0}


@pytest.mark.parametrize("name", SERVICES)
async def test_the_inbox_outlives_the_dead_letters_of_the_topics_a_service_reads(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    asked: list[str] = []

    async def longest_kept_hours(
        bootstrap: str, topics: Iterable[str], settings: Settings | None = None
    ) -> float:
        asked.extend(topics)
        return max(KEPT_HOURS[t.endswith(".dlq")] for t in asked)

    monkeypatch.setattr(kafka_admin, "longest_kept_hours", longest_kept_hours)
    settings = Settings(
        database_url="postgresql://caravan:secret@127.0.0.1:1/caravan", inbox_retention_hours=360
    )
    service = importlib.import_module(f"services.{name}.bootstrap").bootstrap(settings)
    retention = next(
        loop.__self__
        for loop in service.loops
        if isinstance(getattr(loop, "__self__", None), Retention)
    )
    try:
        assert await retention.inbox_keep_hours() == 37 * 24 + 24, asked
    finally:
        await service.db.dispose()
    reads = [sub.topic for sub in service.consumer.subscriptions]
    assert sorted(asked) == sorted([t.value for t in reads] + [t.dlq for t in reads])
