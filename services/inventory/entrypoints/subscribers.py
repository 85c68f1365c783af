"""What the inventory service consumes, and the loop that reports overdue holds."""

import logging
from datetime import timedelta
from functools import partial

from services.inventory import handlers
from shared.loops import sweeping
from shared.messaging.consumer import Subscription
from shared.messaging.uow import UnitOfWork
from shared.topics import EventType, Topic

log = logging.getLogger(__name__)


def subscriptions(hold: timedelta) -> list[Subscription]:
    """``hold``: how long a hold lasts at most (``stock.reserved`` says until when)."""
    return [
        Subscription(
            Topic.ORDER_EVENTS,
            {
                EventType.ORDER_PLACED: partial(handlers.on_order_placed, hold=hold),
                EventType.ORDER_CANCELLED: handlers.on_order_cancelled,
                EventType.ORDER_CONFIRMED: handlers.on_order_confirmed,
            },
            prefetch=handlers.prefetch_order_events,
        )
    ]


async def hold_expiry_loop(uow: UnitOfWork, hold: timedelta, interval: float) -> None:
    """Every ``interval`` seconds, report the holds older than ``hold`` (``stock.expired``)."""

    async def sweep() -> int:
        async with uow.begin() as tx:
            return await handlers.report_overdue_holds(tx, hold)

    await sweeping(sweep, interval, log, "reported %d expired holds", "hold expiry sweep failed")
