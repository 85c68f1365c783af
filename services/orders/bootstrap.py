"""The composition root of the orders service."""

from collections.abc import Callable
from datetime import timedelta
from functools import partial

from services.orders.adapters.tables import metadata, orders
from services.orders.entrypoints.http import create_app
from services.orders.entrypoints.ops import SAGA_DEADLINE, ops_router, orders_by_status
from services.orders.entrypoints.subscribers import expiry_loop, subscriptions
from shared.messaging.retention import Expiring
from shared.runtime import Service, build_service
from shared.settings import Settings


def ended_deliveries(settings: Settings) -> Expiring:
    """The delivery addresses of orders that ended (confirmed or cancelled: a pending one is
    never touched), erased ``orders_delivery_retention_days`` after the order last changed
    (its end, or a fact that came later); the order stays, saying when it lost its address."""
    return Expiring(
        orders,
        "updated_at",
        "status IN ('confirmed', 'cancelled') AND jsonb_typeof(delivery) = 'object'",
        settings.orders_delivery_retention_days * 24,
        erase="delivery = NULL, delivery_erased_at = now()",
    )


def checks(settings: Settings) -> list[Callable[[], object]]:
    """None beyond what every service refuses (:func:`shared.main.Composition.checks`)."""
    return []


def bootstrap(settings: Settings) -> Service:
    service = build_service("orders", settings, metadata, [ended_deliveries(settings)])
    deadline = timedelta(seconds=settings.saga_deadline_seconds)
    for sub in subscriptions(deadline):
        service.subscribe(sub)
    service.loops.append(partial(expiry_loop, service.uow, settings.expiry_sweep_seconds))
    service.asgi_app = create_app(service.uow, deadline, settings)
    service.asgi_app.include_router(ops_router(service.db, settings.stuck_after_seconds()))
    service.probes.append(orders_by_status(service.db.engine).sample)
    SAGA_DEADLINE.set(settings.saga_deadline_seconds)  # the alert's measure
    return service
