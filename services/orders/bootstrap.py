"""The composition root of the orders service."""

from datetime import timedelta
from functools import partial

from services.orders.adapters.tables import metadata
from services.orders.entrypoints.http import create_app
from services.orders.entrypoints.ops import ops_router, orders_by_status
from services.orders.entrypoints.subscribers import expiry_loop, subscriptions
from shared.runtime import Service, build_service
from shared.settings import Settings


def bootstrap(settings: Settings) -> Service:
    service = build_service("orders", settings, metadata)
    deadline = timedelta(seconds=settings.saga_deadline_seconds)
    for sub in subscriptions(deadline):
        service.subscribe(sub)
    service.loops.append(partial(expiry_loop, service.uow, settings.expiry_sweep_seconds))
    service.asgi_app = create_app(service.uow, deadline, settings)
    service.asgi_app.include_router(ops_router(service.db))
    service.probes.append(orders_by_status(service.db.engine).sample)
    return service
