"""The platform adapter end to end: two platform simulators (one app signing with
HMAC-SHA256, one with the older MD5), each its own process, pushing to the adapter of the
session's system, which is restarted with those apps configured (and quick callback
retries); the defaults are restored afterwards."""

import asyncio
import collections
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from rich.console import Console
from sqlalchemy import text

from caravan import demo as demo_module
from caravan.demo import run_platform_demo
from caravan.ops.dashboard import Dashboard
from caravan.system import simulator
from services import SERVICES
from services.platform.domain.orders import PHONES_READ
from services.platform.domain.signing import signed
from shared.events.envelope import CloudEvent, new_event
from shared.events.orders import Buyer, OrderLine, OrderRequested, PaymentRequest
from shared.seed import SeedFile
from shared.settings import Settings
from shared.topics import Topic
from tests import conftest
from tests.conftest import own_port
from tests.e2e.markers import consumed_again
from tests.e2e.test_alerts import ask, fired, firing, prometheus, scraped_twice
from tests.e2e.test_http import needs_ops
from tests.e2e.test_ops import cli as ops_cli
from tests.e2e.test_orders_saga import payments_stopped
from tests.e2e.test_seed_cli import texted
from tests.e2e.test_tracing import spans, trace_id
from tests.harness import System, backend_pid, order_events, raw_event, until

APP, SECRET = "t-market", "t-market-secret-0001"
LEGACY, LEGACY_SECRET = "t-legacy", "t-legacy-secret-0002"
DEMO = "t-demo"  # driven by caravan demo, which starts its own simulator
WRONG, WRONG_SECRET = "t-wrong", "not-the-platforms-secret"  # its platform's, misset
WRONG_PLATFORM_SECRET = "t-wrong-platforms-secret"  # what that platform signs with
THE_APPS = f"(the apps are: {', '.join(sorted([APP, LEGACY, DEMO, WRONG]))})"
"""How an ``Unknown app`` 422 ends: the apps configured (platform's), by name, never a secret."""
RETRIES = {
    "CARAVAN_PLATFORM_CALLBACK_RETRY_BASE_SECONDS": "0.3",
    "CARAVAN_PLATFORM_CALLBACK_RETRY_CAP_SECONDS": "1.5",
    "CARAVAN_PLATFORM_API_TIMEOUT_SECONDS": "2",
    "CARAVAN_PLATFORM_API_DEADLINE_SECONDS": "3",
    "CARAVAN_PLATFORM_CALLBACK_LEASE_SECONDS": "5",
}
SKUS = {"ALI-PEPPER": "T-PEPPER", "ALI-PEPPER-GIFT": "T-PEPPER", "ALI-FIG": "T-FIG"}
BUYER = "nick-rich"


@dataclass
class Platform:
    sim: httpx.AsyncClient  # the HMAC-SHA256 app's simulator
    legacy: httpx.AsyncClient  # the MD5 app's simulator
    wrong: httpx.AsyncClient  # the simulator of the app whose secret is misset here
    adapter: httpx.AsyncClient
    env: dict[str, str]


@pytest.fixture(scope="module")
async def platform(caravan: System) -> AsyncIterator[Platform]:
    base = own_port("http", __name__)  # the simulators: base to base + 3
    adapter_url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PLATFORM_HTTP_PORT']}"
    apps = {
        APP: {"secret": SECRET, "api_url": f"http://127.0.0.1:{base}"},
        LEGACY: {
            "secret": LEGACY_SECRET,
            "sign_method": "md5",
            "api_url": f"http://127.0.0.1:{base + 1}",
        },
        DEMO: {"secret": "t-demo-secret-0003", "api_url": f"http://127.0.0.1:{base + 2}"},
        # A platform of its own: two apps of one api_url are refused (one platform's orders
        # would be placed twice).
        WRONG: {"secret": WRONG_SECRET, "api_url": f"http://127.0.0.1:{base + 3}"},
    }
    env = {"CARAVAN_PLATFORM_APPS": json.dumps(apps), **RETRIES}
    module = "services.platform.simulator"
    push = f"{adapter_url}/platform/{{}}/push"
    async with (
        simulator(
            module, base, "--app", APP, "--secret", SECRET, "--callback", push.format(APP)
        ) as sim,
        simulator(
            module,
            base + 1,
            "--app",
            LEGACY,
            "--secret",
            LEGACY_SECRET,
            "--sign-method",
            "md5",
            "--callback",
            push.format(LEGACY),
        ) as legacy,
        simulator(
            module,
            base + 3,
            "--app",
            WRONG,
            "--secret",
            WRONG_PLATFORM_SECRET,
            "--callback",
            push.format(WRONG),
        ) as wrong,
        caravan.api("platform") as adapter,
    ):
        await caravan.restart(("platform",), **env)
        try:
            for app in (APP, LEGACY):
                for external, sku in SKUS.items():
                    put = await adapter.put(
                        f"/platform/{app}/mappings/sku/{external}", json={"sku": sku}
                    )
                    assert put.status_code == 200, put.text
                buyer = {"buyer_id": "t-rich", "locale": "en"}
                put = await adapter.put(f"/platform/{app}/mappings/buyer/{BUYER}", json=buyer)
                assert put.status_code == 200, put.text
            yield Platform(sim, legacy, wrong, adapter, env)
        finally:
            await caravan.restart(("platform",))


async def new_order(
    sim: httpx.AsyncClient,
    items: dict[str, int] | None = None,
    status: str = "paid",
    order_id: str | None = None,
    phone: str | None = "+8613900000001",
    address: str = "Village 3",
    buyer: str = BUYER,
) -> str:
    """Create (or, given ``order_id``, replace) an order on the simulated platform."""
    order_id = order_id or f"P-{uuid.uuid4().hex[:12]}"
    body = {
        "order_id": order_id,
        "status": status,
        "buyer": {"id": buyer, "phone": phone},
        "items": [{"sku": s, "quantity": q} for s, q in (items or {"ALI-PEPPER": 1}).items()],
        "delivery": {"county": "Shawan", "address": address},
    }
    created = await sim.post("/orders", json=body)
    assert created.status_code == 200, created.text
    return order_id


async def push(sim: httpx.AsyncClient, order_id: str, **options: Any) -> dict[str, Any]:
    """Have the simulator sign and push ``order_id``; its report of the adapter's answer."""
    sent = await sim.post(f"/orders/{order_id}/push", json=options)
    assert sent.status_code == 200, sent.text
    report: dict[str, Any] = sent.json()
    return report


async def unmapped_order(sim: httpx.AsyncClient, prefix: str) -> tuple[str, str]:
    """An order of one platform SKU nobody mapped, pushed: a problem for operations. Its
    SKU and order id."""
    unknown = f"{prefix}-{uuid.uuid4().hex[:6]}"
    order_ref = await new_order(sim, {unknown: 1})
    assert (await push(sim, order_ref))["body"]["status"] == "problem"
    return unknown, order_ref


def requested(caravan: System, order_ref: str) -> list[CloudEvent]:
    """The adapter's requests to place ``order_ref`` (on its own topic), each once however
    often it was delivered."""
    found = caravan.log.events(
        Topic.PLATFORM_EVENTS, type="platform.order_requested", order_ref=order_ref
    )
    return list({e.id: e for e in found}.values())


async def requests_written(caravan: System, order_ref: str) -> int:
    """How many requests to place ``order_ref`` the adapter wrote to its outbox: written in
    a push's transaction, committed before the push is answered, so once every push of it
    has been answered, this is all there will ever be."""
    return await caravan.outbox_count(
        "platform", Topic.PLATFORM_EVENTS, "platform.order_requested", order_ref=order_ref
    )


async def placed_once(caravan: System, order_ref: str, app: str = APP) -> str:
    """The order id of a platform order, checking it was requested and placed exactly once.
    Call it once every push of the order has been answered."""
    order_id = await caravan.placed(order_ref, source=f"platform/{app}")
    assert await requests_written(caravan, order_ref) == 1
    [request] = await caravan.wait_for(lambda: requested(caravan, order_ref))
    assert request.source == f"platform/{app}"
    # The orders service has handled every delivery of that request (one partition, its
    # key): a second order.placed would be in its outbox by then.
    await consumed_again(caravan, "orders", request)
    placings = ("orders", Topic.ORDER_EVENTS, "order.placed")
    assert await caravan.outbox_count(*placings, order_ref=order_ref) == 1
    return order_id


async def callbacks(sim: httpx.AsyncClient, order_ref: str) -> dict[str, Any]:
    body: dict[str, Any] = (await sim.get("/callbacks", params={"order_id": order_ref})).json()
    return body


async def test_a_bad_signature_gets_401_and_publishes_nothing(
    caravan: System, platform: Platform
) -> None:
    bad_ref = await new_order(platform.sim)
    refused = await push(platform.sim, bad_ref, bad_signature=True)
    assert refused["status_code"] == 401 and refused["body"]["title"] == "Bad signature"
    good_ref = await new_order(platform.sim)
    good = await push(platform.sim, good_ref)
    assert good["body"]["status"] == "accepted"
    # A correctly signed push with one parameter changed, as a form; and an unknown app.
    tampered = {**good["params"], "order_id": bad_ref, "push_id": uuid.uuid4().hex}
    answer = await platform.adapter.post(f"/platform/{APP}/push", data=tampered)
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/problem+json")
    other = await platform.adapter.post("/platform/no-such-app/push", json=good["params"])
    assert other.status_code == 401
    # One answer for both, which names both things to check (it named only the secret).
    for refusal, named in ((answer, APP), (other, "no-such-app")):
        assert refusal.json()["detail"] == f"no app {named!r} with a secret that signs this push"
    # A push with no sign, or a sign no secret makes (base64), is told so, for any app: it
    # was told to check the app's name and secret, both right.
    unsigned = {k: v for k, v in tampered.items() if k != "sign"}
    base64 = {**tampered, "sign": "x3JJHMbDL1EF4ZOq/9GQOdDylG9bVWeYOVUZ6eYE2MQ="}
    for sent, said in ((unsigned, "the push carries no sign"), (base64, "sign is 44 characters")):
        for named in (APP, "no-such-app"):
            refusal = await platform.adapter.post(f"/platform/{named}/push", json=sent)
            assert refusal.status_code == 401, refusal.text
            assert refusal.json()["detail"].startswith(said), refusal.text
    # The good push is published; the refused ones never are (answered, they would have
    # written their requests by now), and left nothing behind.
    await caravan.wait_for(lambda: requested(caravan, good_ref))
    assert await requests_written(caravan, bad_ref) == 0
    for table in ("platform_orders", "problems"):
        stored = await caravan.scalar(
            f"select count(*) from platform.{table} where platform_order_id = :r", r=bad_ref
        )
        assert stored == 0, table
    pushes = await caravan.scalar(
        "select count(*) from platform.pushes where push_id in (:a, :b)",
        a=refused["params"]["push_id"],
        b=tampered["push_id"],
    )
    assert pushes == 0
    metrics = (await platform.adapter.get("/metrics")).text
    assert f'caravan_platform_pushes_total{{app="{APP}",outcome="bad_signature"}}' in metrics


async def test_a_stale_timestamp_is_refused(caravan: System, platform: Platform) -> None:
    order_ref = await new_order(platform.sim)
    for offset, title in ((-360, "Stale timestamp"), (3600, "Timestamp in the future")):
        refused = await push(platform.sim, order_ref, timestamp_offset_seconds=offset)
        assert refused["status_code"] == 401, refused
        assert refused["body"]["title"] == title
    assert await requests_written(caravan, order_ref) == 0
    # The order itself is fine: a fresh push of it is taken.
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    await placed_once(caravan, order_ref)


async def test_taobaos_timestamp_is_read_as_beijing_time_and_an_unread_one_says_so(
    caravan: System, platform: Platform
) -> None:
    """Taobao's ``2026-12-05 01:04:00`` (GMT+8) and a zoneless ISO time were both refused
    401 "Stale or missing timestamp", as if late: Taobao's is read as Beijing time, and one
    read in no format (or none) is a 422 naming the formats that are read, quoting one given
    (it was told "timestamp needed", as if there were none)."""
    order_ref = await new_order(platform.sim)

    async def pushed(timestamp: str | None) -> httpx.Response:
        params = {"app_key": APP, "order_id": order_ref, "push_id": uuid.uuid4().hex}
        if timestamp is not None:
            params["timestamp"] = timestamp
        return await platform.adapter.post(f"/platform/{APP}/push", data=signed(params, SECRET))

    now = datetime.now(UTC)
    for unread in (now.strftime("%Y-%m-%dT%H:%M:%S"), f"{now.timestamp():.1f}", None):
        answer = await pushed(unread)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "timestamp"
        assert "yyyy-MM-dd HH:mm:ss in Beijing time" in answer.json()["detail"]
        if unread is not None:
            assert f"timestamp {unread!r} is in no format read" in answer.json()["detail"]
    # UTC written as Taobao writes Beijing time is eight hours behind, and said to be.
    behind = await pushed(now.strftime("%Y-%m-%d %H:%M:%S"))
    assert behind.status_code == 401, behind.text
    assert behind.json()["title"] == "Stale timestamp"
    assert "+08:00" in behind.json()["detail"]
    beijing = now.astimezone(timezone(timedelta(hours=8)))
    taken = await pushed(beijing.strftime("%Y-%m-%d %H:%M:%S"))
    assert (taken.status_code, taken.json()["status"]) == (200, "accepted"), taken.text
    await placed_once(caravan, order_ref)


async def test_the_adapter_names_its_apps_on_its_start_line(
    caravan: System, platform: Platform
) -> None:
    """An operator who configured an app could not see that the adapter had loaded it
    without trying a push: its start line said ``platform started`` alone. It names its apps
    (never their secrets) and where their pushes go."""
    log = caravan.procs.log_dir / "platform.log"
    since = caravan.procs.logged["platform"]  # its last start: the module's apps

    def logged() -> list[str]:
        lines = log.read_bytes()[since:].decode(errors="replace").splitlines()
        return [json.loads(line)["message"] for line in lines if line.startswith("{")]

    def start_line() -> list[str]:
        return [m for m in logged() if m.startswith("platform started")]

    [line] = await until(start_line, "the adapter's start line")
    apps = ", ".join(sorted(json.loads(platform.env["CARAVAN_PLATFORM_APPS"])))
    where = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PLATFORM_HTTP_PORT']}"
    assert line == f"platform started: apps {apps}; pushes to POST {where}/platform/{{app}}/push"
    said = "\n".join(logged())
    assert SECRET not in said and LEGACY_SECRET not in said, said


async def test_a_captured_push_re_split_is_a_duplicate_not_acted_on_again(
    caravan: System, platform: Platform
) -> None:
    """The signed string joins names and values with nothing between them, so a captured
    push whose ``push_id=X`` is sent as ``p=ush_idX`` verifies; its push id then fell back to
    its ``sign``, not taken, and it was acted on again (its problem seen twice). A ``sign``
    taken makes it a duplicate, as a push without a push id whose ``sign`` is taken was."""
    sku = f"ALI-RESPLIT-{uuid.uuid4().hex[:6]}"
    order_ref = await new_order(platform.sim, {sku: 1})
    first = await push(platform.sim, order_ref, kind="notice", push_id=f"r-{uuid.uuid4().hex}")
    assert first["body"]["status"] == "problem", first
    params = dict(first["params"])
    params["p"] = "ush_id" + params.pop("push_id")  # the same bytes signed
    again = await platform.adapter.post(f"/platform/{APP}/push", json=params)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate"), again.text
    seen = "select occurrences from platform.problems where platform_order_id = :r"
    assert await caravan.scalar(seen, r=order_ref) == 1


async def test_duplicated_and_out_of_order_pushes_make_one_order(
    caravan: System, platform: Platform
) -> None:
    order_ref = await new_order(platform.sim, status="wait_pay")
    # "Changed" arrives while the buyer has not paid: the adapter fetches and waits.
    early = await push(platform.sim, order_ref, kind="notice")
    assert early["body"]["status"] == "ignored"
    await new_order(platform.sim, status="paid", order_id=order_ref)
    # The platform now pushes the paid notice, the (late) creation push, and retries of
    # both, some as forms, all at once.
    reports = await asyncio.gather(
        push(platform.sim, order_ref, kind="notice"),
        push(platform.sim, order_ref, kind="full", form=True),
        push(platform.sim, order_ref, kind="full"),
        push(platform.sim, order_ref, kind="notice", form=True),
        push(platform.sim, order_ref, kind="full"),
    )
    assert [r["status_code"] for r in reports] == [200] * 5, reports
    statuses = sorted(r["body"]["status"] for r in reports)
    assert statuses == ["accepted"] + ["duplicate"] * 4
    # One sent again, as it was or signed anew (a platform that lost our 200 resends until
    # it sees a 2xx), is a duplicate: it was a 409 "Push already received".
    first = reports[0]["params"]
    resent = {"app": APP, "outcome": "resent"}  # told apart from a new push's duplicate
    before = await caravan.gauge("platform", "caravan_platform_pushes_total", **resent)
    again = await platform.adapter.post(f"/platform/{APP}/push", json=first)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate"), again.text
    anew = await push(platform.sim, order_ref, kind="notice", push_id=first["push_id"])
    assert (anew["status_code"], anew["body"]["status"]) == (200, "duplicate"), anew
    assert await caravan.gauge("platform", "caravan_platform_pushes_total", **resent) == before + 2
    # Another push under a push id taken is refused.
    other = await push(platform.sim, order_ref, kind="full", push_id=first["push_id"])
    assert other["status_code"] == 409, other
    said = "another push (other parameters) of this push_id or nonce was taken already"
    assert other["body"]["detail"] == said
    await placed_once(caravan, order_ref)
    rows = await caravan.scalar(
        "select count(*) from platform.platform_orders where platform_order_id = :r", r=order_ref
    )
    assert rows == 1


async def test_a_push_sent_again_is_answered_as_it_was_first_not_duplicate(
    caravan: System, platform: Platform
) -> None:
    """A platform whose answer was lost (a timeout) sends the push again: one first answered
    ``problem`` (an unmapped SKU, a phone of the platform's to send) or ``ignored`` (not paid)
    was answered ``duplicate``, which the guide reads "a paid order placed before": the
    platform waited for a callback that would never come, and never learnt what to mend.
    It is answered again as it was first, the problem's kinds and fields at fault too, and
    still not acted on again; one first ``accepted`` is ``duplicate``, as before."""
    resent = {"app": APP, "outcome": "resent"}
    before = await caravan.gauge("platform", "caravan_platform_pushes_total", **resent)
    unmapped = await new_order(platform.sim, {f"ALI-NONE-{uuid.uuid4().hex[:6]}": 1})
    no_phone = await new_order(platform.sim, phone=None)
    unpaid = await new_order(platform.sim, status="wait_pay")
    for order_ref in (unmapped, no_phone, unpaid):
        first = await push(platform.sim, order_ref)
        again = await platform.adapter.post(f"/platform/{APP}/push", json=first["params"])
        assert again.status_code == 200, again.text
        assert again.json() == first["body"], (first["body"], again.text)
    assert first["body"]["status"] == "ignored"
    assert await caravan.gauge("platform", "caravan_platform_pushes_total", **resent) == before + 3
    problems = await caravan.scalar(
        "select sum(occurrences) from platform.problems where platform_order_id in (:a, :b)",
        a=unmapped,
        b=no_phone,
    )
    assert problems == 2  # each seen once: the push sent again was not decided again


async def test_one_push_id_sent_twice_at_once_is_acted_on_once(
    caravan: System, platform: Platform
) -> None:
    """Two pushes under one push id, both past the first look at the pushes table before
    either is recorded: the second to record it is not acted on. The same push twice: one
    ``accepted``, one ``duplicate``; another push (another order) under a push id taken: one
    ``accepted``, the other refused (409), and only the first order requested."""
    order_ref = await new_order(platform.sim)
    twice = {"kind": "notice", "push_id": f"twice-{uuid.uuid4().hex}"}
    reports = await asyncio.gather(
        push(platform.sim, order_ref, **twice), push(platform.sim, order_ref, **twice)
    )
    assert [r["status_code"] for r in reports] == [200, 200], reports
    assert sorted(r["body"]["status"] for r in reports) == ["accepted", "duplicate"]
    await placed_once(caravan, order_ref)
    refs = [await new_order(platform.sim), await new_order(platform.sim)]
    shared = {"kind": "notice", "push_id": f"shared-{uuid.uuid4().hex}"}
    answers = await asyncio.gather(*(push(platform.sim, r, **shared) for r in refs))
    said = sorted((a["status_code"], a["body"].get("title", a["body"]["status"])) for a in answers)
    assert said == [(200, "accepted"), (409, "Push already received")], answers
    [taken] = [r for r, answer in zip(refs, answers, strict=True) if answer["status_code"] == 200]
    [refused] = [r for r in refs if r != taken]
    await placed_once(caravan, taken)
    assert await requests_written(caravan, refused) == 0


BURST = 200
"""Pushes sent at once by the burst test: more than the adapter takes at a time (20)."""


def signed_push(order_id: str, app: str = APP, secret: str = SECRET) -> dict[str, str]:
    """A notice push of ``order_id``, signed as its platform signs it, under a new push id."""
    params = {
        "app_key": app,
        "push_id": uuid.uuid4().hex,
        "timestamp": str(int(time.time())),
        "order_id": order_id,
        "event": "order_changed",
    }
    return signed(params, secret)


async def test_a_burst_of_pushes_is_taken_in_turn_and_each_order_placed_once(
    caravan: System, platform: Platform
) -> None:
    """A marketplace's sale: :data:`BURST` pushes at once, each of its own order. Each took a
    pooled connection to look at its push id, fetched its order, then queued for another
    behind every push not yet looked at: past the request's bound (8 s) it was answered the
    database's 503 (session 64's drill, 500 at once: 498 of them, some placed all the same).
    Taken as many at a time as the pool has connections, the others waiting their turn, none
    is answered the database's 503; one whose turn does not come within the bound is answered
    503 ``Too many pushes at once`` having done nothing (its order not fetched), and every
    order is placed once, each push sent again answered ``accepted`` or ``duplicate``."""
    order_ids = [await new_order(platform.sim) for _ in range(BURST)]
    sent = [signed_push(order_id) for order_id in order_ids]
    unbounded = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    base = platform.adapter.base_url
    async with httpx.AsyncClient(base_url=base, limits=unbounded, timeout=120) as client:
        answers = await asyncio.gather(
            *(client.post(f"/platform/{APP}/push", json=params) for params in sent)
        )
        said = collections.Counter(
            (a.status_code, a.json()["status"] if a.status_code == 200 else a.json()["title"])
            for a in answers
        )
        assert set(said) <= {(200, "accepted"), (503, "Too many pushes at once")}, said
        turned_away = [p for p, a in zip(sent, answers, strict=True) if a.status_code == 503]
        assert all(a.headers.get("retry-after") for a in answers if a.status_code == 503)
    fetched = {f["order_id"] for f in (await platform.sim.get("/fetches")).json()}
    assert not fetched & {p["order_id"] for p in turned_away}, "a push turned away fetched"
    # Sent again on new connections: the server closes those idle past its keep-alive.
    async with httpx.AsyncClient(base_url=base, limits=unbounded, timeout=120) as client:
        again = await asyncio.gather(
            *(client.post(f"/platform/{APP}/push", json=params) for params in sent)
        )
    statuses = collections.Counter((a.status_code, a.json().get("status")) for a in again)
    assert set(statuses) <= {(200, "accepted"), (200, "duplicate")}, statuses
    written = await asyncio.gather(*(requests_written(caravan, o) for o in order_ids))
    assert set(written) == {1}, collections.Counter(written)
    await placed_once(caravan, order_ids[-1])


TURNED_AWAY = 60
"""Pushes sent at once to a gate taking one at a time, the order API answering each in 0.5 s:
some 16 are taken within the wait's bound (8 s), the rest turned away."""


async def test_a_burst_turned_away_is_logged_in_two_lines_and_asked_back_as_its_queue_goes(
    caravan: System, platform: Platform
) -> None:
    """A drill of 500 pushes at once turned about 290 away, each writing its own warning (a
    wall of them in a sale), each asked back in a flat 5 s, whatever the queue. Now the
    first turned away is logged at once and the others in one line when 10 s are over (how
    many, how many waited, the gate's size); ``Retry-After`` is the time the pushes waiting
    are likely to take, taken ``CARAVAN_PLATFORM_PUSHES_AT_ONCE`` (here 1) at a time."""
    order_ids = [await new_order(platform.sim) for _ in range(TURNED_AWAY)]
    sent = [signed_push(order_id) for order_id in order_ids]
    log = caravan.procs.log_dir / "platform.log"
    await caravan.restart(("platform",), **platform.env, CARAVAN_PLATFORM_PUSHES_AT_ONCE="1")
    since = caravan.procs.logged["platform"]
    assert (await platform.sim.put("/slow", json={"seconds": 60, "by": 0.5})).is_success
    try:
        unbounded = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        base = platform.adapter.base_url
        async with httpx.AsyncClient(base_url=base, limits=unbounded, timeout=60) as client:
            answers = await asyncio.gather(
                *(client.post(f"/platform/{APP}/push", json=params) for params in sent)
            )
    finally:
        await platform.sim.put("/slow", json={"seconds": 0, "by": 0})
    try:
        busy = [a for a in answers if a.status_code == 503]
        assert len(busy) > 1, collections.Counter(a.status_code for a in answers)
        assert {a.json()["title"] for a in busy} == {"Too many pushes at once"}
        assert all("(1 taken at a time)" in a.json()["detail"] for a in busy), busy[0].text
        retry = sorted(int(a.headers["retry-after"]) for a in busy)
        assert 1 <= retry[0] < retry[-1] <= 60, retry

        def warned() -> list[str]:
            lines = log.read_bytes()[since:].decode(errors="replace").splitlines()
            said = [json.loads(line) for line in lines if line.startswith("{")]
            return [
                e["message"]
                for e in said
                if e["level"] == "warning" and "not taken in time" in e["message"]
            ]

        def counted(lines: list[str]) -> int:  # a first line is one push, a summary many
            more = [re.search(r": 503 to ([0-9]+) more pushes", line) for line in lines]
            return sum(int(m[1]) if m else 1 for m in more)

        lines = await until(
            warned, "the burst's summary line", ready=lambda ls: counted(ls) == len(busy)
        )
        assert len(lines) == 2, lines
        assert lines[0].startswith(f"push for app '{APP}' of order "), lines
        summary = (
            f"push for app '{APP}': 503 to {len(busy) - 1} more pushes, not taken in time"
            r" within 10 s \(up to [0-9]+ waited, 1 taken at a time\)"
        )
        assert re.fullmatch(summary, lines[1]), lines
    finally:
        await caravan.restart(("platform",), **platform.env)


async def test_a_push_to_the_push_url_with_a_trailing_slash_is_taken_as_without(
    caravan: System, platform: Platform
) -> None:
    """``POST /platform/{app}/push/`` was answered a bare 307 to the URL without the slash,
    which a platform's client need not follow for a POST: now it is the same push."""
    order_ref = await new_order(platform.sim)
    answer = await platform.adapter.post(f"/platform/{APP}/push/", json=signed_push(order_ref))
    assert answer.status_code == 200, (answer.status_code, answer.headers.get("location"))
    assert answer.json()["status"] == "accepted", answer.text
    await placed_once(caravan, order_ref)


async def test_a_paid_and_a_shipped_push_of_one_order_at_once_leave_no_problem(
    caravan: System, platform: Platform
) -> None:
    """Two pushes of one order at once, the platform moving it on between their fetches (the
    first read paid, the second shipped): the shipped one, deciding while the paid one was
    placing it, read it as never placed and opened an ``unknown_status`` problem ("never
    placed with us") that outlived the placing, for an order placed and fine. The pushes of
    one platform order are decided one after the other: the second finds it placed. The
    second starts 0 to 10 ms after the first, across pairs, to cross the first's
    transaction."""
    refs = [await new_order(platform.sim, status="shipped") for _ in range(PAIRS)]
    for i, order_ref in enumerate(refs):
        answers = {"statuses": ["paid"]}  # to the first fetch, then its own: shipped
        assert (await platform.sim.post(f"/orders/{order_ref}/answers", json=answers)).is_success

        async def shipped(order_ref: str = order_ref, delay: float = i / 2000) -> dict[str, Any]:
            await asyncio.sleep(delay)
            return await push(platform.sim, order_ref, kind="notice")

        reports = await asyncio.gather(push(platform.sim, order_ref, kind="notice"), shipped())
        assert [r["status_code"] for r in reports] == [200, 200], reports
    # Each push was answered once its transaction committed: nothing more is coming.
    stale = {ref: found for ref in refs if (found := await open_problems(platform, ref))}
    assert stale == {}, f"{len(stale)} of {PAIRS}: {next(iter(stale.values()), None)}"
    await asyncio.gather(*(placed_once(caravan, ref) for ref in refs))


PAIRS = 21


async def test_a_push_ends_with_the_platform_receiving_the_outcome(
    caravan: System, platform: Platform
) -> None:
    # Two platform SKUs of the same product of ours make one line.
    order_ref = await new_order(platform.sim, {"ALI-PEPPER": 2, "ALI-PEPPER-GIFT": 1})
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    order_id = await placed_once(caravan, order_ref)
    [request] = requested(caravan, order_ref)
    assert request.data["lines"] == [{"sku": "T-PEPPER", "quantity": 3}]
    assert request.data["buyer"]["id"] == "t-rich"
    outcome = await caravan.outcome(order_id)
    assert outcome.type == "order.confirmed"
    got = await until(
        lambda: _applied(platform.sim, order_ref), "the outcome's callback", every=0.2
    )
    # Our order id too: the platform reads GET /orders/{id} by it, with no lookup of its ref.
    assert got == [
        {
            "idempotency_key": outcome.id,
            "order_id": order_ref,
            "caravan_order_id": order_id,
            "status": "confirmed",
            "reason": None,
            "requests": 1,
        }
    ]
    # The platform follows its order by its own id, not knowing our buyer id (it was 422
    # "query.buyer_id: Field required"); the order_ref alone is no one order.
    found = await caravan.client.get(
        "/orders", params={"source": f"platform/{APP}", "order_ref": order_ref}
    )
    assert [(o["order_id"], o["status"]) for o in found.json()["items"]] == [
        (order_id, "confirmed")
    ]
    reader_name = f"platform-reader-{uuid.uuid4().hex[:6]}"
    reader = await caravan.issue_token(reader_name, "orders:read")
    async with caravan.api("orders", token=reader) as api:
        alone = await api.get("/orders", params={"order_ref": order_ref})
    assert (alone.status_code, alone.json()["detail"]) == needs_ops(reader_name)
    # The MD5 app, with an out-of-season product: cancelled, and told why.
    legacy_ref = await new_order(platform.legacy, {"ALI-FIG": 1})
    assert (await push(platform.legacy, legacy_ref, form=True))["body"]["status"] == "accepted"
    legacy_order = await placed_once(caravan, legacy_ref, app=LEGACY)
    cancelled = await caravan.outcome(legacy_order)
    assert cancelled.type == "order.cancelled"
    got = await until(
        lambda: _applied(platform.legacy, legacy_ref), "the MD5 app's callback", every=0.2
    )
    assert [
        (c["status"], c["reason"], c["idempotency_key"], c["caravan_order_id"]) for c in got
    ] == [("cancelled", "out_of_season", cancelled.id, legacy_order)]


async def _applied(sim: httpx.AsyncClient, order_ref: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await callbacks(sim, order_ref))["callbacks"]
    return found


async def placed_and_told(caravan: System, platform: Platform, order_ref: str, outcome: str) -> str:
    """Push the platform order ``order_ref`` (accepted), see it placed once and come to
    ``outcome`` (its event type), and the status callback telling the platform applied
    there: the order's id, for a test of what the platform pushes next."""
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    order_id = await placed_once(caravan, order_ref)
    assert (await caravan.outcome(order_id)).type == outcome
    await until(lambda: _applied(platform.sim, order_ref), f"{outcome}'s callback", every=0.2)
    return order_id


async def test_an_order_s_callback_is_listed_by_our_order_id_or_by_the_platform_s(
    caravan: System, platform: Platform
) -> None:
    """``order_id`` is our order id (a UUID, taken in upper case too); the platform's is
    ``platform_order_id``: the filter was not there, so the whole list came back. The
    platform's id where ours belongs (``FM-0001``) was an empty list, as if the order had no
    callback: a 422 saying which filter takes it."""
    order_ref = await new_order(platform.sim)
    order_id = await placed_and_told(caravan, platform, order_ref, "order.confirmed")

    async def listed(**query: str) -> list[tuple[str, str]]:
        answer = await platform.adapter.get("/platform/callbacks", params=query)
        return [(r["order_id"], r["platform_order_id"]) for r in answer.json()["callbacks"]]

    ours = [(order_id, order_ref)]
    assert await listed(app=APP, platform_order_id=order_ref) == ours
    assert await listed(platform_order_id=order_ref) == ours
    assert await listed(order_id=order_id) == ours
    assert await listed(order_id=order_id.upper()) == ours
    for theirs in (order_ref, "FM-0001"):
        answer = await platform.adapter.get("/platform/callbacks", params={"order_id": theirs})
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["errors"]
        assert error["field"] == "query.order_id", answer.text
        said = "not an order id of Caravan's, a UUID (GET /orders names it, found by source="
        assert error["message"].startswith(said), answer.text
        assert error["message"].endswith("the platform's own is `platform_order_id`")


async def test_a_platform_s_bound_token_reads_its_app_s_problems_and_callbacks_alone(
    caravan: System, platform: Platform
) -> None:
    """A platform's engineer sees which of the app's pushes were answered ``problem`` (and
    each callback sent it) through the API, with its token bound to ``platform/APP``: it
    could not, ``platform:read`` being refused a binding, so that a push answer its log lost
    was lost. Another app's are not its: named (``app=``), refused 403 naming its own, the
    same for an app no one configured (nothing said of which exist); unnamed, left out (an
    order's callback of another app's order is an empty list, as if it had none). A
    problem's detail, operations' words, is withheld as the push's answer withholds it, and
    mappings (the centre's) are refused it. The operator's unbound token reads as before."""
    _, ours = await unmapped_order(platform.sim, "ALI-MINE")
    _, theirs = await unmapped_order(platform.legacy, "ALI-THEIRS")
    told = await new_order(platform.sim)
    told_id = await placed_and_told(caravan, platform, told, "order.confirmed")
    other = await new_order(platform.legacy)
    assert (await push(platform.legacy, other, form=True))["body"]["status"] == "accepted"
    other_id = await placed_once(caravan, other, app=LEGACY)
    await until(lambda: _applied(platform.legacy, other), "the other app's callback", every=0.2)
    name = f"market-{uuid.uuid4().hex[:6]}"
    token = await caravan.issue_token(
        name, "platform:read", "orders:read", sources=[f"platform/{APP}"]
    )
    async with caravan.api("platform", token=token) as bound:
        listed = await bound.get("/platform/problems", params={"all": True})
        assert listed.status_code == 200, listed.text
        rows = listed.json()["problems"]
        assert {r["app"] for r in rows} == {APP}, rows
        [mine] = [r for r in rows if r["platform_order_id"] == ours]
        assert (mine["kind"], "detail" in mine) == ("unmapped_sku", False), mine
        assert theirs not in {r["platform_order_id"] for r in rows}
        of_its_app = await bound.get("/platform/problems", params={"app": APP})
        assert ours in {r["platform_order_id"] for r in of_its_app.json()["problems"]}
        said = f"the token {name!r} reads the problems of its own app alone (`app`: {APP}), bound"
        for app in (LEGACY, "t-nowhere"):
            refused = await bound.get("/platform/problems", params={"app": app})
            assert (refused.status_code, refused.json()["detail"]) == (403, f"{said} to it")
        calls = await bound.get("/platform/callbacks")
        assert {r["app"] for r in calls.json()["callbacks"]} == {APP}, calls.text
        by_id = await bound.get("/platform/callbacks", params={"order_id": told_id})
        assert [r["platform_order_id"] for r in by_id.json()["callbacks"]] == [told]
        # Our trace context is ours (it listed traceparent), as its callback carries none.
        [row] = by_id.json()["callbacks"]
        assert "trace_headers" not in row and row["status"] == "delivered", row
        by_id = await bound.get("/platform/callbacks", params={"order_id": other_id})
        assert by_id.json()["callbacks"] == [], by_id.text
        refused = await bound.get("/platform/callbacks", params={"app": LEGACY})
        assert refused.status_code == 403, refused.text
        for path in (f"/platform/{APP}/mappings", f"/platform/{APP}/mappings/buyer/{BUYER}"):
            refused = await bound.get(path)
            assert refused.status_code == 403, refused.text
            assert "mappings are read with an operator's token" in refused.json()["detail"]
    everyone = await platform.adapter.get("/platform/problems", params={"all": True})
    rows = everyone.json()["problems"]
    assert {ours, theirs} <= {r["platform_order_id"] for r in rows}
    assert all("detail" in r for r in rows)
    operators = await platform.adapter.get("/platform/callbacks", params={"order_id": told_id})
    assert "trace_headers" in operators.json()["callbacks"][0], operators.text
    refused = await platform.adapter.get("/platform/problems", params={"app": "t-nowhere"})
    assert refused.status_code == 422, refused.text


async def test_with_the_platform_down_callbacks_are_retried_until_it_is_back(
    caravan: System, platform: Platform
) -> None:
    log = caravan.procs.log_dir / "platform.log"
    logged_before = log.stat().st_size
    down = await platform.sim.put("/down", json={"seconds": 120, "apis": ["status"]})
    assert down.status_code == 200
    order_ref = await new_order(platform.sim)
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    order_id = await placed_once(caravan, order_ref)
    outcome = await caravan.outcome(order_id)

    async def retrying() -> list[dict[str, Any]]:
        listed = await platform.adapter.get("/platform/callbacks", params={"order_id": order_id})
        rows: list[dict[str, Any]] = listed.json()["callbacks"]
        return [r for r in rows if r["attempts"] >= 2 and "503" in (r["last_error"] or "")]

    [row] = await until(retrying, "a callback retried after a 503", every=0.2)
    assert row["status"] in ("pending", "sending") and row["event_id"] == outcome.id
    metrics = (await platform.adapter.get("/metrics")).text
    assert f'caravan_platform_callback_calls_total{{app="{APP}",result="retry"}}' in metrics
    # The adapter restarts meanwhile: the pending callback is kept, and tried again by the
    # new process (the platform, down, applies none of them meanwhile).
    await caravan.restart(("platform",), **platform.env)
    attempts = "select attempts from platform.callbacks where event_id = :e"
    restarted = await caravan.scalar(attempts, e=outcome.id)
    await until(
        lambda: caravan.scalar(attempts, e=outcome.id),
        "the callback tried again after the restart",
        every=0.2,
        ready=lambda tried: tried > restarted,
    )
    assert (await platform.sim.put("/down", json={"seconds": 0})).status_code == 200
    got = await until(
        lambda: _applied(platform.sim, order_ref),
        "the callback once the platform is back",
        45,
        every=0.2,
    )
    assert [(c["status"], c["idempotency_key"], c["requests"]) for c in got] == [
        ("confirmed", outcome.id, 1)
    ]

    async def delivered() -> bool:
        # Written by the adapter once the simulator's answer is back, after it applied it.
        status = await caravan.scalar(
            "select status from platform.callbacks where event_id = :e", e=outcome.id
        )
        return bool(status == "delivered")

    await until(delivered, "the callback marked delivered", every=0.2)
    # The status API away is a retried fault (one warning, then one a minute, for every
    # callback to the app that meets it), ended in one line once it answers a call again.
    written = log.read_bytes()[logged_before:].splitlines()
    said = [json.loads(line)["message"] for line in written if line.startswith(b"{")]
    assert any(line.startswith(f"the status API of {APP} answers again") for line in said), said
    failures = await platform.sim.get("/callbacks")
    assert sum(1 for r in failures.json()["requests"] if r["answer"] == 503) >= 2


async def test_an_unmapped_sku_is_a_problem_for_operations_until_mapped(
    caravan: System, platform: Platform
) -> None:
    unknown, order_ref = await unmapped_order(platform.sim, "ALI-NEW")
    listed = (await platform.adapter.get("/platform/problems", params={"app": APP})).json()
    mine = [p for p in listed["problems"] if p["platform_order_id"] == order_ref]
    assert [(p["kind"], unknown in p["detail"]) for p in mine] == [("unmapped_sku", True)]
    assert await requests_written(caravan, order_ref) == 0
    put = await platform.adapter.put(
        f"/platform/{APP}/mappings/sku/{unknown}", json={"sku": "T-PEPPER"}
    )
    assert put.status_code == 200
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "accepted"
    await placed_once(caravan, order_ref)
    listed = (await platform.adapter.get("/platform/problems", params={"app": APP})).json()
    assert [p for p in listed["problems"] if p["platform_order_id"] == order_ref] == []
    deleted = await platform.adapter.delete(f"/platform/{APP}/mappings/sku/{unknown}")
    assert deleted.status_code == 204
    gone = await platform.adapter.get(f"/platform/{APP}/mappings/sku/{unknown}")
    assert gone.status_code == 404
    # Its detail was empty: it names what was asked for.
    said = (gone.json()["title"], gone.json()["detail"])
    assert said == ("No such mapping", f"app {APP!r} maps no sku {unknown!r}"), gone.text


async def test_a_sku_mapped_to_one_inventory_does_not_have_is_a_problem_naming_the_mapping(
    caravan: System, platform: Platform
) -> None:
    """Operations mend an unmapped SKU with a typo (a mapping is not checked against the
    catalogue, which only inventory knows) and refetch: the order is placed, cancelled
    ``unknown_sku`` and the platform told so, and nothing told operations that the mapping
    was wrong, the unmapped_sku problem closed. Our cancellation ``unknown_sku`` of a platform
    order opens a ``mapped_to_unknown_sku`` problem naming its platform SKUs and their
    mappings, which the platform following our cancellation does not close, a replay of the
    cancellation does not count again (nor open again once resolved), and resolving closes."""
    typo, order_ref = await unmapped_order(platform.sim, "ALI-TYPO")
    put = await platform.adapter.put(
        f"/platform/{APP}/mappings/sku/{typo}", json={"sku": "NO-SUCH-CARAVAN-SKU"}
    )
    assert put.status_code == 200, put.text
    body = {"app": APP, "platform_order_id": order_ref}
    refetched = await platform.adapter.post("/platform/refetch", json=body)
    assert refetched.json()["status"] == "accepted", refetched.text
    order_id = await placed_once(caravan, order_ref)
    cancelled = await caravan.outcome(order_id)
    assert (cancelled.type, cancelled.data["reason"]) == ("order.cancelled", "unknown_sku")
    [told] = await until(lambda: _applied(platform.sim, order_ref), "the callback", every=0.2)
    assert (told["status"], told["reason"]) == ("cancelled", "unknown_sku"), told
    found = await open_problems(platform, order_ref)
    kind = "mapped_to_unknown_sku"
    assert [k for k, _ in found] == [kind], found
    [(_, detail)] = found
    assert f"our order {order_id}" in detail, detail
    assert f"{typo!r} -> 'NO-SUCH-CARAVAN-SKU'" in detail, detail
    assert f"/platform/{APP}/mappings/sku/" in detail, detail
    is_open = {"kind": kind}
    await until(
        lambda: caravan.gauge("platform", "caravan_platform_problems_open", **is_open),
        "the problem counted open",
    )
    # Refetched again (still paid there), and the platform cancelling its order as told:
    # neither places it again nor closes the problem, the mapping still to mend.
    again = await platform.adapter.post("/platform/refetch", json=body)
    assert again.json()["status"] == "duplicate", again.text
    assert [k for k, _ in await open_problems(platform, order_ref)] == [kind]
    await new_order(platform.sim, {typo: 1}, status="cancelled", order_id=order_ref)
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "ignored"
    assert [k for k, _ in await open_problems(platform, order_ref)] == [kind]
    seen = (
        "select occurrences, resolved_at is null from platform.problems"
        " where platform_order_id = :r and kind = :k"
    )
    await consumed_again(caravan, "platform", cancelled)
    assert [tuple(r) for r in await caravan.sql(seen, r=order_ref, k=kind)] == [(1, True)]
    resolved = await platform.adapter.post("/platform/problems/resolve", json=body)
    assert resolved.json() == {"resolved": [kind]}, resolved.text
    await consumed_again(caravan, "platform", cancelled)
    assert [tuple(r) for r in await caravan.sql(seen, r=order_ref, k=kind)] == [(1, False)]


async def open_problems(platform: Platform, order_ref: str) -> list[tuple[str, str]]:
    listed = (await platform.adapter.get("/platform/problems", params={"app": APP})).json()
    mine = [p for p in listed["problems"] if p["platform_order_id"] == order_ref]
    return [(p["kind"], p["detail"]) for p in mine]


async def test_an_order_the_orders_service_rejects_is_a_problem_for_operations(
    caravan: System, platform: Platform
) -> None:
    # What the adapter published was accepted at the push; should orders refuse it (a rule
    # of one service the other does not know), operations see it, instead of nobody. The
    # adapter's outbox is stood in for: its row for the order, then the request it names.
    order_ref = f"P-REJ-{uuid.uuid4().hex[:8]}"
    event = raw_event(
        "platform.order_requested",
        {"order_ref": order_ref, "buyer": {"id": "b"}, "lines": []},
        source=f"platform/{APP}",
    )
    await _unplaced(caravan, APP, order_ref, str(event["id"]))
    await caravan.publish_raw(
        Topic.PLATFORM_EVENTS.value, json.dumps(event).encode(), order_ref.encode()
    )

    async def listed() -> list[tuple[str, str]]:
        return await open_problems(platform, order_ref)

    found = await until(listed, "the rejection listed as a problem", ready=bool)
    assert [kind for kind, _ in found] == ["rejected"]
    assert found[0][1].startswith("the orders service refused it: ") and "lines" in found[0][1]
    assert f"(`caravan dlq list --source platform/{APP}`)" in found[0][1], found


async def test_a_request_naming_a_platform_elsewhere_is_refused_and_cannot_take_its_order(
    caravan: System, platform: Platform
) -> None:
    """Anyone who may publish ``orders.requests.v1`` can write a platform's source. A
    storefront that named a platform order before its push (its own lines, a prepaid
    method) had its order placed, and the adapter's request then taken for a duplicate of
    it: the platform's payment authorised the storefront's order, the platform's own was
    never placed. Now the request is refused, the platform's order placed from its push
    with its own lines, and operations are not told of a rejection that is not theirs."""
    order_ref = await new_order(platform.sim, {"ALI-PEPPER": 1})
    forged = OrderRequested(
        order_ref=order_ref,
        buyer=Buyer(id="t-rich", phone="+8613900000009"),
        lines=[OrderLine(sku="T-PEPPER", quantity=5)],
        payment=PaymentRequest(method="prepaid"),
    )
    await caravan.request(forged, source=f"platform/{APP}")
    rejected = await caravan.wait_for(
        lambda: caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected", order_ref=order_ref)
    )
    assert [e["field"] for e in rejected[0].data["errors"]] == ["source"]
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    order_id = await placed_once(caravan, order_ref)
    [placed] = caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_ref=order_ref)
    assert [(line["sku"], line["quantity"]) for line in placed.data["lines"]] == [("T-PEPPER", 1)]
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    assert await open_problems(platform, order_ref) == []
    # The same request again, now that the platform's order exists: nothing (a replay of
    # what adapters published there before is no rejection either).
    again = new_event(forged, source=f"platform/{APP}")
    sent = await caravan.publish_raw(
        Topic.ORDER_REQUESTS.value, again.to_json(), order_ref.encode()
    )
    await caravan.consumed("orders", sent)  # handled: a rejection of it is written by now
    rejections = ("orders", Topic.ORDER_EVENTS, "order.rejected")
    assert await caravan.outbox_count(*rejections, order_ref=order_ref) == 1


async def test_problems_name_every_unmapped_sku_and_close_when_mended_or_moot(
    caravan: System, platform: Platform
) -> None:
    """Two unmapped SKUs are one problem naming both (it named the last one only); a push
    after one is mapped names the other; the order cancelled on the platform closes it. A
    platform SKU may hold "/" (its mapping's path was a 404)."""
    x, y = (f"ALI/{c}-{uuid.uuid4().hex[:6]}" for c in "XY")  # "/" too (was unmappable)
    order_ref = await new_order(platform.sim, {x: 1, y: 2})
    assert (await push(platform.sim, order_ref))["body"]["status"] == "problem"
    both = f"platform SKUs {min(x, y)!r}, {max(x, y)!r} have no mapping"
    assert await open_problems(platform, order_ref) == [("unmapped_sku", both)]
    mapping = f"/platform/{APP}/mappings/sku/{quote(x, safe='')}"
    put = await platform.adapter.put(mapping, json={"sku": "T-PEPPER"})
    assert put.status_code == 200, put.text
    assert (await platform.adapter.get(mapping)).json()["external_id"] == x
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "problem"
    one = f"platform SKU {y!r} has no mapping"
    assert await open_problems(platform, order_ref) == [("unmapped_sku", one)]
    await closed_unplaced(caravan, platform, order_ref, {x: 1, y: 2}, "cancelled")


async def test_a_push_answered_problem_names_the_kinds_operations_see_and_nothing_more(
    caravan: System, platform: Platform
) -> None:
    """A push answered ``problem`` said ``{"status", "order_ref"}`` alone: the platform could
    not tell an unmapped SKU (the seller's to map) from a phone it sent that cannot be read
    (its own to mend), nor act on either. It names the kinds of the problems found, as
    operations list them, and none of their details (our order id, the phone); a refetch is
    answered the same, and a push that places the order, as it was. An ``invalid_order``
    named no field: the platform's integration could not tell which one to mend (a buyer's
    phone missing, or not E.164); its answer names each in ``errors``, as a 422 does."""
    sku = f"ALI-KINDS-{uuid.uuid4().hex[:6]}"
    stranger = f"nick-{uuid.uuid4().hex[:6]}"
    both = await new_order(platform.sim, {sku: 1}, buyer=stranger)
    report = await push(platform.sim, both)
    kinds = ["unmapped_sku", "unmapped_buyer"]
    said = {"status": "problem", "order_ref": both, "problems": kinds}
    assert (report["status_code"], report["body"]) == (200, said), report
    assert sorted(k for k, _ in await open_problems(platform, both)) == sorted(kinds)
    unread = await new_order(platform.sim, phone=None)
    report = await push(platform.sim, unread)
    why = "the platform gives none, and the buyer's mapping has none"
    told: dict[str, Any] = {"status": "problem", "order_ref": unread}
    told |= {"problems": ["invalid_order"]}
    told |= {"errors": [{"field": "buyer.phone", "message": why}]}
    assert (report["status_code"], report["body"]) == (200, told), report
    await new_order(platform.sim, order_id=unread, phone="call the shop")
    report = await push(platform.sim, unread, kind="notice")
    why = f"the platform gives one that is neither {PHONES_READ}, and the buyer's mapping has none"
    told |= {"errors": [{"field": "buyer.phone", "message": why}]}
    assert (report["status_code"], report["body"]) == (200, told), report
    [(kind, detail)] = await open_problems(platform, unread)
    assert kind == "invalid_order" and "buyer.phone" in detail, detail
    body = {"app": APP, "platform_order_id": unread}
    refetched = await platform.adapter.post("/platform/refetch", json=body)
    assert (refetched.status_code, refetched.json()) == (200, told), refetched.text
    await new_order(platform.sim, order_id=unread)  # its phone mended
    report = await push(platform.sim, unread, kind="notice")
    placed = {"status": "accepted", "order_ref": unread}
    assert (report["status_code"], report["body"]) == (200, placed), report
    await placed_once(caravan, unread)


async def closed_unplaced(
    caravan: System, platform: Platform, order_ref: str, items: dict[str, int], status: str
) -> None:
    """The platform closes an order never placed (``status``): the push is ``ignored``, the
    order's problems are closed (nothing left to place) and nothing is placed."""
    await new_order(platform.sim, items, status=status, order_id=order_ref)
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "ignored"
    assert await open_problems(platform, order_ref) == []
    assert await requests_written(caravan, order_ref) == 0


async def test_an_order_of_more_items_than_a_statement_may_have_parameters_is_a_problem(
    caravan: System, platform: Platform
) -> None:
    """33,000 items of one SKU: its mappings are looked up (one SKU, asked as one array:
    an IN list of a parameter per item went over asyncpg's 32,767, and every push got a
    503, "the database is not reachable", with no problem recorded); merged, its quantity
    is more than a line may have, which is an ``invalid_order`` problem saying so."""
    order_ref = f"P-{uuid.uuid4().hex[:12]}"
    body = {
        "order_id": order_ref,
        "status": "paid",
        "buyer": {"id": BUYER, "phone": "+8613900000001"},
        "items": [{"sku": "ALI-PEPPER", "quantity": 1}] * 33_000,
    }
    assert (await platform.sim.post("/orders", json=body)).status_code == 200
    report = await push(platform.sim, order_ref, kind="notice")  # the order is fetched
    assert (report["status_code"], report["body"]["status"]) == (200, "problem"), report
    [(kind, detail)] = await open_problems(platform, order_ref)
    assert kind == "invalid_order" and "quantity" in detail and "10000" in detail, detail
    assert await requests_written(caravan, order_ref) == 0


async def resolutions_audited(caravan: System, order_ref: str) -> int:
    """How many times the audit trail says ``order_ref``'s problems were resolved."""
    audited: int = await caravan.scalar(
        "select count(*) from auth.audit where action = 'platform.problems.resolve'"
        " and target = :t",
        t=f"{APP}/{order_ref}",
    )
    return audited


async def cancelled_after_placed(caravan: System, platform: Platform) -> tuple[str, str]:
    """A platform order placed and confirmed, then cancelled on the platform and pushed: a
    ``cancelled_on_platform`` problem. Its order ref and our order id."""
    order_ref = await new_order(platform.sim)
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    order_id = await placed_once(caravan, order_ref)
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    await new_order(platform.sim, status="cancelled", order_id=order_ref)
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "problem"
    return order_ref, order_id


async def test_an_order_cancelled_on_the_platform_after_we_placed_it_is_a_problem_until_resolved(
    caravan: System, platform: Platform
) -> None:
    """The adapter cannot undo a sale (a refund is the platform's, the goods may be on their
    way): operations are told, where the push used to be ignored and the platform was then
    told "confirmed" with nobody the wiser; they close it once settled, and that is audited."""
    order_ref, order_id = await cancelled_after_placed(caravan, platform)
    found = await open_problems(platform, order_ref)
    assert [kind for kind, _ in found] == ["cancelled_on_platform"]
    assert order_id in found[0][1]
    # Pushed again meanwhile: still one problem, seen twice.
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "problem"
    assert len(await open_problems(platform, order_ref)) == 1
    body = {"app": APP, "platform_order_id": order_ref}
    resolved = await platform.adapter.post("/platform/problems/resolve", json=body)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json() == {"resolved": ["cancelled_on_platform"]}
    assert await open_problems(platform, order_ref) == []
    again = await platform.adapter.post("/platform/problems/resolve", json=body)
    assert again.json() == {"resolved": []}
    assert await resolutions_audited(caravan, order_ref) == 1


async def test_an_order_operations_cancel_is_told_as_theirs_and_one_its_buyer_asked_for_as_before(
    caravan: System, platform: Platform
) -> None:
    """Operations cancelling a pending order of their own accord (`caravan orders cancel`)
    said ``cancelled_by_buyer``: the buyer was texted that it was cancelled at their request
    and the platform called back that its buyer had cancelled. It is
    ``cancelled_by_operator`` on orders.events.v1, in ``GET /orders/{id}``, in the text and in
    the callback. One the platform's buyer asked for (``--by buyer``, as the
    ``cancelled_on_platform`` problem says) is ``cancelled_by_buyer`` in each, as before.
    Payments stopped: each order stays pending until cancelled."""
    phone = f"+86138{uuid.uuid4().int % 10**8:08d}"  # this test's alone: SMS are counted
    ours: dict[str, tuple[str, str]] = {}
    async with payments_stopped(caravan):
        for by in ("operator", "buyer"):
            order_ref = await new_order(platform.sim, phone=phone)
            assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
            order_id = await placed_once(caravan, order_ref)
            asked = ["--by", "buyer"] if by == "buyer" else []  # the operator's: the default
            done = await ops_cli(caravan, "orders", "cancel", order_id, *asked)
            assert done.returncode == 0, done.stdout + done.stderr
            reason = f"cancelled_by_{by}"
            ended = await caravan.outcome(order_id)
            assert (ended.type, ended.data["reason"]) == ("order.cancelled", reason)
            view = (await caravan.client.get(f"/orders/{order_id}")).json()
            assert (view["status"], view["reason"]) == ("cancelled", reason), view
            ours[by] = order_ref, order_id
    words = {
        "operator": "has been cancelled by our staff. Sorry for the inconvenience.",
        "buyer": "has been cancelled at your request.",
    }
    for by, (order_ref, order_id) in ours.items():
        [sent] = await caravan.wait_for(partial(texted, caravan, order_id, phone))
        assert sent.data["text"] == f"【Caravan】Your order {order_ref} {words[by]}", sent.data
        [told] = await until(partial(_applied, platform.sim, order_ref), "the callback", every=0.2)
        assert (told["status"], told["reason"], told["caravan_order_id"]) == (
            "cancelled",
            f"cancelled_by_{by}",
            order_id,
        ), told


async def test_a_problem_resolved_and_then_seen_again_is_open_again(
    caravan: System, platform: Platform
) -> None:
    """Operations resolved a problem, and the platform pushes the order in that state again
    (cancelled anew after a dispute, say): the problem is open again for them to see, not
    counted on a row that stays resolved, where nobody would look."""
    order_ref, _ = await cancelled_after_placed(caravan, platform)
    body = {"app": APP, "platform_order_id": order_ref}
    resolved = await platform.adapter.post("/platform/problems/resolve", json=body)
    assert resolved.json() == {"resolved": ["cancelled_on_platform"]}
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "problem"
    assert [kind for kind, _ in await open_problems(platform, order_ref)] == [
        "cancelled_on_platform"
    ]


async def test_an_order_changed_on_the_platform_after_we_placed_it_is_a_problem_not_a_duplicate(
    caravan: System, platform: Platform
) -> None:
    """A paid order the platform changes after we placed it (other items, another address)
    was answered ``duplicate`` with nothing recorded: the platform could not tell "had it
    already" from "your change was dropped", nor could operations. It is a 200 ``problem``
    and a ``changed_after_placed`` problem saying what differed (never the address or the
    phone), which stays open until resolved; a phone changed alone is no change placed."""
    order_ref = await new_order(platform.sim, {"ALI-PEPPER": 1, "ALI-FIG": 2})
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    order_id = await placed_once(caravan, order_ref)
    await new_order(
        platform.sim, {"ALI-PEPPER": 1, "ALI-FIG": 2}, "paid", order_ref, "+8613900000777"
    )
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "duplicate"
    assert await open_problems(platform, order_ref) == []
    changed = {"ALI-PEPPER": 3, "ALI-PEPPER-GIFT": 1}
    await new_order(platform.sim, changed, "paid", order_ref, address="Village 9, Lane 4")
    answer = await push(platform.sim, order_ref, kind="notice")
    assert (answer["status_code"], answer["body"]["status"]) == (200, "problem"), answer
    assert answer["body"]["problems"] == ["changed_after_placed"], answer
    [(kind, detail)] = await open_problems(platform, order_ref)
    assert kind == "changed_after_placed", detail
    assert order_id in detail and "not applied" in detail, detail
    said = "items: 'ALI-FIG' 2 removed, 'ALI-PEPPER' 1 -> 3, 'ALI-PEPPER-GIFT' 1 added"
    assert f"({said}; the delivery address)" in detail, detail
    # Neither the address nor the phone (+8613900000777); the ids may hold "777" themselves.
    unnamed = detail.replace(order_id, "").replace(order_ref, "")
    assert "Village" not in detail and "777" not in unnamed, detail
    # Changed back, it stays open for operations to settle (the platform may have acted on it).
    await new_order(platform.sim, {"ALI-PEPPER": 1, "ALI-FIG": 2}, "paid", order_ref)
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "duplicate"
    assert [k for k, _ in await open_problems(platform, order_ref)] == ["changed_after_placed"]
    assert await requests_written(caravan, order_ref) == 1


async def test_a_trade_closed_after_we_cancelled_the_order_is_ignored_and_opens_no_problem(
    caravan: System, platform: Platform
) -> None:
    """Taobao closes a paid trade (TRADE_CLOSED, the buyer's money given back) once told that
    our order was cancelled (out of season here): that push was an ``unknown_status`` problem
    for an order the platform had only followed us on, one operations learn to ignore. It is
    ``ignored``, counted, as the platform's cancellation of an order we cancelled first is;
    and for an order never placed (an unmapped SKU) there is nothing left to place either."""
    order_ref = await new_order(platform.sim, {"ALI-FIG": 1}, status="WAIT_SELLER_SEND_GOODS")
    await placed_and_told(caravan, platform, order_ref, "order.cancelled")
    ignored = {"app": APP, "outcome": "ignored"}
    before = await caravan.gauge("platform", "caravan_platform_pushes_total", **ignored)
    await new_order(platform.sim, {"ALI-FIG": 1}, status="TRADE_CLOSED", order_id=order_ref)
    report = await push(platform.sim, order_ref, kind="notice")
    assert (report["status_code"], report["body"]["status"]) == (200, "ignored"), report
    assert await caravan.gauge("platform", "caravan_platform_pushes_total", **ignored) == before + 1
    listed = await platform.adapter.get("/platform/problems", params={"app": APP, "all": True})
    assert [p for p in listed.json()["problems"] if p["platform_order_id"] == order_ref] == []
    unmapped = f"ALI-UNMAPPED-{uuid.uuid4().hex[:6]}"
    never = await new_order(platform.sim, {unmapped: 1}, status="WAIT_SELLER_SEND_GOODS")
    assert (await push(platform.sim, never))["body"]["status"] == "problem"
    await closed_unplaced(caravan, platform, never, {unmapped: 1}, "TRADE_CLOSED")


async def test_a_refund_after_we_cancelled_the_order_is_ignored_and_opens_no_problem(
    caravan: System, platform: Platform
) -> None:
    """Told that our order was cancelled (out of season here), the platform gives the buyer's
    money back, and says so on the way (Taobao's refund statuses, or refunding): each push
    was an ``unknown_status`` problem for an order the platform only followed us on. They are
    ``ignored``, counted; a status the adapter does not know is still a problem. For an order
    never placed (an unmapped SKU) a refund is nothing to place yet: ignored, its problem
    kept (should the refund be refused, the order is still to place)."""
    order_ref = await new_order(platform.sim, {"ALI-FIG": 1}, status="WAIT_SELLER_SEND_GOODS")
    await placed_and_told(caravan, platform, order_ref, "order.cancelled")
    ignored = {"app": APP, "outcome": "ignored"}
    before = await caravan.gauge("platform", "caravan_platform_pushes_total", **ignored)
    refunding = ("WAIT_SELLER_AGREE", "WAIT_BUYER_RETURN_GOODS", "refunding")
    for status in refunding:
        await new_order(platform.sim, {"ALI-FIG": 1}, status=status, order_id=order_ref)
        report = await push(platform.sim, order_ref, kind="notice")
        assert (report["status_code"], report["body"]["status"]) == (200, "ignored"), report
    assert await caravan.gauge("platform", "caravan_platform_pushes_total", **ignored) == before + 3
    assert await open_problems(platform, order_ref) == []
    await new_order(platform.sim, {"ALI-FIG": 1}, status="on_hold", order_id=order_ref)
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "problem"
    [(kind, detail)] = await open_problems(platform, order_ref)
    assert kind == "unknown_status" and "'on_hold'" in detail, detail
    unmapped = f"ALI-UNMAPPED-{uuid.uuid4().hex[:6]}"
    never = await new_order(platform.sim, {unmapped: 1}, status="WAIT_SELLER_SEND_GOODS")
    assert (await push(platform.sim, never))["body"]["status"] == "problem"
    await new_order(platform.sim, {unmapped: 1}, status="WAIT_SELLER_AGREE", order_id=never)
    assert (await push(platform.sim, never, kind="notice"))["body"]["status"] == "ignored"
    assert [kind for kind, _ in await open_problems(platform, never)] == ["unmapped_sku"]
    assert await requests_written(caravan, never) == 0


async def test_goods_shipped_for_an_order_we_cancelled_are_a_problem(
    caravan: System, platform: Platform
) -> None:
    """Told that our order was cancelled (out of season here), the platform says it shipped
    it after all (WAIT_BUYER_CONFIRM_GOODS): goods went out that Caravan holds no stock or
    payment for, or the buyer waits for goods nobody sends. Such a push was ``ignored``, as
    the fulfilment of an order placed and confirmed is; it is a ``fulfilled_after_cancelled``
    problem naming our order, which later pushes do not close."""
    order_ref = await new_order(platform.sim, {"ALI-FIG": 1}, status="WAIT_SELLER_SEND_GOODS")
    order_id = await placed_and_told(caravan, platform, order_ref, "order.cancelled")
    for status in ("WAIT_BUYER_CONFIRM_GOODS", "TRADE_FINISHED"):
        await new_order(platform.sim, {"ALI-FIG": 1}, status=status, order_id=order_ref)
        report = await push(platform.sim, order_ref, kind="notice")
        assert (report["status_code"], report["body"]["status"]) == (200, "problem"), report
    [(kind, detail)] = await open_problems(platform, order_ref)
    assert kind == "fulfilled_after_cancelled", (kind, detail)
    assert f"our order {order_id}" in detail and "'TRADE_FINISHED'" in detail, detail  # the last


@pytest.mark.parametrize(
    ("status", "problem"),
    [("TRADE_CLOSED", "cancelled_on_platform"), ("WAIT_SELLER_AGREE", "refund_requested")],
)
async def test_a_trade_closed_or_a_refund_asked_after_we_confirmed_the_order_is_a_problem(
    caravan: System, platform: Platform, status: str, problem: str
) -> None:
    """Closed on the platform after payment (TRADE_CLOSED) although confirmed here: the buyer's
    money may have gone back after we shipped, a sale for operations to settle by hand. The
    buyer asking for a refund (WAIT_SELLER_AGREE) was an ``unknown_status`` problem, "the
    adapter does not know" a status Taobao documents: it is a ``refund_requested`` problem
    saying what to do (the goods may be on their way). Each names our order and the status,
    and the platform's later pushes do not close it."""
    order_ref = await new_order(platform.sim, status="WAIT_SELLER_SEND_GOODS")
    order_id = await placed_and_told(caravan, platform, order_ref, "order.confirmed")
    await new_order(platform.sim, status=status, order_id=order_ref)
    report = await push(platform.sim, order_ref, kind="notice")
    assert (report["status_code"], report["body"]["status"]) == (200, "problem"), report
    [(kind, detail)] = await open_problems(platform, order_ref)
    assert kind == problem, (kind, detail)
    assert f"our order {order_id}" in detail and repr(status) in detail, detail
    # Confirmed: the order cannot be cancelled here (409), and the problem does not say to.
    refused = await caravan.client.post(f"/orders/{order_id}/cancel")
    assert refused.status_code == 409, refused.text
    assert "which Caravan cannot undo" in detail and "/cancel" not in detail, detail
    assert f"`caravan payments void-sold {order_id} --reason ...`" in detail, detail
    await new_order(platform.sim, status="WAIT_BUYER_CONFIRM_GOODS", order_id=order_ref)
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "ignored"
    assert [kind for kind, _ in await open_problems(platform, order_ref)] == [problem]


async def test_a_buyer_phone_in_national_format_is_placed_and_texted_in_e164(
    caravan: System, platform: Platform
) -> None:
    """A Chinese marketplace writes its buyers' numbers nationally ("139 1234-5678"); with
    no phone in the buyer's mapping, the paid order was an ``invalid_order`` problem
    ("phone: String should match pattern"), answered 200 ``problem``, waiting for
    operations. Now it is placed, and the buyer texted at +86 and the number."""
    number = f"139{uuid.uuid4().int % 10**8:08d}"  # this test's alone: SMS are counted
    written = f"{number[:3]} {number[3:7]}-{number[7:]}"
    order_ref = await new_order(platform.sim, phone=written)
    report = await push(platform.sim, order_ref)
    assert report["body"]["status"] == "accepted", report
    order_id = await placed_once(caravan, order_ref)
    [request] = requested(caravan, order_ref)
    assert request.data["buyer"]["phone"] == f"+86{number}"
    await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.NOTIFICATION_EVENTS, type="sms.sent", order_id=order_id, to=f"+86{number}"
        )
    )


async def test_a_buyer_mapped_without_a_locale_is_texted_in_the_one_seeded(
    caravan: System, platform: Platform
) -> None:
    """A buyer seeded ug-CN, then mapped by a platform without a locale, was texted in
    Chinese: the mapping's default zh-CN went with every order, over the seeded locale, the
    buyer's own word. A mapping that says none now leaves it out of the order (the seeded
    one, else zh-CN); one that says a locale still gives it."""
    tag = uuid.uuid4().hex[:8]
    phone = f"+86137{uuid.uuid4().int % 10**8:08d}"  # this test's alone: SMS are counted
    buyer = {"id": f"B-{tag}", "phone": phone, "locale": "ug-CN", "credit_limit_fen": 100000}
    await caravan.seed(SeedFile.model_validate({"buyers": [buyer]}))
    nick = f"nick-{tag}"
    mapping = f"/platform/{APP}/mappings/buyer/{nick}"
    said: dict[str | None, str] = {}
    for given in (None, "en"):
        body = {"buyer_id": buyer["id"]} | ({"locale": given} if given else {})
        put = await platform.adapter.put(mapping, json=body)
        assert put.status_code == 200, put.text
        order_ref = await new_order(platform.sim, phone=phone, buyer=nick)
        assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
        order_id = await placed_once(caravan, order_ref)
        [request] = requested(caravan, order_ref)
        assert request.data["buyer"].get("locale") == given, request.data
        [sent, *_] = await caravan.wait_for(partial(texted, caravan, order_id, phone))
        said[given] = sent.data["locale"]
    assert said == {None: "ug-CN", "en": "en"}, said


async def test_an_order_placed_and_then_shipped_on_the_platform_opens_no_problem(
    caravan: System, platform: Platform
) -> None:
    """A platform moves a paid order on (shipped, finished...) and pushes the change: the
    order it served was unreadable to the adapter, and each such push a 422 and an
    ``invalid_order`` problem for an order placed and fine. It is ``ignored``, counted; a
    status the adapter does not know (closed) is a problem naming our order, which a later
    push does not close."""
    order_ref = await new_order(platform.sim)
    order_id = await placed_and_told(caravan, platform, order_ref, "order.confirmed")
    ignored = {"app": APP, "outcome": "ignored"}
    before = await caravan.gauge("platform", "caravan_platform_pushes_total", **ignored)
    emitted = "select count(*) from platform.outbox where convert_from(key, 'UTF8') = :k"
    assert await caravan.scalar(emitted, k=order_ref) == 2  # requested, and paid
    for status in ("shipped", "WAIT_BUYER_CONFIRM_GOODS"):  # the platform's later statuses
        await new_order(platform.sim, status=status, order_id=order_ref)
        report = await push(platform.sim, order_ref, kind="notice")
        assert (report["status_code"], report["body"]) == (
            200,
            {"status": "ignored", "order_ref": order_ref},
        ), report
    after = await caravan.gauge("platform", "caravan_platform_pushes_total", **ignored)
    assert after == before + 2
    listed = await platform.adapter.get("/platform/problems", params={"app": APP, "all": True})
    assert [p for p in listed.json()["problems"] if p["platform_order_id"] == order_ref] == []
    assert await caravan.scalar(emitted, k=order_ref) == 2  # committed before the answers
    # Closed is no step of fulfilment: perhaps the buyer's money given back, for a sale that
    # goes on here. It was "ignored" as shipped is, and nobody told.
    await new_order(platform.sim, status="closed", order_id=order_ref)
    report = await push(platform.sim, order_ref, kind="notice")
    assert (report["status_code"], report["body"]["status"]) == (200, "problem"), report
    await new_order(platform.sim, status="finished", order_id=order_ref)
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "ignored"
    [(kind, detail)] = await open_problems(platform, order_ref)  # still open: for operations
    assert kind == "unknown_status" and f"our order {order_id}" in detail, detail


async def test_an_order_never_placed_in_a_status_we_do_not_know_is_a_problem_naming_it(
    caravan: System, platform: Platform
) -> None:
    """Whether a status the adapter does not know means paid cannot be told: an order never
    placed is a problem naming it (once, however often pushed), not a 422; a push finding
    it paid later places it and closes the problem."""
    order_ref = await new_order(platform.sim, status="TRADE_FINISHED")
    for kind in ("full", "notice"):
        report = await push(platform.sim, order_ref, kind=kind)
        assert (report["status_code"], report["body"]["status"]) == (200, "problem"), report
    [(kind, detail)] = await open_problems(platform, order_ref)
    assert kind == "unknown_status" and "'TRADE_FINISHED'" in detail, detail
    occurrences = await caravan.scalar(
        "select occurrences from platform.problems where platform_order_id = :r", r=order_ref
    )
    assert occurrences == 2
    assert await requests_written(caravan, order_ref) == 0
    await new_order(platform.sim, status="paid", order_id=order_ref)
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "accepted"
    await placed_once(caravan, order_ref)
    assert await open_problems(platform, order_ref) == []


async def test_a_paid_taobao_order_is_placed_and_confirmed(
    caravan: System, platform: Platform
) -> None:
    """Taobao names a paid order WAIT_SELLER_SEND_GOODS: it was an unknown_status problem
    ("find out whether it was paid"), never placed. It is placed and confirmed as ``paid``."""
    order_ref = await new_order(platform.sim, status="WAIT_SELLER_SEND_GOODS")
    report = await push(platform.sim, order_ref, kind="notice")
    assert (report["status_code"], report["body"]["status"]) == (200, "accepted"), report
    order_id = await placed_once(caravan, order_ref)
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    assert await open_problems(platform, order_ref) == []


async def test_pushes_that_are_not_parameters_or_name_no_order_ref_get_422(
    platform: Platform,
) -> None:
    """Each was a 500 with a traceback: a JSON string with no UTF-8 (a lone surrogate), a
    body nested past Python's recursion, an order id that cannot be an order_ref. A JSON
    body with no Content-Type was read as a form, refused quoting it, its sign too."""
    url = f"/platform/{APP}/push"
    json_body = {"content-type": "application/json"}
    lone = b'{"order_id": "\\ud800", "sign": "x"}'
    deep = b"[" * 50_000 + b"]" * 50_000
    slash = signed(
        {"app_key": APP, "timestamp": str(int(time.time())), "order_id": "P/../1"}, SECRET
    )
    answers = [
        await platform.adapter.post(url, content=lone, headers=json_body),
        await platform.adapter.post(url, content=deep, headers=json_body),
        await platform.adapter.post(url, data=slash),
        await platform.adapter.post(url, content=json.dumps(slash)),  # no Content-Type
        await platform.adapter.post(url, content=b'{"order_id": P-1}', headers=json_body),
        await platform.adapter.post(url, content=f"{urlencode(slash)}&order_id=P-2&sign=AB"),
    ]
    assert [a.status_code for a in answers] == [422] * 6, [a.text for a in answers]
    assert all(a.headers["content-type"].startswith("application/problem+json") for a in answers)
    assert "order_ref" in answers[2].json()["detail"]
    untyped = answers[3].json()["detail"]
    assert untyped == "the body has no Content-Type: send Content-Type: application/json"
    # Not JSON was said in the parser's words alone ("Expecting value: line 1 column 14 (char
    # 13)"), where the orders API says "not JSON: ...".
    said = "not JSON: Expecting value at character 13"
    assert answers[4].json()["errors"] == [{"field": "body", "message": said}], answers[4].text
    # A name twice in a form: which, so that its integrator need not guess (never a value).
    twice = "a parameter appears more than once: 'order_id', 'sign'"
    assert answers[5].json()["errors"] == [{"field": "body", "message": twice}], answers[5].text


async def push_to_wrong(
    platform: Platform, order_ref: str, secret: str = WRONG_SECRET
) -> httpx.Response:
    """A push of ``WRONG``'s order ``order_ref`` signed with ``secret`` (ours for the app by
    default, which its platform's order API refuses; its platform's, which our check refuses)."""
    params = {"app_key": WRONG, "timestamp": str(int(time.time())), "order_id": order_ref}
    return await platform.adapter.post(f"/platform/{WRONG}/push", data=signed(params, secret))


def wrongs_alert(alertname: str, outcome: str) -> dict[str, str]:
    """The labels of ``alertname`` fired for ``WRONG``'s pushes of ``outcome``."""
    return {"alertname": alertname, "severity": "warning", "app": WRONG, "outcome": outcome}


async def test_an_order_api_refusing_our_signature_is_a_502_saying_what_to_mend(
    caravan: System, platform: Platform
) -> None:
    """An app whose secret is not the platform's: the order API answers 401, and the push is
    answered 502 saying so and what to check (it was a 503 "push again later", Retry-After 1,
    which no push again mends), not 404 "the platform does not know it". An order API
    answering 500 is a 503 that says so."""
    order_ref = await new_order(platform.wrong)
    counted = {"app": WRONG, "outcome": "fetch_signature_refused"}  # not "fetch_failed"
    before = await caravan.gauge("platform", "caravan_platform_pushes_total", **counted)
    answer = await push_to_wrong(platform, order_ref)
    assert answer.status_code == 502, answer.text
    assert answer.json()["title"] == "Platform order API refused Caravan's request"
    assert "answered 401" in answer.json()["detail"] and "secret" in answer.json()["detail"]
    assert "retry-after" not in answer.headers
    after = await caravan.gauge("platform", "caravan_platform_pushes_total", **counted)
    assert after == before + 1
    # Its log line says what happened, where it ended "(None)" (the cause it has not).
    logged = (caravan.procs.log_dir / "platform.log").read_text().splitlines()
    [line] = [x for x in logged if f"order {order_ref} not fetched" in x]
    assert "the order API answered 401" in line and "(None)" not in line, line
    waiting = await new_order(platform.sim, status="wait_pay")  # the order API answers
    assert (await push(platform.sim, waiting))["body"]["status"] == "ignored"
    down = {"seconds": 30, "apis": ["orders"], "answer": 500}
    assert (await platform.sim.put("/down", json=down)).status_code == 200
    try:
        report = await push(platform.sim, await new_order(platform.sim))
        # Retry-After was 1 however long it failed: as long as it has, from the callbacks'
        # base (0.3 s here) to their cap (1.5 s here), in whole seconds.
        url = f"/platform/{APP}/push"
        first = await platform.adapter.post(url, json=report["params"])  # a 503 takes no id
        await asyncio.sleep(1.7)
        later = await platform.adapter.post(url, json=report["params"])
    finally:
        await platform.sim.put("/down", json={"seconds": 0, "apis": ["orders"]})
    assert report["status_code"] == 503, report
    assert report["body"]["detail"] == "the order API answered 500: push again later"
    waits = [(a.status_code, a.headers.get("retry-after")) for a in (first, later)]
    assert waits == [(503, "1"), (503, "2")], waits


async def test_the_operations_page_counts_the_pushes_whose_order_was_not_fetched(
    caravan: System, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A platform whose order API refuses our signature (its secret rotated on its side
    alone), or fails, has each push refused and no problem opened: operators did not learn
    that its paid orders were not coming in. The operations page counts those pushes of the
    last 10 minutes by app and outcome, marked, with what to check; none is a problem."""
    for name, value in caravan.procs.env.items():  # the page beside the services
        monkeypatch.setenv(name, value)
    page = Dashboard(Settings(token=caravan.token))
    await page.sample()
    refused_refs = [await new_order(platform.wrong) for _ in range(2)]
    for order_ref in refused_refs:  # signed as we sign: the platform's order API refuses us
        answer = await push_to_wrong(platform, order_ref)
        assert answer.status_code == 502, answer.text
    failed_ref = await new_order(platform.sim)
    down = {"seconds": 30, "apis": ["orders"], "answer": 503}
    assert (await platform.sim.put("/down", json=down)).status_code == 200
    try:
        assert (await push(platform.sim, failed_ref))["status_code"] == 503
    finally:
        await platform.sim.put("/down", json={"seconds": 0, "apis": ["orders"]})
    await page.sample()
    text = page.page()
    assert (
        f"<tr><td>platform pushes not fetched, last 10 minutes: {APP}, fetch_failed</td>"
        "<td class='act'><b>1</b></td>"
        "<td>the platform's order API (down, slow), the app's api_url</td></tr>"
        f"<tr><td>platform pushes not fetched, last 10 minutes: {WRONG},"
        " fetch_signature_refused</td><td class='act'><b>2</b></td>"
        "<td>the app's secret on both sides, both clocks</td></tr>"
    ) in text, text[text.find("Waiting for operations") :][:2000]
    assert {k: v for k, v in page.unfetched().items() if v} == {
        (APP, "fetch_failed"): 1,
        (WRONG, "fetch_signature_refused"): 2,
    }
    listed = await platform.adapter.get("/platform/problems", params={"all": True})
    opened = {r["platform_order_id"] for r in listed.json()["problems"]}
    assert opened.isdisjoint({*refused_refs, failed_ref}), opened


async def test_prometheus_fires_an_alert_once_the_order_api_refuses_our_signature(
    caravan: System, platform: Platform, tmp_path: Path
) -> None:
    """A push whose order the platform's order API refused us (401: the app's secret
    rotated on one side) fired no alert: operators learned of it when someone called. A real
    Prometheus, loading alerts.yml, fires ``CaravanPlatformOrdersNotFetched`` for the app and
    the outcome at the first one."""
    pushes = f'caravan_platform_pushes_total{{app="{WRONG}", outcome="fetch_signature_refused"}}'
    async with prometheus(caravan, tmp_path) as api:
        await scraped_twice(api, pushes)
        said = await ask(api, "/api/v1/alerts")
        assert firing(said, "CaravanPlatformOrdersNotFetched", app=WRONG) == []
        answer = await push_to_wrong(platform, await new_order(platform.wrong))
        assert answer.status_code == 502, answer.text
        alert = await fired(api, "CaravanPlatformOrdersNotFetched", app=WRONG)
    assert alert == wrongs_alert("CaravanPlatformOrdersNotFetched", "fetch_signature_refused")


async def test_prometheus_fires_an_alert_once_a_platform_s_pushes_fail_our_signature_check(
    caravan: System, platform: Platform, tmp_path: Path
) -> None:
    """A platform signing its pushes with a secret rotated on its side alone was answered 401
    ``bad_signature`` push after push, its orders kept out, and nothing told operations but a
    counter. A real Prometheus, loading alerts.yml, fires ``CaravanPlatformPushesRefused`` for
    the app at the third such push in 15 minutes."""
    pushes = f'caravan_platform_pushes_total{{app="{WRONG}", outcome="bad_signature"}}'
    async with prometheus(caravan, tmp_path) as api:
        await scraped_twice(api, pushes)
        for n in range(3):
            said = await ask(api, "/api/v1/alerts")
            assert firing(said, "CaravanPlatformPushesRefused", app=WRONG) == [], n
            answer = await push_to_wrong(platform, f"W-ROTATED-{n}", WRONG_PLATFORM_SECRET)
            assert answer.status_code == 401, answer.text
        alert = await fired(api, "CaravanPlatformPushesRefused", app=WRONG)
    assert alert == wrongs_alert("CaravanPlatformPushesRefused", "bad_signature")


async def test_a_refetch_the_order_api_fails_is_told_to_refetch_not_to_push(
    caravan: System, platform: Platform
) -> None:
    """A refetch's 502 (our signature refused) and 503 (the order API failing) said "push
    again", which its caller cannot do: it is an operator's call, not the platform's push.
    They say to refetch it, once the secret or clocks are mended, or later."""
    url = "/platform/refetch"
    order_ref = await new_order(platform.wrong)
    refused = await platform.adapter.post(url, json={"app": WRONG, "platform_order_id": order_ref})
    assert refused.status_code == 502, refused.text
    assert refused.json()["detail"] == (
        "the order API answered 401 to Caravan's signed request: check that the app's secret"
        " is the same on both sides, and both clocks; then refetch it"
    )
    order_ref = await new_order(platform.sim)
    down = {"seconds": 30, "apis": ["orders"], "answer": 500}
    assert (await platform.sim.put("/down", json=down)).status_code == 200
    try:
        failed = await platform.adapter.post(url, json={"app": APP, "platform_order_id": order_ref})
    finally:
        await platform.sim.put("/down", json={"seconds": 0, "apis": ["orders"]})
    assert failed.status_code == 503, failed.text
    assert failed.json()["detail"] == (
        "the order API answered 500: refetch it later, once the platform's order API answers"
        " (is it up?)"
    )


async def test_an_order_api_trickling_its_answer_is_a_503_within_the_deadline(
    caravan: System, platform: Platform
) -> None:
    """httpx's timeout is of each read: an order API sending a byte every half second held
    the push for as long as it liked (the simulator's push gave up at 10 s). The fetch has a
    deadline in all (3 s here), answered 503 as the order API's other failures are; a push
    once it answers again places the order."""
    order_ref = await new_order(platform.sim)
    assert (await platform.sim.put("/trickle", json={"seconds": 60, "every": 0.5})).is_success
    try:
        started = time.monotonic()
        report = await push(platform.sim, order_ref)
        took = time.monotonic() - started
    finally:
        await platform.sim.put("/trickle", json={"seconds": 0})
    assert report["status_code"] == 503, report
    said = "the order API did not send the whole order within 3 s: push again later"
    assert report["body"]["detail"] == said, report
    assert took < 6, took
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    await placed_once(caravan, order_ref)


async def test_an_order_api_slower_than_the_requests_database_bound_is_a_503_not_a_500(
    caravan: System, platform: Platform
) -> None:
    """The push's request is bounded on PostgreSQL (CARAVAN_HTTP_DB_TIMEOUT_SECONDS, 8 s) and
    its fetch by the order API's deadline (10 s): PLAT61's order API sending its answer over
    more than 8 s, each read within 5 s, had the push answered 500 "a fault of Caravan's"
    after 8 s, where the guide promises a 503 naming the deadline. The same here with a bound
    of 2.5 s below the deadline of 3 s."""
    order_ref = await new_order(platform.sim)
    await caravan.restart(("platform",), **platform.env, CARAVAN_HTTP_DB_TIMEOUT_SECONDS="2.5")
    try:
        assert (await platform.sim.put("/trickle", json={"seconds": 60, "every": 0.5})).is_success
        try:
            report = await push(platform.sim, order_ref)
        finally:
            await platform.sim.put("/trickle", json={"seconds": 0})
        assert (report["status_code"], report["body"]["detail"]) == (
            503,
            "the order API did not send the whole order within 3 s: push again later",
        ), report
        assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    finally:
        await caravan.restart(("platform",), **platform.env)
    await placed_once(caravan, order_ref)


async def test_a_push_in_flight_as_the_adapter_stops_is_answered_and_its_order_placed(
    caravan: System, platform: Platform
) -> None:
    """A graceful stop (SIGTERM: every deploy) lets the HTTP API answer the requests in
    flight, but the callback loop's end closed the order API's client the pushes fetch
    through: a push whose fetch was under way, or came in meanwhile, was answered 500
    (`Cannot send a request, as the client has been closed`), its order never placed unless
    the platform pushed it again. The client is closed once the last request is answered.
    The order API holds its answer 1.5 s; the adapter is stopped once it has been asked."""
    order_ref = await new_order(platform.sim)
    assert (await platform.sim.put("/slow", json={"seconds": 60, "by": 1.5})).is_success
    try:
        pushing = asyncio.create_task(push(platform.sim, order_ref))

        async def fetched() -> list[Any]:
            answer: list[Any] = (await platform.sim.get(f"/fetches?order_id={order_ref}")).json()
            return answer

        await until(fetched, "the adapter to fetch the pushed order")
        await caravan.restart(("platform",), **platform.env)  # stopped (SIGTERM), started
        report = await pushing
    finally:
        await platform.sim.put("/slow", json={"seconds": 0, "by": 0})
    assert (report["status_code"], report["body"].get("status")) == (200, "accepted"), report
    await placed_once(caravan, order_ref)


def demo_settings(caravan: System, platform: Platform) -> tuple[Settings, SeedFile]:
    """The settings ``caravan demo`` runs with against this session's system, and its seed."""
    settings = Settings(
        platform_apps=json.loads(platform.env["CARAVAN_PLATFORM_APPS"]),
        platform_http_port=int(caravan.procs.env["CARAVAN_PLATFORM_HTTP_PORT"]),
        token=caravan.token,
    )
    # The demo picks products at random: not the scarce one, whose stock other tests count.
    seed = conftest.test_seed()
    return settings, seed.model_copy(
        update={"products": [p for p in seed.products if p.sku != "T-SCARCE"]}
    )


async def test_caravan_demo_drives_orders_through_the_simulator(
    caravan: System, platform: Platform
) -> None:
    settings, seed = demo_settings(caravan, platform)
    outcomes = await run_platform_demo(settings, seed, DEMO, count=3, timeout=60)
    assert len(outcomes) == 3
    assert all(o.status in ("confirmed", "cancelled") for o in outcomes), outcomes
    # The seed's last demo order is for an out-of-season product.
    assert ("cancelled", "out_of_season") in {(o.status, o.reason) for o in outcomes}
    for o in outcomes:
        assert [e.source for e in requested(caravan, o.order_ref)] == [f"platform/{DEMO}"]


async def test_caravan_demo_says_what_becomes_of_platform_orders_it_did_not_see_told(
    caravan: System, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform orders a demo pushed and did not see told by its end (its minute out, or
    Ctrl-C) are told by the adapter to the demo's simulator, stopped with it: their callbacks
    wait, then fail, and nothing said so (the summary said "pending"; Ctrl-C, nothing at all).
    The demo says so, and stopped says what it had pushed and seen told, as its storefront
    part does."""
    settings, seed = demo_settings(caravan, platform)
    untold = (
        "platform order(s) pushed and not told their outcome yet: the platform adapter calls"
        " the simulator back for them, which has stopped, so their callbacks wait (caravan"
        f" platform callbacks --app {DEMO} --status pending)"
    )
    # Stopped (Ctrl-C: the task cancelled) once its orders are pushed and told. Its run id
    # known, to tell its orders' callbacks from those of earlier demos the adapter still tells
    # (to the simulator on the same port: the one stopped below is among them).
    run = uuid.uuid4()
    monkeypatch.setattr(demo_module, "uuid", SimpleNamespace(uuid4=lambda: run))
    console = Console(record=True, width=400)
    demo = asyncio.create_task(
        run_platform_demo(settings, seed, DEMO, count=2, timeout=60, console=console)
    )
    sim = f"http://127.0.0.1:{httpx.URL(settings.platform_apps[DEMO].api_url).port}"
    async with httpx.AsyncClient(base_url=sim) as client:

        async def told() -> int:
            try:
                answer = await client.get("/callbacks")
            except httpx.HTTPError:
                return 0  # not started yet
            if not answer.is_success:
                return 0
            ours = f"MKT-{run.hex[:6]}-"
            return sum(c["order_id"].startswith(ours) for c in answer.json()["callbacks"])

        # Both told: both pushed.
        await until(told, "both orders told to the demo's simulator", ready=lambda n: n >= 2)
    demo.cancel()
    with pytest.raises(asyncio.CancelledError):
        await demo
    said = console.export_text()
    assert "stopped: 2 of 2 platform orders pushed; ended so far: " in said, said
    # Its minute out (none here): the orders it pushed not told yet.
    monkeypatch.undo()
    console = Console(record=True, width=400)
    outcomes = await run_platform_demo(settings, seed, DEMO, count=2, timeout=0, console=console)
    assert [o.status for o in outcomes] == ["pending", "pending"]
    assert f"2 {untold}" in console.export_text()


class _SecondAnswerHeld:
    """The demo's client of its simulator, through which the answer to the second order's
    push is held back once the adapter has answered the simulator: a push in flight when
    the demo is stopped, which the adapter has taken."""

    def __init__(self, client: httpx.AsyncClient, held: asyncio.Event) -> None:
        self.client, self.held, self.pushed = client, held, list[str]()

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        answer = await self.client.post(path, **kwargs)
        if path.endswith("/push") and kwargs.get("json") == {"kind": "full"}:
            self.pushed.append(path.split("/")[2])
            if len(self.pushed) == 2:
                self.held.set()
                await asyncio.Event().wait()  # till the demo is stopped
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


async def test_caravan_demo_stopped_with_a_push_in_flight_says_it_not_acknowledged(
    caravan: System, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the simulator's push of an order was answered by the adapter and its
    answer not back: the stop line said one order fewer pushed than the adapter took
    ("stopped: 1 of 2 platform orders pushed"), as if the second had not gone. It says it
    was pushed and not acknowledged, as the storefront part says of orders Kafka has not."""
    settings, seed = demo_settings(caravan, platform)
    clients: list[_SecondAnswerHeld] = []
    second = asyncio.Event()

    @contextlib.asynccontextmanager
    async def held(*args: Any, **kwargs: Any) -> AsyncIterator[_SecondAnswerHeld]:
        async with simulator(*args, **kwargs) as client:  # the app's secret in env=
            clients.append(_SecondAnswerHeld(client, second))
            yield clients[-1]

    monkeypatch.setattr(demo_module, "simulator", held)
    console = Console(record=True, width=400)
    demo = asyncio.create_task(
        run_platform_demo(settings, seed, DEMO, count=2, timeout=60, console=console)
    )
    await asyncio.wait_for(second.wait(), 120)  # its second push answered, not the demo
    demo.cancel()
    with pytest.raises(asyncio.CancelledError):
        await demo
    # Both taken by the adapter: each one request to place it, written before its answer.
    assert [await requests_written(caravan, ref) for ref in clients[0].pushed] == [1, 1]
    said = console.export_text()
    line = "stopped: 1 of 2 platform orders pushed; 1 not acknowledged by the platform adapter;"
    assert line in said, said


async def a_callback_delivered(
    caravan: System, platform: Platform
) -> tuple[str, CloudEvent, Callable[[], Awaitable[tuple[str, int]]]]:
    """A platform order placed, and the callback of its outcome delivered: the order ref, the
    outcome, and a read of the callback's status and attempts."""
    order_ref = await new_order(platform.sim)
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    outcome = await caravan.outcome(await placed_once(caravan, order_ref))

    async def status() -> tuple[str, int]:
        query = "select status, attempts from platform.callbacks where event_id = :e"
        [(said, attempts)] = await caravan.sql(query, e=outcome.id)
        return said, attempts

    await until(status, "the callback delivered", ready=lambda s: s[0] == "delivered")
    return order_ref, outcome, status


async def test_failed_callbacks_are_sent_again_on_request(
    caravan: System, platform: Platform
) -> None:
    """A callback the status API refused for good (a 400, or every attempt spent) stayed
    failed for ever; operations can now send it again once the platform is put right."""
    order_ref, outcome, status = await a_callback_delivered(caravan, platform)
    await caravan.execute(  # as if the status API had answered 400
        "update platform.callbacks set status = 'failed' where event_id = :e", e=outcome.id
    )
    retry = {"event_ids": [outcome.id]}
    answer = await platform.adapter.post("/platform/callbacks/retry", json=retry)
    told = {"requeued": 1, "failed": 1, "pending": 0, "event_ids": [outcome.id]}
    assert answer.json() == told, answer.text
    assert await until(status, "sent again", ready=lambda s: s[0] == "delivered") == (
        "delivered",
        1,  # from a first attempt
    )
    again = await platform.adapter.post(
        "/platform/callbacks/retry", json={"event_ids": [outcome.id.upper()]}
    )
    nothing = {"requeued": 0, "failed": 0, "pending": 0, "event_ids": []}
    assert again.json() == nothing  # delivered: nothing to send
    audited = await caravan.scalar(
        "select count(*) from auth.audit where action = 'platform.callbacks.retry'"
        " and detail -> 'event_ids' ? :e",
        e=outcome.id,
    )
    assert audited == 1
    received = await callbacks(platform.sim, order_ref)
    assert len(received["requests"]) >= 2, received  # told twice, applied once (its key)


async def test_a_pending_callback_is_sent_at_once_on_request(
    caravan: System, platform: Platform
) -> None:
    """Once the platform's status API was back, a callback still pending waited out its
    backoff (up to the cap, 300 s by default), and ``retry`` sent only failed ones: it
    answered ``{"requeued": 0}`` and nothing hurried it. A pending one is sent at once, its
    attempts kept (it was given a new budget, as a failed one is, attempts 0 again: hurried
    through an outage, it would never fail), the answer counting it pending, not failed; one
    being sent (its claim's to record) is left alone."""
    _, outcome, status = await a_callback_delivered(caravan, platform)
    waiting = (
        "update platform.callbacks set status = :s, attempts = 7,"
        " next_attempt_at = now() + interval '1 hour' where event_id = :e"
    )
    retry = {"app": APP, "event_ids": [outcome.id]}
    try:
        await caravan.execute(waiting, s="sending", e=outcome.id)  # as if claimed, being sent
        answer = await platform.adapter.post("/platform/callbacks/retry", json=retry)
        nothing = {"requeued": 0, "failed": 0, "pending": 0, "event_ids": []}
        assert answer.json() == nothing, answer.text
        assert await status() == ("sending", 7)
        await caravan.execute(waiting, s="pending", e=outcome.id)  # its next try an hour away
        answer = await platform.adapter.post("/platform/callbacks/retry", json=retry)
        told = {"requeued": 1, "failed": 0, "pending": 1, "event_ids": [outcome.id]}
        assert answer.json() == told, answer.text
        sent = await until(status, "sent at once", ready=lambda s: s[0] == "delivered")
        assert sent == ("delivered", 8)  # its eighth attempt, not a first
    finally:  # nothing left due an hour from now
        await caravan.execute(
            "update platform.callbacks set status = 'delivered' where event_id = :e",
            e=outcome.id,
        )


async def test_a_retry_naming_nothing_an_unknown_app_or_no_event_id_is_refused(
    platform: Platform,
) -> None:
    """Each was a 200 ``{"requeued": 0, "event_ids": []}``, as if nothing had failed."""
    refused = {
        "name an app, or event ids": {},
        f"no app 'nosuch': not in CARAVAN_PLATFORM_APPS, and no callback of it {THE_APPS}": {
            "app": "nosuch"
        },
        "not an event id: a UUID": {"event_ids": ["not-a-uuid"]},
    }
    for said, body in refused.items():
        answer = await platform.adapter.post("/platform/callbacks/retry", json=body)
        assert answer.status_code == 422, answer.text
        assert said in answer.text, answer.text


async def test_the_lists_of_an_unknown_app_are_refused_as_its_retry_is(
    caravan: System, platform: Platform
) -> None:
    """``GET /platform/callbacks?app=nosuch`` and ``/platform/problems?app=nosuch`` answered
    empty lists, as if all were well with a name mistyped; they are refused as the retry of
    such an app is. An app configured with none, or no longer configured but with rows, is
    listed. The refusal names the apps there are (a drill's operator was told only which was
    not), as a refetch of such an app is told, and no secret of theirs."""
    for path, rows in (("/platform/callbacks", "callback"), ("/platform/problems", "problem")):
        answer = await platform.adapter.get(path, params={"app": "nosuch"})
        assert answer.status_code == 422, answer.text
        said = f"no app 'nosuch': not in CARAVAN_PLATFORM_APPS, and no {rows} of it {THE_APPS}"
        assert (answer.json()["title"], answer.json()["detail"]) == ("Unknown app", said)
        assert SECRET not in answer.text and WRONG_SECRET not in answer.text, answer.text
        configured = await platform.adapter.get(path, params={"app": WRONG})
        assert configured.status_code == 200, configured.text
    body = {"app": "nosuch", "platform_order_id": "P-NOSUCH"}
    answer = await platform.adapter.post("/platform/refetch", json=body)
    said = f"no app 'nosuch' in CARAVAN_PLATFORM_APPS {THE_APPS}"
    assert (answer.status_code, answer.json()["detail"]) == (422, said), answer.text
    gone = f"t-gone-{uuid.uuid4().hex[:6]}"
    await caravan.execute(
        "insert into platform.problems (app, platform_order_id, kind, detail)"
        " values (:a, 'P-GONE', 'unmapped_sku', 'x')",
        a=gone,
    )
    listed = await platform.adapter.get("/platform/problems", params={"app": gone})
    assert [p["platform_order_id"] for p in listed.json()["problems"]] == ["P-GONE"], listed.text
    unknown = await platform.adapter.get("/platform/callbacks", params={"app": gone})
    assert unknown.status_code == 422, unknown.text


async def test_the_mappings_of_an_unknown_app_are_refused_as_its_lists_are(
    caravan: System, platform: Platform
) -> None:
    """``PUT /platform/farm-mal/mappings/sku/MALL-X`` (an app mistyped) was 200, its mapping
    used by no order, every order of the real app an unmapped problem; reading or deleting
    a mapping of it, or listing its mappings (an empty list), as if all were well. Each is
    refused as the problems and callbacks of such an app are; an app configured with no
    mapping, or with mappings but configured no longer, is taken."""
    typo = f"t-mal-{uuid.uuid4().hex[:6]}"
    said = f"no app {typo!r}: not in CARAVAN_PLATFORM_APPS, and no mapping of it {THE_APPS}"
    one = f"/platform/{typo}/mappings/sku/MALL-X"
    answers = [
        await platform.adapter.put(one, json={"sku": "T-PEPPER"}),
        await platform.adapter.get(one),
        await platform.adapter.delete(one),
        await platform.adapter.get(f"/platform/{typo}/mappings"),
    ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert (answer.json()["title"], answer.json()["detail"]) == ("Unknown app", said)
    stored = "select count(*) from platform.mappings where app = :app"
    assert await caravan.scalar(stored, app=typo) == 0
    audited = "select count(*) from auth.audit where target like :t"
    assert await caravan.scalar(audited, t=f"{typo}/%") == 0
    configured = await platform.adapter.get(f"/platform/{WRONG}/mappings")
    assert configured.status_code == 200, configured.text
    await caravan.execute(
        "insert into platform.mappings (app, kind, external_id, value)"
        " values (:app, 'sku', 'MALL-Y', cast(:v as jsonb))",
        app=typo,
        v='{"sku": "T-PEPPER"}',
    )
    try:  # its rows there: another instance's app, or one configured no longer
        put = await platform.adapter.put(one, json={"sku": "T-PEPPER"})
        assert put.status_code == 200, put.text
        listed = await platform.adapter.get(f"/platform/{typo}/mappings")
        assert [m["external_id"] for m in listed.json()["mappings"]] == ["MALL-X", "MALL-Y"]
    finally:
        await caravan.execute("delete from platform.mappings where app = :app", app=typo)


async def test_a_status_callback_is_made_in_the_orders_trace(
    caravan: System, platform: Platform, tmp_path: Path
) -> None:
    """The call telling the platform an order's outcome is a span in the order's trace, that
    of the outcome told (it was made in none, and its log lines had no trace). Every service
    writes its spans: a span continuing one not recorded is not recorded either."""
    trace_dir = tmp_path / "traces"
    await caravan.restart(SERVICES, **platform.env, CARAVAN_TRACE_DIR=str(trace_dir))
    try:
        order_ref = await new_order(platform.sim)
        assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
        order_id = await placed_once(caravan, order_ref)
        outcome = await caravan.outcome(order_id)
        await until(lambda: _applied(platform.sim, order_ref), "the callback", every=0.2)
        [told] = [
            r for r in caravan.log.raw(Topic.ORDER_EVENTS.value) if outcome.id.encode() in r.value
        ]

        def calls() -> list[dict[str, Any]]:
            return [
                s
                for s in spans(trace_dir, "platform")
                if s["name"] == "platform status callback"
                and s["attributes"].get("caravan.order_id") == order_id  # type: ignore[attr-defined]
            ]

        assert [s["trace_id"] for s in await caravan.wait_for(calls)] == [trace_id(told)]
    finally:
        others = tuple(service for service in SERVICES if service != "platform")
        await caravan.relaunch(others)
        await caravan.restart(("platform",), **platform.env)  # all five ready together


async def _unplaced(
    caravan: System, app: str, order_ref: str, request_event_id: str | None = None
) -> None:
    """A platform order the adapter asked to place, not placed yet (its row, as a push
    leaves it with the request it published)."""
    await caravan.execute(
        "insert into platform.platform_orders (app, platform_order_id, request_event_id)"
        " values (:app, :ref, :event)",
        app=app,
        ref=order_ref,
        event=request_event_id or str(uuid.uuid4()),
    )


async def test_an_outcome_that_comes_before_its_order_placed_is_called_back_once_it_comes(
    caravan: System, platform: Platform
) -> None:
    """An ``order.placed`` dead-lettered by the adapter and redriven after its outcome (or
    one on another partition, or a replay starting between them): the outcome waits for it,
    and the platform is told once, however often either comes again."""
    order_ref = f"P-EARLY-{uuid.uuid4().hex[:8]}"
    await _unplaced(caravan, APP, order_ref)
    order = order_events(order_ref, "+8613900000001", source=f"platform/{APP}")
    confirmed = await caravan.publish(order.confirmed)
    await caravan.handled("platform", confirmed)
    placed = await caravan.publish(order.placed)
    await until(lambda: _applied(platform.sim, order_ref), "the outcome's callback", every=0.2)
    for event, data in ((confirmed, order.confirmed), (placed, order.placed)):
        await caravan.publish_event(event, data)  # delivered again
    # Handled after those (one key, one partition): they were handled by then.
    await caravan.handled("platform", await caravan.publish(order.placed))
    # Another order, both events in one batch: the cancellation first.
    late_ref = f"P-EARLY-{uuid.uuid4().hex[:8]}"
    await _unplaced(caravan, APP, late_ref)
    late = order_events(late_ref, "+8613900000001", source=f"platform/{APP}")
    await asyncio.to_thread(caravan.procs.stop, caravan.procs.hosts(("platform",)))
    try:
        cancelled = await caravan.publish(late.cancelled)
        late_placed = await caravan.publish(late.placed)
    finally:
        await caravan.restart(("platform",), **platform.env)
    await until(lambda: _applied(platform.sim, late_ref), "the cancellation's callback", every=0.2)
    assert await caravan.transactions("platform", cancelled, late_placed) == 1  # the batch path
    # Every event of both orders handled (above), their callbacks are all written; each once
    # delivered (marked after the platform's answer) is never sent again.
    rows = "select status from platform.callbacks where platform_order_id in (:a, :b)"
    delivered = await until(
        lambda: caravan.sql(rows, a=order_ref, b=late_ref),
        "the callbacks marked delivered",
        every=0.2,
        ready=lambda found: {r.status for r in found} == {"delivered"},
    )
    assert len(delivered) == 2, delivered
    told = [
        (c["idempotency_key"], c["status"], c["reason"], c["requests"])
        for ref in (order_ref, late_ref)
        for c in await _applied(platform.sim, ref)
    ]
    assert told == [
        (confirmed.id, "confirmed", None, 1),
        (cancelled.id, "cancelled", "out_of_stock", 1),
    ]


async def test_a_paid_read_decided_after_a_cancelled_one_does_not_place_the_order(
    caravan: System, platform: Platform
) -> None:
    """Push A reads the order paid, push B then reads it cancelled (final on the platform), and
    B is decided first (A held between its fetch and its decision, as by a slow order API
    answer: here by a row of A's push id not committed yet). A found nothing placed and placed
    it, closing every problem; now it opens a ``paid_after_cancelled`` problem. Resolved by
    hand (the platform having it paid all the same), the order is placed by a push again."""
    order_ref = await new_order(platform.sim, status="cancelled")
    answers = {"statuses": ["paid"]}  # A's fetch, the first; the later ones read cancelled
    assert (await platform.sim.post(f"/orders/{order_ref}/answers", json=answers)).is_success
    held = f"A-{uuid.uuid4().hex}"
    assert caravan.engine is not None
    async with caravan.engine.connect() as conn:
        tx = await conn.begin()
        row = {"a": APP, "p": held}
        await conn.execute(
            text("insert into platform.pushes (app, push_id, fingerprint) values (:a, :p, 'x')"),
            row,
        )
        a = asyncio.create_task(push(platform.sim, order_ref, kind="notice", push_id=held))
        await caravan.lock_waiters(await backend_pid(conn), "push A to wait for its row")
        b = await push(platform.sim, order_ref, kind="notice")
        assert (b["status_code"], b["body"]["status"]) == (200, "ignored"), b
        await tx.rollback()
    report = await a
    assert (report["status_code"], report["body"]["status"]) == (200, "problem"), report
    [(kind, detail)] = await open_problems(platform, order_ref)
    assert kind == "paid_after_cancelled" and "'cancelled'" in detail, detail
    assert await requests_written(caravan, order_ref) == 0
    body = {"app": APP, "platform_order_id": order_ref}
    resolved = await platform.adapter.post("/platform/problems/resolve", json=body)
    assert resolved.json() == {"resolved": ["paid_after_cancelled"]}, resolved.text
    await new_order(platform.sim, order_id=order_ref)  # paid all the same
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "accepted"
    await placed_once(caravan, order_ref)


async def test_resolving_no_problem_keeps_a_cancellation_seen_before_the_order_was_placed(
    caravan: System, platform: Platform
) -> None:
    """An order read cancelled before it was placed, whose problems an operator resolves when
    none is open (nothing to resolve, nothing audited), is still remembered cancelled: a
    later push reading it paid opens a ``paid_after_cancelled`` problem instead of placing
    an order the platform cancelled (resolving used to forget the cancellation all the same)."""
    order_ref = await new_order(platform.sim, status="cancelled")
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "ignored"
    body = {"app": APP, "platform_order_id": order_ref}
    resolved = await platform.adapter.post("/platform/problems/resolve", json=body)
    assert resolved.json() == {"resolved": []}, resolved.text
    assert await resolutions_audited(caravan, order_ref) == 0
    await new_order(platform.sim, order_id=order_ref)  # a late read of it paid
    report = await push(platform.sim, order_ref, kind="notice")
    assert (report["status_code"], report["body"]["status"]) == (200, "problem"), report
    assert [kind for kind, _ in await open_problems(platform, order_ref)] == [
        "paid_after_cancelled"
    ]
    assert await requests_written(caravan, order_ref) == 0
