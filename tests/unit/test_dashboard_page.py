"""The operations page says how old its figures are and which it could not get, rather
than showing old or missing figures as live ones (caravan.ops.dashboard, pure rendering)."""

import asyncio
import contextlib
import html
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka import errors
from fastapi import FastAPI
from pydantic import SecretStr

from caravan import checkout, cli
from caravan.ops import dlq
from caravan.ops.dashboard import (
    DEAD_LETTERS_EVERY,
    HEALTH_NOTE,
    NOT_FETCHED,
    UNFETCHED_WINDOW,
    UNKNOWN_APP,
    Dashboard,
    Snapshot,
    ports,
)
from services import SERVICES
from services.orders.asyncapi import consumers
from services.platform import metrics as platform_metrics
from services.platform.domain.orders import ProblemKind
from shared.auth.tokens import Lookup, Principal, digest
from shared.db.engine import CLOSE_WITHIN
from shared.http import PROBLEM, RETRY_SECONDS
from shared.messaging import kafka_admin
from shared.settings import Settings
from tests.unit.conftest import Clock, Coordinator, kafka_away_a_minute, said


def board() -> Dashboard:
    return Dashboard(Settings(), interval=3.0)


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The wall clock (``time.time``) stopped where it is, the test's and the page's reads one
    time: a loaded machine (CI at load 25) passed a second between them, and the page said
    "61 s ago" where "60" was asked."""
    clock = Clock()
    clock.now = time.time()
    monkeypatch.setattr(time, "time", clock)
    return clock


def test_fresh_figures_say_when_they_were_taken() -> None:
    page = board()
    page.history.append(Snapshot(at=time.time() - 1, stuck=[]))
    text = page.page()
    assert "figures as of " in text and "<b>stale</b>" not in text
    assert "<tr><td colspan=3>none</td></tr>" in text


def test_figures_older_than_two_samples_are_marked_stale_with_the_reason(
    wall_clock: Clock,
) -> None:
    """The warning said "sampling has not succeeded since: <why>", since no time, and the
    figures under it looked live: the class ``stale`` they were to carry had no style."""
    page = board()
    at = wall_clock.now - 60
    page.history.append(Snapshot(at=at))
    page.failure = "KafkaConnectionError('Unable to bootstrap <here>')"
    text = page.page()
    assert "(60 s ago)" in text and "<b>stale</b>" in text
    taken = time.strftime("%H:%M:%S", time.localtime(at))
    assert f"sampling has not succeeded since {taken}: KafkaConnectionError(" in text
    assert "Unable to bootstrap &lt;here&gt;" in text
    figures = text.split("<div class='stale'><h2>Throughput", 1)
    assert len(figures) == 2 and "<h2>Stuck orders" in figures[1], text
    assert ".stale{opacity:" in text.split("<style>")[1].split("</style>")[0]
    page.history.append(Snapshot(at=wall_clock.now))
    assert "<div class='stale'>" not in page.page()


def test_figures_it_could_not_get_are_not_shown_as_none() -> None:
    page = board()
    page.history.append(
        Snapshot(
            at=time.time(),
            unavailable={"stuck": "HTTP 403", "dead_letters": "Kafka unreachable (Timeout)"},
        )
    )
    text = page.page()
    assert "unavailable: HTTP 403" in text and ">none<" not in text
    assert "unavailable: Kafka unreachable (Timeout)" in text


def test_dead_letters_waiting_are_told_from_those_redriven() -> None:
    """The page counted every letter kept in a topic: "12" after all 12 were mended and sent
    back, while ``caravan dlq list`` said each was redriven."""
    page = board()
    kept = {"orders.requests.v1.dlq": 12, "orders.events.v1.dlq": 3}
    page.history.append(
        Snapshot(at=time.time(), dead_letters=kept, redriven={"orders.requests.v1.dlq": 12})
    )
    text = page.page()
    assert "<th>waiting</th><th title='Letters sent back" in text
    assert "<tr><td>orders.requests.v1.dlq</td><td>0</td><td>12</td><td>0</td></tr>" in text
    assert (
        "<tr><td>orders.events.v1.dlq</td><td class='act'><b>3</b></td><td>0</td><td>0</td></tr>"
    ) in text
    unknown = {"redriven": "cannot reach PostgreSQL: connection refused"}
    page.history.append(Snapshot(at=time.time(), dead_letters=kept, unavailable=unknown))
    text = page.page()
    waiting = "<td class='act'><b>12</b></td><td>?</td><td>?</td>"
    assert f"<tr><td>orders.requests.v1.dlq</td>{waiting}</tr>" in text
    assert (
        "which were redriven or discarded is not known (all are counted waiting): cannot reach"
        " PostgreSQL"
    ) in text


async def test_each_group_s_members_are_named_and_those_gone_marked(no_database: None) -> None:
    """A drill ran payments as two instances and kill -9'd the second: the page, reading one
    port per service, said every service up and nothing of the instance lost. Each group's
    members are named, with those seen in the last ten minutes that are gone (not while
    Kafka cannot say, nor once one is back under its client id and host), on the page and in
    its JSON."""
    page = board()
    first, second = (f"caravan-payments-{n}-consumer (10.0.0.{n})" for n in (1, 2))
    both = {"payments": [first, second]}
    away = {"members": "Kafka unreachable (KafkaConnectionError)"}
    page.history.append(Snapshot(at=100.0, groups={"payments": "Stable"}, members=both))
    page.history.append(Snapshot(at=103.0, unavailable=away))
    one = {"payments": [first]}
    page.history.append(Snapshot(at=time.time(), groups={"payments": "Stable"}, members=one))
    assert page.gone() == {"payments": {second: 100.0}}
    seen = time.strftime("%H:%M:%S", time.localtime(100.0))
    assert (
        "<tr><td>payments</td><td>caravan-payments</td><td>Stable</td><td>1</td>"
        f"<td>{first}</td><td class='down'>{second} (last seen {seen})</td></tr>"
    ) in page.page()
    no_group = "<tr><td>orders</td><td>caravan-orders</td><td></td><td>0</td><td></td><td></td>"
    assert no_group in page.page()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=signed_in(page)), base_url="http://page"
    ) as client:
        got = await client.get("/api/snapshot", headers={"Authorization": f"Bearer {OPERATOR}"})
    assert got.json()["members"] == one and got.json()["gone"] == {"payments": {second: 100.0}}
    page.history.append(Snapshot(at=time.time(), unavailable=away))
    assert page.gone() == {}
    assert f"unavailable: {away['members']}" in page.page()
    page.history.append(Snapshot(at=time.time(), members=both))  # back
    assert page.gone() == {}


async def test_a_group_kafka_cannot_describe_now_has_its_members_unknown_and_none_gone(
    no_database: None, waiting: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While its coordinator loads a group (a broker restarted) or the group moves to another
    broker, DescribeGroups answers it with that error and no member: the page said the group
    had 0 members and marked every instance seen in the last ten minutes gone."""
    settings = Settings(token="cvn_" + "g" * 43)
    page = Dashboard(settings, transport=httpx.MockTransport(stopped(settings)))
    both = ["caravan-payments-1", "caravan-payments-2"]
    page.history.append(Snapshot(at=time.time() - 3, members={"payments": both}))
    loading = Coordinator({"caravan-payments": errors.CoordinatorLoadInProgressError.errno})

    async def describe_groups(
        bootstrap: str, groups: list[str], settings: Any
    ) -> dict[str, kafka_admin.GroupState]:
        return await kafka_admin.described(loading, groups)

    monkeypatch.setattr(kafka_admin, "describe_groups", describe_groups)
    snap = await page.sample()
    assert page.gone() == {}
    text = page.page()
    assert (
        "<tr><td>payments</td><td>caravan-payments</td><td colspan=4>members unknown for now"
        " (its coordinator answered COORDINATOR_LOAD_IN_PROGRESS)</td></tr>"
    ) in text
    assert "<tr><td>orders</td><td>caravan-orders</td><td>Stable</td><td>1</td>" in text
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=signed_in(page)), base_url="http://page"
    ) as client:
        got = await client.get("/api/snapshot", headers={"Authorization": f"Bearer {OPERATOR}"})
    said = got.json()
    assert (
        said["members_unknown"]
        == snap.members_unknown
        == {"payments": "its coordinator answered COORDINATOR_LOAD_IN_PROGRESS"}
    )
    assert "payments" not in said["members"] and said["gone"] == {}
    loading.errors.clear()  # loaded: the instance not back is gone
    await page.sample()
    assert page.gone() == {"payments": {"caravan-payments-2": page.history[0].at}}


async def test_kafka_away_is_one_warning_in_the_page_s_log_then_a_line_when_it_answers(
    no_database: None,
    waiting: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    faults: Clock,
) -> None:
    """Kafka away, the page's log said aiokafka's own line and nothing when Kafka answered
    again (its groups, read every sample, were said unavailable on the page only). Now it
    says so as a service's lag sample does: one warning, its repeat a minute later, and one
    line when Kafka answers."""
    settings = Settings(token="cvn_" + "k" * 43)
    page = Dashboard(settings, transport=httpx.MockTransport(stopped(settings)))
    away = errors.KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")
    up = False

    async def describe_groups(
        bootstrap: str, groups: list[str], settings: Any
    ) -> dict[str, kafka_admin.GroupState]:
        if not up:
            raise away
        return await kafka_admin.described(Coordinator(), groups)

    monkeypatch.setattr(kafka_admin, "describe_groups", describe_groups)
    for _ in range(13):  # a minute, every 5 s
        snap = await page.sample()
        assert snap.unavailable["members"] == "Kafka unreachable (KafkaConnectionError)"
        faults.now += 5
    up = True
    assert "members" not in (await page.sample()).unavailable
    warned = f"consumer groups sample failed: {away!r}"
    assert said(caplog, "caravan.ops.dashboard") == kafka_away_a_minute(warned)


def test_stuck_orders_beyond_those_listed_are_counted() -> None:
    page = board()
    listed = [{"order_id": f"o-{i}", "order_ref": f"r-{i}", "placed_at": "t"} for i in range(2)]
    page.history.append(Snapshot(at=time.time(), stuck=listed, stuck_total=5000))
    assert "<p>the oldest 2 of 5000</p>" in page.page()
    page.history.append(Snapshot(at=time.time(), stuck=listed, stuck_total=2))
    assert "the oldest" not in page.page()


def test_throughput_is_counted_service_by_service_through_a_missed_sample_and_a_restart() -> None:
    """A service missing from one sample (its /metrics timed out) put its whole count since
    it started into the next interval (333,000/s for a day's million records), and a
    restarted one made the sum go down (0/s for everyone)."""
    page = board()
    counts: list[dict[str, float]] = [
        {"orders": 1_000_000, "payments": 500},
        {"payments": 530},  # orders missed this sample
        {"orders": 1_000_090, "payments": 560},
        {"orders": 1_000_120, "payments": 12},  # payments restarted: 12 since
    ]
    for i, consumed in enumerate(counts):
        page.history.append(Snapshot(at=100.0 + 3 * i, consumed=consumed))
    assert page.throughput() == [(103.0, 10.0), (106.0, 10.0), (109.0, 14.0)]


def test_the_page_says_how_long_placing_an_order_took_in_the_last_minute() -> None:
    """A drill's burst found nothing telling an operator how long POST /orders took to
    answer: the page says its p99 over the last minute, from caravan_http_request_seconds,
    instance by instance (one restarted counted from its start), the samples before the
    minute left out."""
    page = board()
    bounds = ("0.01", "0.025", "0.05", "+Inf")  # each bucket's le

    def answered(*counts: float) -> dict[str, float]:
        return dict(zip(bounds, counts, strict=True))

    page.history.append(Snapshot(at=0.0, placing={"orders": answered(0, 0, 0, 0)}))
    page.history.append(
        Snapshot(at=100.0, placing={"orders": answered(10, 10, 10, 10), "b": answered(5, 5, 5, 5)})
    )
    later = {"orders": answered(10, 60, 109, 110), "b": answered(1, 1, 1, 1)}  # b restarted
    page.history.append(Snapshot(at=130.0, placing=later))
    count, p99 = page.placing()
    # (0, 50, 99, 100) + (1, 1, 1, 1): the 99.99th of 101 in (25 ms, 50 ms]
    assert count == 101 and p99 == pytest.approx(0.025 + 0.025 * (99.99 - 51) / 49)
    assert "<td>POST /orders p99</td><td>50 ms (101 in the last 60 s)</td>" in page.page()
    assert json.loads(json.dumps(page.history[-1].__dict__, allow_nan=False))["placing"]
    page.history.append(Snapshot(at=200.0, placing=later))  # none since
    assert page.placing() == (0.0, None) and "POST /orders p99" not in page.page()


def test_a_service_whose_figures_are_old_says_so_beside_them() -> None:
    """A service's lag and outbox gauges keep their last values while its Kafka or database
    is away: the page showed "up, lag 0" while nothing was consumed; then "figures 45 s
    old" beside figures that looked as live as the others (``stale`` had no style)."""
    page = board()
    now = time.time()
    page.history.append(
        Snapshot(
            at=now,
            lag={"orders": 0, "payments": 7},
            outbox_refused={"payments": 2},
            observed={"orders": now - 3, "payments": now - 45},
            down=["platform"],
        )
    )
    text = page.page()
    assert "<td>orders</td><td>up</td><td>0</td><td>0</td><td>0.0</td><td>0</td>" in text
    since = time.strftime("%H:%M:%S", time.localtime(now - 45))
    assert (
        f"<td>payments</td><td>up <span class='note'>(figures as of {since}, 45 s old)</span>"
        "</td><td class='stale'>7</td><td class='stale'>0</td><td class='stale'>0.0</td>"
        "<td class='act stale'><b>2</b></td><td></td><td></td><td></td></tr>"
    ) in text
    assert (
        "<td>inventory</td><td>up <span class='note'>(no figures sampled yet)</span></td>"
        "<td class='stale'>0</td>"
    ) in text
    # No figures rather than zeros.
    assert "<td>platform</td><td class='down'>down</td>" + "<td></td>" * 7 + "</tr>" in text
    style = text.split("<style>")[1].split("</style>")[0]
    assert ".stale{opacity:" in style and ".act," in style


@pytest.mark.parametrize("host", ["127.0.0.1", "db.invalid"])
async def test_the_page_says_503_when_it_cannot_check_a_token(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    """With PostgreSQL away the token cannot be checked: 503 "retry", as the services answer,
    where the page answered 500 "Internal Server Error"; so with its host's name not
    resolved (a container restarting: ``.invalid`` never resolves), where the services and
    the page answered 500 too."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("DATABASE_URL", f"postgresql://caravan:caravan@{host}:{port}/caravan")
    app = Dashboard(Settings()).create_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
        answer = await client.get("/", headers={"Authorization": "Bearer cvn_" + "x" * 43})
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"] == "the database is not reachable; retry"
    said = [r for r in caplog.records if "the database is not reachable" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in said] == [("WARNING", None)]  # what failed
    assert f"cannot reach PostgreSQL at {host}:{port} (" in said[0].getMessage()


@pytest.fixture
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    def away(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("no Kafka in unit tests")

    monkeypatch.setattr(kafka_admin, "group_client", away)
    monkeypatch.setattr(kafka_admin, "describe_groups", away)


async def test_a_service_that_refuses_the_token_is_not_asked_again_with_it(
    no_kafka: None,
) -> None:
    """Each 401 counts towards the address's failed-attempt limit (shared.auth.guard): with
    a missing or revoked token, polled every 3 s, every service soon answered 429 to every
    client on the address (the CLI, Prometheus, a local proxy), and the page said all down."""
    settings = Settings(token="cvn_" + "r" * 43)
    asked: list[str] = []
    answers = {settings.http_port: 401, settings.inventory_http_port: 403}
    names = {
        settings.http_port: "orders",
        settings.inventory_http_port: "inventory",
        settings.payments_http_port: "payments",
        settings.notifications_http_port: "notifications",
        settings.platform_http_port: "platform",
    }

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(f"{names[request.url.port or 0]} {request.url.path}")
        return httpx.Response(answers.get(request.url.port or 0, 200), text="")

    page = Dashboard(settings, transport=httpx.MockTransport(answer))
    for _ in range(5):
        await page.sample()
    assert asked.count("orders /metrics") == 1 and asked.count("inventory /metrics") == 1
    assert asked.count("orders /ops/stuck-orders") == 0
    assert asked.count("payments /metrics") == 5
    text = page.page()
    assert "<td>orders</td><td>token refused (HTTP 401)" in text
    assert "<td>inventory</td><td>token refused (HTTP 403)" in text
    assert ">down</td>" not in text
    assert "unavailable: token refused (HTTP 401)" in text

    settings.token = SecretStr("cvn_" + "n" * 43)  # a new token is tried at once
    await page.sample()
    assert asked.count("orders /metrics") == 2 and asked.count("inventory /metrics") == 2

    later = time.monotonic() + 61  # and the same one again after a minute
    page.refusals.clock = lambda: later
    await page.sample()
    assert asked.count("orders /metrics") == 3 and asked.count("inventory /metrics") == 3


def test_the_page_does_not_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **how: served.append(app))
    monkeypatch.delenv("CARAVAN_TOKEN", raising=False)
    monkeypatch.setenv("CARAVAN_TOKEN_FILE", str(tmp_path / "no-token"))
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan@127.0.0.1/caravan")  # not used
    monkeypatch.setattr(checkout, "use_running_system", lambda: None)
    monkeypatch.setattr(sys, "argv", ["caravan", "dashboard"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    said = capsys.readouterr().err
    assert (done.value.code, served) == (2, []), said
    assert said.startswith("no API token: set CARAVAN_TOKEN") and said.count("\n") == 1


def service_of(settings: Settings, request: httpx.Request) -> str:
    """The service whose port ``request`` asked."""
    return next(name for name, port in ports(settings).items() if port == request.url.port)


def observed(settings: Settings, request: httpx.Request) -> str:
    """The ``/metrics`` line of a service that sampled its figures a moment ago."""
    service = service_of(settings, request)
    return f'caravan_observed_at_seconds{{service="{service}"}} {time.time() - 1}\n'


async def sampled(
    settings: Settings, answer: Callable[[httpx.Request], httpx.Response]
) -> tuple[Dashboard, str]:
    """A page that sampled once the services answering as ``answer`` does, and its HTML."""
    page = Dashboard(settings, transport=httpx.MockTransport(answer))
    await page.sample()
    return page, page.page()


async def test_outbox_rows_kafka_refused_are_shown_beside_the_backlog(no_kafka: None) -> None:
    """Rows the relay set aside (Kafka refusing them for good) are not in the backlog any
    more: the page shows them apart, marked, for operations to act on."""
    settings = Settings(token="cvn_" + "s" * 43)

    def answer(request: httpx.Request) -> httpx.Response:
        refused = 2 if request.url.port == settings.payments_http_port else 0
        metrics = observed(settings, request) + (
            'caravan_outbox_backlog{service="x"} 1.0\n'
            f'caravan_outbox_refused_rows{{service="x"}} {refused}.0\n'
        )
        return httpx.Response(200, text=metrics if request.url.path == "/metrics" else "{}")

    _, text = await sampled(settings, answer)
    assert "<th title='Outbox rows Kafka refused for good" in text
    assert "<td>1</td><td>0.0</td><td class='act'><b>2</b></td><td></td>" in text  # payments
    assert text.count("<td>1</td><td>0.0</td><td>0</td><td></td>") == 4


OPERATOR = "cvn_" + "o" * 43


@pytest.fixture
def no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database URL the page never connects to: OPERATOR's token is known (signed_in)."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan@127.0.0.1:1/caravan")


def signed_in(page: Dashboard) -> FastAPI:
    """The page's app with OPERATOR's token known (scope ops) without a database."""
    app = page.create_app()
    guard = app.state.guard
    guard.cache.ttl = 3600.0
    guard.cache.put(digest(OPERATOR), Lookup(Principal("operator", frozenset({"ops"})), None))
    return app


async def look_up(app: FastAPI, order_id: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
        return await client.get(
            f"/orders/{quote(order_id, safe='')}", headers={"Authorization": f"Bearer {OPERATOR}"}
        )


async def test_an_order_lookup_passes_on_what_the_orders_api_said(no_database: None) -> None:
    """It answered 200 whatever the orders API said (its 404 problem as a 200), and put the
    order id into the URL as it came: "?x" asked for the list of orders."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url.raw_path, "ascii"))
        if request.url.path.endswith("/o-1"):
            return httpx.Response(200, json={"order_id": "o-1", "status": "confirmed"})
        gone = {"type": "about:blank", "title": "Order not found", "status": 404, "detail": "x"}
        return httpx.Response(404, json=gone, headers={"content-type": PROBLEM})

    app = signed_in(
        Dashboard(Settings(token="cvn_" + "p" * 43), transport=httpx.MockTransport(answer))
    )
    found = await look_up(app, "o-1")
    assert (found.status_code, found.json()["status"]) == (200, "confirmed")
    missing = await look_up(app, "?x")
    assert (missing.status_code, missing.headers["content-type"]) == (404, PROBLEM)
    assert missing.json()["title"] == "Order not found"
    assert asked == ["/orders/o-1", "/orders/%3Fx"]


async def test_a_browser_is_shown_an_order_as_a_page_and_a_program_its_json(
    no_database: None,
) -> None:
    """The page's stuck orders link to /orders/{id}, which showed a browser the orders API's
    raw JSON (docs/platform.md called it the order's timeline on the page)."""
    order = {
        "order_id": "o-1",
        "order_ref": "SWN-<1>",
        "buyer_id": "buyer-1",
        "source": "http",
        "status": "cancelled",
        "total_fen": 7000,
        "reason": "credit_declined",
        "timeline": [
            {"type": "order.placed", "time": "2026-12-06T10:00:00+08:00"},
            {"type": "order.cancelled", "time": "2026-12-06T10:00:01+08:00"},
            {
                "type": "payment.refunded",
                "time": "2026-12-06T11:00:00+08:00",
                "amount_fen": 7000,
                "reference": "BANK-<1>",
            },
        ],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/o-1"):
            return httpx.Response(200, json=order)
        gone = {"type": "about:blank", "title": "Order not found", "status": 404, "detail": "no"}
        return httpx.Response(404, json=gone, headers={"content-type": PROBLEM})

    app = signed_in(
        Dashboard(Settings(token="cvn_" + "p" * 43), transport=httpx.MockTransport(answer))
    )
    transport = httpx.ASGITransport(app=app)
    browser = {"Authorization": f"Bearer {OPERATOR}", "Accept": "text/html,*/*;q=0.8"}
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
        shown = await client.get("/orders/o-1", headers=browser)
        missing = await client.get("/orders/o-2", headers=browser)
    assert shown.headers["content-type"].startswith("text/html"), shown.text
    said = "<b>cancelled</b> (credit_declined); buyer buyer-1, ref SWN-&lt;1&gt;, source http"
    assert said in shown.text and ", total 7000 fen" in shown.text
    assert "<td>2026-12-06T10:00:01+08:00</td><td>order.cancelled</td>" in shown.text
    refunded = "<td>payment.refunded: 7000 fen under reference BANK-&lt;1&gt;</td>"
    assert refunded in shown.text, shown.text  # what was refunded: the step said neither
    assert (missing.status_code, missing.headers["content-type"][:9]) == (404, "text/html")
    assert "<p>no</p>" in missing.text
    program = await look_up(app, "o-1")  # no text/html asked: the API's JSON
    assert program.json() == order


async def test_an_order_lookup_says_when_the_orders_api_cannot_answer_it(no_database: None) -> None:
    """The orders API away, or answering something that is not JSON, was a plain-text 500
    "Internal Server Error"."""

    def away(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    app = signed_in(
        Dashboard(Settings(token="cvn_" + "p" * 43), transport=httpx.MockTransport(away))
    )
    down = await look_up(app, "o-1")
    assert (down.status_code, down.headers["content-type"]) == (503, PROBLEM), down.text
    assert down.json()["detail"] == "the orders API is not reachable (ConnectError); retry"
    assert down.headers["retry-after"] == str(RETRY_SECONDS)  # the API restarting

    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    app = signed_in(
        Dashboard(Settings(token="cvn_" + "p" * 43), transport=httpx.MockTransport(proxy))
    )
    garbled = await look_up(app, "o-1")
    assert (garbled.status_code, garbled.headers["content-type"]) == (502, PROBLEM)
    assert garbled.json()["detail"] == "the orders API answered HTTP 502, not JSON"


async def test_an_order_lookup_the_orders_api_refused_is_not_asked_again_for_a_minute(
    no_database: None,
) -> None:
    """Each click asked the orders API again with a token it had refused, each refusal
    counting towards the address's failed-attempt limit (docs/security.md says a minute)."""
    settings = Settings(token="cvn_" + "q" * 43)
    asked: list[str] = []

    def refusing(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(403, json={"title": "Forbidden"})

    page = Dashboard(settings, transport=httpx.MockTransport(refusing))
    app = signed_in(page)
    answers = [await look_up(app, "o-1") for _ in range(3)]
    assert asked == ["/orders/o-1"]
    assert {(a.status_code, a.json()["detail"]) for a in answers} == {
        (
            502,
            "the orders API refused the page's token (HTTP 403); not asked again with it for 60 s",
        )
    }
    later = time.monotonic() + 61
    page.refusals.clock = lambda: later
    await look_up(app, "o-1")
    assert asked == ["/orders/o-1"] * 2


@pytest.mark.parametrize("first", ["away", "failing"])
async def test_the_stuck_orders_and_a_lookup_are_asked_of_the_next_orders_instance(
    no_kafka: None, no_database: None, first: str
) -> None:
    """With the orders instance on CARAVAN_HTTP_PORT away (a deploy, a crash) or failing
    (5xx), the page said "orders API unreachable" for the stuck orders and the lookup 503'd,
    though a second orders instance it reads would have answered. Each further one is asked in
    turn."""
    settings = Settings(token="cvn_" + "x" * 43)
    second, asked = "127.0.0.1:9180", list[str]()
    page = Dashboard(
        settings,
        transport=httpx.MockTransport(
            lambda request: orders_answer(settings, request, first, asked)
        ),
        further={"orders": [second]},
    )
    snap = await page.sample()
    assert "stuck" not in snap.unavailable, snap.unavailable
    assert ([o["order_id"] for o in snap.stuck], snap.stuck_total) == (["o-1"], 1)
    found = await look_up(signed_in(page), "o-1")
    assert (found.status_code, found.json()) == (200, {"order_id": "o-1", "status": "pending"})
    orders_asked = [at for at in asked if at.endswith(("/ops/stuck-orders", "/o-1"))]
    assert orders_asked == [
        f"127.0.0.1:{settings.http_port} /ops/stuck-orders",
        f"{second} /ops/stuck-orders",
        f"127.0.0.1:{settings.http_port} /orders/o-1",
        f"{second} /orders/o-1",
    ]


async def test_a_refusal_of_the_token_by_the_first_orders_instance_is_not_asked_of_the_next(
    no_kafka: None, no_database: None
) -> None:
    """Every orders instance checks the token alike: asking the next after a 401 or 403 would
    count one more failed attempt against the page's address, to be refused again."""
    settings, asked = Settings(token="cvn_" + "y" * 43), list[str]()
    page = Dashboard(
        settings,
        transport=httpx.MockTransport(
            lambda request: orders_answer(settings, request, "refusing", asked)
        ),
        further={"orders": ["127.0.0.1:9180"]},
    )
    refused = await look_up(signed_in(page), "o-1")
    snap = await page.sample()
    assert refused.status_code == 502 and "(HTTP 403)" in refused.json()["detail"]
    assert snap.unavailable["stuck"] == "token refused (HTTP 403)"
    assert [at for at in asked if at.startswith("127.0.0.1:9180 /o")] == []


def orders_answer(
    settings: Settings, request: httpx.Request, first: str, asked: list[str]
) -> httpx.Response:
    """The services as the tests above have them, each request noted in ``asked`` (``host:port
    path``): the orders instance on its port setting ``away`` (not listening), ``failing`` (a
    503 problem) or ``refusing`` the token (403); the others, a second orders instance among
    them, answering."""
    at = f"{request.url.host}:{request.url.port}"
    asked.append(f"{at} {request.url.path}")
    if request.url.port == settings.http_port and first == "away":
        raise httpx.ConnectError("connection refused", request=request)
    if request.url.port == settings.http_port and request.url.path != "/healthz":
        status = 503 if first == "failing" else 403
        body = {"type": "about:blank", "title": "x", "status": status, "detail": "x"}
        return httpx.Response(status, json=body, headers={"content-type": PROBLEM})
    if request.url.path == "/ops/stuck-orders":
        stuck = {"order_id": "o-1", "order_ref": "R-1", "placed_at": "2026-12-06T00:00:00Z"}
        return httpx.Response(200, json={"orders": [stuck], "total": 1})
    if request.url.path == "/orders/o-1":
        return httpx.Response(200, json={"order_id": "o-1", "status": "pending"})
    if request.url.path == "/healthz":
        return httpx.Response(200, json=HEALTHY)
    return httpx.Response(200, text="")


async def test_each_service_health_checks_are_shown_as_its_healthz_names_them(
    no_kafka: None,
) -> None:
    """/healthz names a stalled consumer or relay "degraded" with a 200: the page showed
    "up" and lag beside it, an operator saw green while a partition was stuck. Every check
    a service names is shown (one only some name too), degraded marked apart from ok and
    from down (a 503, or no answer)."""
    settings = Settings(token="cvn_" + "h" * 43)
    ok = {"database": "ok", "kafka": "ok", "consumer": "ok", "relay": "ok"}
    stalled = "3 records waiting on orders.events.v1[0], none handled for 75 s"
    health = {
        settings.http_port: (200, {"status": "ok", "checks": ok}),
        settings.inventory_http_port: (
            200,
            {"status": "degraded", "down": ["consumer"], "checks": ok | {"consumer": stalled}},
        ),
        settings.payments_http_port: (
            503,
            {"title": "Unhealthy", "checks": ok | {"database": "ConnectionRefusedError"}},
        ),
        settings.notifications_http_port: (200, {"status": "ok", "checks": ok | {"disk": "ok"}}),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        port = request.url.port or 0
        if port == settings.platform_http_port:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/healthz":
            status, body = health[port]
            return httpx.Response(status, json=body)
        return httpx.Response(200, text="" if request.url.path == "/metrics" else "{}")

    _, text = await sampled(settings, answer)
    assert (
        "<th>health</th><th>database</th><th>kafka</th><th>consumer</th><th>relay</th>"
        "<th>disk</th></tr>"
    ) in text.replace(f" title='{html.escape(HEALTH_NOTE)}'", "")
    oks = "<td class='ok'>ok</td>" * 4
    assert f"<tr><td>orders</td>{oks}<td class='ok'>ok</td><td></td></tr>" in text
    assert (
        "<tr><td>inventory</td><td class='degraded'>degraded</td>"
        + "<td class='ok'>ok</td>" * 2
        + f"<td class='degraded'>{stalled}</td><td class='ok'>ok</td><td></td></tr>"
    ) in text
    assert (
        "<tr><td>payments</td><td class='down'>unhealthy</td>"
        "<td class='down'>ConnectionRefusedError</td>" + "<td class='ok'>ok</td>" * 3 + "<td></td>"
    ) in text
    assert f"<tr><td>notifications</td>{oks}<td class='ok'>ok</td><td class='ok'>ok</td>" in text
    assert "<tr><td>platform</td><td class='down'>no answer (ConnectError)</td><td></td>" in text
    style = text.split("<style>")[1].split("</style>")[0]
    assert ".degraded{" in style and ".down{" in style and ".ok{" in style


async def test_a_service_s_health_is_its_worst_instance_s_naming_which_says_what(
    no_kafka: None,
) -> None:
    """The Health table took the first instance that named its checks: a second payments
    instance whose database connection failed (a 503) was shown nowhere, payments "ok". The
    service's health is its worst instance's, each check as the worst says it, and where its
    instances differ what each says; one not answering is named beside an ok."""
    settings = Settings(token="cvn_" + "k" * 43)
    ok = {"database": "ok", "kafka": "ok", "consumer": "ok"}
    health = {
        "127.0.0.1:9182": (
            503,
            {"title": "Unhealthy", "checks": ok | {"database": "ConnectionRefusedError"}},
        ),
        "127.0.0.1:9181": (
            200,
            {"status": "degraded", "checks": ok | {"consumer": "stalled 130 s"}},
        ),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        at = f"{request.url.host}:{request.url.port}"
        if at == "127.0.0.1:9180":
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/healthz":
            status, body = health.get(at, (200, {"status": "ok", "checks": ok}))
            return httpx.Response(status, json=body)
        return httpx.Response(200, text="")

    page = Dashboard(
        settings,
        transport=httpx.MockTransport(answer),
        further={
            "payments": ["127.0.0.1:9182"],
            "inventory": ["127.0.0.1:9181"],
            "orders": ["127.0.0.1:9180"],
        },
    )
    snap = await page.sample()
    assert (snap.health["payments"], snap.checks["payments"]["database"]) == (
        "unhealthy",
        "ConnectionRefusedError",
    )
    text = page.page()
    assert (
        "<tr><td>payments</td><td class='down'>unhealthy <span class='note'>(127.0.0.1:8082 ok,"
        " 127.0.0.1:9182 unhealthy)</span></td><td class='down'>127.0.0.1:8082 ok,"
        " 127.0.0.1:9182 ConnectionRefusedError</td>" + "<td class='ok'>ok</td>" * 2 + "</tr>"
    ) in text, text
    assert (
        "<tr><td>inventory</td><td class='degraded'>degraded <span class='note'>(127.0.0.1:8081"
        " ok, 127.0.0.1:9181 degraded)</span></td>"
        + "<td class='ok'>ok</td>" * 2
        + "<td class='degraded'>127.0.0.1:8081 ok, 127.0.0.1:9181 stalled 130 s</td></tr>"
    ) in text
    assert (
        "<tr><td>orders</td><td class='ok'>ok <span class='note'>(127.0.0.1:8080 ok,"
        " 127.0.0.1:9180 no answer (ConnectError))</span></td>" + "<td class='ok'>ok</td>" * 3
    ) in text
    services = "<tr><td>payments</td><td class='down'>unhealthy <span class='note'>(no figures"
    assert services in text
    assert "<tr><td>notifications</td><td class='ok'>ok</td>" + "<td class='ok'>ok</td>" * 3 in text


async def test_what_waits_for_operations_is_shown_with_where_it_is_settled(
    no_kafka: None,
) -> None:
    """The platform adapter's open problems (orders it could not place: an unmapped SKU,
    a refusal) and its failed status callbacks wait for an operator, and /metrics counts
    them: the page did not show them."""
    settings = Settings(token="cvn_" + "w" * 43)
    platform = (
        'caravan_platform_pushes_total{app="demo-market",outcome="accepted"} 0.0\n'
        'caravan_platform_problems_open{kind="unmapped_sku"} 2.0\n'
        'caravan_platform_problems_open{kind="rejected"} 0.0\n'
        'caravan_platform_callbacks{status="pending"} 4.0\n'
        'caravan_platform_callbacks{status="failed"} 3.0\n'
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/metrics":  # its /healthz
            return httpx.Response(200, json=HEALTHY)
        return httpx.Response(
            200, text=platform if request.url.port == settings.platform_http_port else ""
        )

    page, text = await sampled(settings, answer)
    assert (
        "<h2>Waiting for operations</h2><table>"
        "<tr><td>platform orders: rejected</td><td>0</td>"
        "<td><code>GET /platform/problems</code></td></tr>"
        "<tr><td>platform orders: unmapped_sku</td><td class='act'><b>2</b></td>"
        "<td><code>GET /platform/problems</code></td></tr>"
        "<tr><td>platform status callbacks failed</td><td class='act'><b>3</b></td>"
        "<td><code>POST /platform/callbacks/retry</code></td></tr>"
        "<tr><td>platform pushes not fetched, last 10 minutes</td><td>0</td></tr></table>"
    ) in text
    assert page.history[-1].callbacks_failed == 3.0


async def test_pushes_whose_order_was_not_fetched_are_counted_by_app_and_outcome(
    no_kafka: None,
) -> None:
    """A platform's order API refusing our signature (a secret rotated on one side), failing
    or answering 404 has each push refused, nothing placed and no problem opened: the page
    said nothing. It counts those of the last 10 minutes by app and outcome, marked, with
    what to check; those before the page's oldest sample kept are not counted, nor a push
    taken."""
    settings = Settings(token="cvn_" + "f" * 43)
    counts = {"fetch_signature_refused": 4.0, "fetch_failed": 1.0, "accepted": 7.0}
    assert set(NOT_FETCHED) == set(get_args(platform_metrics.FetchRefused))

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/metrics":
            return httpx.Response(200, json=HEALTHY)
        if request.url.port != settings.platform_http_port:
            return httpx.Response(200, text="")
        return httpx.Response(
            200,
            text="".join(
                f'caravan_platform_pushes_total{{app="{app}",outcome="{outcome}"}} {n}\n'
                for app in ("shop-a", "shop-b")
                for outcome, n in {**counts, "fetch_refused": 0.0}.items()
            )
            + 'caravan_platform_problems_open{kind="rejected"} 0.0\n',
        )

    page = Dashboard(settings, transport=httpx.MockTransport(answer))
    await page.sample()
    quiet = "<tr><td>platform pushes not fetched, last 10 minutes</td><td>0</td></tr></table>"
    assert quiet in page.page()  # what came before the first sample is not counted
    counts["fetch_signature_refused"] += 2
    counts["fetch_failed"] += 3
    counts["accepted"] += 5
    await page.sample()
    text = page.page()
    for app in ("shop-a", "shop-b"):
        assert (
            f"<tr><td>platform pushes not fetched, last 10 minutes: {app}, fetch_failed</td>"
            "<td class='act'><b>3</b></td>"
            "<td>the platform's order API (down, slow), the app's api_url</td></tr>"
            f"<tr><td>platform pushes not fetched, last 10 minutes: {app},"
            " fetch_signature_refused</td><td class='act'><b>2</b></td>"
            "<td>the app's secret on both sides, both clocks</td></tr>"
        ) in text, text
    assert "fetch_refused</td>" not in text and quiet not in text
    assert page.unfetched()[("shop-a", "fetch_signature_refused")] == 2
    for snap in page.history:  # both samples out of the window: since the latest of them
        snap.at -= UNFETCHED_WINDOW + 1
    counts["fetch_failed"] += 1
    await page.sample()
    assert page.unfetched() == {
        ("shop-a", "fetch_signature_refused"): 0.0,
        ("shop-a", "fetch_failed"): 1.0,
        ("shop-a", "fetch_refused"): 0.0,
        ("shop-b", "fetch_signature_refused"): 0.0,
        ("shop-b", "fetch_failed"): 1.0,
        ("shop-b", "fetch_refused"): 0.0,
    }


async def test_with_no_platform_app_the_page_says_so_not_every_problem_kind_at_0(
    no_kafka: None,
) -> None:
    """With no platform app configured, the page listed the adapter's 11 problem kinds and its
    failed callbacks at 0: figures of what cannot happen. It says so in one row, as `caravan
    up` does; a problem still open (left by an app since removed) is shown all the same."""
    settings = Settings(token="cvn_" + "n" * 43)
    kinds = get_args(ProblemKind)
    platform = "".join(f'caravan_platform_problems_open{{kind="{k}"}} 0.0\n' for k in kinds) + (
        'caravan_platform_pushes_total{app="unknown",outcome="unknown_app"} 0.0\n'
        'caravan_platform_callbacks{status="failed"} 0.0\n'
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/metrics":
            return httpx.Response(200, json=HEALTHY)
        return httpx.Response(
            200, text=platform if request.url.port == settings.platform_http_port else ""
        )

    assert UNKNOWN_APP == platform_metrics.UNKNOWN_APP
    _, text = await sampled(settings, answer)
    assert (
        "<h2>Waiting for operations</h2><table>"
        "<tr><td>no platform app configured (CARAVAN_PLATFORM_APPS)</td></tr></table>"
    ) in text
    platform = platform.replace('kind="rejected"} 0.0', 'kind="rejected"} 1.0')
    _, text = await sampled(settings, answer)
    assert (
        "<h2>Waiting for operations</h2><table>"
        "<tr><td>platform orders: rejected</td><td class='act'><b>1</b></td>"
        "<td><code>GET /platform/problems</code></td></tr></table>"
    ) in text


def test_what_waits_for_operations_is_not_shown_as_none_without_figures() -> None:
    page = board()
    page.history.append(Snapshot(at=time.time()))
    assert "<h2>Waiting for operations</h2><table><tr><td>no figures</td></tr>" in page.page()


async def test_the_services_table_says_what_healthz_says_not_up(no_kafka: None) -> None:
    """A service whose /healthz said degraded (a consumer stalled) or unhealthy (its
    database away) was "up" in the Services table, the Health table under it saying
    otherwise."""
    settings = Settings(token="cvn_" + "d" * 43)
    ok = {"database": "ok", "kafka": "ok", "consumer": "ok", "relay": "ok"}
    health = {
        "inventory": (200, {"status": "degraded", "checks": ok | {"consumer": "stalled"}}),
        "payments": (503, {"title": "Unhealthy", "checks": ok | {"database": "away"}}),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        service = service_of(settings, request)
        if request.url.path == "/healthz":
            status, body = health.get(service, (200, {"status": "ok", "checks": ok}))
            return httpx.Response(status, json=body)
        return httpx.Response(200, text=observed(settings, request))

    _, text = await sampled(settings, answer)
    assert "<tr><td>orders</td><td>up</td><td>0</td>" in text
    assert "<tr><td>inventory</td><td class='degraded'>degraded</td><td>0</td>" in text
    assert "<tr><td>payments</td><td class='down'>unhealthy</td><td>0</td>" in text
    assert "<tr><td>notifications</td><td>up</td><td>0</td>" in text


async def test_a_service_whose_healthz_gives_no_answer_is_not_up(no_kafka: None) -> None:
    """A service whose /healthz gave no answer (a timeout, a page that is not its JSON)
    while its /metrics did was "up" in the Services table, the Health table under it
    saying "no answer": its health is unknown, and the table says so, marked."""
    settings = Settings(token="cvn_" + "u" * 43)

    def answer(request: httpx.Request) -> httpx.Response:
        service = service_of(settings, request)
        if request.url.path == "/healthz" and service == "inventory":
            raise httpx.ReadTimeout("no answer in time", request=request)
        if request.url.path == "/healthz" and service == "payments":
            return httpx.Response(502, text="<html>Bad Gateway</html>")
        if request.url.path == "/healthz":
            return httpx.Response(200, json=HEALTHY)
        return httpx.Response(200, text=observed(settings, request))

    _, text = await sampled(settings, answer)
    assert "<tr><td>orders</td><td>up</td><td>0</td>" in text
    for service in ("inventory", "payments"):
        row = f"<tr><td>{service}</td><td class='degraded'>health unknown</td><td>0</td>"
        assert row in text, text
    assert "<tr><td>inventory</td><td class='down'>no answer (ReadTimeout)</td>" in text


HEALTHY = {"status": "ok", "checks": {"database": "ok", "kafka": "ok"}}
"""A /healthz that says all is well: without it a service's health is unknown."""


async def test_a_page_not_json_from_the_orders_api_leaves_the_other_figures(
    no_kafka: None,
) -> None:
    """A proxy's HTML page answered 200 in place of the stuck orders (or of a service's
    /metrics) failed the whole sample: the page kept its old figures and said them stale."""
    settings = Settings(token="cvn_" + "j" * 43)
    proxy = "<!doctype html><html><body>Please sign in to the proxy</body></html>"

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ops/stuck-orders":
            return httpx.Response(200, text=proxy, headers={"content-type": "text/html"})
        if request.url.path != "/metrics":  # its /healthz
            return httpx.Response(200, json=HEALTHY)
        if request.url.port == settings.payments_http_port:
            return httpx.Response(200, text=proxy, headers={"content-type": "text/html"})
        return httpx.Response(200, text=observed(settings, request) + ORDERS_METRICS)

    page, text = await sampled(settings, answer)
    assert page.history[-1].orders == {"confirmed": 5.0}
    assert "<tr><td>confirmed</td><td>5</td></tr>" in text
    assert "<tr><td colspan=3>unavailable: the orders API answered HTTP 200, not JSON</td>" in text
    assert (
        "<tr><td>payments</td><td>up <span class='note'>(no figures: its /metrics answered"
        " something not Prometheus text)</span></td>"
        + "<td></td>" * 6
        + "<td class='down'>127.0.0.1:8082 no figures</td></tr>"
    ) in text
    assert "<tr><td>orders</td><td>up</td><td>3</td>" in text

    def listless(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ops/stuck-orders":
            return httpx.Response(200, json={"orders": ["o-1"], "total": 1})
        return answer(request)

    _, text = await sampled(settings, listless)
    assert "unavailable: the orders API answered HTTP 200, no list of orders" in text


ORDERS_METRICS = (
    'caravan_orders{status="confirmed"} 5.0\n'
    'caravan_consumer_lag{service="x",topic="t",partition="0"} 3.0\n'
)


async def test_events_parked_until_their_order_placed_are_shown_per_service(
    no_kafka: None,
) -> None:
    """A service that parks events (notifications, the platform adapter) says how many and
    how long the oldest has waited; the others have no such figure, not a 0."""
    settings = Settings(token="cvn_" + "k" * 43)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/metrics":  # its /healthz
            return httpx.Response(200, json=HEALTHY)
        metrics = observed(settings, request)
        if request.url.port == settings.notifications_http_port:
            metrics += (
                'caravan_parked_events{service="notifications"} 2.0\n'
                'caravan_parked_oldest_seconds{service="notifications"} 42.25\n'
            )
        elif request.url.port == settings.platform_http_port:
            metrics += 'caravan_parked_events{service="platform"} 0.0\n'
        return httpx.Response(200, text=metrics)

    page, text = await sampled(settings, answer)
    assert "<th title='Events that came before their order&#x27;s order.placed" in text
    assert "</th><th>oldest parked (s)</th><th title=" in text
    assert (
        "<tr><td>notifications</td><td>up</td><td>0</td><td>0</td><td>0.0</td><td>0</td>"
        "<td>2</td><td>42.2</td><td>127.0.0.1:8083 up</td></tr>"
    ) in text
    assert "<tr><td>platform</td><td>up</td><td>0</td><td>0</td><td>0.0</td><td>0</td>" in text
    assert "<td>0</td><td>0.0</td><td>" in text.split("<tr><td>platform</td>")[1]
    assert "<td>0</td><td></td><td></td><td>" in text.split("<tr><td>orders</td>")[1]
    assert page.history[-1].parked == {"notifications": 2.0, "platform": 0.0}


@pytest.fixture
def waiting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A Kafka where each group has 4 records waiting on each partition of each topic (two
    partitions, committed at 6 of 10), and no dead letter; what the page reads of it: the
    groups' lag, and the dead letters."""
    read: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def group_client(bootstrap: str, group: str, settings: Any) -> AsyncIterator[str]:
        yield group

    async def offsets(group: str, topic: str) -> list[kafka_admin.PartitionOffsets]:
        read[group] = read.get(group, 0) + 1
        return [kafka_admin.PartitionOffsets(p, 0, 10, 6) for p in (0, 1)]

    async def letters(kept: dlq.Kept, bootstrap: str) -> list[dlq.Letter]:
        read["dead letters"] = read.get("dead letters", 0) + 1
        return []

    async def describe_groups(
        bootstrap: str, groups: list[str], settings: Any
    ) -> dict[str, kafka_admin.GroupState]:
        return await kafka_admin.described(Coordinator(), groups)  # each: one member

    monkeypatch.setattr(kafka_admin, "group_client", group_client)
    monkeypatch.setattr(kafka_admin, "offsets", offsets)
    monkeypatch.setattr(kafka_admin, "describe_groups", describe_groups)
    monkeypatch.setattr(dlq.Kept, "read", letters)
    return read


def paused_under_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kafka: str, *services: str
) -> None:
    """A ``caravan up`` running from the checkout on the Kafka at ``kafka``, ``services``
    paused under it (``caravan pause``)."""
    monkeypatch.setattr(checkout, "UP_ENV", tmp_path / "up.env.json")
    checkout.UP_ENV.write_text(json.dumps({"KAFKA_BOOTSTRAP_SERVERS": kafka}))
    monkeypatch.setattr(checkout, "PAUSED", tmp_path / "up-paused")
    checkout.PAUSED.mkdir()
    for service in services:
        (checkout.PAUSED / service).touch()
    monkeypatch.setattr(checkout, "running_up", lambda: True)


def stopped(settings: Settings, *services: str) -> Callable[[httpx.Request], httpx.Response]:
    """Services answering as healthy ones do, but ``services``, which do not answer."""

    def answer(request: httpx.Request) -> httpx.Response:
        if service_of(settings, request) in services:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/healthz":
            return httpx.Response(200, json=HEALTHY)
        return httpx.Response(200, text=observed(settings, request))

    return answer


async def test_a_service_caravan_pause_stopped_is_paused_with_the_lag_waiting_for_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, waiting: dict[str, int]
) -> None:
    """During ``caravan pause inventory`` the page said "inventory down" (its Health row
    "no answer (ConnectError)"), with no sign it was paused, and the records waiting for it
    were shown nowhere: the figures of a service are read from its /metrics."""
    settings = Settings(token="cvn_" + "p" * 43)
    paused_under_up(monkeypatch, tmp_path, settings.kafka_bootstrap_servers, "inventory")
    page, text = await sampled(settings, stopped(settings, "inventory", "payments"))
    lag = {s: 8 * len(subs) for s, subs in consumers(settings).items()}  # 4 x 2 partitions
    assert (
        "<tr><td>inventory</td><td class='paused'>paused <span class='note'>(by caravan pause;"
        " caravan resume inventory starts it again; consumer lag read from Kafka)</span></td>"
        f"<td>{lag['inventory']}</td>"
        + "<td></td>" * 5
        + "<td class='paused'>127.0.0.1:8081 paused</td></tr>"
    ) in text, text
    assert (  # not paused: down, the lag its group has all the same
        "<tr><td>payments</td><td class='down'>down <span class='note'>(consumer lag read from"
        f" Kafka)</span></td><td>{lag['payments']}</td>"
        + "<td></td>" * 5
        + "<td class='down'>127.0.0.1:8082 down</td></tr>"
    ) in text, text
    assert "<tr><td>inventory</td><td class='paused'>paused</td>" in text  # Health
    assert "<tr><td>payments</td><td class='down'>no answer (ConnectError)</td>" in text
    snap = page.history[-1]  # /api/snapshot's health said "no answer (ConnectError)" for both
    assert {s: snap.health[s] for s in ("inventory", "payments")} == {
        "inventory": "paused",
        "payments": "no answer (ConnectError)",
    }
    assert snap.healths["inventory"] == snap.instances["inventory"] == {"127.0.0.1:8081": "paused"}
    assert "<tr><td>orders</td><td>up</td><td>0</td>" in text  # its own figures, as before
    assert set(waiting) == {"dead letters", "caravan-inventory", "caravan-payments"}
    assert ".paused{" in text.split("<style>")[1].split("</style>")[0]


async def test_a_frozen_service_is_told_apart_from_one_that_exited(
    waiting: dict[str, int],
) -> None:
    """A service stopped by ``kill -STOP`` (its port takes the connection, nothing answers) was
    shown "down", as one that exited (nothing listens): an operator restarts the one, looks at
    the other's process (``caravan up`` does not start it again)."""
    settings = Settings(token="cvn_" + "f" * 43)

    def answer(request: httpx.Request) -> httpx.Response:
        if service_of(settings, request) == "inventory":
            raise httpx.ReadTimeout("no answer in time", request=request)
        return stopped(settings, "payments")(request)

    page, text = await sampled(settings, answer)
    assert (
        "<tr><td>inventory</td><td class='down'>frozen <span class='note'>(took the connection"
        " and answered nothing within 5 s: its process alive but held (kill -STOP, swapped out,"
        " its event loop blocked), which caravan up does not start again; look at it with ps -o"
        " pid,stat,etime,args -p PID; consumer lag read from Kafka)</span></td>"
    ) in text, text
    assert "<td class='down'>127.0.0.1:8081 frozen</td></tr>" in text, text
    assert "<tr><td>payments</td><td class='down'>down <span class='note'>(consumer lag" in text
    snap = page.history[-1]
    assert (snap.down, snap.frozen) == (["inventory", "payments"], ["inventory"])


async def test_pauses_of_a_caravan_up_on_another_kafka_are_not_this_system_s(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, waiting: dict[str, int]
) -> None:
    settings = Settings(token="cvn_" + "q" * 43)
    paused_under_up(monkeypatch, tmp_path, "kafka.elsewhere:9092", "inventory")
    _, text = await sampled(settings, stopped(settings, "inventory"))
    assert "<tr><td>inventory</td><td class='down'>down <span class='note'>" in text, text
    monkeypatch.setattr(checkout, "running_up", lambda: False)  # left by an earlier run
    checkout.UP_ENV.write_text(
        json.dumps({"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers})
    )
    _, text = await sampled(settings, stopped(settings, "inventory"))
    assert "<tr><td>inventory</td><td class='down'>down <span class='note'>" in text, text


def test_dead_letters_discarded_are_not_counted_waiting() -> None:
    """A letter of junk nobody can mend could not be closed: the page counted it waiting,
    marked, until the topic's retention deleted it (30 days). Discarded (``caravan dlq
    discard``), it is counted apart, as the snapshot API's waiting figures say too."""
    page = board()
    kept = {"orders.requests.v1.dlq": 5, "orders.events.v1.dlq": 1}
    snap = Snapshot(
        at=time.time(),
        dead_letters=kept,
        redriven={"orders.requests.v1.dlq": 1},
        discarded={"orders.requests.v1.dlq": 4, "orders.events.v1.dlq": 1},
    )
    page.history.append(snap)
    text = page.page()
    assert "<th title='Letters closed by caravan dlq discard" in text
    assert "<tr><td>orders.requests.v1.dlq</td><td>0</td><td>1</td><td>4</td></tr>" in text
    assert "<tr><td>orders.events.v1.dlq</td><td>0</td><td>0</td><td>1</td></tr>" in text
    assert snap.letters_waiting() == {"orders.requests.v1.dlq": 0, "orders.events.v1.dlq": 0}


async def test_dead_letters_are_read_every_half_minute_and_an_audit_trail_refusing_is_said(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, waiting: dict[str, int]
) -> None:
    """The page read every dead letter kept, values and all, and the audit trail's redrives
    at each sample (every 3 s); and an audit trail refusing the page's login (a service's
    role may not read it) failed the whole sample, every figure shown as old."""
    settings = Settings(token="cvn_" + "d" * 43, database_url="postgresql://svc@db/caravan")
    kept = dlq.Letter("orders.requests.v1.dlq", 0, 7, datetime.now(UTC))

    async def one_letter(letters: dlq.Kept, bootstrap: str) -> list[dlq.Letter]:
        waiting["dead letters"] = waiting.get("dead letters", 0) + 1
        return [kept]

    async def refused(database_url: str | None, letters: list[dlq.Letter]) -> Any:
        raise asyncpg.InsufficientPrivilegeError("permission denied for table audit")

    monkeypatch.setattr(dlq.Kept, "read", one_letter)
    monkeypatch.setattr(dlq, "closed", refused)
    paused_under_up(monkeypatch, tmp_path, "kafka.elsewhere:9092")
    page = Dashboard(settings, transport=httpx.MockTransport(stopped(settings)))
    for _ in range(3):
        await page.sample()
    assert waiting["dead letters"] == 1
    snap = page.history[-1]
    assert snap.dead_letters["orders.requests.v1.dlq"] == 1
    assert "InsufficientPrivilegeError" in snap.unavailable["redriven"]
    assert "which were redriven or discarded is not known" in page.page()
    page.history[-1].letters_at -= DEAD_LETTERS_EVERY
    await page.sample()
    assert waiting["dead letters"] == 2


async def test_every_instance_of_a_service_is_read_its_lag_once_and_one_down_said(
    no_kafka: None,
) -> None:
    """With payments run as two instances the page read the first's port alone: half the
    records consumed were in no throughput, and the second, stalled or down, showed
    nowhere. Each instance it is told of is read: its consumption counted apart, the group's
    lag (which each says) once per partition, the tables' gauges as said; each one's state
    listed, and a service whose first instance is down shown from the others."""
    settings = Settings(token="cvn_" + "i" * 43)
    second, third = "127.0.0.1:9182", "127.0.0.1:9181"
    page = Dashboard(
        settings,
        transport=httpx.MockTransport(lambda request: instance_answer(settings, request)),
        further={"payments": [second], "inventory": [third]},
    )
    snap = await page.sample()
    assert (snap.consumed["payments"], snap.consumed.get(f"payments@{second}")) == (5, 2)
    assert snap.consumed.get(f"inventory@{third}") == 7 and "inventory" not in snap.consumed
    assert snap.lag["payments"] == 4 + 6  # each partition once, as both instances say it
    assert snap.outbox["payments"] == 3
    assert snap.instances["payments"] == {"127.0.0.1:8082": "up", second: "degraded"}
    assert snap.instances["inventory"] == {"127.0.0.1:8081": "down", third: "up"}
    assert snap.down == []  # inventory answers through its second instance
    text = page.page()
    assert f"<td class='degraded'>127.0.0.1:8082 up, {second} degraded</td></tr>" in text, text
    assert f"<td class='down'>127.0.0.1:8081 down, {third} up</td></tr>" in text
    assert "<td>127.0.0.1:8080 up</td></tr>" in text


STALLED = {"checks": {"database": "ok", "kafka": "ok", "consumer": "stalled 130 s"}}


def instance_answer(settings: Settings, request: httpx.Request) -> httpx.Response:
    """The services' instances as the test above has them: payments' second (9182) up, its
    consumer stalled, inventory's first down, its second (9181) up."""
    at = f"{request.url.host}:{request.url.port}"
    if at == f"127.0.0.1:{settings.inventory_http_port}":
        raise httpx.ConnectError("connection refused", request=request)
    stalled = at == "127.0.0.1:9182"
    if request.url.path == "/healthz":
        return httpx.Response(200, json={"status": "degraded"} | STALLED if stalled else HEALTHY)
    service = {"127.0.0.1:9182": "payments", "127.0.0.1:9181": "inventory"}.get(at)
    service = service or service_of(settings, request)
    metrics = f'caravan_observed_at_seconds{{service="{service}"}} {time.time() - 1}\n'
    if service == "payments":
        metrics += (
            'caravan_records_consumed_total{service="payments",topic="t",outcome="handled"}'
            f" {2 if stalled else 5}\n"
            'caravan_consumer_lag{service="payments",topic="t",partition="0"} 4\n'
            'caravan_consumer_lag{service="payments",topic="t",partition="1"} 6\n'
            'caravan_outbox_backlog{service="payments"} 3\n'
        )
    if service == "inventory":
        metrics += (
            'caravan_records_consumed_total{service="inventory",topic="t",outcome="handled"} 7\n'
        )
    return httpx.Response(200, text=metrics)


@pytest.mark.parametrize(
    ("given", "further"),
    [
        (["payments=8182"], {"payments": ["127.0.0.1:8182"]}),
        (
            ["payments=10.0.0.7:8082", "payments=8182", "orders=h.example:1"],
            {"payments": ["10.0.0.7:8082", "127.0.0.1:8182"], "orders": ["h.example:1"]},
        ),
    ],
)
def test_caravan_dashboard_is_told_of_further_instances(
    monkeypatch: pytest.MonkeyPatch, given: list[str], further: dict[str, list[str]]
) -> None:
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **how: served.append(app))
    monkeypatch.setattr(Dashboard, "create_app", lambda self: self)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "t" * 43)
    monkeypatch.setattr(checkout, "use_running_system", lambda: None)
    options = [word for spec in given for word in ("--instance", spec)]
    monkeypatch.setattr(sys, "argv", ["caravan", "dashboard", *options])
    with contextlib.suppress(SystemExit):
        cli.main()
    (page,) = served
    assert page.further == further


@pytest.mark.parametrize("spec", ["payments", "payment=8182", "payments=0", "payments=host:x"])
def test_an_instance_not_service_and_port_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], spec: str
) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda app, **how: pytest.fail("served"))
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "t" * 43)
    monkeypatch.setattr(checkout, "use_running_system", lambda: None)
    monkeypatch.setattr(sys, "argv", ["caravan", "dashboard", "--instance", spec])
    with pytest.raises(SystemExit) as done:
        cli.main()
    said = capsys.readouterr().err
    assert done.value.code == 2
    assert said == (
        f"--instance {spec!r}: not SERVICE=[HOST:]PORT, SERVICE one of orders, inventory,"
        " payments, notifications, platform\n"
    )


FROZEN = "cannot reach PostgreSQL (no answer within 2 s)"


def _every_service(settings: Settings, health: httpx.Response | Exception) -> httpx.MockTransport:
    """Every service answering its ``/healthz`` with ``health`` (raised, if an error), and
    its ``/metrics`` with no figures."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            if isinstance(health, Exception):
                raise health
            return health
        if request.url.path == "/metrics":
            return httpx.Response(200, text="")
        return httpx.Response(200, json={"orders": [], "total": 0})

    return httpx.MockTransport(answer)


async def test_every_service_saying_postgresql_is_down_is_said_as_their_shared_cause(
    no_kafka: None,
) -> None:
    """PostgreSQL frozen: every service says it (a 503 naming the database), and the page
    says PostgreSQL is the likely cause, not the services, where it showed five services down
    and named PostgreSQL nowhere."""
    settings = Settings(token="cvn_" + "s" * 43)
    checks = {"database": FROZEN, "kafka": "ok", "consumer": "ok", "relay": "ok"}
    body = {"title": "Unhealthy", "detail": f"database: {FROZEN}", "checks": checks}
    page = Dashboard(settings, transport=_every_service(settings, httpx.Response(503, json=body)))
    snap = await page.sample()
    said = (
        f"every service says PostgreSQL is not ok ({FROZEN}): PostgreSQL is the likely cause,"
        " not the services; restarting them will not mend it"
    )
    assert snap.shared == said
    assert f"<b>shared cause</b>: {html.escape(said)}" in page.page()


async def test_every_service_timing_out_at_once_is_said_as_a_shared_cause(no_kafka: None) -> None:
    settings = Settings(token="cvn_" + "s" * 43)
    page = Dashboard(settings, transport=_every_service(settings, httpx.ReadTimeout("slow")))
    snap = await page.sample()
    assert snap.shared is not None and snap.shared.startswith(
        "no service answered /healthz within 5 s, all at once: a cause they share is likely"
        " (PostgreSQL"
    )


async def test_one_service_s_own_fault_is_no_shared_cause(no_kafka: None) -> None:
    settings = Settings(token="cvn_" + "s" * 43)
    ok = {"status": "ok", "checks": {"database": "ok", "kafka": "ok"}}
    transport = _every_service(settings, httpx.Response(200, json=ok))
    page = Dashboard(settings, transport=transport)
    assert (await page.sample()).shared is None
    assert "shared cause" not in page.page()


def test_the_page_waits_for_a_health_answer_longer_than_the_services_bounds() -> None:
    """``/healthz`` answers within 2 s whatever PostgreSQL does, ``/metrics`` within the token
    check's 4 s: the page waited 2 s, and said "no answer" of services answering why."""
    from caravan.ops.dashboard import ASK_WITHIN
    from shared.auth.guard import READ_WITHIN
    from shared.http import HEALTH_DB_WITHIN

    assert ASK_WITHIN > READ_WITHIN + CLOSE_WITHIN and ASK_WITHIN > HEALTH_DB_WITHIN + CLOSE_WITHIN


def test_an_order_lookup_waits_longer_than_the_orders_api_s_bound_on_its_database() -> None:
    """The lookup waited 2 s, where the orders API answers a database not answering within
    ``CARAVAN_HTTP_DB_TIMEOUT_SECONDS`` (8 s) saying so (tests/e2e/test_db_black_hole.py); with
    none (0), a request needing a connection is answered within the token check's and the
    connect's bounds, and the page still answers."""
    from caravan.ops.dashboard import order_within
    from shared.auth.guard import READ_WITHIN

    assert order_within(Settings()) > Settings().http_db_timeout_seconds + CLOSE_WITHIN
    assert order_within(Settings(http_db_timeout_seconds=20)) > 20 + CLOSE_WITHIN
    unbounded = Settings(http_db_timeout_seconds=0, db_connect_timeout_seconds=10)
    assert READ_WITHIN + 10 + CLOSE_WITHIN < order_within(unbounded) < 60


async def test_the_stuck_orders_waited_for_do_not_hold_the_sample_s_questions_to_kafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stuck orders are waited for past the orders API's bound on its database (8 s, so
    that its 503 saying why is passed on): the sample's questions to Kafka, asked after them
    one after another, waited as long; they are asked while the orders API is."""
    asked_kafka = asyncio.Event()

    async def describe_groups(*args: Any, **kwargs: Any) -> Any:
        asked_kafka.set()
        return {}

    async def read(*args: Any, **kwargs: Any) -> Any:
        return []

    monkeypatch.setattr(kafka_admin, "describe_groups", describe_groups)
    monkeypatch.setattr(dlq.Kept, "read", read)
    settings = Settings(token="cvn_" + "s" * 43)
    ok = httpx.Response(200, json={"status": "ok", "checks": {"database": "ok"}})
    services = _every_service(settings, ok)

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ops/stuck-orders":
            try:  # the API still thinking
                await asyncio.wait_for(asked_kafka.wait(), 2)
            except TimeoutError:
                return httpx.Response(500, json={"detail": "Kafka not asked meanwhile"})
            return httpx.Response(
                503, json={"detail": "the database did not answer within 8 s; retry"}
            )
        return await services.handle_async_request(request)

    page = Dashboard(settings, transport=httpx.MockTransport(answer))
    snap = await page.sample()
    assert snap.unavailable["stuck"] == "HTTP 503: the database did not answer within 8 s; retry"


async def test_kafka_not_answering_is_said_and_the_rest_sampled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker frozen: each question to Kafka is given up after ``KAFKA_WITHIN``, said so,
    and the services' own figures sampled, where the sample waited on Kafka and the page
    showed its old figures (every service up, Kafka ok) as stale with no reason."""
    from caravan.ops import dashboard

    async def frozen(*args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(dashboard, "KAFKA_WITHIN", 0.05)
    monkeypatch.setattr(kafka_admin, "describe_groups", frozen)
    monkeypatch.setattr(dlq.Kept, "read", frozen)
    settings = Settings(token="cvn_" + "s" * 43)
    checks = {"database": "ok", "kafka": "no answer for 42 s"}
    degraded = httpx.Response(200, json={"status": "degraded", "checks": checks})
    page = Dashboard(settings, transport=_every_service(settings, degraded))
    snap = await page.sample()
    assert snap.unavailable["members"] == "Kafka did not answer within 0.05 s"
    assert snap.unavailable["dead_letters"] == "Kafka did not answer within 0.05 s"
    assert snap.health == dict.fromkeys(SERVICES, "degraded")
    assert snap.shared is not None and snap.shared.startswith(
        "every service says Kafka is not ok (no answer for 42 s): Kafka is the likely cause"
    )


async def test_a_sample_that_hangs_is_said_waiting_on_what_then_given_up(
    monkeypatch: pytest.MonkeyPatch, wall_clock: Clock
) -> None:
    """The page said "stale: sampling has not succeeded since ..." and no reason while a
    sample waited: it says what the sample waits on, and gives it up past SAMPLE_WITHIN."""
    from caravan.ops import dashboard

    hung = asyncio.Event()

    async def frozen(*args: Any, **kwargs: Any) -> Any:
        hung.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(dashboard, "SAMPLE_WITHIN", 0.5)
    monkeypatch.setattr(kafka_admin, "describe_groups", frozen)
    settings = Settings(token="cvn_" + "s" * 43)
    ok = httpx.Response(200, json={"status": "ok", "checks": {"database": "ok"}})
    page = Dashboard(settings, transport=_every_service(settings, ok))
    page.history.append(Snapshot(at=wall_clock.now - 60))
    sampling = asyncio.create_task(page.sample())
    await asyncio.wait_for(hung.wait(), 5)
    waiting = "waiting 0 s on Kafka: the consumer groups&#x27; members"
    assert f"{waiting}; the figures below are as they were then" in page.page()
    with pytest.raises(TimeoutError, match=r"no sample within 0\.5 s: given up on Kafka: the"):
        await sampling
