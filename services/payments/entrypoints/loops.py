"""The payments service's background loops: gateway calls for prepaid orders (which also
recovers calls interrupted by a crash, see :mod:`services.payments.prepaid`) and
instalment reminders (see :mod:`services.payments.reminders`)."""

import asyncio
import logging

from services.payments import prepaid, reminders
from services.payments.adapters.gateway import PaymentGateway
from shared import days
from shared.loops import sweeping, woken
from shared.messaging.uow import UnitOfWork
from shared.settings import Settings

log = logging.getLogger(__name__)


async def gateway_loop(
    uow: UnitOfWork,
    gateway: PaymentGateway,
    settings: Settings,
    wake: asyncio.Event,
    idle_seconds: float = 0.2,
) -> None:
    """Claim due gateway work, make the calls concurrently, record their outcomes in one
    transaction (:func:`prepaid.perform`); sleep until woken (a commit that left work:
    ``GATEWAY_WORK``) or ``idle_seconds`` when idle."""

    async def calls() -> bool:
        async with uow.begin() as tx:
            work = await prepaid.claim_due(tx, settings.payments_gateway_lease_seconds)
        if not work:
            return False
        await prepaid.perform(uow, gateway, work, settings.payments_gateway_retry_seconds)
        return True

    try:
        await woken(calls, wake, idle_seconds, log, "gateway sweep failed")
    finally:
        await gateway.close()


async def reminder_loop(uow: UnitOfWork, settings: Settings) -> None:
    """Every ``CARAVAN_PAYMENTS_REMINDER_INTERVAL_SECONDS``, announce instalments due."""

    async def sweep() -> int:
        async with uow.begin() as tx:
            return await reminders.announce_due(
                tx, days.today(), settings.payments_reminder_upcoming_days
            )

    interval = settings.payments_reminder_interval_seconds
    await sweeping(sweep, interval, log, "announced %d instalments due", "reminder sweep failed")
