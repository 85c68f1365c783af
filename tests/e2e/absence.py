"""Proving that something did not happen, without sleeping and looking: a marker that must
come after the unwanted thing, were it coming, is waited for, and only then is its absence
checked."""

from aiokafka import ConsumerRecord

from tests.harness import System


async def caught_up(caravan: System, service: str, record: ConsumerRecord) -> None:
    """Send ``record`` again (a redelivery, which every consumer's inbox drops) and wait
    until the group of ``service`` has committed past the copy. Kafka keeps order within a
    partition and the service handles a partition in order, committing an offset only once
    its handling has: every record before the copy on that partition has been handled, and
    what handling it wrote (its outbox rows, its tables) is committed, by then. What is not
    there now will not come of them."""
    headers = [(k, v) for k, v in record.headers]
    sent = await caravan.publish_raw(record.topic, record.value, record.key, headers)
    await caravan.consumed(service, sent)
