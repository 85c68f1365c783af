"""The composition root of the inventory service."""

from services.inventory.adapters.tables import metadata
from services.inventory.entrypoints.subscribers import SUBSCRIPTIONS
from shared.runtime import Service, build_service
from shared.settings import Settings


def bootstrap(settings: Settings) -> Service:
    service = build_service("inventory", settings, metadata)
    for sub in SUBSCRIPTIONS:
        service.subscribe(sub)
    return service
