"""What the notifications service consumes, and the loop that sends queued SMS."""

import asyncio
import logging

from services.notifications import handlers
from services.notifications.adapters.gateway import SmsGateway
from shared.messaging.consumer import Subscription
from shared.messaging.uow import UnitOfWork
from shared.topics import EventType, Topic

log = logging.getLogger(__name__)

SUBSCRIPTIONS = [
    Subscription(
        Topic.ORDER_EVENTS,
        {
            EventType.ORDER_PLACED: handlers.on_order_placed,
            EventType.ORDER_CONFIRMED: handlers.on_order_confirmed,
            EventType.ORDER_CANCELLED: handlers.on_order_cancelled,
        },
    )
]


async def dispatch_loop(uow: UnitOfWork, gateway: SmsGateway, interval: float = 0.05) -> None:
    """Send queued SMS as soon as they are committed (polling, ``interval`` when idle)."""
    while True:
        try:
            async with uow.begin() as tx:
                sent = await handlers.dispatch_pending(tx, gateway)
            if sent:
                continue
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sms dispatch failed; retrying")
            await asyncio.sleep(1.0)
        await asyncio.sleep(interval)
