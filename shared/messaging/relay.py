"""The outbox relay: publishes committed outbox rows to Kafka, in order, and marks them sent.

One relay at a time works on a schema (a transaction-scoped advisory lock), so rows keep
their order per key across service instances. Its transaction reads the oldest unsent rows
and marks them sent in one statement, and commits once Kafka has acknowledged them all. A
crash or a failure before that commit leaves the rows unsent, to be published again:
consumers' inboxes make that harmless.

The relay is woken by its own service's commits that added rows; it also looks every
``idle_poll_seconds`` for rows written by other processes (seeding, another instance whose
relay is busy). When another instance holds the lock, it tries again shortly: that instance
may have read the outbox before our rows committed.
"""

import asyncio
import contextlib
import logging
import zlib
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import Table, func, select

from shared.db import Database, driver, log_retry
from shared.faults import RELAY_AFTER_PUBLISH, failpoint
from shared.kafka_security import client_kwargs
from shared.metrics import OUTBOX_PUBLISHED
from shared.settings import Settings

log = logging.getLogger(__name__)

LOCKED = -1


def make_producer(
    bootstrap_servers: str, client_id: str, settings: Settings | None = None
) -> AIOKafkaProducer:
    """A durable producer: idempotent, ``acks=all``; authenticated as ``settings`` say."""
    return AIOKafkaProducer(
        **client_kwargs(settings),
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=30_000,
    )


class OutboxRelay:
    """Moves rows from one service's outbox to Kafka until stopped."""

    def __init__(
        self,
        db: Database,
        outbox: Table,
        producer: AIOKafkaProducer,
        *,
        service: str,
        batch_size: int = 500,
        idle_poll_seconds: float = 0.5,
        busy_retry_seconds: float = 0.02,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.producer = producer
        self.service = service
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        self.busy_retry_seconds = busy_retry_seconds
        self._wake = asyncio.Event()
        self._lock_key = zlib.crc32(f"outbox:{db.schema}".encode())
        table = driver.qualified(outbox)
        # The oldest unsent rows, marked sent in the same statement that reads them. The mark
        # commits only after Kafka has acknowledged every row; a failure or a crash before
        # that rolls it back, and the rows are published again.
        self._take_unsent = (
            f"UPDATE {table} SET sent_at = now() WHERE id IN ("
            f"SELECT id FROM {table} WHERE sent_at IS NULL ORDER BY id LIMIT $1)"
            " RETURNING id, topic, key, value, headers"
        )

    def wake(self) -> None:
        """Called after a commit that may have added rows: publish them without waiting."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                published = await self.publish_batch()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_retry(log, "outbox relay failed", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if published == LOCKED:
                await asyncio.sleep(self.busy_retry_seconds)
            elif published < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll_seconds)

    async def publish_batch(self) -> int:
        """Publish up to one batch of unsent rows; returns how many were published, or
        :data:`LOCKED` when another instance's relay holds the schema's lock."""
        self._wake.clear()  # before reading, so that a commit from now on is not missed
        # On the driver: a relay batch is two statements, run after every commit. The lock
        # is a statement of its own: taken in the read's statement, it would be taken after
        # that statement's snapshot, which could predate another relay's last marks.
        async with driver.transaction(self.db.engine) as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self._lock_key):
                return LOCKED
            rows = sorted(await conn.fetch(self._take_unsent, self.batch_size), key=_id)
            if not rows:
                return 0
            futures = [
                await self.producer.send(
                    row["topic"],
                    value=row["value"],
                    key=row["key"],
                    headers=[(k, str(v).encode()) for k, v in (row["headers"] or {}).items()],
                )
                for row in rows
            ]
            await asyncio.gather(*futures)
            failpoint(RELAY_AFTER_PUBLISH)
        OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        return len(rows)

    async def backlog(self) -> int:
        async with self.db.engine.connect() as conn:
            n = await conn.scalar(
                select(func.count()).select_from(self.outbox).where(self.outbox.c.sent_at.is_(None))
            )
        return int(n or 0)


def _id(row: Any) -> int:
    """A row's outbox id: ``RETURNING`` gives rows in no particular order, ids give theirs."""
    return int(row["id"])


__all__ = ["OutboxRelay", "make_producer"]
