"""The composition root of the notifications service."""

import asyncio
import logging
import secrets
from collections.abc import Callable
from functools import partial
from urllib.parse import quote

from pydantic import SecretStr

from services.notifications.adapters.gateway import SinkGateway, SmsGateway
from services.notifications.adapters.http_gateway import InfobipGateway, SimulatorGateway
from services.notifications.adapters.tables import metadata, recipients, sms
from services.notifications.dispatch import LIVE, DeliveryPolicy, sms_by_status
from services.notifications.domain.delivery import QuietHours, RetryPolicy, parse_clock
from services.notifications.entrypoints.http import add_routes
from services.notifications.entrypoints.subscribers import dispatch_loop, subscriptions
from services.notifications.handlers import SMS_QUEUED
from services.notifications.texts_go import gateway_kind
from shared.addresses import url_of
from shared.db import driver
from shared.messaging.retention import Expiring
from shared.runtime import Service, build_service
from shared.settings import Settings, claim_lease


def make_gateway(settings: Settings) -> SmsGateway:
    """The gateway the settings name (see ``notifications_gateway``)."""
    require_gateway(settings)
    kind, url = gateway_kind(settings), settings.notifications_gateway_url
    receipts = receipts_url(settings)
    timeout = settings.notifications_gateway_timeout_seconds
    if kind == "sink":
        return SinkGateway()
    if not url:
        raise ValueError(f"CARAVAN_NOTIFICATIONS_GATEWAY_URL is required for {kind}")
    if kind == "simulator":
        return SimulatorGateway(url, receipts, timeout)
    if not settings.notifications_gateway_api_key:
        raise ValueError("CARAVAN_NOTIFICATIONS_GATEWAY_API_KEY is required for infobip")
    return InfobipGateway(
        url,
        settings.notifications_gateway_api_key.get_secret_value(),
        settings.notifications_gateway_sender,
        receipts,
        timeout,
    )


def require_gateway(settings: Settings) -> None:
    """Refuse production with no gateway chosen: the sink sends nothing, and sms.sent would
    still say every text went out."""
    kind, url = settings.notifications_gateway, settings.notifications_gateway_url
    if kind == "auto" and not url and settings.environment == "production":
        raise ValueError(
            "no SMS gateway in production: set CARAVAN_NOTIFICATIONS_GATEWAY=infobip with its "
            "_URL and _API_KEY (or =sink to send nothing, on purpose)"
        )


def receipts_secret(settings: Settings) -> str:
    """The secret the gateway's receipts must carry. Outside development it must be set (all
    instances share it); in development a process without one makes up its own."""
    if settings.notifications_receipts_secret is not None:
        return settings.notifications_receipts_secret.get_secret_value()
    if settings.environment == "production":
        raise ValueError("CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET is required in production")
    logging.getLogger(__name__).warning("no receipts secret set: this process made one up")
    secret = secrets.token_urlsafe(24)
    settings.notifications_receipts_secret = SecretStr(secret)
    return secret


def receipts_url(settings: Settings) -> str:
    """Where the gateway sends delivery receipts, with the secret that lets them in (quoted:
    a secret's ``+``, ``&``, ``#`` or ``%`` would be read back as another key). Unset, this
    host's own address, which only a local gateway (the simulator) can call: Infobip in
    production must be told one it can reach, or no receipt would ever arrive."""
    url = settings.notifications_receipts_url
    if not url:
        local = url_of(settings.http_host, settings.notifications_http_port, "/sms/receipts")
        if settings.environment == "production" and settings.notifications_gateway == "infobip":
            raise ValueError(
                "CARAVAN_NOTIFICATIONS_RECEIPTS_URL is required for infobip in production: the"
                f" local {local} cannot be reached from Infobip, so no delivery receipt would"
                " arrive; set the public URL that reaches this service's /sms/receipts"
            )
        url = local
    return f"{url}{'&' if '?' in url else '?'}key={quote(receipts_secret(settings), safe='')}"


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    lease = claim_lease(
        settings, "notifications_lease_seconds", "notifications_gateway_timeout_seconds"
    )
    return DeliveryPolicy(
        retry=RetryPolicy(
            max_attempts=settings.notifications_max_attempts,
            base_seconds=settings.notifications_retry_base_seconds,
            cap_seconds=settings.notifications_retry_cap_seconds,
            give_up_after_seconds=settings.notifications_give_up_after_seconds,
        ),
        quiet=QuietHours(
            parse_clock(settings.notifications_quiet_start),
            parse_clock(settings.notifications_quiet_end),
        ),
        lease_seconds=lease,
    )


_LIVE = ", ".join(f"'{status}'" for status in LIVE)  # texts still to be sent, as SQL


def finished_texts(settings: Settings) -> Expiring:
    """Finished texts (not pending or being sent: a sent one's receipt, if any, comes within
    minutes), deleted with their number and words ``notifications_sms_retention_days`` after
    they were queued."""
    return Expiring(
        sms,
        "created_at",
        f"status NOT IN ({_LIVE})",
        settings.notifications_sms_retention_days * 24,
    )


def done_recipients(settings: Settings) -> Expiring:
    """Buyers of orders that nothing can text any more (``done_at``: the order ended with no
    loan, or its loan was repaid or voided) and that have no text still to be sent, deleted
    with their number ``notifications_recipient_retention_days`` after that."""
    waiting = f"SELECT FROM {driver.qualified(sms)} AS s WHERE s.order_id = recipients.order_id"
    return Expiring(
        recipients,
        "done_at",
        f"NOT EXISTS ({waiting} AND s.status IN ({_LIVE}))",
        settings.notifications_recipient_retention_days * 24,
    )


def checks(settings: Settings) -> list[Callable[[], object]]:
    """Its delivery policy, gateway and receipts (:func:`shared.main.Composition.checks`)."""
    made = (delivery_policy, require_gateway, receipts_secret, receipts_url)
    return [partial(f, settings) for f in made]


def bootstrap(settings: Settings) -> Service:
    expiring = [finished_texts(settings), done_recipients(settings)]
    service = build_service("notifications", settings, metadata, expiring, checks(settings))
    policy = delivery_policy(settings)
    gateway = make_gateway(settings)
    for sub in subscriptions(policy.quiet):
        service.subscribe(sub)
    wake = asyncio.Event()
    service.uow.on_commit(wake.set, SMS_QUEUED)
    service.loops.append(partial(dispatch_loop, service.uow, gateway, policy, wake))
    service.closers.append(gateway.close)
    add_routes(service.asgi_app, service.uow, gateway, receipts_secret(settings))
    service.probes.append(sms_by_status(service.db.engine).sample)
    return service
