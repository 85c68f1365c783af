"""What the platform adapter consumes (the order lifecycle, in its own consumer group), and
its background loops: status callbacks, and forgetting push ids older than any fresh push."""

import asyncio
import logging
from datetime import timedelta
from functools import partial

from sqlalchemy import delete, func

from services.platform import handlers
from services.platform.adapters.platform_api import PlatformApi
from services.platform.adapters.tables import pushes
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
    try:
        await woken(deliver, wake, interval, log, "status callbacks failed")
    finally:
        await api.close()


async def prune_loop(uow: UnitOfWork, window_seconds: float, interval: float = 60.0) -> None:
    """Push ids older than three timestamp windows can go: such pushes are stale anyway
    (a timestamp may be up to one window ahead of the clock, and one behind)."""
    while True:
        try:
            async with uow.begin() as tx:
                await tx.conn.execute(
                    delete(pushes).where(
                        pushes.c.received_at < func.now() - timedelta(seconds=3 * window_seconds)
                    )
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("pruning push ids failed: %r", exc)
        await asyncio.sleep(interval)
