"""A claim's lease must outlast the call it covers: a row whose lease runs out while its call
is in flight is claimed by another instance and the call made again (a prepaid charge sent a
second time under its key, a text sent twice). Each service whose loop claims rows for a call
refuses to start with a lease no longer than that call's timeout (``claim_lease``). A claim
whose call a graceful stop interrupts is handed back, due again at once (``handing_back``), or
let finish, for a few seconds at most (``finishing``)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import cast

import pytest

from services.notifications.bootstrap import delivery_policy
from services.payments.bootstrap import bootstrap as payments_bootstrap
from services.platform.bootstrap import callback_policy
from shared import loops
from shared.messaging.uow import UnitOfWork
from shared.settings import Settings, claim_lease

ANY_DB = "postgresql://caravan@127.0.0.1:1/caravan"  # never connected to: nothing is started


def test_a_lease_longer_than_the_timeout_is_taken() -> None:
    settings = Settings(payments_gateway_timeout_seconds=30, payments_gateway_lease_seconds=31)
    lease = claim_lease(
        settings, "payments_gateway_lease_seconds", "payments_gateway_timeout_seconds"
    )
    assert lease == 31


@pytest.mark.parametrize("timeout", [10, 30])
async def test_payments_refuses_a_lease_no_longer_than_the_gateway_timeout(timeout: int) -> None:
    """The default lease (10 s) with a 30 s gateway timeout: a second instance would claim a
    charge still in flight after 10 s and send it again under the same key. (In a loop: the
    service is composed in one, as it is when run; nothing connects until it is served.)"""
    settings = Settings(database_url=ANY_DB, payments_gateway_timeout_seconds=timeout)
    with pytest.raises(ValueError) as refused:
        payments_bootstrap(settings)
    assert str(refused.value) == (
        f"CARAVAN_PAYMENTS_GATEWAY_LEASE_SECONDS (10 s) must be longer than"
        f" CARAVAN_PAYMENTS_GATEWAY_TIMEOUT_SECONDS ({timeout} s): a call still in flight when"
        " its lease runs out is made again by another instance"
    )


def test_notifications_and_platform_refuse_theirs_the_same_way() -> None:
    with pytest.raises(ValueError, match=r"^CARAVAN_NOTIFICATIONS_LEASE_SECONDS .* longer than"):
        delivery_policy(Settings(notifications_gateway_timeout_seconds=30))
    with pytest.raises(ValueError, match=r"^CARAVAN_PLATFORM_CALLBACK_LEASE_SECONDS .* longer"):
        callback_policy(Settings(platform_api_timeout_seconds=30))
    assert delivery_policy(Settings()).lease_seconds == 30
    assert callback_policy(Settings()).lease_seconds == 30


async def test_a_claim_not_handed_back_in_time_is_left_to_its_lease_and_the_stop_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped with the database away: handing the claim back waits ``STOPPING_SECONDS`` at
    most, one warning says the claim is left to its lease, and the loop ends cancelled."""
    monkeypatch.setattr(loops, "STOPPING_SECONDS", 0.05)

    class Away:
        """A unit of work whose database does not answer."""

        @contextlib.asynccontextmanager
        async def begin(self) -> AsyncIterator[None]:
            await asyncio.Event().wait()  # no answer
            yield

    async def give_back(_: object) -> bool:
        return True

    async def call() -> None:
        away = cast(UnitOfWork, Away())
        async with loops.handing_back(away, give_back, logging.getLogger("test.loops"), "order 1"):
            await asyncio.Event().wait()  # in flight

    task = asyncio.create_task(call())
    await asyncio.sleep(0)
    with caplog.at_level(logging.INFO, logger="test.loops"):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [r.getMessage() for r in caplog.records] == [
        "order 1 unfinished as the service stops, left to its lease: TimeoutError()"
    ]


async def test_work_not_finished_in_time_as_the_service_stops_is_left_to_its_lease(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped while a call hangs: ``finishing`` waits ``STOPPING_SECONDS`` at most, then the
    call is cancelled, one warning says it is left to its lease, and the loop ends cancelled
    (the stop goes on)."""
    monkeypatch.setattr(loops, "STOPPING_SECONDS", 0.05)
    cancelled = asyncio.Event()

    async def hanging() -> None:
        try:
            await asyncio.Event().wait()  # no answer
        except asyncio.CancelledError:
            cancelled.set()
            raise

    log = logging.getLogger("test.loops")
    task = asyncio.create_task(loops.finishing(hanging(), log, "the call of text 1"))
    await asyncio.sleep(0)
    with caplog.at_level(logging.INFO, logger="test.loops"):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cancelled.is_set()
    assert [r.getMessage() for r in caplog.records] == [
        "the call of text 1 unfinished as the service stops, left to its lease:"
        " not done within 0.05 s"
    ]
