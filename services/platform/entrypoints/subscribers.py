"""What the platform adapter consumes (the order lifecycle, in its own consumer group), and
its background loop of status callbacks."""

import asyncio
import logging
from functools import partial

from services.platform import handlers
from services.platform.adapters.platform_api import PlatformApi
from services.platform.callbacks import CallbackPolicy, deliver_once
from shared.loops import woken
from shared.messaging.consumer import Subscription
from shared.messaging.uow import UnitOfWork
from shared.topics import EventType, Topic

log = logging.getLogger(__name__)


def subscriptions() -> list[Subscription]:
    return [
        Subscription(
            Topic.ORDER_EVENTS,
            {
                EventType.ORDER_PLACED: handlers.on_order_placed,
                EventType.ORDER_REJECTED: handlers.on_order_rejected,
                EventType.ORDER_CONFIRMED: handlers.on_order_ended,
                EventType.ORDER_CANCELLED: handlers.on_order_ended,
            },
            prefetch=handlers.prefetch_order_events,
            wants=handlers.concerns_platform,
        )
    ]


async def callback_loop(
    uow: UnitOfWork,
    api: PlatformApi,
    policy: CallbackPolicy,
    wake: asyncio.Event,
    interval: float = 0.5,
) -> None:
    """Deliver due callbacks as soon as they are committed (or every ``interval``)."""
    deliver = partial(deliver_once, uow, api, policy)  # again at once if it claimed any
    await woken(deliver, wake, interval, log, "status callbacks failed")
