"""The composition root of the notifications service."""

from functools import partial

from services.notifications.adapters.gateway import SinkGateway
from services.notifications.adapters.tables import metadata
from services.notifications.entrypoints.subscribers import SUBSCRIPTIONS, dispatch_loop
from shared.runtime import Service, build_service
from shared.settings import Settings


def bootstrap(settings: Settings) -> Service:
    service = build_service("notifications", settings, metadata)
    for sub in SUBSCRIPTIONS:
        service.subscribe(sub)
    service.loops.append(partial(dispatch_loop, service.uow, SinkGateway()))
    return service
