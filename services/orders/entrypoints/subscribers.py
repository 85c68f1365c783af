"""What the orders service consumes, and the loop that expires overdue sagas."""

import logging
from datetime import UTC, datetime, timedelta
from functools import partial

from services.orders import handlers
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
            },
            prefetch=handlers.prefetch_orders,
        ),
    ]


async def expiry_loop(uow: UnitOfWork, interval: float) -> None:
    """Every ``interval`` seconds, cancel the pending orders whose deadline has passed."""

    async def sweep() -> int:
        async with uow.begin() as tx:
            return await handlers.expire_due(tx, datetime.now(UTC))

    await sweeping(sweep, interval, log, "expired %d orders", "expiry sweep failed")
