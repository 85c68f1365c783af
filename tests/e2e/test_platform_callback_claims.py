"""Which platform adapter instance calls a platform back, against the real platform schema:
one without the app in its settings leaves the callback to one that has it."""

import uuid

from sqlalchemy import insert, select

from services.platform.adapters.platform_api import PlatformApi
from services.platform.adapters.tables import callbacks
from services.platform.callbacks import CallbackPolicy, deliver_once
from services.platform.domain.delivery import Backoff
from shared.settings import PlatformApp
from tests.harness import System

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
        event_id = str(uuid.uuid4())
        async with uow.begin() as tx:
            await tx.conn.execute(
                insert(callbacks).values(
                    event_id=event_id,
                    app=APP,
                    platform_order_id=f"P-{event_id[:8]}",
                    order_id=str(uuid.uuid4()),
                    outcome="confirmed",
                )
            )
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
