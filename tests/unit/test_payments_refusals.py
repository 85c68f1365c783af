"""An operator's write to a payment that is refused is a 409 titled by the refusal itself
(services/payments/entrypoints/http.py ``_operators_write``): the title is held once, on the
exception, never beside it at the call."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
from fastapi.responses import JSONResponse

from services.payments import prepaid, voids
from services.payments.entrypoints.http import _operators_write
from shared.auth.tokens import Principal
from shared.messaging.uow import Tx, UnitOfWork


class NoDatabase:
    """A unit of work whose transaction is never used: the write refuses before it is."""

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Tx]:
        yield cast(Tx, None)


@pytest.mark.parametrize(
    ("refused", "raised", "title"),
    [
        (prepaid.NotRefundable, prepaid.NotRefundable, "Refund not recorded"),
        (prepaid.NotLost, prepaid.NotLost, "Charge not said lost"),
        (voids.NotVoidable, voids.NotVoidable, "Payment not voided"),
        (voids.NotVoidable, voids.VoidedTheOtherWay, "Payment voided already, the other way"),
    ],
)
async def test_a_refused_operators_write_is_a_409_titled_by_its_refusal(
    refused: type[prepaid.Refused], raised: type[prepaid.Refused], title: str
) -> None:
    async def write(tx: Tx) -> prepaid.Change | None:
        raise raised("the payment of order o-1 is authorized")

    who = Principal(name="ops-1", scopes=frozenset({"ops"}))
    answer = await _operators_write(
        cast(UnitOfWork, NoDatabase()), who, "payment.x", "o-1", {}, write, refused
    )
    assert isinstance(answer, JSONResponse)
    body = json.loads(bytes(answer.body))
    assert (answer.status_code, body["title"], body["detail"]) == (
        409,
        title,
        "the payment of order o-1 is authorized",
    ), body
