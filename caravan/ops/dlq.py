"""Dead letters: reading them from the ``<topic>.dlq`` topics, and sending chosen ones back.

A redriven record goes to its original topic with its original key and value (or a fixed
value), and a header naming the dead letter it came from; each redrive is recorded.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from caravan.ops.record import record
from shared.kafka_security import client_kwargs
from shared.messaging import kafka_admin
from shared.topics import Topic


@dataclass(frozen=True)
class DeadLetter:
    dlq_topic: str
    partition: int
    offset: int
    time: datetime
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.dlq_topic}:{self.partition}:{self.offset}"

    @property
    def error(self) -> str:
        return self.headers.get("dlq.error", "?")

    @property
    def origin(self) -> str:
        return self.headers.get("dlq.topic", self.dlq_topic.removesuffix(".dlq"))


async def read(bootstrap: str, topics: list[str] | None = None) -> list[DeadLetter]:
    """Every dead letter now in the given dead-letter topics (all of them by default)."""
    names = topics or [t.dlq for t in Topic]
    letters: list[DeadLetter] = []
    async with kafka_admin.group_client(bootstrap, "caravan-ops-dlq-reader") as consumer:
        for name in names:
            tps = await kafka_admin.topic_partitions(consumer, name)
            end = await consumer.end_offsets(tps)
            begin = await consumer.beginning_offsets(tps)
            pending = {tp for tp in tps if end[tp] > begin[tp]}
            if not pending:
                continue
            consumer.assign(list(pending))
            await consumer.seek_to_beginning(*pending)
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=500)
                for tp, records in batch.items():
                    for r in records:
                        letters.append(
                            DeadLetter(
                                r.topic,
                                r.partition,
                                r.offset,
                                datetime.fromtimestamp(r.timestamp / 1000, UTC),
                                r.key,
                                r.value or b"",
                                {k: v.decode("utf-8", "replace") for k, v in r.headers},
                            )
                        )
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
    return sorted(letters, key=lambda d: (d.time, d.ref))


def select(
    letters: list[DeadLetter],
    *,
    topic: str | None = None,
    error: str | None = None,
    since: datetime | None = None,
    refs: list[str] | None = None,
) -> list[DeadLetter]:
    """The dead letters matching every filter given (``topic`` is the original topic)."""
    return [
        d
        for d in letters
        if (topic is None or d.origin == topic)
        and (error is None or d.error == error)
        and (since is None or d.time >= since)
        and (refs is None or d.ref in refs)
    ]


async def redrive(
    bootstrap: str,
    database_url: str,
    letters: list[DeadLetter],
    *,
    value: bytes | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Send ``letters`` back to their original topics; ``value`` replaces the value (one letter)."""
    if value is not None and len(letters) != 1:
        raise ValueError("a replacement value applies to exactly one dead letter")
    sent: list[str] = []
    if not dry_run and letters:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **client_kwargs()
        )
        await producer.start()
        try:
            for d in letters:
                await producer.send_and_wait(
                    d.origin,
                    value if value is not None else d.value,
                    key=d.key,
                    headers=[("caravan.redriven-from", d.ref.encode())],
                )
                sent.append(d.ref)
        finally:
            await producer.stop()
    await record(
        database_url,
        "redrive",
        dry_run,
        ", ".join(sorted({d.origin for d in letters})),
        {"letters": [d.ref for d in letters], "replaced_value": value is not None},
    )
    return [d.ref for d in letters] if dry_run else sent


__all__ = ["DeadLetter", "read", "redrive", "select"]
