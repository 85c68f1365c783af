"""The composition root of the platform adapter."""

import asyncio
from collections.abc import Callable
from functools import partial
from typing import get_args

from services.platform.adapters.platform_api import PlatformApi
from services.platform.adapters.tables import closed_unplaced, metadata, pushes
from services.platform.callbacks import CallbackPolicy, callbacks_by_status
from services.platform.domain.retries import Backoff
from services.platform.entrypoints.http import Gate, admin_router, push_router
from services.platform.entrypoints.subscribers import callback_loop, subscriptions
from services.platform.handlers import CALLBACKS_DUE, Accepted, Decided, sample_problems
from services.platform.metrics import start_at_zero_for
from services.platform.served import start_note
from shared.messaging.retention import HOUR, Expiring
from shared.runtime import Service, build_service
from shared.settings import Settings, claim_lease


def callback_policy(settings: Settings) -> CallbackPolicy:
    lease = claim_lease(settings, "platform_callback_lease_seconds", "platform_api_timeout_seconds")
    return CallbackPolicy(
        Backoff(
            max_attempts=settings.platform_callback_max_attempts,
            base_seconds=settings.platform_callback_retry_base_seconds,
            cap_seconds=settings.platform_callback_retry_cap_seconds,
        ),
        lease_seconds=lease,
    )


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


def forgotten(settings: Settings) -> list[Expiring]:
    """Push ids older than three timestamp windows (such pushes are stale anyway: a timestamp
    may be up to one window ahead of the clock, and one behind), and the orders found
    cancelled before they were placed longer ago than :func:`closed_kept_seconds`: deleted by
    the service's retention (:mod:`shared.messaging.retention`), kept minutes, not as long as
    the inbox rows: only a push or a refetch (HTTP) reads them, never a Kafka record."""
    window = settings.platform_timestamp_window_seconds
    closed = closed_kept_seconds(window, settings.platform_api_deadline_seconds)
    return [
        Expiring(pushes, "received_at", "", 3 * window / HOUR, outlive_inbox=False),
        Expiring(closed_unplaced, "seen_at", "", closed / HOUR, outlive_inbox=False),
    ]


def push_gate(settings: Settings, pool_capacity: int) -> Gate:
    """The gate pushes pass: ``CARAVAN_PLATFORM_PUSHES_AT_ONCE`` taken at a time, unset as many
    as the pool has connections, the others waiting their turn as long as the request's bound
    on the database would have them wait for a connection."""
    at_once = settings.platform_pushes_at_once or pool_capacity
    return Gate(at_once, settings.http_db_timeout_seconds)


def checks(settings: Settings) -> list[Callable[[], object]]:
    """Its callbacks' lease (:func:`shared.main.Composition.checks`)."""
    return [partial(callback_policy, settings)]


def bootstrap(settings: Settings) -> Service:
    service = build_service(
        "platform", settings, metadata, forgotten(settings), checks=checks(settings)
    )
    policy = callback_policy(settings)
    api = PlatformApi(
        settings.platform_apps,
        settings.platform_api_timeout_seconds,
        settings.platform_api_deadline_seconds,
        # a pusher asked to wait up to the cap has pushed again well within twice it
        forget_after=2 * policy.backoff.cap_seconds,
    )
    window = settings.platform_timestamp_window_seconds
    start_at_zero_for(api.apps, get_args(Accepted), get_args(Decided))
    for sub in subscriptions():
        service.subscribe(sub)
    wake = asyncio.Event()
    service.uow.on_commit(wake.set, CALLBACKS_DUE)
    service.loops.append(partial(callback_loop, service.uow, api, policy, wake))
    service.closers.append(api.close)  # after the pushes in flight, which fetch through it
    gate = push_gate(settings, service.db.pool_capacity)
    service.asgi_app.include_router(push_router(service.uow, api, window, policy.backoff, gate))
    service.asgi_app.include_router(admin_router(service.uow, api.apps))

    async def problems() -> None:
        async with service.uow.begin() as tx:
            await sample_problems(tx)

    service.probes += [callbacks_by_status(service.db.engine).sample, problems]
    service.start_note = start_note(settings)
    return service
