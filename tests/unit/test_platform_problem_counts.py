"""A platform order's problem is counted once its transaction commits: a batch that failed
(another of its records raising) is rolled back and handled again one record at a time, and
its ``order.rejected`` counted a second time in ``caravan_platform_problems_total`` (the
handlers, with a unit of work whose database is faked)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.platform.adapters.tables import inbox, outbox
from services.platform.domain.orders import Problem
from services.platform.handlers import record_problems
from shared.messaging.uow import UnitOfWork

APP = "t-problems-once"


class FakeConnection:
    async def execute(self, statement: Any) -> None: ...


class FakeEngine:
    @asynccontextmanager
    async def begin(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection()  # a rollback if the block raised


class FakeDatabase:
    engine = FakeEngine()


async def test_a_problem_of_a_batch_that_failed_once_is_counted_once() -> None:
    uow = UnitOfWork(FakeDatabase(), "caravan/platform", outbox, inbox)  # type: ignore[arg-type]
    rejected = [Problem("rejected", "the orders service refused it")]
    with pytest.raises(RuntimeError):
        async with uow.begin() as tx:
            await record_problems(tx, APP, "p-1", rejected)
            raise RuntimeError("another record of the batch failed: rolled back")
    async with uow.begin() as tx:  # the same record, handled again on its own
        await record_problems(tx, APP, "p-1", rejected)
    counted = REGISTRY.get_sample_value(
        "caravan_platform_problems_total", {"app": APP, "kind": "rejected"}
    )
    assert counted == 1
