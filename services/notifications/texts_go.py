"""Where the notifications service sends its texts, as it chooses its gateway and as
``caravan up``'s ready line says it. Light to import: ``caravan up`` says it without loading
the service."""

from urllib.parse import urlsplit, urlunsplit

from shared.settings import Settings


def gateway_kind(settings: Settings) -> str:
    """The gateway the settings name (``notifications_gateway``): ``auto`` is the simulator
    where ``CARAVAN_NOTIFICATIONS_GATEWAY_URL`` is set, else the sink."""
    kind = settings.notifications_gateway
    if kind == "auto":
        return "simulator" if settings.notifications_gateway_url else "sink"
    return kind


def ready_note(settings: Settings) -> str:
    """What ``caravan up``'s ready line says of where texts go: the sink (each logged, none
    sent), else the gateway's URL without what may carry its key (a user and password, a
    query)."""
    kind, url = gateway_kind(settings), settings.notifications_gateway_url
    if kind == "sink":
        why = (
            "CARAVAN_NOTIFICATIONS_GATEWAY=sink" if url else "no CARAVAN_NOTIFICATIONS_GATEWAY_URL"
        )
        return f"texts to the sink, none sent ({why})"
    parts = urlsplit(url or "")
    where = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    return f"texts to {where} ({kind})"
