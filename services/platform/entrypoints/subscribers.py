"""What the platform adapter consumes (the order lifecycle, in its own consumer group), and
its background loops: status callbacks, and forgetting push ids older than any fresh push and
orders found cancelled before they were placed once no read of them paid can still be decided."""

import asyncio
import logging
from datetime import timedelta
from functools import partial

from sqlalchemy import delete, func

from services.platform import handlers
from services.platform.adapters.platform_api import PlatformApi
from services.platform.adapters.tables import closed_unplaced, pushes
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


def closed_kept_seconds(window_seconds: float, deadline_seconds: float) -> float:
    """How long a ``closed_unplaced`` row is kept from when a push last found the order
    cancelled. A ``paid`` read it must still catch was answered before the platform cancelled
    the order, so before the row was written: the read is decided at most a fetch (the order
    API's deadline) and a wait for the database after that (a connection from the pool, half
    a minute at most, else the push is answered 503; the order's lock, held by one short
    transaction at a time). A refetch fetches and decides the same way; a push sent again
    (after a 503, or a platform that gave up waiting) fetches anew, and reads it cancelled.
    Kept as long as the push ids and the deadline on top: minutes past any such wait."""
    return 3 * window_seconds + deadline_seconds


async def prune_once(uow: UnitOfWork, window_seconds: float, deadline_seconds: float) -> None:
    """Forget push ids older than three timestamp windows (such pushes are stale anyway: a
    timestamp may be up to one window ahead of the clock, and one behind), and the orders
    found cancelled before they were placed longer ago than :func:`closed_kept_seconds`."""
    pushed = func.now() - timedelta(seconds=3 * window_seconds)
    closed = func.now() - timedelta(seconds=closed_kept_seconds(window_seconds, deadline_seconds))
    async with uow.begin() as tx:
        await tx.conn.execute(delete(pushes).where(pushes.c.received_at < pushed))
        await tx.conn.execute(delete(closed_unplaced).where(closed_unplaced.c.seen_at < closed))


async def prune_loop(
    uow: UnitOfWork, window_seconds: float, deadline_seconds: float, interval: float = 60.0
) -> None:
    """:func:`prune_once` every ``interval`` seconds."""
    while True:
        try:
            await prune_once(uow, window_seconds, deadline_seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("pruning push ids and orders closed unplaced failed: %r", exc)
        await asyncio.sleep(interval)
