"""The composition root of the inventory service."""

from collections.abc import Callable
from datetime import timedelta
from functools import partial

from services.inventory.adapters.tables import metadata
from services.inventory.entrypoints.http import admin_router
from services.inventory.entrypoints.subscribers import hold_expiry_loop, subscriptions
from shared.runtime import Service, build_service
from shared.settings import Settings


def checks(settings: Settings) -> list[Callable[[], object]]:
    """None beyond what every service refuses (:func:`shared.main.Composition.checks`)."""
    return []


def bootstrap(settings: Settings) -> Service:
    service = build_service("inventory", settings, metadata)
    hold = timedelta(seconds=settings.inventory_hold_seconds)
    for sub in subscriptions(hold):
        service.subscribe(sub)
    service.loops.append(
        partial(hold_expiry_loop, service.uow, hold, settings.expiry_sweep_seconds)
    )
    service.asgi_app.include_router(admin_router(service.uow))
    return service
