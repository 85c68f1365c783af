"""What the orders service consumes, and the loop that expires overdue sagas."""

import logging
from datetime import UTC, datetime, timedelta
from functools import partial

from services.orders import handlers
from shared.logs import retried
from shared.loops import sweeping
from shared.messaging.consumer import Subscription
from shared.messaging.uow import UnitOfWork
from shared.topics import EventType, Topic

log = logging.getLogger(__name__)


def subscriptions(deadline: timedelta) -> list[Subscription]:
    return [
        Subscription(
            Topic.ORDER_REQUESTS,
            {EventType.ORDER_REQUESTED: partial(handlers.on_order_requested, deadline=deadline)},
            on_poison=handlers.on_invalid_request,
            prefetch=handlers.prefetch_requests,
            on_duplicate=handlers.on_request_again,
        ),
        Subscription(  # the platform adapter's orders: see shared.events.platform
            Topic.PLATFORM_EVENTS,
            {
                EventType.PLATFORM_ORDER_REQUESTED: partial(
                    handlers.on_order_requested, deadline=deadline
                )
            },
            on_poison=handlers.on_invalid_request,
            prefetch=handlers.prefetch_requests,
        ),
        Subscription(
            Topic.INVENTORY_EVENTS,
            {
                EventType.STOCK_RESERVED: handlers.on_stock_reserved,
                EventType.STOCK_REJECTED: handlers.on_stock_rejected,
                EventType.STOCK_EXPIRED: handlers.on_stock_expired,
            },
            prefetch=handlers.prefetch_orders,
        ),
        Subscription(
            Topic.PAYMENT_EVENTS,
            {
                EventType.PAYMENT_AUTHORIZED: handlers.on_payment_authorized,
                EventType.PAYMENT_DECLINED: handlers.on_payment_declined,
                EventType.PAYMENT_VOIDED: handlers.on_payment_undone,
                EventType.PAYMENT_REFUNDED: handlers.on_payment_undone,
            },
            prefetch=handlers.prefetch_orders,
        ),
    ]


EXPIRING = "orders expiring"
"""The fault of the warnings of :func:`expiry_loop` (said once, then once a minute)."""


async def expiry_loop(uow: UnitOfWork, interval: float) -> None:
    """Every ``interval`` seconds, cancel the pending orders whose deadline has passed. A
    sweep that expires some says so in a warning (an order expires when inventory or
    payments did not answer in time: docs/operations.md, "Orders expiring"), said as a
    retried fault is (:class:`shared.logs.Faults`): once, then at most once a minute while
    sweeps go on finding some, with how many orders the warnings not said had expired."""

    async def sweep() -> int:
        async with uow.begin() as tx:
            expired = await handlers.expire_due(tx, datetime.now(UTC))
        if expired:
            log.warning(
                "expired %d order(s) pending past their deadline, the oldest %s: stock or"
                " payment did not answer in time (docs/operations.md, Orders expiring)",
                len(expired),
                expired[0],
                extra=retried(EXPIRING, counted=(len(expired), "orders")),
            )
        return len(expired)

    await sweeping(sweep, interval, log, None, "expiry sweep failed")
