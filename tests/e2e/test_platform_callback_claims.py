"""Which platform adapter instance calls a platform back, against the real platform schema:
one without the app in its settings leaves the callback to one that has it; a claim that
lapsed unrecorded is claimed again; two instances claiming at once never both claim one;
the last attempt refused fails the callback; a claim a graceful stop interrupts is handed back,
claimed again at once; a callback waiting is gauged until it is delivered."""

import asyncio
import logging
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select, update

from services.platform.adapters.platform_api import PlatformApi, StatusUpdate
from services.platform.adapters.tables import callbacks
from services.platform.callbacks import (
    CallbackPolicy,
    callbacks_by_status,
    claim_due,
    deliver_once,
)
from services.platform.domain.retries import Backoff
from shared.messaging.uow import UnitOfWork
from shared.settings import PlatformApp
from tests.harness import System, backend_pid, until

POLICY = CallbackPolicy(Backoff(max_attempts=5, base_seconds=60, cap_seconds=60))
APP = f"t-claims-{uuid.uuid4().hex[:8]}"  # this run's rows only, in a kept database
# No status API listens here: a call is refused, which is a retry.
THE_APP = PlatformApp(secret="t-claims-secret-0001", api_url="http://127.0.0.1:9")


async def test_an_instance_without_the_app_leaves_its_callback_to_one_that_has_it(
    caravan: System,
) -> None:
    """An instance started before an app was added (a rolling restart, or one left with old
    settings) claimed the app's callbacks and failed them for good at the first attempt
    ("app ... is not configured"): the platform was never told, until operations asked."""
    async with caravan.alone("platform") as uow:
        event_id = await callback_of(uow, APP)
        query = select(callbacks.c.status, callbacks.c.attempts, callbacks.c.last_error)

        async def row() -> tuple[str, int, str | None]:
            async with uow.begin() as tx:
                found = (await tx.conn.execute(query.where(callbacks.c.event_id == event_id))).one()
            return found.status, found.attempts, found.last_error

        without = PlatformApi({"t-other": THE_APP}, timeout=2)
        assert await deliver_once(uow, without, POLICY) == 0
        assert await row() == ("pending", 0, None)
        with_it = PlatformApi({APP: THE_APP}, timeout=2)
        assert await deliver_once(uow, with_it, POLICY) == 1
        status, attempts, error = await row()
        assert (status, attempts) == ("pending", 1), error  # called, refused, to be retried


async def callback_of(uow: UnitOfWork, app: str, **values: object) -> str:
    """A callback of ``app``, its row as ``values`` say (else as queued, due now); its id."""
    event_id = str(uuid.uuid4())
    async with uow.begin() as tx:
        await tx.conn.execute(
            insert(callbacks).values(
                event_id=event_id,
                app=app,
                platform_order_id=f"P-{event_id[:8]}",
                order_id=str(uuid.uuid4()),
                outcome="confirmed",
                **values,
            )
        )
    return event_id


async def status_of(uow: UnitOfWork, event_id: str) -> tuple[str, int]:
    """The callback's status and attempts."""
    async with uow.begin() as tx:
        query = select(callbacks.c.status, callbacks.c.attempts)
        found = (await tx.conn.execute(query.where(callbacks.c.event_id == event_id))).one()
    return found.status, found.attempts


async def test_a_callback_whose_claim_lapsed_unrecorded_is_claimed_again(caravan: System) -> None:
    """An instance that died between calling the platform and recording the answer left its
    callback ``sending``: once the lease lapsed it is claimed again (called with the same
    event id, which the platform applies once), not left ``sending`` for ever and the
    platform never told."""
    app = f"{APP}-lapsed"
    async with caravan.alone("platform") as uow:
        lapsed = func.now() - timedelta(seconds=1)
        event_id = await callback_of(uow, app, status="sending", attempts=1, next_attempt_at=lapsed)
        assert await deliver_once(uow, PlatformApi({app: THE_APP}, timeout=2), POLICY) == 1
        assert await status_of(uow, event_id) == ("pending", 2)  # called again, refused


async def test_a_callback_refused_at_its_last_attempt_is_failed_for_operations(
    caravan: System,
) -> None:
    """A platform whose status API stays down: the callback's last attempt refused too, it
    is ``failed`` (listed for operations, sent again on their request), not put back
    ``pending`` and called on for ever."""
    app = f"{APP}-spent"
    async with caravan.alone("platform") as uow:
        event_id = await callback_of(uow, app, attempts=POLICY.backoff.max_attempts - 1)
        assert await deliver_once(uow, PlatformApi({app: THE_APP}, timeout=2), POLICY) == 1
        assert await status_of(uow, event_id) == ("failed", POLICY.backoff.max_attempts)


async def test_a_callback_one_instance_is_claiming_is_passed_over_by_another_at_once(
    caravan: System,
) -> None:
    """Two adapter instances claiming at once: the callback the first is claiming (its claim
    not yet committed) is skipped by the second, not claimed by it too once the first
    commits: claimed twice, the platform would be called twice for it and the first
    claim's answer dropped as stale. Nor does it wait for the first to commit (which, the
    row no longer due then, hands it fewer callbacks than are due, none here)."""
    app = f"{APP}-at-once"
    leased = replace(POLICY, lease_seconds=60, batch=1)  # not due again once claimed
    async with caravan.alone("platform") as uow:
        event_id = await callback_of(uow, app)

        async def other_claim() -> list[str]:
            async with uow.begin() as tx:
                return [r.event_id for r in await claim_due(tx, leased, [app])]

        async with uow.begin() as tx:
            first = [r.event_id for r in await claim_due(tx, leased, [app])]
            holder = await backend_pid(tx.conn)
            second, without_waiting = await caravan.beside(holder, other_claim())
        assert first == [event_id]
        assert await second == []
        assert without_waiting, "the other claim waited for the first's lock"
        assert await status_of(uow, event_id) == ("sending", 1)


class Slow(PlatformApi):
    """A status API that takes each event's first callback and holds its answer until
    ``answer`` is set (a slow platform's call in flight), and takes one asked again at once;
    the event ids it was called with, in order."""

    def __init__(self, app: str) -> None:
        super().__init__({app: THE_APP}, timeout=2)
        self.answer = asyncio.Event()
        self.asked: list[str] = []

    async def push_status(self, app: str, update: StatusUpdate) -> int:
        self.asked.append(update.key)
        if self.asked.count(update.key) == 1:
            await self.answer.wait()
        return 200


async def test_a_callback_in_flight_when_the_adapter_stops_is_claimed_again_at_once(
    caravan: System, caplog: pytest.LogCaptureFixture
) -> None:
    """An adapter instance stopped gracefully (SIGTERM) while its status call was in flight
    left the callback to its lease: the platform told only once the lease lapsed. It is
    handed back as the loop is cancelled, and the next claim (another instance's) calls the
    platform at once with the same event id. The lease here is a minute."""
    app = f"{APP}-stopped"
    leased = replace(POLICY, lease_seconds=60)
    api = Slow(app)
    async with caravan.alone("platform") as uow:
        event_id = await callback_of(uow, app)
        try:
            delivering = asyncio.create_task(deliver_once(uow, api, leased))
            await until(lambda: api.asked, "the status API called")
            with caplog.at_level(logging.INFO, logger="services.platform"):
                delivering.cancel()  # as a graceful stop cancels the service's loops
                with pytest.raises(asyncio.CancelledError):
                    await delivering
            assert await deliver_once(uow, api, leased) == 1
        finally:
            api.answer.set()
        assert api.asked == [event_id, event_id]
        assert await status_of(uow, event_id) == ("delivered", 2)
    said = [r.getMessage() for r in caplog.records if "handed back" in r.getMessage()]
    order_id = await caravan.scalar(
        "select order_id from platform.callbacks where event_id = :e", e=event_id
    )
    assert said == [
        f"the status callbacks of orders {order_id} unfinished as the service stops:"
        " handed back, due again now"
    ]


async def test_a_callback_waiting_is_the_oldest_until_it_is_delivered(caravan: System) -> None:
    """A platform's status API that hangs or refuses our signature has its callbacks retried
    for about two hours before any fails, their count flat meanwhile:
    ``caravan_platform_callbacks_oldest_seconds`` says how long the oldest not yet delivered
    has waited since it was queued, at the sample of every status and at that of the live
    ones alone (the alert ``CaravanPlatformCallbacksWaiting``'s). Delivered, it no longer
    counts."""
    async with caravan.alone("platform") as uow:
        hour_ago = func.now() - timedelta(hours=1)
        event_id = await callback_of(uow, APP, created_at=hour_ago, status="sending")
        gauge = callbacks_by_status(uow.db.engine, whole_every=3600)
        try:
            for _ in ("every status", "the live ones"):
                await gauge.sample()
                assert 3600 <= oldest_waiting() < 7200
            async with uow.begin() as tx:
                delivered = {"status": "delivered", "delivered_at": func.now()}
                where = callbacks.c.event_id == event_id
                await tx.conn.execute(update(callbacks).where(where).values(**delivered))
            await gauge.sample()
            assert oldest_waiting() < 3600  # other tests' callbacks may wait, none for an hour
        finally:
            async with uow.begin() as tx:
                await tx.conn.execute(callbacks.delete().where(callbacks.c.event_id == event_id))


def oldest_waiting() -> float:
    return REGISTRY.get_sample_value("caravan_platform_callbacks_oldest_seconds") or 0.0
