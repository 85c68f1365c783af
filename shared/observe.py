"""Figures a service samples every few seconds for its ``/metrics``: outbox backlog and
age, and its consumer group's lag per partition."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select

from shared.messaging import kafka_admin
from shared.metrics import CONSUMER_LAG, OUTBOX_BACKLOG, OUTBOX_OLDEST_SECONDS
from shared.runtime import Service

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]


async def sample_outbox(service: Service) -> None:
    outbox = service.relay.outbox
    async with service.db.engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    func.count(),
                    func.coalesce(
                        func.extract("epoch", func.now() - func.min(outbox.c.created_at)), 0
                    ),
                ).where(outbox.c.sent_at.is_(None))
            )
        ).one()
    OUTBOX_BACKLOG.labels(service.name).set(row[0])
    OUTBOX_OLDEST_SECONDS.labels(service.name).set(float(row[1]))


async def sample_lag(service: Service) -> None:
    bootstrap = service.settings.kafka_bootstrap_servers
    group = service.consumer.group_id
    async with kafka_admin.group_client(bootstrap, group, service.settings) as consumer:
        for sub in service.consumer.subscriptions:
            for p in await kafka_admin.offsets(consumer, sub.topic.value):
                CONSUMER_LAG.labels(service.name, sub.topic.value, str(p.partition)).set(p.lag)


async def observe_loop(service: Service, interval: float = 5.0) -> None:
    """Sample the figures until cancelled; a failed sample is logged and tried again."""
    probes: list[Probe] = [
        lambda: sample_outbox(service),
        lambda: sample_lag(service),
        *service.probes,
    ]
    while True:
        for probe in probes:
            try:
                await probe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("metrics sample failed: %r", exc)
        await asyncio.sleep(interval)
