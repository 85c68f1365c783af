"""The composition root of the payments service."""

from services.payments.adapters.tables import metadata
from services.payments.entrypoints.subscribers import SUBSCRIPTIONS
from shared.runtime import Service, build_service
from shared.settings import Settings


def bootstrap(settings: Settings) -> Service:
    service = build_service("payments", settings, metadata)
    for sub in SUBSCRIPTIONS:
        service.subscribe(sub)
    return service
