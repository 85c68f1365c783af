"""A repayment and a void of one loan at once (an operator's or a buyer's repayment through
payments' API, an order's cancellation handled by a batch, perhaps on another instance), on
real PostgreSQL: they wait for each other by the loan's lock, the later finding what the first
did (docs/guarantees.md, Races): a repayment after the void is refused (409), the loan stays
voided; a void after the repayment owes it back to the buyer. The payments service is stopped
meanwhile (the loan made through it first). And a batch lending to a buyer while their limit
changes waits for the change and lends against the limit it left."""

import uuid
from functools import partial
from typing import Any

import orjson
import pytest

from services.payments.handlers import void_loan
from services.payments.lending import Conflict, repay, set_credit_limit
from shared import days
from shared.events.registry import parse_record
from shared.topics import Topic
from tests.e2e.test_payments_claims import handled
from tests.e2e.test_payments_credit import (
    buyer,
    buyers_loan,
    event,
    payments_seed,
    reserved,
    set_limit,
)
from tests.harness import System

REPAID = 1_000  # of the loan's 3,000 fen


async def loan_state(caravan: System, loan_id: str) -> tuple[str, int, int]:
    """The loan's status and outstanding fen, and the fen repaid of it."""
    row = await caravan.sql(
        "select status, outstanding_fen, (select coalesce(sum(amount_fen), 0)"
        " from payments.repayments r where r.loan_id = l.loan_id)"
        " from payments.loans l where loan_id = :l",
        l=loan_id,
    )
    status, outstanding, repaid = row[0]
    return str(status), int(outstanding), int(repaid)


async def said(caravan: System, order_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The type and data of each event of the order in payments' outbox, in order."""
    rows = await caravan.sql(
        "select value from payments.outbox where topic = :t and key = :k order by id",
        t=Topic.PAYMENT_EVENTS.value,
        k=order_id.encode(),
    )
    events = [orjson.loads(r.value) for r in rows]
    return [(e["type"], e["data"]) for e in events]


async def refund_owed(caravan: System, order_id: str) -> list[int]:
    """What each ``payment.voided`` of the order says is owed back."""
    events = await said(caravan, order_id)
    return [data["refund_owed_fen"] for kind, data in events if kind == "payment.voided"]


@pytest.mark.parametrize("first", ["void", "repayment"])
async def test_a_repayment_and_a_void_of_one_loan_at_once_wait_and_the_later_finds_the_first(
    caravan: System, first: str
) -> None:
    await caravan.seed(payments_seed())
    async with caravan.api("payments") as admin:
        _, order_id, authorized = await buyers_loan(caravan, admin, f"race-{first}")
    loan_id = authorized.data["loan_id"]
    voiding = partial(void_loan, order_id=order_id, loan_id=loan_id)
    key = str(uuid.uuid4())
    repaying = partial(repay, loan_id=loan_id, key=key, amount_fen=REPAID, today=days.today())
    steps = (voiding, repaying) if first == "void" else (repaying, voiding)
    async with caravan.alone("payments") as uow:
        second, waited = await caravan.raced(uow, *steps)
    if first == "void":
        with pytest.raises(Conflict, match=f"loan {loan_id} is voided"):
            second.result()
        assert await loan_state(caravan, loan_id) == ("voided", 0, 0)
        assert await refund_owed(caravan, order_id) == [0]
    else:
        assert second.result() is True
        assert await loan_state(caravan, loan_id) == ("voided", 0, REPAID)
        assert await refund_owed(caravan, order_id) == [REPAID]
    assert waited, "the second did not wait for the first: no race was made"


async def test_a_batch_lending_to_a_buyer_waits_for_a_change_of_their_limit_and_lends_against_it(
    caravan: System,
) -> None:
    """A batch reading a buyer's reservation of 3,000 fen while an operator lowers their
    limit from 10,000 to 2,000 fen waits for the change, and declines the loan."""
    await caravan.seed(payments_seed())
    who = buyer("race-limit")
    async with caravan.api("payments") as admin:
        await set_limit(admin, who, 10_000)
    order_id = str(uuid.uuid4())
    record = parse_record(Topic.INVENTORY_EVENTS, event(reserved(order_id, who, 30)).to_json())
    lowering = partial(set_credit_limit, buyer_id=who, limit_fen=2_000)
    async with caravan.alone("payments") as uow:
        second, waited = await caravan.raced(uow, lowering, partial(handled, batch=[record]))
    second.result()
    assert [(kind, data.get("reason")) for kind, data in await said(caravan, order_id)] == [
        ("payment.declined", "credit_declined")
    ]
    loans = "select count(*) from payments.loans where buyer_id = :b"
    assert await caravan.scalar(loans, b=who) == 0
    assert waited, "the batch did not wait for the change of the limit: no race was made"
