"""The claim fence of SMS dispatch (``services/notifications/dispatch.py``), on real PostgreSQL.

A dispatcher whose claim lapsed (its gateway call outlived the lease) and was taken over must
record nothing: only the newer claim marks the text sent and puts ``sms.sent`` in the outbox,
once. Two dispatchers claiming at once never both claim a text; one the gateway holds shows
as the oldest text due until it is sent; one whose recipient opted out
meanwhile is suppressed, not claimed; a receipt decides a sent text once. The notifications
service is stopped meanwhile, so that its own dispatcher claims
nothing; texts left due by other tests may be claimed here too, and are due again at once
(the lease is 0) when it restarts.
"""

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select, update

from services.notifications.adapters.gateway import Accepted, GatewayError, OutgoingSms, Receipt
from services.notifications.adapters.tables import opt_outs, outbox, sms
from services.notifications.dispatch import (
    DeliveryPolicy,
    apply_receipt,
    claim_due,
    dispatch_once,
    record,
    sms_by_status,
)
from services.notifications.domain.delivery import QuietHours, RetryPolicy
from services.notifications.entrypoints.subscribers import dispatch_loop
from shared.messaging.uow import UnitOfWork
from shared.topics import Topic
from tests.harness import System, backend_pid, until

POLICY = DeliveryPolicy(
    retry=RetryPolicy(), quiet=QuietHours(time(0), time(0)), lease_seconds=0, batch=1000
)


@pytest.fixture
async def uow(caravan: System) -> AsyncIterator[UnitOfWork]:
    async with caravan.alone("notifications") as uow:
        yield uow


async def queued(uow: UnitOfWork, due: datetime) -> str:
    """A text of no order waiting to be sent since ``due``, to a number of its own; its id."""
    sms_id = str(uuid.uuid4())
    async with uow.begin() as tx:
        await tx.conn.execute(
            insert(sms).values(
                sms_id=sms_id,
                dedup_key=f"test-fence:{sms_id}",
                purpose="order_confirmed",
                to=f"+86138{secrets.randbelow(10**8):08d}",
                locale="en",
                text="fence",
                encoding="GSM-7",
                segments=1,
                status="pending",
                next_attempt_at=due,
            )
        )
    return sms_id


async def row_and_events(uow: UnitOfWork, sms_id: str) -> tuple[Any, list[Any]]:
    """The text's row, and every event the service put in its outbox for notifications, in
    the order they were put there (a table read without ORDER BY has none)."""
    async with uow.db.engine.connect() as conn:
        row = (await conn.execute(select(sms).where(sms.c.sms_id == sms_id))).one()
        written = (
            select(outbox.c.value)
            .where(outbox.c.topic == Topic.NOTIFICATION_EVENTS.value)
            .order_by(outbox.c.id)
        )
        emitted = [orjson.loads(value) for value in (await conn.execute(written)).scalars()]
    return row, emitted


def lapsed_claims() -> float:
    return REGISTRY.get_sample_value("caravan_sms_lapsed_claims_total") or 0.0


async def test_a_lapsed_claim_records_nothing_and_the_newer_claim_sends_once(
    uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    sms_id = await queued(uow, datetime.now(UTC) - timedelta(hours=1))
    claims: list[list[Any]] = []

    async def claim() -> Any:
        async with uow.begin() as tx:
            rows = await claim_due(tx, POLICY)
        claims.append(rows)
        [row] = [r for r in rows if r.sms_id == sms_id]
        return row

    first = await claim()  # its lease (0 s) lapses at once ...
    before = lapsed_claims()
    with caplog.at_level(logging.WARNING, logger="services.notifications"):
        second = await claim()  # ... and another dispatcher takes the text over
    assert (first.attempts, second.attempts) == (1, 2)
    # Every text the second claim took, the first had (its lease lapsed too): each counted
    # for operators, as a text that may reach its phone twice.
    assert lapsed_claims() - before == len(claims[1])
    lapsed = f"sms {sms_id}: claim 1 lapsed unrecorded; sending it again (claim 2)"
    assert lapsed in [r.getMessage() for r in caplog.records]

    async with uow.begin() as tx:
        late = await record(tx, [(first, Accepted("late-provider-id"))], POLICY)
    async with uow.begin() as tx:
        current = await record(tx, [(second, Accepted("provider-id"))], POLICY)
    assert (late, current) == (["stale"], ["sent"])

    row, emitted = await row_and_events(uow, sms_id)
    assert (row.status, row.attempts, row.provider_id) == ("sent", 2, "provider-id")
    sent = [e for e in emitted if e["type"] == "sms.sent" and e["data"]["sms_id"] == sms_id]
    assert len(sent) == 1 and sent[0]["data"]["attempts"] == 2


async def test_a_gateway_id_of_any_length_is_kept_whole(uow: UnitOfWork) -> None:
    # provider_id was 128 characters; as text, its B-tree index still held 2704 bytes.
    sms_id = await queued(uow, datetime.now(UTC) - timedelta(hours=1))
    async with uow.begin() as tx:
        [row] = [r for r in await claim_due(tx, POLICY) if r.sms_id == sms_id]
    long_id = "sim-" + secrets.token_urlsafe(3000)  # 4000 characters that do not compress
    async with uow.begin() as tx:
        assert await record(tx, [(row, Accepted(long_id))], POLICY) == ["sent"]
    async with uow.db.engine.connect() as conn:
        stored = await conn.scalar(select(sms.c.provider_id).where(sms.c.sms_id == sms_id))
    assert stored == long_id


class Answering:
    """A gateway accepting each text under the id ``ids`` give its sms_id."""

    def __init__(self, ids: Mapping[str, str]) -> None:
        self.ids = ids

    async def send(self, message: OutgoingSms) -> Accepted:
        return Accepted(self.ids[message.sms_id])

    def parse_receipts(self, body: bytes) -> list[Receipt]:
        raise ValueError("no receipts")

    async def close(self) -> None:
        pass


async def test_a_text_that_cannot_be_recorded_does_not_keep_the_rest_of_its_batch_from_it(
    uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    # Due before anything the other tests left, so that a batch of two claims these two,
    # the bad one first: recording the batch fails, and then recording that one alone.
    bad = await queued(uow, datetime(1999, 1, 1, tzinfo=UTC))
    good = await queued(uow, datetime(2000, 1, 1, tzinfo=UTC))
    gateway = Answering({bad: "sim-\x00", good: "sim-good"})  # NUL: no text column holds it
    policy = DeliveryPolicy(retry=RetryPolicy(), quiet=POLICY.quiet, lease_seconds=60, batch=2)
    try:
        with caplog.at_level(logging.WARNING, logger="services.notifications"):
            assert await dispatch_once(uow, gateway, policy) == 2
        # Said by its reason, not its repr, which may quote values: a data exception's, the
        # value refused (here only the encoding's name); a pydantic error's, its input.
        said = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
        refused = 'CharacterNotInRepertoireError: invalid byte sequence for encoding "...": 0x00'
        assert said[:2] == [
            f"recording 2 sms at once failed ({refused} (SQLSTATE 22021)); recording them one"
            " by one",
            f"sms {bad}: recording claim 1 failed: {refused} (SQLSTATE 22021)",
        ]
        assert not [r for r in caplog.records if r.exc_info], "a traceback may quote values"
        async with uow.db.engine.connect() as conn:
            found = await conn.execute(
                select(sms.c.sms_id, sms.c.status, sms.c.provider_id).where(
                    sms.c.sms_id.in_([bad, good])
                )
            )
            rows = {r.sms_id: (r.status, r.provider_id) for r in found}
        # The good one is sent; the bad one, which the gateway took, is given up rather than
        # sent again after every lease (it was left sending, and was).
        assert rows == {good: ("sent", "sim-good"), bad: ("failed", None)}
    finally:
        async with uow.begin() as tx:  # the service, started again, is not to send it
            await tx.conn.execute(
                update(sms).where(sms.c.sms_id == bad).values(status="failed", last_error="test")
            )


async def test_a_gateway_saying_nul_is_recorded_with_what_it_said(uow: UnitOfWork) -> None:
    # A gateway's error page, or a receipt's detail, holding NUL: the row's last_error and
    # sms.failed's detail were it, which PostgreSQL does not hold, so the row was never
    # recorded (sent again after every lease, its attempts never given up). When one failed is
    # kept (notifications 0013): the gateway's refusal recorded, the receipt applied.
    began = datetime.now(UTC)
    retried, refused, sent = [
        await queued(uow, datetime.now(UTC) - timedelta(hours=1)) for _ in range(3)
    ]
    async with uow.begin() as tx:
        rows = {r.sms_id: r for r in await claim_due(tx, POLICY)}
    provider_id = f"sim-{sent}"
    done: list[tuple[Any, Accepted | GatewayError]] = [
        (rows[retried], GatewayError("HTTP 503: \x00down", transient=True)),
        (rows[refused], GatewayError("HTTP 400: \x00bad", transient=False)),
        (rows[sent], Accepted(provider_id)),
    ]
    async with uow.begin() as tx:
        assert await record(tx, done, POLICY) == ["retry", "failed", "sent"]
    async with uow.begin() as tx:
        assert await apply_receipt(tx, Receipt(provider_id, False, "\x00lost")) == "applied"
    async with uow.db.engine.connect() as conn:
        found = await conn.execute(
            select(sms.c.sms_id, sms.c.status, sms.c.last_error, sms.c.failed_at).where(
                sms.c.sms_id.in_([retried, refused, sent])
            )
        )
        kept = found.all()
        said = {r.sms_id: (r.status, r.last_error) for r in kept}
    failed_at = {r.sms_id: r.failed_at for r in kept}
    assert failed_at[retried] is None, failed_at
    assert began <= failed_at[refused] <= failed_at[sent] <= datetime.now(UTC), failed_at
    assert said == {
        retried: ("pending", "HTTP 503: \ufffddown"),
        refused: ("failed", "HTTP 400: \ufffdbad"),
        sent: ("failed", "\ufffdlost"),
    }


async def test_a_text_whose_claims_lapsed_as_often_as_it_may_be_tried_is_given_up(
    uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    """Its claims lapsed unrecorded (the gateway's refusal not recorded either, or the
    dispatcher dying mid-call each time): it was claimed and sent again after every lease,
    its attempts never checked (they were only on a gateway error being recorded). Given up
    once ``max_attempts`` claims lapsed, counted apart from the gateway's failures recorded
    before as retries (3 here)."""
    sms_id = await queued(uow, datetime(1999, 1, 1, tzinfo=UTC))  # before any other due
    tries = POLICY.retry.max_attempts
    async with uow.begin() as tx:
        await tx.conn.execute(
            update(sms).where(sms.c.sms_id == sms_id).values(attempts=3, last_error="HTTP 500")
        )
    policy = DeliveryPolicy(retry=POLICY.retry, quiet=POLICY.quiet, lease_seconds=60, batch=1)
    for _ in range(tries):  # each claim lapses unrecorded
        async with uow.begin() as tx:
            claimed = await claim_due(tx, policy)
            assert sms_id in [r.sms_id for r in claimed]
            await tx.conn.execute(
                update(sms)
                .where(sms.c.sms_id == sms_id)
                .values(next_attempt_at=datetime(1999, 1, 1, tzinfo=UTC))
            )
    with caplog.at_level(logging.INFO, logger="services.notifications"):
        async with uow.begin() as tx:
            claimed = await claim_due(tx, policy)
    assert sms_id not in [r.sms_id for r in claimed]
    row, emitted = await row_and_events(uow, sms_id)
    attempts = 3 + tries
    said = f"claimed {attempts} times, {tries} never recorded; last said: HTTP 500"
    assert (row.status, row.attempts, row.lapses, row.last_error) == (
        "failed",
        attempts,
        tries,
        said,
    )
    assert row.failed_at is not None and row.created_at <= row.failed_at <= datetime.now(UTC), row
    [failed] = [e["data"] for e in emitted if e["data"].get("sms_id") == sms_id]
    assert (failed["reason"], failed["detail"], failed["attempts"]) == (
        "retries_exhausted",
        said,
        attempts,
    )
    assert errors_of(caplog) == [f"sms {sms_id} given up: {said}"]


async def test_a_text_retried_through_a_gateway_outage_is_not_given_up_for_one_lapsed_claim(
    uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    """Its gateway was down half a minute (5 of its attempts recorded as retries, well inside
    the give-up window), then its 6th claim lapsed once (the dispatcher restarted mid-call):
    claimed again, and retried while the window lasts. It was given up at once, as if every
    attempt had lapsed, and the buyer never got the text."""
    sms_id = await queued(uow, datetime(1999, 1, 1, tzinfo=UTC))  # queued now, due before any
    tries = POLICY.retry.max_attempts
    async with uow.begin() as tx:
        await tx.conn.execute(
            update(sms)
            .where(sms.c.sms_id == sms_id)
            .values(status="sending", attempts=tries, lapses=0, last_error="HTTP 503")
        )
    policy = DeliveryPolicy(retry=POLICY.retry, quiet=POLICY.quiet, lease_seconds=60, batch=1)
    with caplog.at_level(logging.INFO, logger="services.notifications"):
        async with uow.begin() as tx:
            claimed = await claim_due(tx, policy)
    assert [(r.sms_id, r.status, r.attempts, r.lapses) for r in claimed] == [
        (sms_id, "sending", tries + 1, 1)
    ]
    async with uow.begin() as tx:  # the gateway still down: a retry, the window not spent
        [recorded] = await record(
            tx, [(claimed[0], GatewayError("HTTP 503", transient=True))], policy
        )
    row, emitted = await row_and_events(uow, sms_id)
    assert (recorded, row.status, row.attempts) == ("retry", "pending", tries + 1)
    assert [e for e in emitted if e["data"].get("sms_id") == sms_id] == []
    assert errors_of(caplog) == []


def errors_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The error lines notifications logged: not another logger's, such as asyncio's "Task
    was destroyed but it is pending!" of an earlier test's producer (one whose stop was
    bounded while Kafka was away) that the garbage collector met meanwhile (CI4)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("services.notifications")
    ]


class Held(Answering):
    """A gateway holding its first answer for ``held`` until ``answer`` is set, accepting
    the rest at once; the sms_ids it was asked to send, in order."""

    def __init__(self, held: str) -> None:
        super().__init__({})
        self.held = held
        self.answer = asyncio.Event()
        self.asked: list[str] = []

    async def send(self, message: OutgoingSms) -> Accepted:
        self.asked.append(message.sms_id)
        if self.asked.count(self.held) == 1 and message.sms_id == self.held:
            await self.answer.wait()
        return Accepted(f"sim-{message.sms_id}")


async def test_a_text_in_flight_is_not_claimed_by_the_next_cycle_and_is_sent_once(
    uow: UnitOfWork,
) -> None:
    # Claimed, its lease running (60 s): another dispatcher's cycle (a second instance of
    # notifications) while the gateway has not answered finds it not due: asked once.
    sms_id = await queued(uow, datetime(1998, 1, 1, tzinfo=UTC))  # first in the next batch
    gateway = Held(sms_id)
    policy = DeliveryPolicy(retry=RetryPolicy(), quiet=POLICY.quiet, lease_seconds=60, batch=1)
    in_flight = asyncio.create_task(dispatch_once(uow, gateway, policy))
    try:
        await until(lambda: gateway.asked, "the gateway asked to send the text")
        await dispatch_once(uow, gateway, replace(policy, batch=1000))
    finally:
        gateway.answer.set()
        assert await in_flight == 1
    assert gateway.asked.count(sms_id) == 1
    row, emitted = await row_and_events(uow, sms_id)
    assert (row.status, row.attempts) == ("sent", 1)
    sent = [e for e in emitted if e["type"] == "sms.sent" and e["data"]["sms_id"] == sms_id]
    assert len(sent) == 1


async def test_a_text_the_gateway_holds_is_the_oldest_due_until_it_is_sent(
    uow: UnitOfWork,
) -> None:
    """The SMS gateway hanging (every call a ReadTimeout, for 25 minutes in a drill) showed
    only as texts pending, a count that stays flat while they are claimed and retried:
    ``caravan_sms_oldest_due_seconds`` says how long the oldest text due and not sent has
    waited since it was first due, in flight included, at the sample of every status and at
    that of the live ones alone; a text not due yet (a reminder waiting out quiet hours) is
    not waiting, however old. Sent, it no longer counts."""
    sms_id = await queued(uow, datetime(1994, 1, 1, tzinfo=UTC))  # first in the next batch
    later = await queued(uow, datetime.now(UTC) + timedelta(hours=1))
    gauge = sms_by_status(uow.db.engine, whole_every=3600)
    ago = func.now() - timedelta(hours=1)
    async with uow.begin() as tx:
        await tx.conn.execute(update(sms).where(sms.c.sms_id == sms_id).values(created_at=ago))
        not_due = {"created_at": ago - timedelta(hours=1), "not_before": ago + timedelta(hours=2)}
        await tx.conn.execute(update(sms).where(sms.c.sms_id == later).values(**not_due))
    gateway = Held(sms_id)
    policy = DeliveryPolicy(retry=RetryPolicy(), quiet=POLICY.quiet, lease_seconds=60, batch=1)
    in_flight = asyncio.create_task(dispatch_once(uow, gateway, policy))
    try:
        await until(lambda: gateway.asked, "the gateway asked to send the text")
        for _ in ("every status", "the live ones"):
            await gauge.sample()
            assert 3600 <= oldest_due() < 7200
    finally:
        gateway.answer.set()
        assert await in_flight == 1
        async with uow.begin() as tx:
            await tx.conn.execute(sms.delete().where(sms.c.sms_id == later))
    await gauge.sample()
    assert oldest_due() < 3600  # other tests' texts may wait, none for an hour


def oldest_due() -> float:
    return REGISTRY.get_sample_value("caravan_sms_oldest_due_seconds") or 0.0


async def test_a_text_in_flight_as_the_service_stops_is_recorded_and_not_sent_again(
    uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    """A graceful stop (SIGTERM: every deploy) cancelled the dispatcher's gateway calls in
    flight: their texts stayed ``sending`` and, once their lease ran out, were sent again,
    twice to the buyer's phone unless the gateway deduplicates by our key (Infobip does not
    by default). The call is let finish and what the gateway said recorded, then the
    dispatcher stops. The gateway holds its answer until the stop has begun."""
    sms_id = await queued(uow, datetime(1996, 1, 1, tzinfo=UTC))  # first in the next batch
    gateway = Held(sms_id)
    # A lease of 2 s: longer than the gateway is held, and waited out below.
    policy = DeliveryPolicy(retry=RetryPolicy(), quiet=POLICY.quiet, lease_seconds=2, batch=1)
    before = lapsed_claims()
    loop = asyncio.create_task(dispatch_loop(uow, gateway, policy, asyncio.Event(), 0.2))
    try:
        await until(lambda: sms_id in gateway.asked, "the gateway asked to send the text")
    finally:
        with caplog.at_level(logging.INFO, logger="services.notifications"):
            loop.cancel()  # as the service's stop cancels its loops
            gateway.answer.set()  # the gateway answers once the stop has begun
            with contextlib.suppress(asyncio.CancelledError):
                await loop
    assert gateway.asked == [sms_id]
    row, emitted = await row_and_events(uow, sms_id)
    assert (row.status, row.attempts, row.provider_id) == ("sent", 1, f"sim-{sms_id}")
    sent = [e for e in emitted if e["type"] == "sms.sent" and e["data"]["sms_id"] == sms_id]
    assert len(sent) == 1
    finished = f"the gateway calls of sms {sms_id} finished as the service stops"
    assert finished in [r.getMessage() for r in caplog.records]

    async def lease_over() -> bool:
        async with uow.db.engine.connect() as conn:
            ends = select(sms.c.next_attempt_at <= func.now()).where(sms.c.sms_id == sms_id)
            return bool(await conn.scalar(ends))

    await until(lease_over, "the text's lease to run out")
    # The next claim (another instance's, or this one's started again) does not take it.
    async with uow.begin() as tx:
        claimed = await claim_due(tx, POLICY)
    assert sms_id not in [r.sms_id for r in claimed]
    # Each lapse counted since is of a text other tests left claimed, none of this one's.
    others = [r for r in claimed if r.was == "sending"]
    assert lapsed_claims() - before == len(others)


async def test_a_text_the_gateway_took_as_postgresql_went_away_is_recorded_once_it_is_back(
    caravan: System, uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL stopped while the gateway had the text: recording it failed, and the
    dispatcher dropped what the gateway said (the fault raised to its loop). The row stayed
    ``sending``; once its lease lapsed it was claimed and sent again, and a gateway that does
    not deduplicate by our key texted the buyer twice. The answer is kept and recorded once
    PostgreSQL is back. The gateway holds its answer until PostgreSQL is stopped, and
    PostgreSQL starts again only once the recording has failed: nothing is left to timing."""
    pg = caravan.infra.local_postgres
    assert pg is not None and caravan.engine is not None, "this needs the project's PostgreSQL"
    sms_id = await queued(uow, datetime(1997, 1, 1, tzinfo=UTC))  # first in the next batch
    gateway = Held(sms_id)
    # A lease of 5 s: longer than the gateway is held, and over well before the test ends.
    policy = DeliveryPolicy(retry=RetryPolicy(), quiet=POLICY.quiet, lease_seconds=5, batch=1)
    loop = asyncio.create_task(dispatch_loop(uow, gateway, policy, asyncio.Event(), 0.2))

    async def status() -> Any:
        async with uow.db.engine.connect() as conn:
            found = select(sms.c.status, sms.c.attempts).where(sms.c.sms_id == sms_id)
            return (await conn.execute(found)).one()

    try:
        await until(lambda: sms_id in gateway.asked, "the gateway asked to send the text")
        with caplog.at_level(logging.WARNING, logger="services.notifications"):
            await asyncio.to_thread(pg.stop, "fast")
            try:
                gateway.answer.set()  # the gateway took it; the database is away
                await until(
                    lambda: [r for r in caplog.records if "recording 1 sms" in r.getMessage()],
                    "recording the text to fail",
                )
            finally:
                await asyncio.to_thread(pg.start)
                await caravan.engine.dispose()  # the test's own pooled connections died
        row = await until(status, "the text recorded", ready=lambda r: r.status == "sent")
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert gateway.asked.count(sms_id) == 1
    assert tuple(row) == ("sent", 1)
    _, emitted = await row_and_events(uow, sms_id)
    sent = [e for e in emitted if e["type"] == "sms.sent" and e["data"]["sms_id"] == sms_id]
    assert len(sent) == 1


async def test_a_text_one_dispatcher_is_claiming_is_passed_over_by_another_at_once(
    caravan: System, uow: UnitOfWork
) -> None:
    """Two instances' dispatchers claiming at once: the text the first is claiming (its
    claim not yet committed) is skipped by the second, not claimed by it too once the first
    commits: claimed twice, it would be sent under two claims (twice, by a gateway that does
    not deduplicate) and its first claim's result dropped as stale."""
    # Due before any other, so that a batch of one claims it first: what else is due, left
    # by other tests, is leased a minute by the other claim at most (one text).
    sms_id = await queued(uow, datetime.now(UTC) - timedelta(days=3650))
    leased = replace(POLICY, lease_seconds=60, batch=1)  # not due again once claimed

    async def other_claim() -> list[str]:
        async with uow.begin() as tx:
            return [r.sms_id for r in await claim_due(tx, leased)]

    async with uow.begin() as tx:
        first = [r.sms_id for r in await claim_due(tx, leased)]
        holder = await backend_pid(tx.conn)
        second, without_waiting = await caravan.beside(holder, other_claim())
    assert sms_id in first
    assert sms_id not in await second
    # Waiting for the first's lock instead, it finds the text no longer due: passing over it
    # is what keeps a slow claim from holding up every other instance's.
    assert without_waiting, "the other claim waited for the first's lock"
    row, _ = await row_and_events(uow, sms_id)
    assert (row.status, row.attempts) == ("sending", 1)


async def test_a_receipt_told_again_or_contradicted_changes_the_text_once(
    uow: UnitOfWork,
) -> None:
    """A gateway resends a receipt it is not sure we took, and may send a contradicting one
    late: the first receipt of a sent text decides it; another changes nothing and emits
    nothing (the buyer's text is not said delivered twice, nor failed after it was
    delivered)."""
    sms_id = await queued(uow, datetime.now(UTC) - timedelta(hours=1))
    async with uow.begin() as tx:
        [row] = [r for r in await claim_due(tx, POLICY) if r.sms_id == sms_id]
    provider_id = f"receipt-{sms_id}"
    async with uow.begin() as tx:
        assert await record(tx, [(row, Accepted(provider_id))], POLICY) == ["sent"]
    told = []
    for receipt in (
        Receipt(provider_id, True),
        Receipt(provider_id, True),
        Receipt(provider_id, False, "expired"),
    ):
        async with uow.begin() as tx:
            told.append(await apply_receipt(tx, receipt))
    assert told == ["applied", "duplicate", "duplicate"]
    row, emitted = await row_and_events(uow, sms_id)
    assert (row.status, row.last_error) == ("delivered", None)
    said = [e["type"] for e in emitted if e["data"].get("sms_id") == sms_id]
    assert said == ["sms.sent", "sms.delivered"]


async def test_a_text_queued_before_its_recipient_opted_out_is_suppressed_not_claimed(
    uow: UnitOfWork,
) -> None:
    """A buyer who opts out while a text waits (a retry's backoff, a reminder held through
    quiet hours) is not texted: the claim sets it ``suppressed`` instead of ``sending``."""
    sms_id = await queued(uow, datetime.now(UTC) - timedelta(hours=1))
    async with uow.begin() as tx:
        to = await tx.conn.scalar(select(sms.c.to).where(sms.c.sms_id == sms_id))
        await tx.conn.execute(insert(opt_outs).values(phone=to))
    async with uow.begin() as tx:
        claimed = [r.sms_id for r in await claim_due(tx, POLICY)]
    assert sms_id not in claimed
    row, emitted = await row_and_events(uow, sms_id)
    assert (row.status, row.attempts) == ("suppressed", 0)
    assert [e for e in emitted if e["data"].get("sms_id") == sms_id] == []


class AnswerLost:
    """notifications' unit of work, whose ``lose``-th transaction commits on the server but
    whose answer is lost with its connection: the client is told the connection closed."""

    def __init__(self, uow: UnitOfWork, lose: int) -> None:
        self.uow, self.db, self.lose = uow, uow.db, lose
        self.begun = 0

    @contextlib.asynccontextmanager
    async def begin(self, cause: Any = None) -> AsyncIterator[Any]:
        self.begun += 1
        async with self.uow.begin(cause) as tx:
            yield tx
        if self.begun == self.lose:
            raise asyncpg.InterfaceError("cannot call Transaction.commit(): connection is closed")


class Busy(Answering):
    """A gateway asking for each text to be tried again later."""

    async def send(self, message: OutgoingSms) -> Accepted:
        raise GatewayError("HTTP 503: busy", transient=True)


@pytest.mark.parametrize(
    ("gateway", "recorded"),
    [
        (Answering({}), ("sent", 1, "p-lost", None)),
        (Busy({}), ("pending", 1, None, "HTTP 503: busy")),
    ],
    ids=["taken", "to-retry"],
)
async def test_a_recording_committed_as_its_connection_was_lost_is_no_lapsed_claim(
    uow: UnitOfWork,
    caplog: pytest.LogCaptureFixture,
    gateway: Answering,
    recorded: tuple[str, int, str | None, str | None],
) -> None:
    """The server committed the text's recording but the connection dropped before its answer
    came: the retry found the row recorded by that very claim, fenced out, and said "claim 1
    lapsed before it was recorded", a text operators would look for twice at the buyer's.
    It is recorded: nothing said, and its one sms.sent (the first try's) stands."""
    sms_id = await queued(uow, datetime(1997, 1, 1, tzinfo=UTC))  # first in the next batch
    gateway.ids = {sms_id: "p-lost"}
    policy = DeliveryPolicy(retry=RetryPolicy(), quiet=POLICY.quiet, lease_seconds=30, batch=1)
    lost = AnswerLost(uow, lose=2)  # the claim's is heard, the recording's is not
    with caplog.at_level(logging.WARNING, logger="services.notifications"):
        claimed = await dispatch_once(lost, gateway, policy)  # type: ignore[arg-type]
    assert (claimed, lost.begun) == (1, 3)  # recorded again, after the fault
    said = [r.getMessage() for r in caplog.records]
    assert any("recording 1 sms failed" in line for line in said), said  # the fault retried
    assert not [line for line in said if "lapsed" in line], said
    row, emitted = await row_and_events(uow, sms_id)
    assert (row.status, row.attempts, row.provider_id, row.last_error) == recorded
    sent = [e for e in emitted if e["type"] == "sms.sent" and e["data"]["sms_id"] == sms_id]
    assert len(sent) == (recorded[0] == "sent")


async def test_a_claim_rolled_back_counts_no_lapsed_claim(uow: UnitOfWork) -> None:
    """``caravan_sms_lapsed_claims_total`` went up inside the claim's transaction: a claim
    that then rolled back (the connection lost before its commit) took nothing over, yet
    counted a lapse, and the claim that then took the text counted it again."""
    sms_id = await queued(uow, datetime(1997, 1, 1, tzinfo=UTC))
    async with uow.begin() as tx:
        [first] = [r for r in await claim_due(tx, POLICY) if r.sms_id == sms_id]
    before = lapsed_claims()  # its lease (0 s) lapsed at once

    class RolledBack(Exception):
        pass

    with contextlib.suppress(RolledBack):
        async with uow.begin() as tx:
            took = await claim_due(tx, POLICY)
            assert sms_id in [r.sms_id for r in took]
            raise RolledBack
    assert lapsed_claims() == before
    async with uow.begin() as tx:
        took = await claim_due(tx, POLICY)
    [second] = [r for r in took if r.sms_id == sms_id]
    assert (first.attempts, second.attempts) == (1, 2)
    # Every text it took, the first claim had (its lease lapsed too): each counted once.
    assert lapsed_claims() - before == len(took)
