"""The composition root of the platform adapter."""

import asyncio
from collections.abc import Callable
from functools import partial
from typing import get_args

from services.platform.adapters.platform_api import PlatformApi
from services.platform.adapters.tables import metadata
from services.platform.callbacks import CallbackPolicy, callbacks_by_status
from services.platform.domain.delivery import Backoff
from services.platform.entrypoints.http import admin_router, push_router
from services.platform.entrypoints.subscribers import callback_loop, prune_loop, subscriptions
from services.platform.handlers import CALLBACKS_DUE, Accepted, Decided, sample_problems
from services.platform.metrics import start_at_zero_for
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


def checks(settings: Settings) -> list[Callable[[], object]]:
    """Its callbacks' lease (:func:`shared.main.Composition.checks`)."""
    return [partial(callback_policy, settings)]


def bootstrap(settings: Settings) -> Service:
    service = build_service("platform", settings, metadata, checks=checks(settings))
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
    deadline = settings.platform_api_deadline_seconds
    service.loops.append(partial(prune_loop, service.uow, window, deadline))
    service.asgi_app.include_router(push_router(service.uow, api, window, policy.backoff))
    service.asgi_app.include_router(admin_router(service.uow, api.apps))

    async def problems() -> None:
        async with service.uow.begin() as tx:
            await sample_problems(tx)

    service.probes += [callbacks_by_status(service.db.engine).sample, problems]
    return service
