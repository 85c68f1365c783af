"""What the notifications service consumes, and its dispatcher loop."""

import asyncio
import logging
from functools import partial

from services.notifications import handlers
from services.notifications.adapters.gateway import SmsGateway
from services.notifications.dispatch import DeliveryPolicy, dispatch_once
from services.notifications.domain.delivery import QuietHours
from shared.loops import woken
from shared.messaging.consumer import Handler, Subscription
from shared.messaging.uow import UnitOfWork
from shared.topics import EventType, Topic

log = logging.getLogger(__name__)


def subscriptions(quiet: QuietHours) -> list[Subscription]:
    # An order's outcome or a loan's event that comes before its order.placed is parked, and
    # handed to its handler here once order.placed comes, in the order they came.
    outcomes: dict[EventType, Handler] = {
        EventType.ORDER_CONFIRMED: handlers.on_order_confirmed,
        EventType.ORDER_CANCELLED: handlers.on_order_cancelled,
    }
    loans: dict[EventType, Handler] = {
        EventType.INSTALMENT_DUE: partial(handlers.on_instalment_due, quiet=quiet),
        EventType.PAYMENT_REPAID: handlers.on_instalments_settled,
        EventType.PAYMENT_VOIDED: handlers.on_instalments_settled,
        EventType.PAYMENT_REFUNDED: handlers.on_payment_refunded,
    }
    placed = partial(handlers.on_order_placed, early={**outcomes, **loans})
    return [
        Subscription(
            Topic.ORDER_EVENTS,
            {EventType.ORDER_PLACED: placed, **outcomes},
            prefetch=handlers.prefetch,
        ),
        Subscription(
            Topic.INVENTORY_EVENTS,
            {EventType.STOCK_RESERVED: handlers.on_stock_reserved},
            prefetch=handlers.prefetch,
        ),
        Subscription(Topic.PAYMENT_EVENTS, loans, prefetch=handlers.prefetch),
    ]


async def dispatch_loop(
    uow: UnitOfWork,
    gateway: SmsGateway,
    policy: DeliveryPolicy,
    wake: asyncio.Event,
    interval: float = 0.5,
    gather: float = 0.05,
) -> None:
    """Send due SMS soon after they are committed (woken by :data:`handlers.SMS_QUEUED`);
    look every ``interval`` seconds for retries that have come due.

    Woken, it first waits ``gather`` seconds for more texts: under a trickle of orders each
    commit queues one or two, and sending them together saves two transactions per text.
    A batch that was not full left nothing due behind it, so it waits then instead of
    claiming again (texts committed meanwhile have set ``wake``).
    """

    async def full_batch() -> bool:
        return await dispatch_once(uow, gateway, policy) >= policy.batch

    await woken(full_batch, wake, interval, log, "sms dispatch failed", gather)
