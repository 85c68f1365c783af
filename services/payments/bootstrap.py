"""The composition root of the payments service."""

import asyncio
from collections.abc import Callable
from functools import partial

from services.payments.adapters.gateway import build_gateway, require_gateway
from services.payments.adapters.tables import metadata
from services.payments.entrypoints.http import credit_router, loans_router, payables_router
from services.payments.entrypoints.loops import gateway_loop, reminder_loop
from services.payments.entrypoints.subscribers import subscriptions
from services.payments.handlers import GATEWAY_WORK
from services.payments.prepaid import LoansOwedBack, payments_by_status
from shared.runtime import Service, build_service
from shared.settings import Settings, claim_lease


def checks(settings: Settings) -> list[Callable[[], object]]:
    """Its gateway's lease, and a gateway in production (:func:`shared.main.Composition.checks`)."""
    lease = partial(
        claim_lease, settings, "payments_gateway_lease_seconds", "payments_gateway_timeout_seconds"
    )
    return [lease, partial(require_gateway, settings)]


def bootstrap(settings: Settings) -> Service:
    service = build_service("payments", settings, metadata, checks=checks(settings))
    for sub in subscriptions(settings.payments_monthly_interest_bp):
        service.subscribe(sub)
    wake = asyncio.Event()
    service.uow.on_commit(wake.set, GATEWAY_WORK)
    service.loops.append(
        partial(gateway_loop, service.uow, build_gateway(settings), settings, wake)
    )
    service.loops.append(partial(reminder_loop, service.uow, settings))
    service.asgi_app.include_router(credit_router(service.uow))
    service.asgi_app.include_router(loans_router(service.uow))
    service.asgi_app.include_router(payables_router(service.uow))
    service.probes.append(payments_by_status(service.db.engine).sample)
    service.probes.append(LoansOwedBack(service.db.engine).sample)
    return service
