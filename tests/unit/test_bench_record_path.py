"""``bench/record_path.py`` times the path it says: each record handled or skipped as a
service would, its events written to the outbox and published by the relay. A stand-in that
made the records duplicates, or a relay that published nothing, would time less than that."""

from prometheus_client import REGISTRY

from bench.record_path import NAME, records, service, unsent
from shared.topics import Topic


def consumed(outcome: str) -> float:
    labels = {"service": NAME, "topic": Topic.ORDER_EVENTS.value, "outcome": outcome}
    return REGISTRY.get_sample_value("caravan_records_consumed_total", labels) or 0.0


async def test_two_records_of_three_are_handled_and_their_events_published() -> None:
    consumer, relay, raw = service()
    before = {outcome: consumed(outcome) for outcome in ("handled", "skipped", "duplicate")}
    await consumer.dispatch_batch(records(9))
    assert consumed("handled") - before["handled"] == 6
    assert consumed("skipped") - before["skipped"] == 3
    assert consumed("duplicate") == before["duplicate"]
    raw.unsent = unsent(raw.written)
    topics = [row["topic"] for row in raw.unsent]
    assert topics == [Topic.INVENTORY_EVENTS.value] * 6  # stock.reserved, stock.sold, ...
    assert all("traceparent" in row["headers"] for row in raw.unsent)
    assert await relay.publish_batch() == 6
