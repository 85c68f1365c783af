"""What the inventory service consumes, and the loop that reports overdue holds."""

import asyncio
import logging
from datetime import timedelta

from services.inventory import handlers
from shared.db import log_retry
from shared.messaging.consumer import Subscription
from shared.messaging.uow import UnitOfWork
from shared.topics import EventType, Topic

log = logging.getLogger(__name__)

SUBSCRIPTIONS = [
    Subscription(
        Topic.ORDER_EVENTS,
        {
            EventType.ORDER_PLACED: handlers.on_order_placed,
            EventType.ORDER_CANCELLED: handlers.on_order_cancelled,
            EventType.ORDER_CONFIRMED: handlers.on_order_confirmed,
        },
        prefetch=handlers.prefetch_order_events,
    )
]


async def hold_expiry_loop(uow: UnitOfWork, hold: timedelta, interval: float) -> None:
    """Every ``interval`` seconds, report the holds older than ``hold`` (``stock.expired``)."""
    while True:
        try:
            async with uow.begin() as tx:
                n = await handlers.report_overdue_holds(tx, hold)
            if n:
                log.info("reported %d expired holds", n)
                continue
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_retry(log, "hold expiry sweep failed", exc)
        await asyncio.sleep(interval)
