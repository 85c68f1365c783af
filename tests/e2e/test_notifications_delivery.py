"""SMS delivery end to end: the notifications service against the SMS gateway simulator,
running as its own process, on real Kafka and PostgreSQL.

The module restarts notifications pointed at the simulator, with short retry delays and
quiet hours that cover the present moment in Shanghai and in the session's market zone (but
not in UTC or London), and restores it.
"""

import asyncio
import functools
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from caravan.checkout import REPO_ROOT
from caravan.cli import app as cli_app
from caravan.output import at
from services.notifications.domain.delivery import REFUND_PAID
from services.notifications.handlers import NO_LOAN_LEFT
from shared import days
from shared.events.envelope import CloudEvent, new_event
from shared.events.orders import OrderRequested
from shared.events.payments import (
    InstalmentDue,
    InstalmentLeft,
    PaymentRefunded,
    PaymentRepaid,
    PaymentVoided,
)
from shared.logs import masked
from shared.seed import SeedFile
from shared.topics import Topic, consumer_group
from tests.e2e.markers import TEXTED_ON, consumed_again, drained, order_handled
from tests.harness import System, free_port, order_events, ref, until

SELLER_PHONE = "+8613000007001"
MAX_ATTEMPTS = 4
GIVE_UP_AFTER = 5.0  # seconds: a text is given up after MAX_ATTEMPTS tries and this long


def _phone(prefix: str = "+86137", length: int = 14) -> str:
    return prefix + "".join(random.choices("0123456789", k=length - len(prefix)))


@pytest.fixture(scope="module")
def simulator(caravan: System) -> Iterator[str]:
    """The SMS gateway simulator as a real process; its base URL."""
    port = free_port()
    log = (caravan.procs.log_dir / "sms-simulator.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.notifications.simulator", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a loaded 2-core machine imports slowly
        while True:
            assert proc.poll() is None, "the simulator exited"
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _quiet_now() -> dict[str, str]:
    """Quiet hours around the present moment in Shanghai (8 hours away from UTC), and in the
    session's market zone (within two hours of it: tests/conftest.py) for an hour more."""
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    start, end = now - timedelta(hours=3), now + timedelta(hours=4)
    return {
        "CARAVAN_NOTIFICATIONS_QUIET_START": start.strftime("%H:%M"),
        "CARAVAN_NOTIFICATIONS_QUIET_END": end.strftime("%H:%M"),
    }


ENV: dict[str, str] = {}


@pytest.fixture(scope="module")
async def sms(caravan: System, simulator: str) -> AsyncIterator[httpx.AsyncClient]:
    """Notifications sending through the simulator (restored to its defaults afterwards)."""
    today = days.today()
    await caravan.seed(
        SeedFile.model_validate(
            {
                "sellers": [
                    {
                        "id": "n-seller",
                        "name": "Walnut coop",
                        "county": "Shawan",
                        "phone": SELLER_PHONE,
                    },
                    {  # another seller answering on the same phone
                        "id": "n-seller-2",
                        "name": "Almond growers",
                        "county": "Shawan",
                        "phone": SELLER_PHONE,
                    },
                ],
                "products": [
                    {
                        "sku": "N-WALNUT",
                        "seller_id": "n-seller",
                        "unit_price_fen": 2000,
                        "name": {"zh-CN": "核桃", "ug-CN": "ياڭاق", "en": "Walnuts"},
                    },
                    {
                        "sku": "N-ALMOND",
                        "seller_id": "n-seller-2",
                        "unit_price_fen": 3000,
                        "name": {"zh-CN": "巴旦木", "ug-CN": "بادام", "en": "Almonds"},
                    },
                ],
                "lots": [
                    {
                        "lot_id": lot,
                        "sku": sku,
                        "quantity": 1_000_000,
                        "available_from": str(today - timedelta(days=30)),
                        "best_before": str(today + timedelta(days=365)),
                    }
                    for lot, sku in (("N-WAL-1", "N-WALNUT"), ("N-ALM-1", "N-ALMOND"))
                ],
            }
        )
    )
    env = {
        "CARAVAN_NOTIFICATIONS_GATEWAY_URL": simulator,
        "CARAVAN_NOTIFICATIONS_RETRY_BASE_SECONDS": "0.05",
        "CARAVAN_NOTIFICATIONS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "CARAVAN_NOTIFICATIONS_GIVE_UP_AFTER_SECONDS": str(GIVE_UP_AFTER),
        "CARAVAN_NOTIFICATIONS_GATEWAY_TIMEOUT_SECONDS": "1",
        "CARAVAN_NOTIFICATIONS_LEASE_SECONDS": "3",
        **_quiet_now(),
    }
    ENV.update(env)
    await caravan.restart(("notifications",), **env)
    try:
        async with httpx.AsyncClient(base_url=simulator, timeout=5) as client:
            yield client
    finally:
        await caravan.restart(("notifications",))


async def _script(sim: httpx.AsyncClient, to: str, *actions: str) -> None:
    (await sim.post("/script", json={"to": to, "actions": list(actions)})).raise_for_status()


async def _requests(sim: httpx.AsyncClient, to: str | None = None) -> list[dict[str, Any]]:
    """Every request the simulator got (for ``to``), with its time and its answer."""
    return list((await sim.get("/requests", params={"to": to} if to else {})).json())


async def _messages(sim: httpx.AsyncClient, to: str) -> list[dict[str, Any]]:
    """The messages the simulator accepted for ``to``, one per dedup key."""
    return list((await sim.get("/messages", params={"to": to})).json())


async def _order(
    caravan: System,
    phone: str,
    locale: str = "en",
    qty: int = 2,
    more: dict[str, int] | None = None,
    lent: bool = False,
) -> str:
    """A confirmed order of ``qty`` walnuts (and ``more``: other SKUs and quantities), paid,
    or ``lent``: a microloan's over 3 months (its instalments may be reminded of)."""
    lines = [{"sku": "N-WALNUT", "quantity": qty}]
    lines += [{"sku": sku, "quantity": quantity} for sku, quantity in (more or {}).items()]
    req = OrderRequested.model_validate(
        {
            "order_ref": ref("N"),
            "buyer": {"id": "t-rich", "phone": phone, "locale": locale},
            "lines": lines,
            "payment": {"method": "microloan", "term_months": 3} if lent else {"method": "prepaid"},
        }
    )
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    return order_id


def _sms(caravan: System, kind: str, **match: Any) -> list[CloudEvent]:
    return caravan.log.events(Topic.NOTIFICATION_EVENTS, type=kind, **match)


async def test_failures_then_success_send_one_sms_and_the_receipt_is_delivered(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    phone = _phone()
    await _script(sms, phone, "fail", "fail")
    order_id = await _order(caravan, phone)
    sent = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=order_id, to=phone))
    assert sent[0].data["attempts"] == 3 and sent[0].data["purpose"] == "order_confirmed"
    assert "Walnuts x2" in sent[0].data["text"] and sent[0].data["encoding"] == "UCS-2"  # +86
    assert [r["action"] for r in (await _requests(sms, phone))] == [
        "fail",
        "fail",
        "accept",
    ]
    messages = await _messages(sms, phone)
    assert len(messages) == 1 and messages[0]["requests"] == 1
    sms_id = sent[0].data["sms_id"]
    await caravan.wait_for(lambda: _sms(caravan, "sms.delivered", sms_id=sms_id))
    assert (
        await caravan.scalar("select status from notifications.sms where sms_id = :s", s=sms_id)
        == "delivered"
    )
    # The seller of the goods is told too, once, in the default locale.
    seller = await caravan.wait_for(
        lambda: _sms(caravan, "sms.sent", order_id=order_id, to=SELLER_PHONE)
    )
    assert seller[0].data["purpose"] == "new_order" and seller[0].data["locale"] == "zh-CN"
    assert "核桃 x2" in seller[0].data["text"] and "¥40.00" in seller[0].data["text"]
    assert len(_sms(caravan, "sms.sent", order_id=order_id, to=phone)) == 1


async def test_a_text_to_a_mainland_number_is_signed_for_chinese_carriers_whatever_its_language(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """Chinese carriers require the 【Caravan】 signature at the start of every text to a
    mainland China number (+86), whatever its language: an English buyer's text to one began
    "Caravan: " and risked being refused. Then it is UCS-2, in parts of 67 characters; an
    English text to a number elsewhere keeps "Caravan: " and GSM-7."""
    mainland, london = _phone(), _phone("+447700", 13)
    in_china, in_uk = await asyncio.gather(_order(caravan, mainland), _order(caravan, london))
    cn = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=in_china, to=mainland))
    text = cn[0].data["text"]
    assert text.startswith("【Caravan】Your order "), text
    assert "Caravan:" not in text and "Walnuts x2" in text
    assert cn[0].data["encoding"] == "UCS-2"
    assert cn[0].data["segments"] == (1 if len(text) <= 70 else -(-len(text) // 67))
    assert [m["text"] for m in await _messages(sms, mainland)] == [text]  # as the gateway got it
    uk = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=in_uk, to=london))
    assert uk[0].data["text"].startswith("Caravan: Your order "), uk[0].data["text"]
    assert (uk[0].data["encoding"], uk[0].data["segments"]) == ("GSM-7", 1)


async def _queued(caravan: System, order_id: str) -> list[tuple[str, str]]:
    """The order's texts queued (each sent at most once), by recipient and purpose."""
    query = 'select "to", purpose from notifications.sms where order_id = :o order by 2, 1'
    return [tuple(r) for r in await caravan.sql(query, o=order_id)]


async def test_two_sellers_on_one_phone_get_a_text_each(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    buyer = _phone()
    order_id = await _order(caravan, buyer, qty=1, more={"N-ALMOND": 3})

    def texts() -> list[CloudEvent]:
        return _sms(caravan, "sms.sent", order_id=order_id, to=SELLER_PHONE)

    await caravan.wait_for(texts, 2)
    await order_handled(caravan, "notifications", order_id, *TEXTED_ON)
    assert await _queued(caravan, order_id) == [(SELLER_PHONE, "new_order")] * 2 + [
        (buyer, "order_confirmed")
    ]
    said = [e.data["text"] for e in texts()]
    assert len(said) == 2, said
    walnuts, almonds = (next(t for t in said if name in t) for name in ("核桃", "巴旦木"))
    assert "核桃 x1" in walnuts and "¥20.00" in walnuts and "巴旦木" not in walnuts
    assert "巴旦木 x3" in almonds and "¥90.00" in almonds and "核桃" not in almonds


async def test_429_is_retried_after_retry_after(caravan: System, sms: httpx.AsyncClient) -> None:
    phone = _phone()
    await _script(sms, phone, "429:2")
    log = caravan.procs.log_dir / "notifications.log"
    logged_before = log.stat().st_size
    order_id = await _order(caravan, phone)
    await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=order_id, to=phone))
    # The gateway's 429 is a retried fault (one warning, then one a minute, for every text
    # that meets it: another test's may have said it), ended in one line once it takes one.
    written = log.read_bytes()[logged_before:].splitlines()
    said = [json.loads(line)["message"] for line in written if line.startswith(b"{")]
    assert any(line.startswith("the SMS gateway answers again") for line in said), said
    requests = await _requests(sms, phone)
    assert [r["action"] for r in requests] == ["429:2", "accept"]
    assert requests[1]["at"] - requests[0]["at"] >= 1.95  # base backoff is 0.05 s
    assert len(await _messages(sms, phone)) == 1


async def test_a_lost_answer_is_resent_with_the_same_dedup_key_and_sent_once(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    phone = _phone()
    await _script(sms, phone, "timeout:2")  # accepted, but the answer comes after our 1 s timeout
    order_id = await _order(caravan, phone)
    sent = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=order_id, to=phone))
    requests = await _requests(sms, phone)
    assert len({r["dedup_key"] for r in requests}) == 1 and len(requests) == 2
    messages = await _messages(sms, phone)
    assert len(messages) == 1 and messages[0]["requests"] == 2
    # The receipt came before the send was recorded: refused, retried, then applied once.
    await caravan.wait_for(lambda: _sms(caravan, "sms.delivered", sms_id=sent[0].data["sms_id"]))
    assert len(_sms(caravan, "sms.sent", order_id=order_id, to=phone)) == 1


async def test_a_text_the_gateway_keeps_refusing_shows_in_metrics_as_pending(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """A gateway refusing texts (an expired key retried for hours) left nothing on
    ``/metrics``: ``caravan_sms`` counts the texts waiting to go."""
    phone = _phone()
    await _script(sms, phone, "fail", "429:30")  # refused, then held off for 30 s
    await _order(caravan, phone)
    await caravan.until(
        lambda: _requests(sms, phone), "the text refused twice", ready=lambda seen: len(seen) == 2
    )
    await caravan.until(
        lambda: caravan.gauge("notifications", "caravan_sms", status="pending"),
        "caravan_sms{status=pending} above 0",
        timeout=20,
    )


async def test_an_id_longer_than_ours_is_kept_and_the_text_sent_once(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    # A gateway's ids are its own: one of 200 characters is stored whole, on the first
    # answer (provider_id was 128 characters: recording the batch failed, the rows stayed
    # sending and were sent again after every lease, without end).
    phone = _phone()
    await _script(sms, phone, "long_id")
    order_id = await _order(caravan, phone)
    sent = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=order_id, to=phone))
    assert sent[0].data["attempts"] == 1
    [message] = await _messages(sms, phone)
    assert len(message["id"]) == 200 and message["requests"] == 1
    sms_id = sent[0].data["sms_id"]
    stored = await caravan.scalar(
        "select provider_id from notifications.sms where sms_id = :s", s=sms_id
    )
    assert stored == message["id"]
    await caravan.wait_for(lambda: _sms(caravan, "sms.delivered", sms_id=sms_id))


async def test_a_text_the_database_will_not_record_as_sent_is_given_up_not_sent_again(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """The gateway takes the text, and the database refuses to record it (here a trigger
    refusing this number's row as sent; for real, a value it cannot hold). The row stayed
    ``sending`` and was sent again after every lease (3 s here), for ever: the simulator
    deduplicates by our key, a gateway that does not (Infobip unless asked) texted the buyer
    each time. It now ends ``failed`` with why, once, sent once."""
    phone = _phone()
    trigger = f"refuse_sent_{uuid.uuid4().hex[:8]}"
    await caravan.execute(
        f"""create function notifications.{trigger}() returns trigger language plpgsql as $$
        begin
            if new.status = 'sent' and new."to" = '{phone}' then
                raise exception 'refused for the test: %', new.sms_id;
            end if;
            return new;
        end $$"""
    )
    await caravan.execute(
        f"create trigger {trigger} before update on notifications.sms"
        f" for each row execute function notifications.{trigger}()"
    )
    try:
        order_id = await _order(caravan, phone)
        failed = await caravan.wait_for(
            lambda: _sms(caravan, "sms.failed", order_id=order_id, to=phone), timeout=30
        )
        status, error, failed_at = (
            await caravan.sql(
                "select status, last_error, failed_at from notifications.sms where sms_id = :s",
                s=failed[0].data["sms_id"],
            )
        )[0]
    finally:
        await caravan.execute(f"drop trigger {trigger} on notifications.sms")
        await caravan.execute(f"drop function notifications.{trigger}()")
    assert (failed[0].data["reason"], failed[0].data["attempts"]) == ("retries_exhausted", 1)
    assert status == "failed" and error == failed[0].data["detail"]
    assert abs((failed_at - failed[0].time).total_seconds()) < 5, (failed_at, failed[0].time)
    # Said as shared.db.reason says a database's refusal: its kind, message and SQLSTATE.
    sms_id = failed[0].data["sms_id"]
    assert error == (
        "the gateway took it; recording that failed:"
        f" RaiseError: refused for the test: {sms_id} (SQLSTATE P0001)"
    ), error
    # Failed is final: the text is not claimed again, so this one request is all it gets.
    [request] = await _requests(sms, phone)
    assert request["action"] == "accept"
    assert not _sms(caravan, "sms.sent", order_id=order_id, to=phone)


async def test_retries_are_bounded_then_sms_failed(caravan: System, sms: httpx.AsyncClient) -> None:
    # More failures in a row than MAX_ATTEMPTS, but within GIVE_UP_AFTER: still sent.
    outage, flaky, refused = _phone(), _phone(), _phone()
    await _script(sms, outage, *["fail"] * (MAX_ATTEMPTS + 2))
    await _script(sms, flaky, *["fail"] * 100)
    await _script(sms, refused, "reject")
    placed = await asyncio.gather(*(_order(caravan, to) for to in (outage, flaky, refused)))
    sent = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=placed[0], to=outage))
    assert sent[0].data["attempts"] == MAX_ATTEMPTS + 3
    failed = await caravan.wait_for(
        lambda: _sms(caravan, "sms.failed", order_id=placed[1], to=flaky)
    )
    assert failed[0].data["reason"] == "retries_exhausted"
    assert failed[0].data["attempts"] > MAX_ATTEMPTS  # the attempts and the time both
    tried = await _requests(sms, flaky)
    assert len(tried) == failed[0].data["attempts"]
    queued = await caravan.scalar(
        "select created_at from notifications.sms where sms_id = :s", s=failed[0].data["sms_id"]
    )
    assert (failed[0].time - queued).total_seconds() >= GIVE_UP_AFTER
    rejected = await caravan.wait_for(
        lambda: _sms(caravan, "sms.failed", order_id=placed[2], to=refused)
    )
    assert rejected[0].data["reason"] == "rejected" and rejected[0].data["attempts"] == 1
    assert (await _messages(sms, flaky)) == []
    assert not _sms(caravan, "sms.sent", order_id=placed[1], to=flaky)


async def test_a_reminder_held_through_quiet_hours_gets_the_whole_grace_from_their_end(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """A reminder queued in the night waits for the morning; when it may go at last, a
    gateway failing for a while must not make it given up at once because it was queued
    long before (the morning's burst of reminders, a gateway answering 429 to it). Here one
    queued an hour ago (GIVE_UP_AFTER is 5 s) whose quiet hours end now, to a buyer in
    London (not in quiet hours, so its retries wait for nothing else)."""
    london = _phone("+447700", 13)
    await _script(sms, london, *["fail"] * (MAX_ATTEMPTS + 2))
    sms_id = str(uuid.uuid4())
    await caravan.execute(
        'insert into notifications.sms (sms_id, dedup_key, purpose, "to", locale, text,'
        " encoding, segments, status, created_at, not_before, next_attempt_at)"
        " values (:s, :k, 'instalment_today', :to, 'en', 'Instalment 1 is due today.',"
        " 'GSM-7', 1, 'pending', now() - interval '1 hour', now(), now())",
        s=sms_id,
        k=f"test:{sms_id}",
        to=london,
    )
    done = await caravan.wait_for(
        lambda: (
            _sms(caravan, "sms.sent", sms_id=sms_id) + _sms(caravan, "sms.failed", sms_id=sms_id)
        )
    )
    assert [(e.type, e.data.get("reason")) for e in done] == [("sms.sent", None)]
    assert done[0].data["attempts"] == MAX_ATTEMPTS + 3


async def test_a_reminder_retried_into_quiet_hours_is_not_charged_the_hours_held(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """A reminder that fails in the evening is retried when quiet hours end; the night it was
    held must not count against its grace, or the morning's 429s to the burst give it up
    after six quick attempts (GIVE_UP_AFTER counts from ``not_before``). Here a reminder to a
    Shanghai number (quiet now), allowed an hour ago, fails once: its retry waits for the
    quiet hours' end, and ``not_before`` moves on by as long as they hold it."""
    shanghai = _phone()
    await _script(sms, shanghai, "fail")
    sms_id = str(uuid.uuid4())
    await caravan.execute(
        'insert into notifications.sms (sms_id, dedup_key, purpose, "to", locale, text,'
        " encoding, segments, status, created_at, not_before, next_attempt_at)"
        " values (:s, :k, 'instalment_today', :to, 'en', 'Instalment 1 is due today.',"
        " 'GSM-7', 1, 'pending', now() - interval '1 hour', now() - interval '1 hour', now())",
        s=sms_id,
        k=f"test:{sms_id}",
        to=shanghai,
    )
    row = await until(
        lambda: caravan.sql(
            "select status, attempts, next_attempt_at, not_before from notifications.sms"
            " where sms_id = :s",
            s=sms_id,
        ),
        "the reminder's first attempt recorded",
        ready=lambda rows: bool(rows) and rows[0].attempts == 1 and rows[0].status == "pending",
    )
    assert row[0].next_attempt_at > datetime.now(UTC) + timedelta(minutes=55)  # quiet hours
    # Allowed for an hour before its first attempt, plus the retry's delay (a few seconds).
    allowed = row[0].next_attempt_at - row[0].not_before
    assert timedelta(hours=1) <= allowed < timedelta(hours=1, seconds=30)


async def test_opted_out_and_invalid_numbers_get_nothing(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    opted, invalid = _phone(), _phone("+86127")  # 12x is no mainland mobile prefix
    async with caravan.api("notifications") as http:
        assert (await http.put(f"/opt-outs/{opted}")).status_code == 204
        assert (await http.get(f"/opt-outs/{opted}")).json()["opted_out"] is True
        bad = await http.put("/opt-outs/12345")
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        order_id, other = await asyncio.gather(_order(caravan, opted), _order(caravan, invalid))
        failed = await caravan.wait_for(
            lambda: _sms(caravan, "sms.failed", order_id=other, to=invalid)
        )
        assert failed[0].data["reason"] == "invalid_phone"
        failed_at = await caravan.scalar(
            "select failed_at from notifications.sms where sms_id = :s", s=failed[0].data["sms_id"]
        )
        assert failed_at is not None and abs((failed_at - failed[0].time).total_seconds()) < 5
        status = await _wait_sql(
            caravan,
            'select status from notifications.sms where order_id = :o and "to" = :p',
            o=order_id,
            p=opted,
        )
        assert status == "suppressed"
        assert (await http.delete(f"/opt-outs/{opted}")).status_code == 204
        assert (await http.get(f"/opt-outs/{opted}")).json()["opted_out"] is False
    assert (await _requests(sms, opted)) == []
    assert (await _requests(sms, invalid)) == []
    assert not _sms(caravan, "sms.sent", order_id=order_id, to=opted)


async def _wait_sql(caravan: System, query: str, timeout: float = 30.0, **params: Any) -> Any:
    return await until(
        lambda: caravan.scalar(query, **params),
        f"a row of {query}",
        timeout,
        ready=lambda value: value is not None,
    )


async def _publish(caravan: System, event: CloudEvent) -> None:
    key = str(event.data["order_id"]).encode()
    await caravan.publish_raw(Topic.PAYMENT_EVENTS.value, event.to_json(), key=key)


async def test_reminders_wait_out_quiet_hours_in_the_recipients_local_time(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    shanghai, london, american = _phone(), _phone("+447700", 13), _phone("+1212", 12)
    in_china, in_uk, in_us = await asyncio.gather(
        _order(caravan, shanghai, "ug-CN", lent=True),
        _order(caravan, london, "en", lent=True),
        _order(caravan, american, "en", lent=True),
    )
    # Order outcomes ignore quiet hours: it is quiet in Shanghai now, and the buyer is told.
    await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=in_china, to=shanghai))
    for order_id in (in_china, in_uk, in_us):
        upcoming = _due(order_id, 1, "upcoming")
        await _publish(caravan, upcoming)
        await _publish(caravan, upcoming)  # redelivered
        await _publish(caravan, _due(order_id, 1, "upcoming"))  # announced again
        await _publish(caravan, _due(order_id, 1, "today"))
    # London is not in quiet hours: both reminders go out, once each.
    sent = await caravan.wait_for(
        lambda: _sms(caravan, "sms.sent", order_id=in_uk, purpose="instalment_today")
    )
    assert sent[0].data["to"] == london and "is due today" in sent[0].data["text"]
    upcoming_sent = _sms(caravan, "sms.sent", order_id=in_uk, purpose="instalment_upcoming")
    assert len(upcoming_sent) == 1 and "CNY 40.00" in upcoming_sent[0].data["text"]
    # Shanghai is: both reminders are queued, once each, for the end of the quiet hours. So
    # are those of a number whose calling code (+1) names no one zone: the market's zone is
    # taken (CARAVAN_MARKET_TIMEZONE, the session's here, within the quiet hours), not UTC.
    for order_id, phone in ((in_china, shanghai), (in_us, american)):
        await _wait_sql(
            caravan,
            "select sms_id from notifications.sms where order_id = :o and purpose = :p",
            o=order_id,
            p="instalment_today",
        )
        rows = await caravan.sql(
            "select purpose, status, next_attempt_at, not_before, text from notifications.sms"
            " where order_id = :o and purpose like 'instalment%' order by purpose",
            o=order_id,
        )
        assert [(r.purpose, r.status) for r in rows] == [
            ("instalment_today", "pending"),
            ("instalment_upcoming", "pending"),
        ], phone
        assert all(r.next_attempt_at > datetime.now(UTC) + timedelta(minutes=55) for r in rows)
        assert all(r.not_before == r.next_attempt_at for r in rows)  # the give-up clock's start
        assert not _sms(caravan, "sms.sent", order_id=order_id, purpose="instalment_upcoming")
        assert (await _requests(sms, phone))[-1]["action"] == "accept"
        assert len(await _messages(sms, phone)) == 1  # the confirmation
        if phone == shanghai:
            assert "ئەسكەرتىش" in rows[1].text
        # `caravan texts` says why they wait: it said their next try alone, as of a text
        # whose gateway is away, though none is.
        whys = [cells[4] for cells in _texts_shown(caravan, order_id) if cells[3] == "pending"]
        held_until = f"held by quiet hours until {at(rows[0].next_attempt_at.isoformat())}"
        assert whys == [held_until, held_until], whys


def _texts_runner(caravan: System) -> CliRunner:
    """What runs ``caravan texts`` against the session's notifications, 200 columns wide."""
    return CliRunner(
        env={
            "CARAVAN_TOKEN": caravan.token,
            "CARAVAN_NOTIFICATIONS_HTTP_PORT": caravan.procs.env["CARAVAN_NOTIFICATIONS_HTTP_PORT"],
            "COLUMNS": "200",
        }
    )


def _texts_shown(caravan: System, order_id: str) -> list[list[str]]:
    """The first line of each text ``caravan texts ORDER_ID`` prints, cell by cell."""
    shown = _texts_runner(caravan).invoke(cli_app, ["texts", order_id])
    assert shown.exit_code == 0, shown.output
    rows = [[c.strip() for c in line.split("│")[1:6]] for line in shown.output.splitlines()]
    return [cells for cells in rows if len(cells) == 5 and cells[0][:1].isdigit()]


async def test_a_reminder_waiting_out_quiet_hours_is_not_sent_once_its_instalment_is_repaid(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """Reminders are announced at midnight and wait for the morning in Shanghai; a buyer who
    repays meanwhile was still told at 8 that the instalment was due. Instalment 1 repaid:
    its reminder is not sent, the one of instalment 2 still waits; the loan voided: neither."""
    shanghai = _phone()
    order_id, later = await asyncio.gather(
        _order(caravan, shanghai, "zh-CN", lent=True), _order(caravan, _phone(), "zh-CN", lent=True)
    )
    for number, stage in ((1, "today"), (2, "upcoming")):
        await _publish(caravan, _due(order_id, number, stage))

    async def reminders(order_id: str) -> list[tuple[str, str]]:
        rows = await caravan.sql(
            "select purpose, status from notifications.sms where order_id = :o"
            " and purpose like 'instalment%' order by purpose",
            o=order_id,
        )
        return [(r.purpose, r.status) for r in rows]

    waiting = [("instalment_today", "pending"), ("instalment_upcoming", "pending")]
    found = await caravan.until(
        lambda: reminders(order_id), "both queued", ready=lambda r: len(r) == 2
    )
    assert found == waiting
    await _publish(caravan, _repaid(order_id, [1]))
    settled = [("instalment_today", "suppressed"), ("instalment_upcoming", "pending")]
    await caravan.until(
        lambda: reminders(order_id), "instalment 1's reminder dropped", ready=settled.__eq__
    )
    voided = PaymentVoided(order_id=order_id, loan_id=f"loan-{order_id}"[:36], amount_fen=4000)
    await _publish(caravan, new_event(voided, source="caravan/payments"))
    gone = [("instalment_today", "suppressed"), ("instalment_upcoming", "suppressed")]
    await caravan.until(lambda: reminders(order_id), "both dropped", ready=gone.__eq__)
    assert not _sms(caravan, "sms.sent", order_id=order_id, purpose="instalment_today")

    # The announcement and the repayment in one batch (notifications was away): the reminder
    # is queued when the batch commits, and the repayment must still find it.
    await asyncio.to_thread(caravan.procs.stop, caravan.procs.hosts(("notifications",)))
    try:
        await _publish(caravan, _due(later, 1, "today"))
        await _publish(caravan, _repaid(later, [1]))
    finally:
        await caravan.restart(("notifications",), **ENV)  # this module's settings
    dropped = [("instalment_today", "suppressed")]
    await caravan.until(lambda: reminders(later), "its reminder dropped", ready=dropped.__eq__)


async def test_a_reminder_waiting_out_quiet_hours_says_what_is_left_after_a_partial_repayment(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """A "due today" reminder of ¥40 announced at midnight waits for the morning; the buyer
    repays ¥16 of it meanwhile: at 8 the text says the ¥24 left, not ¥40. The reminder of
    instalment 2 is then paid off: once it is dropped, the partial repayment was handled."""
    shanghai = _phone()
    order_id = await _order(caravan, shanghai, "zh-CN", lent=True)
    for number, stage in ((1, "today"), (2, "upcoming")):
        await _publish(caravan, _due(order_id, number, stage))

    async def reminders() -> list[tuple[str, str, str]]:
        rows = await caravan.sql(
            "select purpose, status, text from notifications.sms where order_id = :o"
            " and purpose like 'instalment%' order by purpose",
            o=order_id,
        )
        return [(r.purpose, r.status, r.text) for r in rows]

    found = await caravan.until(reminders, "both queued", ready=lambda r: len(r) == 2)
    assert [(p, s) for p, s, _ in found] == [
        ("instalment_today", "pending"),
        ("instalment_upcoming", "pending"),
    ]
    assert "¥40.00" in found[0][2]
    await _publish(caravan, _repaid(order_id, [], left={1: 2400}))
    await _publish(caravan, _repaid(order_id, [2], left={2: 0}))
    dropped = await caravan.until(
        reminders, "instalment 2's reminder dropped", ready=lambda r: r[1][1] == "suppressed"
    )
    assert dropped[0][:2] == ("instalment_today", "pending")
    assert "¥24.00" in dropped[0][2] and "¥40.00" not in dropped[0][2]
    # Quiet hours over (brought forward): what goes out says what is left.
    await caravan.execute(
        "update notifications.sms set next_attempt_at = now(), not_before = now()"
        " where order_id = :o and purpose = 'instalment_today'",
        o=order_id,
    )
    sent = await caravan.wait_for(
        lambda: _sms(caravan, "sms.sent", order_id=order_id, purpose="instalment_today")
    )
    assert "¥24.00" in sent[0].data["text"]
    assert len(await _messages(sms, shanghai)) == 2  # the confirmation, and this


async def test_a_reminder_handled_after_its_stage_has_passed_is_not_sent(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """Reminders redriven (or handled after notifications was away) two days late: "due in
    3 days" and "due today" are no longer true and are not sent; "overdue" is. The overdue
    one is published last, on the order's partition: once it is queued, the others were
    handled."""
    london = _phone("+447700", 13)  # not in quiet hours: what is queued is sent
    order_id = await _order(caravan, london, lent=True)
    two_days_ago = days.today() - timedelta(days=2)
    await _publish(caravan, _due(order_id, 1, "upcoming", two_days_ago + timedelta(days=1)))
    await _publish(caravan, _due(order_id, 1, "today", two_days_ago))
    await _publish(caravan, _due(order_id, 2, "upcoming", days.today()))  # due now: passed
    await _publish(caravan, _due(order_id, 3, "upcoming", days.today() + timedelta(days=1)))
    await _publish(caravan, _due(order_id, 1, "overdue", two_days_ago))
    sent = await caravan.wait_for(
        lambda: _sms(caravan, "sms.sent", order_id=order_id, purpose="instalment_overdue")
    )
    assert "is overdue" in sent[0].data["text"]
    rows = await caravan.sql(
        "select purpose, text from notifications.sms where order_id = :o"
        " and purpose like 'instalment%' order by purpose",
        o=order_id,
    )
    assert [r.purpose for r in rows] == ["instalment_overdue", "instalment_upcoming"]
    assert "instalment 3" in rows[1].text


async def test_a_reminder_of_a_loan_gone_is_kept_suppressed_and_not_sent(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """Payments announces no instalment of a loan voided or repaid, nor of an order without
    one, but an announcement in flight as the loan ended, or replayed (``caravan replay``),
    comes after its end: the reminder is kept ``suppressed``, saying why, and not sent. To
    London numbers, out of quiet hours (a reminder queued goes at once): a loan voided, then
    its instalment announced; a loan repaid in full and its instalment announced in one batch
    (notifications away); an order cancelled, and one confirmed prepaid, each handled before
    an instalment of it is announced."""
    phones = [_phone("+447700", 13) for _ in range(4)]
    voided, repaid = await asyncio.gather(
        *(_order(caravan, phone, lent=True) for phone in phones[:2])
    )
    gone = PaymentVoided(order_id=voided, loan_id=f"loan-{voided}"[:36], amount_fen=4000)
    await _publish(caravan, new_event(gone, source="caravan/payments"))
    await _publish(caravan, _due(voided, 1, "today"))  # after it: one key, one partition
    await asyncio.to_thread(caravan.procs.stop, caravan.procs.hosts(("notifications",)))
    try:
        await _publish(caravan, _repaid(repaid, [1, 2, 3], fully=True))
        await _publish(caravan, _due(repaid, 1, "today"))
    finally:
        await caravan.restart(("notifications",), **ENV)  # this module's settings
    ended = [order_events(ref("N"), phone) for phone in phones[2:]]
    for events, end in zip(ended, ("cancelled", "confirmed"), strict=True):
        await caravan.publish(events.placed)
        await caravan.handled("notifications", await caravan.publish(getattr(events, end)))
        await _publish(caravan, _due(events.placed.order_id, 1, "today"))
    orders = [voided, repaid, *(events.placed.order_id for events in ended)]

    reminders = functools.partial(_texts, caravan, orders, "instalment_today")
    kept = await caravan.until(reminders, "each reminder handled", ready=lambda r: None not in r)
    assert kept == [("suppressed", NO_LOAN_LEFT)] * 4, kept
    sent = [_sms(caravan, "sms.sent", order_id=o, purpose="instalment_today") for o in orders]
    assert sent == [[]] * 4, sent


async def test_a_loan_gone_before_its_order_placed_came_keeps_its_reminders_suppressed(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """A loan's ``payment.voided``, or its last ``payment.repaid``, read before its order's
    ``order.placed`` (dead-lettered here and redriven, on a partition added, or a replay
    starting between them: another topic's records come in any order) found no recipient to
    mark, and the instalment announced after the ``order.placed`` texted the buyer of a loan
    gone. Each is parked, as an outcome come first is, and acted on with the
    ``order.placed``: the reminder is kept suppressed, saying why. A void of an order orders
    never had (``unplaced``: ``caravan payments void-unplaced``) waits for no
    ``order.placed``, which never comes, and is not parked. London numbers, out of quiet
    hours: a reminder queued goes at once."""
    voided, repaid, unplaced = (order_events(ref("N"), _phone("+447700", 13)) for _ in range(3))
    orders = [o.placed.order_id for o in (voided, repaid, unplaced)]
    loans = [f"loan-{o}"[:36] for o in orders]  # as _due and _repaid name them
    first = [
        PaymentVoided(order_id=orders[0], loan_id=loans[0], amount_fen=4000),
        PaymentRepaid.model_validate(_repaid(orders[1], [1, 2, 3], fully=True).data),
        PaymentVoided(order_id=orders[2], loan_id=loans[2], amount_fen=4000, unplaced=True),
    ]
    for data in first:
        await caravan.handled("notifications", await caravan.publish(data, "caravan/payments"))

    async def parked() -> list[str | None]:
        rows = await caravan.sql(
            "select order_id, envelope->>'type' as type from notifications.parked"
            " where order_id = any(:o)",
            o=orders,
        )
        found = {r.order_id: r.type for r in rows}
        return [found.get(o) for o in orders]

    assert await parked() == ["payment.voided", "payment.repaid", None]
    for order in (voided, repaid):
        await caravan.publish(order.placed)
        await _publish(caravan, _due(order.placed.order_id, 1, "today"))  # after it: one key

    reminders = functools.partial(_texts, caravan, orders[:2], "instalment_today")
    kept = await caravan.until(reminders, "each reminder handled", ready=lambda r: None not in r)
    assert kept == [("suppressed", NO_LOAN_LEFT)] * 2, kept
    sent = [_sms(caravan, "sms.sent", order_id=o, purpose="instalment_today") for o in orders]
    assert sent == [[]] * 3, sent
    assert await parked() == [None, None, None]  # acted on, once


async def test_a_loans_reminder_or_refund_before_its_order_placed_waits_for_it(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """A ``payment.instalment_due`` or a ``payment.refunded`` read before its order's
    ``order.placed`` was logged and dropped: the buyer never had that reminder, or the word
    that they were paid back. Each is parked with the loan's other events read before it,
    and acted on in the order they came once the ``order.placed`` comes: a reminder alone is
    sent; one with the loan's void, or a repayment paying it off, parked after or before it,
    is kept suppressed, saying why, whichever came first. London numbers, out of quiet
    hours: a reminder queued goes at once."""
    placed = [order_events(ref("E"), _phone("+447700", 13)).placed for _ in range(5)]
    alone, due_voided, voided_due, due_repaid, refunded = (p.order_id for p in placed)

    def voided(order_id: str) -> CloudEvent:
        data = PaymentVoided(order_id=order_id, loan_id=f"loan-{order_id}"[:36], amount_fen=4000)
        return new_event(data, source="caravan/payments")

    paid_back = PaymentRefunded(
        order_id=refunded,
        loan_id=f"loan-{refunded}"[:36],
        amount_fen=1000,
        reference="BANK-EARLY-1",
        reason="bank transfer",
        recorded_by="ops",
    )
    first = [
        _due(alone, 1, "today"),
        _due(due_voided, 1, "today"),
        voided(due_voided),
        voided(voided_due),
        _due(voided_due, 1, "today"),
        _due(due_repaid, 1, "today"),
        _repaid(due_repaid, [1]),
        new_event(paid_back, source="caravan/payments"),
    ]
    for event in first:  # one by one: parked in the order they came
        await _publish(caravan, event)
        await caravan.handled("notifications", event)
    orders = [p.order_id for p in placed]
    rows = await caravan.sql(
        "select order_id, envelope->>'type' as type from notifications.parked"
        " where order_id = any(:o) order by parked_at, key",
        o=orders,
    )
    assert [(r.order_id, r.type) for r in rows] == [(e.data["order_id"], e.type) for e in first], (
        rows
    )
    for order in placed:
        await caravan.publish(order)

    texts = functools.partial(_texts, caravan, orders, "instalment_today", REFUND_PAID)
    said = await caravan.until(texts, "each text queued", ready=lambda r: None not in r)
    assert said[1:4] == [
        ("suppressed", "loan voided"),
        ("suppressed", NO_LOAN_LEFT),
        ("suppressed", "repaid before it was sent"),
    ], said
    for order_id, purpose in ((alone, "instalment_today"), (refunded, REFUND_PAID)):
        sent = functools.partial(_sms, caravan, "sms.sent", order_id=order_id, purpose=purpose)
        await caravan.wait_for(sent)
    unsent = [_sms(caravan, "sms.sent", order_id=o) for o in (due_voided, voided_due, due_repaid)]
    assert unsent == [[]] * 3, unsent
    left = "select count(*) from notifications.parked where order_id = any(:o)"
    assert await caravan.scalar(left, o=orders) == 0  # acted on, once


async def test_a_loans_event_of_a_buyer_deleted_long_ago_waits_for_no_order_placed(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """A loan voided after the sale (``caravan payments void-sold``), or refunded, long after
    notifications deleted its order's buyer by retention found no buyer, and was parked for
    an ``order.placed`` handled long ago, which never comes again: ``CaravanEventsParked``
    firing until the inbox's retention pruned it. The order's ``order.confirmed``, acted on
    and kept, says its ``order.placed`` came: the event is logged, not parked, and texts no
    one. An order whose confirmation is itself parked still waits for its ``order.placed``."""
    gone, early = (order_events(ref("G"), _phone("+447700", 13)) for _ in range(2))
    await caravan.publish(gone.placed)
    await caravan.handled("notifications", await caravan.publish(gone.confirmed))
    order_id = gone.placed.order_id
    # What the retention of buyers does, CARAVAN_NOTIFICATIONS_RECIPIENT_RETENTION_DAYS after
    # the loan ended: the row goes.
    await caravan.execute("delete from notifications.recipients where order_id = :o", o=order_id)
    await caravan.handled("notifications", await caravan.publish(early.confirmed))  # parked
    late = [
        new_event(
            PaymentVoided(order_id=o, loan_id=f"loan-{o}"[:36], amount_fen=4000),
            source="caravan/payments",
        )
        for o in (order_id, early.placed.order_id)
    ]
    late.append(_due(order_id, 1, "today"))  # replayed
    for event in late:
        await _publish(caravan, event)
        await caravan.handled("notifications", event)
    rows = await caravan.sql(
        "select order_id, envelope->>'type' as type from notifications.parked"
        " where order_id = any(:o) order by parked_at, key",
        o=[order_id, early.placed.order_id],
    )
    assert [(r.order_id, r.type) for r in rows] == [
        (early.placed.order_id, "order.confirmed"),
        (early.placed.order_id, "payment.voided"),
    ], rows
    texts = "select count(*) from notifications.sms where order_id = :o and purpose <> :p"
    assert await caravan.scalar(texts, o=order_id, p="order_confirmed") == 0


async def _texts(
    caravan: System, orders: list[str], *purposes: str
) -> list[tuple[str, str | None] | None]:
    """The (status, last_error) of each order's text of one of ``purposes`` (None: none)."""
    rows = await caravan.sql(
        "select order_id, status, last_error from notifications.sms"
        " where order_id = any(:o) and purpose = any(:p)",
        o=orders,
        p=list(purposes),
    )
    found = {r.order_id: (r.status, r.last_error) for r in rows}
    return [found.get(o) for o in orders]


def _due(order_id: str, number: int, stage: str, due: date | None = None) -> CloudEvent:
    """``payment.instalment_due`` of the loan ``loan-<order_id>`` (cut to a loan id's 36
    characters), due today, or in 3 days."""
    due = due or days.today() + timedelta(days=0 if stage == "today" else 3)
    data = InstalmentDue.model_validate(
        {
            "order_id": order_id,
            "loan_id": f"loan-{order_id}"[:36],
            "buyer_id": "t-rich",
            "number": number,
            "due": str(due),
            "amount_fen": 4000,
            "stage": stage,
        }
    )
    return new_event(data, source="caravan/payments")


def _repaid(
    order_id: str, settled: list[int], left: dict[int, int] | None = None, fully: bool = False
) -> CloudEvent:
    """``payment.repaid`` of the loan ``loan-<order_id>`` (cut to a loan id's 36 characters),
    paying off ``settled``, and leaving ``left`` (number: fen) on the instalments it paid into;
    ``fully``: the loan's last repayment."""
    data = PaymentRepaid(
        order_id=order_id,
        loan_id=f"loan-{order_id}"[:36],
        buyer_id="t-rich",
        repayment_id=f"r-{settled}-{left}",
        amount_fen=4000,
        principal_fen=4000,
        interest_fen=0,
        outstanding_fen=4000,
        remaining_fen=4000,
        fully_repaid=fully,
        settled_instalments=settled,
        instalments_left=[
            InstalmentLeft(number=n, remaining_fen=fen) for n, fen in (left or {}).items()
        ],
    )
    return new_event(data, source="caravan/payments")


async def test_a_send_cut_short_by_a_crash_is_resent_with_its_key_and_sent_once(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    phone = _phone()
    await _script(sms, phone, "timeout:30")  # accepted; we kill it before the answer comes
    order_id = await _order(caravan, phone)
    await until(lambda: _requests(sms, phone), "the first send to reach the simulator")
    assert caravan.kill("notifications") == -9
    assert (
        await caravan.scalar(
            'select status from notifications.sms where order_id = :o and "to" = :p',
            o=order_id,
            p=phone,
        )
        == "sending"
    )
    await caravan.restart(("notifications",), **ENV)
    sent = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=order_id, to=phone))
    assert sent[0].data["attempts"] == 2
    messages = await _messages(sms, phone)
    assert len(messages) == 1 and messages[0]["requests"] == 2
    await caravan.wait_for(lambda: _sms(caravan, "sms.delivered", sms_id=sent[0].data["sms_id"]))
    assert len(_sms(caravan, "sms.sent", order_id=order_id, to=phone)) == 1


async def test_a_send_in_flight_as_notifications_stops_is_let_finish_and_sent_once(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """Stopped gracefully (SIGTERM, as every deploy stops it) while the gateway had a text:
    the call was cut short, the text left ``sending`` and sent again once its lease ran out
    (twice to the phone of a gateway that does not deduplicate by our key). The stop now
    waits for the answer (3 s here, within the gateway's timeout) and records it."""
    slower = {
        **ENV,
        "CARAVAN_NOTIFICATIONS_GATEWAY_TIMEOUT_SECONDS": "4",
        "CARAVAN_NOTIFICATIONS_LEASE_SECONDS": "10",
    }
    await caravan.restart(("notifications",), **slower)
    try:
        phone = _phone()
        await _script(sms, phone, "timeout:3")  # accepted; the answer comes 3 s later
        order_id = await _order(caravan, phone)
        await until(lambda: _requests(sms, phone), "the first send to reach the simulator")
        await asyncio.to_thread(caravan.procs.stop, ["notifications"])
        said = await caravan.scalar(
            "select status || ' ' || attempts from notifications.sms where order_id = :o"
            ' and "to" = :p',
            o=order_id,
            p=phone,
        )
        assert said == "sent 1"
    finally:
        await caravan.restart(("notifications",), **ENV)
    sent = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=order_id, to=phone))
    await caravan.wait_for(lambda: _sms(caravan, "sms.delivered", sms_id=sent[0].data["sms_id"]))
    assert [e.data["attempts"] for e in _sms(caravan, "sms.sent", order_id=order_id, to=phone)] == [
        1
    ]
    assert len(await _requests(sms, phone)) == 1


async def _rewind(
    bootstrap: str, group: str, topic: str
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Commit the earliest offsets of ``topic`` for ``group`` (whose members are stopped);
    returns them and the end offsets at that time."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        meta = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        earliest = {tp: await consumer.position(tp) for tp in tps}
        deadline = time.monotonic() + 60
        while True:
            try:
                await consumer.commit(earliest)
                break
            except Exception:  # the stopped members may not have left the group yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert {tp: (await consumer.committed(tp)) for tp in tps} == earliest
        return earliest, dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _consumed(caravan: System, topic: str) -> dict[str, float]:
    async with caravan.api("notifications") as http:
        text = (await http.get("/metrics")).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "caravan_records_consumed_total" and sample.labels["topic"] == topic
    }


async def test_sellers_are_texted_once_when_confirmations_are_handled_before_reservations(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """A backlog comes as one batch, and a batch's order events are handled before its
    inventory events: each order is confirmed before notifications learns its sellers, and
    the reservation handled after it in the same transaction queues the seller's text."""
    await asyncio.to_thread(caravan.procs.stop, ["notifications"])
    try:
        orders = [await _order(caravan, _phone()) for _ in range(4)]
    finally:
        await caravan.restart(("notifications",), **ENV)
    texts = 'select purpose, "to" from notifications.sms where order_id = :o order by purpose'
    for order_id in orders:
        await until(
            functools.partial(caravan.sql, texts, o=order_id),
            f"two texts of {order_id}",
            60,
            every=0.2,
            ready=lambda rows: len(rows) >= 2,
        )
        await order_handled(caravan, "notifications", order_id, *TEXTED_ON)
        rows = await caravan.sql(texts, o=order_id)
        assert [r.purpose for r in rows] == ["new_order", "order_confirmed"]
        assert rows[0].to == SELLER_PHONE

    def inbox_key(topic: Topic, kind: str, order_id: str) -> str:
        event = caravan.log.events(topic, type=kind, order_id=order_id)[0]
        return f"{event.source}|{event.id}"

    together = 0
    for order_id in orders:
        keys = [
            inbox_key(Topic.ORDER_EVENTS, "order.confirmed", order_id),
            inbox_key(Topic.INVENTORY_EVENTS, "stock.reserved", order_id),
        ]
        together += (
            await caravan.scalar(
                "select count(distinct xmin::text) from notifications.inbox where key = any(:k)",
                k=keys,
            )
            == 1
        )
    assert together >= 1, "no order's confirmation and reservation were handled together"


async def test_replaying_order_events_from_the_earliest_offset_sends_nothing_new(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    phone = _phone()
    order_id = await _order(caravan, phone)
    sent = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=order_id, to=phone))
    await caravan.wait_for(lambda: _sms(caravan, "sms.delivered", sms_id=sent[0].data["sms_id"]))
    await caravan.wait_for(
        lambda: _sms(caravan, "sms.delivered", order_id=order_id, to=SELLER_PHONE)
    )
    # No text in the table is due to be sent soon (this order's others, earlier tests'
    # retries; reminders held for quiet hours wait longer): one sent while the replay runs
    # would add rows and requests.
    due = (
        "select sms_id, status, purpose from notifications.sms where status in"
        " ('pending', 'sending') and next_attempt_at < now() + interval '2 minutes'"
    )
    await until(
        lambda: caravan.sql(due),
        "no text left to send soon",
        60,
        every=0.2,
        ready=lambda unsent: not unsent,
    )
    count = "select count(*) from notifications.{}"

    # Texts sent, not receipts: an earlier test's text sent just now has its receipt come a
    # moment later (the simulator's receipt_delay), whatever the replay does. Read as JSON on
    # their topic only: a dead letter's value (an earlier test's b"\xff{not json") is not.
    def texts() -> Awaitable[int]:
        return caravan.outbox_count("notifications", Topic.NOTIFICATION_EVENTS, "sms.sent")

    rows, outbox = await caravan.scalar(count.format("sms")), await texts()
    requests = len(await _requests(sms))
    topic = Topic.ORDER_EVENTS.value

    await asyncio.to_thread(caravan.procs.stop, ["notifications"])
    earliest, ends = await _rewind(caravan.infra.kafka_bootstrap, "caravan-notifications", topic)
    await caravan.restart(("notifications",), **ENV)

    # The replay is over when the group has committed the end of every partition again
    # (and what it emitted is out)...
    await drained(caravan, {consumer_group("notifications"): [Topic.ORDER_EVENTS]}, 60)
    # ... and every record was read again, and found handled already.
    consumed = await _consumed(caravan, topic)
    assert consumed.get("duplicate", 0) > 0
    assert sum(consumed.values()) >= sum(ends.values()) - sum(earliest.values())
    assert await caravan.scalar(count.format("sms")) == rows
    assert await texts() == outbox
    assert len(await _requests(sms)) == requests


async def test_an_outcome_that_comes_before_its_order_placed_is_texted_once_it_comes(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """An ``order.placed`` dead-lettered here and redriven after its outcome (or one on
    another partition, or a replay starting between them): the outcome waits for it, and
    the buyer is texted once, however often either comes again."""
    phone = _phone()
    order = order_events(ref("N"), phone)
    confirmed = await caravan.publish(order.confirmed)
    await caravan.handled("notifications", confirmed)
    placed = await caravan.publish(order.placed)
    await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=order.placed.order_id))
    for event, data in ((confirmed, order.confirmed), (placed, order.placed)):
        await caravan.publish_event(event, data)  # delivered again
    # Handled after those (one key, one partition): they were handled by then.
    await caravan.handled("notifications", await caravan.publish(order.placed))
    # Another order, both events in one batch: the cancellation first.
    cancelled_phone = _phone()
    late = order_events(ref("N"), cancelled_phone)
    await asyncio.to_thread(caravan.procs.stop, caravan.procs.hosts(("notifications",)))
    try:
        both = [await caravan.publish(late.cancelled), await caravan.publish(late.placed)]
    finally:
        await caravan.restart(("notifications",), **ENV)
    await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=late.placed.order_id))
    assert await caravan.transactions("notifications", *both) == 1  # the batch path
    await consumed_again(caravan, "notifications", *both)  # a second text: queued by then
    queued = [await _queued(caravan, o) for o in (order.placed.order_id, late.placed.order_id)]
    assert queued == [[(phone, "order_confirmed")], [(cancelled_phone, "order_cancelled")]]
    sent = [
        (e.data["to"], e.data["purpose"])
        for order_id in (order.placed.order_id, late.placed.order_id)
        for e in _sms(caravan, "sms.sent", order_id=order_id)
    ]
    assert sent == [(phone, "order_confirmed"), (cancelled_phone, "order_cancelled")]
    assert [len(await _messages(sms, to)) for to in (phone, cancelled_phone)] == [1, 1]


async def test_an_orders_texts_are_read_with_their_attempts_and_why_one_failed(
    caravan: System, sms: httpx.AsyncClient
) -> None:
    """A buyer calls the centre: "I never got a text". The operator reads the texts of the
    order (``GET /sms?order_id=``, ``caravan texts ORDER_ID``) or to the number (``phone=``,
    ``--phone``) where they had to query notifications.sms: each one's number masked as the
    logs mask it, template and language, when queued and sent, status, the gateway's
    attempts, and when and why a failed one failed."""
    texted, refused = _phone(), _phone()
    await _script(sms, texted, "fail", "fail")
    await _script(sms, refused, "reject")
    sent_to, failed_to = await asyncio.gather(_order(caravan, texted), _order(caravan, refused))
    sent = await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=sent_to, to=texted))
    failed = await caravan.wait_for(
        lambda: _sms(caravan, "sms.failed", order_id=failed_to, to=refused)
    )
    await caravan.wait_for(lambda: _sms(caravan, "sms.sent", order_id=failed_to, to=SELLER_PHONE))
    async with caravan.api("notifications") as api:
        of_sent = (await api.get("/sms", params={"order_id": sent_to})).json()["items"]
        mine = [t for t in of_sent if t["purpose"] == "order_confirmed"]
        assert [(t["to"], t["locale"], t["attempts"]) for t in mine] == [
            (masked(texted), "en", 3)
        ], of_sent
        assert mine[0]["sms_id"] == sent[0].data["sms_id"] and mine[0]["sent_at"], mine
        assert texted not in str(of_sent)  # the number is never given whole
        to_refused = (await api.get("/sms", params={"phone": refused})).json()["items"]
        assert [(t["order_id"], t["status"], t["attempts"]) for t in to_refused] == [
            (failed_to, "failed", 1)
        ], to_refused
        assert to_refused[0]["sms_id"] == failed[0].data["sms_id"] and to_refused[0]["last_error"]
        # the gateway's refusal quotes the number, which GET /sms never gives whole
        assert masked(refused) in to_refused[0]["last_error"], to_refused
        assert refused not in str(to_refused), to_refused
        assert to_refused[0]["sent_at"] is None
        failed_at = datetime.fromisoformat(to_refused[0]["failed_at"])
        queued = datetime.fromisoformat(to_refused[0]["created_at"])
        assert queued <= failed_at <= datetime.now(UTC), to_refused
        assert abs((failed_at - failed[0].time).total_seconds()) < 5, (failed_at, failed[0].time)
        assert mine[0]["failed_at"] is None, mine
        both = (await api.get("/sms", params={"order_id": failed_to})).json()["items"]
        assert {t["purpose"] for t in both} == {"order_confirmed", "new_order"}, both
        assert [t["created_at"] for t in both] == sorted(
            (t["created_at"] for t in both), reverse=True
        )
        paged = (await api.get("/sms", params={"order_id": failed_to, "limit": 1})).json()
        assert len(paged["items"]) == 1 and paged["next_cursor"], paged
        neither = await api.get("/sms")
        assert neither.status_code == 422, neither.text
    runner = _texts_runner(caravan)
    shown = runner.invoke(cli_app, ["texts", failed_to])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0].strip() == f"2 text(s) of order {failed_to}", shown.output
    row = next(line for line in shown.output.splitlines() if masked(refused) in line)
    cells = [c.strip() for c in row.split("│")[1:6]]
    assert cells[:4] == [
        at(to_refused[0]["created_at"]),
        "order_confirmed",
        masked(refused),
        "failed",
    ]
    said = f"failed {at(to_refused[0]['failed_at'])}: {to_refused[0]['last_error']}"
    assert cells[4] and said.startswith(cells[4].rstrip("…")), shown.output
    assert refused not in shown.output
    by_phone = runner.invoke(cli_app, ["texts", "--phone", texted, "--json"])
    assert [t["sms_id"] for t in json.loads(by_phone.output)["texts"]] == [mine[0]["sms_id"]], (
        by_phone.output
    )
    # The number as a buyer says it on the phone (a mainland mobile, nationally, in groups),
    # read as map-buyer reads one: it was refused, "'137 ...' is not an E.164 number".
    said_so = f"{texted[3:6]} {texted[6:10]}-{texted[10:]}"
    by_ear = runner.invoke(cli_app, ["texts", "--phone", said_so, "--json"])
    assert by_ear.exit_code == 0, by_ear.output
    # The same texts (a status may have moved on between the two reads: sent, delivered).
    heard = [t["sms_id"] for t in json.loads(by_ear.output)["texts"]]
    assert heard == [mine[0]["sms_id"]], by_ear.output
    # A buyer who phones gives a number: the texts to it say each one's order, the way to
    # `caravan orders show` (the table had none; --json alone said it).
    table = runner.invoke(cli_app, ["texts", "--phone", refused]).output
    lines = table.splitlines()
    at_number = next(i for i, line in enumerate(lines) if line.startswith("│ 20"))  # its row
    assert failed_to in lines[at_number + 1], table
    nobody = _phone()
    none = runner.invoke(cli_app, ["texts", "--phone", nobody])
    assert (none.exit_code, none.output) == (0, f"no text to {masked(nobody)}\n"), none.output
