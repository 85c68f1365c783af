"""Every answer of a service's HTTP API that is not a success is a problem body saying what
went wrong (shared/http.py), whatever FastAPI or an unforeseen error would have said."""

import json
import logging
import time
from types import SimpleNamespace
from typing import Annotated, Any, cast, get_args
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.notifications.adapters.http_gateway import SimulatorGateway
from services.notifications.entrypoints.http import add_routes
from services.platform.adapters.platform_api import PlatformApi
from services.platform.domain.orders import ProblemKind
from services.platform.domain.retries import Backoff
from services.platform.domain.signing import sign
from services.platform.entrypoints.http import DOT_SEGMENTS, REPLAYED, Gate, Refetch, push_router
from shared.api import DATABASE_AWAY, DATABASE_BUSY
from shared.db import Database
from shared.db.engine import connecting
from shared.http import (
    NO_NUL,
    NOT_JSON,
    PROBLEM,
    RETRY_SECONDS,
    create_app,
    invalid,
    require,
)
from shared.messaging.uow import UnitOfWork
from shared.settings import PlatformApp, Settings
from tests.unit.test_healthz import FakeDatabase


def service() -> FastAPI:
    return create_app("orders", cast(Database, FakeDatabase()), Settings())


async def call(app: FastAPI, method: str, path: str, **how: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        return await client.request(method, path, **how)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("input +8613912345678 of the request"),
        # Not transient, not a bad value: _database_error raises it on.
        asyncpg.UndefinedColumnError('column "input +8613912345678" does not exist'),
    ],
)
async def test_an_unexpected_error_is_a_500_problem_and_one_error_log_line(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """It was a plain-text "Internal Server Error" (not the contract's problem body), and its
    traceback was logged by the server, outside the request's trace, without its path."""
    app = service()

    @app.get("/broken/{part}")
    async def broken(part: str) -> None:
        raise error

    with caplog.at_level(logging.INFO):
        answer = await call(app, "GET", "/broken/here")
    assert (answer.status_code, answer.headers["content-type"]) == (500, PROBLEM), answer.text
    body = answer.json()
    assert body["title"] == "Internal Server Error" and body["detail"]
    assert "8613912345678" not in answer.text and "Error" not in body["detail"]
    [logged] = [r for r in caplog.records if r.exc_info]
    assert logged.levelno == logging.ERROR and "GET /broken/here" in logged.getMessage()
    assert logged.exc_info is not None and logged.exc_info[1] is error


async def test_a_request_postgresql_refuses_a_connection_to_is_told_it_takes_no_more() -> None:
    """PostgreSQL at max_connections (a drill held every free connection) refuses a new one:
    the 503 said "the database is not reachable", where it was reachable and full, and said
    so in the log. Now its detail says the database takes no more connections; away is
    still said as away."""
    app = service()

    @app.post("/full")
    async def full() -> None:
        raise asyncpg.TooManyConnectionsError("remaining connection slots are reserved")

    @app.post("/away")
    async def away() -> None:
        raise connecting(ConnectionRefusedError(111, "Connect call failed"), "db.example:5433")

    said = [(await call(app, "POST", path)).json()["detail"] for path in ("/full", "/away")]
    assert said == [DATABASE_BUSY, DATABASE_AWAY]


async def test_a_request_postgresql_answers_and_refuses_is_told_why_not_that_it_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 49's drill filled PostgreSQL's disk: every write's 503 said "the database is
    not reachable; retry", where it answered and refused (SQLSTATE 53100). The 503 says why,
    in words that name none of its files; a lock not granted in time too."""
    app = service()

    @app.post("/disk")
    async def disk() -> None:
        raise asyncpg.DiskFullError('could not extend file "base/16385/16433": No space left')

    @app.post("/lock")
    async def lock() -> None:
        raise asyncpg.LockNotAvailableError("could not obtain lock on row in relation")

    answers = [await call(app, "POST", path) for path in ("/disk", "/lock")]
    assert [(a.status_code, a.headers["Retry-After"]) for a in answers] == [(503, "5")] * 2
    assert [a.json()["detail"] for a in answers] == [
        "the database refuses the work for now: its disk is full (SQLSTATE 53100); retry",
        "the database refuses the work for now: a lock the work needs was not granted in time"
        " (SQLSTATE 55P03); retry",
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "shared.http"]
    assert logged[0].startswith(
        "POST /disk: 503, the database refuses the work for now: its disk is full (SQLSTATE"
        " 53100): PostgreSQL at "
    ), logged


async def test_a_request_meeting_postgresql_away_is_asked_again_in_a_few_seconds() -> None:
    """POST /orders, or any route, while PostgreSQL is away: a 503 saying to come back in
    :data:`RETRY_SECONDS` (it was 1 s: a client asked back every second through a restart)."""
    app = service()

    @app.post("/away")
    async def away() -> None:
        raise connecting(ConnectionRefusedError(111, "Connect call failed"), "db.example:5433")

    answer = await call(app, "POST", "/away")
    assert (answer.status_code, answer.headers["content-type"]) == (503, PROBLEM), answer.text
    assert answer.headers["retry-after"] == "5" == str(RETRY_SECONDS)


async def test_fastapis_own_refusals_say_what_was_asked() -> None:
    """An unknown route or method were problems with an empty detail (the 404's and 405's
    words were their title)."""
    app = service()
    unknown = await call(app, "GET", "/nothing/here")
    assert (unknown.status_code, unknown.headers["content-type"]) == (404, PROBLEM)
    assert unknown.json()["title"] == "Not Found"
    assert unknown.json()["detail"] == "no route GET /nothing/here"
    method = await call(app, "DELETE", "/metrics")
    assert (method.status_code, method.headers["allow"]) == (405, "GET")
    assert method.json()["detail"] == "DELETE /metrics: it takes GET"


async def test_a_refused_platform_push_says_why() -> None:
    """The push's 401s had an empty detail: the platform's developer could not tell a wrong
    secret from a clock out of the window."""
    secret = "s" * 16
    app = pushes(secret)
    params = {"timestamp": "1764489600", "order_id": "P-1"}
    signed = {**params, "sign": sign(params, secret, "hmac-sha256")}
    wrong = await call(app, "POST", "/platform/shop/push", data={**params, "sign": "AB" * 32})
    stale = await call(app, "POST", "/platform/shop/push", data=signed)
    read = "timestamp '1764489600', read as 2025-11-30T08:00:00+00:00, is "
    ahead = {"timestamp": str(int(time.time()) + 3600), "order_id": "P-1"}
    future = await call(
        app, "POST", "/platform/shop/push", data={**ahead, "sign": sign(ahead, secret)}
    )
    said = [(r.status_code, r.json()["title"], r.json()["detail"]) for r in (wrong, stale)]
    assert said[0] == (
        401,
        "Bad signature",
        "no app 'shop' with a secret that signs this push",
    )
    assert said[1][:2] == (401, "Stale timestamp")
    assert said[1][2].startswith(read) and " s before Caravan's time (20" in said[1][2], said[1]
    assert said[1][2].endswith("), out of the window of 300 s either way"), said[1]
    # One ahead was titled "Stale timestamp" too: it is not stale, a clock is ahead.
    assert (future.status_code, future.json()["title"]) == (401, "Timestamp in the future")
    assert " s after Caravan's time (20" in future.json()["detail"], future.text


async def test_a_push_with_no_sign_or_one_no_secret_signs_says_so_for_any_app() -> None:
    """A push without ``sign``, or with one in base64 (as some platforms sign their webhooks),
    was told "no app 'shop' with a secret that signs this push", as a wrong secret is: its
    integrator checked the app's name and secret, both right. Such a sign is no signature of
    any app's, whatever the app: said so, an app unknown told the same (which apps exist is
    still not said), the value never quoted."""
    secret = "s" * 16
    app = pushes(secret)
    params = {"timestamp": str(int(time.time())), "order_id": "P-1", "push_id": "p-1"}
    base64 = "x3JJHMbDL1EF4ZOq/9GQOdDylG9bVWeYOVUZ6eYE2MQ="
    digits = "64 (hmac-sha256) or 32 (md5) (upper- or lower-case; base64 is not read)"
    expected = {
        None: "the push carries no sign: sign every other parameter with the app's secret",
        "": "the push carries no sign: sign every other parameter with the app's secret",
        base64: f"sign is 44 characters, not the hex digits of a signature, {digits}",
        "Z" * 64: f"sign is 64 characters, not the hex digits of a signature, {digits}",
    }
    for given, said in expected.items():
        sent = params if given is None else {**params, "sign": given}
        for name in ("shop", "nosuch"):
            answer = await call(app, "POST", f"/platform/{name}/push", data=sent)
            told = (answer.status_code, answer.json()["title"], answer.json()["detail"])
            assert told == (401, "Bad signature", said), (given, name, answer.text)
    # A sign of the right shape but wrong is still told as a wrong secret or app.
    wrong = await call(app, "POST", "/platform/shop/push", data={**params, "sign": "ab" * 16})
    assert wrong.json()["detail"] == "no app 'shop' with a secret that signs this push"


def pushes(secret: str) -> FastAPI:
    """The push route of an app ``shop``, in an app with no database (refused before any is
    needed)."""
    api = SimpleNamespace(apps={"shop": PlatformApp(secret=secret, api_url="http://shop")})
    app = FastAPI()
    app.include_router(
        push_router(cast(UnitOfWork, None), cast(PlatformApi, api), 300, Backoff(), Gate(10, 8.0))
    )
    return app


async def test_a_refetch_documents_only_what_it_can_answer() -> None:
    """A refetch listed the push's 401 (a bad signature, a stale timestamp) and 409 (a push id
    taken), which it never answers, and not the 401 and 403 of its token. Neither declares
    the 409 of a race lost at commit: the adapter holds no row for its commit that another
    request can take first (its inserts settle a conflict themselves), and a push told "send
    it again" of a 409 beside "a push id another push took" was told both ways."""
    document = (await call(pushes("s" * 16), "GET", "/openapi.json")).json()
    refetch = document["paths"]["/platform/refetch"]["post"]["responses"]
    push = document["paths"]["/platform/{app}/push"]["post"]["responses"]
    statuses = ["200", "401", "403", "404", "413", "422", "429", "502", "503"]
    assert sorted(refetch) == statuses
    assert refetch["401"]["description"] == "no bearer token, or one unknown or revoked"
    assert "signature" not in refetch["401"]["description"]
    assert sorted(push) == ["200", "401", "404", "409", "413", "422", "502", "503"]
    assert push["409"]["description"] == REPLAYED
    assert "an app not configured" in refetch["422"]["description"]
    # They said "(see the module docstring)", which a reader of /docs cannot read.
    route = document["paths"]["/platform/{app}/push"]["post"]
    body = route["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    for said in (route["description"], body["description"]):
        assert "docstring" not in said, said
    assert "HMAC-SHA256 keyed with the app's" in route["description"], route["description"]
    assert 'docs/platform.md, "Pushing an order"' in route["description"]


async def test_a_push_and_a_refetch_document_their_answer_naming_a_problem_s_kinds() -> None:
    """Their 200 was undocumented (any JSON), and a ``problem`` said nothing of what it was:
    both document ``status``, ``order_ref`` and, for a ``problem``, its kinds (those
    ``GET /platform/problems`` lists), never a problem's detail, and of an ``invalid_order``
    the fields at fault (``errors``)."""
    document = (await call(pushes("s" * 16), "GET", "/openapi.json")).json()
    for path in ("/platform/{app}/push", "/platform/refetch"):
        ok = document["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"] == {"$ref": "#/components/schemas/PushAnswer"}
    answer = document["components"]["schemas"]["PushAnswer"]
    assert sorted(answer["properties"]) == ["errors", "order_ref", "problems", "status"]
    assert answer["required"] == ["status", "order_ref"]
    [kinds, _] = answer["properties"]["problems"]["anyOf"]  # or null: left out then
    assert kinds["items"]["enum"] == list(get_args(ProblemKind))


async def test_a_push_that_is_not_one_is_a_422_naming_what_is_at_fault() -> None:
    """Its 422s said why in the detail alone, without the errors every other 422 carries. A
    body that cannot be read is refused before its signature is checked (there are no
    parameters to check it on); an order_id or push_id that cannot be, after (a 401 first
    for a push not signed)."""
    secret = "s" * 16
    app = pushes(secret)
    json_type = {"content-type": "application/json"}
    gbk = '{"order_id": "沙湾-1"}'.encode("gbk")
    now = str(int(time.time()))
    order = {"timestamp": now, "order_id": "P 1"}
    han = {"timestamp": now, "order_id": "订单0001"}
    long_id = {"timestamp": now, "order_id": "P-1", "push_id": "p" * 129}
    zoneless = {"timestamp": "2026-12-04T17:04:00", "order_id": "P-1"}
    formats = "timestamp needed, one of: Unix seconds or milliseconds, ISO 8601 with a zone"
    sent: list[tuple[dict[str, Any], str, str]] = [
        ({"content": b"\xff=1"}, "body", "not UTF-8: invalid start byte at byte 0"),
        ({"content": gbk, "headers": json_type}, "body", "not UTF-8: invalid continuation byte at"),
        ({"content": b'{"timestamp": NaN}', "headers": json_type}, "body", "NaN is not a number"),
        ({"content": b"[" * 10_000, "headers": json_type}, "body", "a JSON push must be a flat"),
        ({"content": b"[]", "headers": json_type}, "body", "a JSON push must be an object"),
        ({"data": {**order, "sign": sign(order, secret)}}, "order_id", "order_id needed: 1-64"),
        (  # its letters are ASCII's: it said "each a letter", and 订 is one
            {"data": {**han, "sign": sign(han, secret)}},
            "order_id",
            "order_id needed: 1-64 characters, each an ASCII letter or digit",
        ),
        ({"data": {**long_id, "sign": sign(long_id, secret)}}, "push_id", "push_id of at most"),
        (
            {"data": {**zoneless, "sign": sign(zoneless, secret)}},
            "timestamp",
            "timestamp '2026-12-04T17:04:00' is in no format read: send one of: Unix seconds",
        ),
        (
            {"data": {"order_id": "P-1", "sign": sign({"order_id": "P-1"}, secret)}},
            "timestamp",
            formats,
        ),
    ]
    for how, field, said in sent:
        answer = await call(app, "POST", "/platform/shop/push", **how)
        assert (answer.status_code, answer.json()["title"]) == (422, "Not a platform push")
        [error] = answer.json()["errors"]
        assert (error["field"], error["message"][: len(said)]) == (field, said), answer.text
        assert error["message"] == answer.json()["detail"]
    unsigned = await call(app, "POST", "/platform/shop/push", data={**order, "sign": "AB"})
    assert unsigned.status_code == 401
    # Every parameter at fault is named: it named one, and the integrator mended one a time.
    both = {"order_id": "P 1", "push_id": "p" * 129}
    answer = await call(
        app, "POST", "/platform/shop/push", data={**both, "sign": sign(both, secret)}
    )
    assert answer.status_code == 422, answer.text
    named = [error["field"] for error in answer.json()["errors"]]
    assert named == ["order_id", "timestamp", "push_id"], answer.text


async def test_a_push_whose_text_is_not_utf_8_is_a_422_saying_so() -> None:
    """A form whose values were percent-encoded GBK was read as replaced text (U+FFFD) and
    refused 401 "Bad signature" ("no app 'shop' with a secret that signs this push"), its
    signature checked over text no one signed; a JSON body in UTF-16 was "Expecting value:
    line 1 column 1 (char 0)". Both are 422 "not UTF-8", as the same bytes sent raw are."""
    secret = "s" * 16
    app = pushes(secret)
    params = {"timestamp": str(int(time.time()) - 3600), "order_id": "P-1", "event": "订单已付款"}
    params["sign"] = sign(params, secret)  # over the UTF-8 text, as a platform signs
    gbk = urlencode(params, encoding="gbk")
    json_type = {"content-type": "application/json"}
    sent: list[tuple[dict[str, Any], str]] = [
        (
            {"content": gbk, "headers": {"content-type": "application/x-www-form-urlencoded"}},
            "not UTF-8: parameter 'event' once percent-decoded (GBK, maybe?): percent-encode"
            " UTF-8, the text signed",
        ),
        (
            {"content": urlencode({"事件": "x"}, encoding="gbk")},
            "not UTF-8: a parameter's name once percent-decoded (GBK, maybe?)",
        ),
        (
            {"content": json.dumps(params).encode("utf-16"), "headers": json_type},
            "not UTF-8: invalid start byte at byte 0",
        ),
    ]
    for how, said in sent:
        answer = await call(app, "POST", "/platform/shop/push", **how)
        assert (answer.status_code, answer.json()["title"]) == (422, "Not a platform push"), (
            answer.text
        )
        assert answer.json()["detail"][: len(said)] == said, answer.text
    # The same push percent-encoded as UTF-8 is read, its signature good: an hour old, it is
    # refused for its timestamp alone (this app has no database to go further).
    utf8 = await call(app, "POST", "/platform/shop/push", data=params)
    assert (utf8.status_code, utf8.json()["title"]) == (401, "Stale timestamp"), utf8.text


async def test_an_order_id_of_a_dot_segment_is_refused_as_no_order_api_path_holds_it() -> None:
    """A push of order_id ``..`` had the order API asked ``GET /?app_key=...``, and one of
    ``.`` ``GET /orders?...``: httpx resolves a dot segment of a path (and servers that
    normalise one sent as ``%2E%2E``). Each is refused at the push (and by a refetch), before
    the order API is asked."""
    secret = "s" * 16
    app = pushes(secret)
    stale = str(int(time.time()) - 3600)  # else a 401 Stale timestamp: no fault found
    for order_id in DOT_SEGMENTS:
        params = {"timestamp": stale, "order_id": order_id}
        answer = await call(
            app, "POST", "/platform/shop/push", data={**params, "sign": sign(params, secret)}
        )
        assert (answer.status_code, answer.json()["title"]) == (422, "Not a platform push"), (
            answer.text
        )
        said = (
            f"order_id {order_id!r} names no order the order API can be asked for: in"
            f" {{api_url}}/orders/{order_id} it is a path's dot segment"
        )
        [error] = answer.json()["errors"]
        assert error["field"] == "order_id" and error["message"].startswith(said), answer.text
        with pytest.raises(ValidationError, match="names no order the order API can be"):
            Refetch(app="shop", platform_order_id=order_id)
    kept = {"timestamp": stale, "order_id": "..P.1"}  # a dot segment no longer
    answer = await call(
        app, "POST", "/platform/shop/push", data={**kept, "sign": sign(kept, secret)}
    )
    assert (answer.status_code, answer.json()["title"]) == (401, "Stale timestamp"), answer.text


async def test_a_body_that_is_no_delivery_receipt_is_a_422_saying_why() -> None:
    """Its 422 said why in the detail alone, without the errors every other 422 carries."""
    app = service()
    add_routes(app, cast(UnitOfWork, None), SimulatorGateway("http://sim", None, 1.0), "k")
    for body in (b"\xff", b"[" * 10_000, b'[{"id": "1"}]', b'"a"'):
        answer = await call(app, "POST", "/sms/receipts?key=k", content=body)
        assert (answer.status_code, answer.json()["title"]) == (422, "Not a delivery receipt")
        [error] = answer.json()["errors"]
        assert error == {"field": "body", "message": answer.json()["detail"]}, answer.text


@pytest.mark.parametrize(
    ("content_type", "said"),
    [
        ("text/plain;charset=UTF-8", "the body is text/plain;charset=UTF-8"),  # fetch's default
        ("application/x-www-form-urlencoded", "the body is application/x-www-form-urlencoded"),
    ],
)
async def test_a_json_body_sent_as_another_type_is_a_422_naming_the_type_to_send(
    content_type: str, said: str
) -> None:
    """A browser's fetch with a string body sends text/plain, curl -d a form type: FastAPI
    does not read either as JSON, and the 422 said "Input should be a valid dictionary or
    object to extract fields from", whatever the body held. The contract's 422 (bad input),
    saying which type to send."""
    app = service()

    @app.post("/things")
    async def things(body: dict[str, int]) -> dict[str, int]:
        return body

    answer = await call(
        app, "POST", "/things", content=b'{"x": 1}', headers={"content-type": content_type}
    )
    assert (answer.status_code, answer.headers["content-type"]) == (422, PROBLEM), answer.text
    send = f"{said}: send Content-Type: application/json"
    assert (answer.json()["detail"], answer.json()["errors"]) == (
        send,
        [{"field": "body", "message": send}],
    )
    # Bad input sent as JSON is the contract's 422 as ever, and so is no body at all.
    bad = await call(app, "POST", "/things", json={"x": "one"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "x"
    assert (await call(app, "POST", "/things")).status_code == 422


class Line(BaseModel):
    """A body as the services take one: text bounded, a count bounded and strict."""

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(strict=True, ge=1, le=10_000)


NOT_UTF8 = "not UTF-8: invalid start byte at byte 0"
GBK = '{"sku": "沙湾辣椒", "quantity": 1}'.encode("gbk")  # 湾 is 0xCD 0xE5 (沙 is UTF-8's ɳ)
NOT_GBK = "not UTF-8: invalid continuation byte at byte 11"
DEEP = "not JSON this API reads: nested too deep"
NOT_TEXT = "must be Unicode text: it holds a lone surrogate (\\ud800-\\udfff)"
NOT_INT = "must be a whole number"
NOT_OBJECT = "must be a JSON object"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param(b'\xff{"sku": "A", "quantity": 1}', "body", NOT_UTF8, id="not-utf-8"),
        pytest.param(GBK, "body", NOT_GBK, id="gbk"),
        pytest.param(b"[" * 10_000 + b"]" * 10_000, "body", DEEP, id="nested-10000"),
        pytest.param(
            b'{"sku": "A", "quantity": 1, "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
            "body",
            DEEP,
            id="nested-10000-in-a-field",
        ),
        pytest.param(b'{"sku": "\\ud800", "quantity": 1}', "sku", NOT_TEXT, id="lone-surrogate"),
        pytest.param(b'{"sku": "A", "quantity": NaN}', "quantity", NOT_INT, id="nan"),
        pytest.param(b'{"sku": "A", "quantity": -Infinity}', "quantity", NOT_INT, id="infinity"),
        pytest.param(b'[{"sku": "A", "quantity": 1}]', "body", NOT_OBJECT, id="array"),
        pytest.param(b'"sku A"', "body", NOT_OBJECT, id="string"),
        pytest.param(b"", "body", "must be given", id="empty"),
        pytest.param(
            b'{"sku": "A", "quantity": 1' + b"0" * 30 + b"}",
            "quantity",
            "must be 10000 or less",
            id="10**30",
        ),
        pytest.param(
            b'{"sku": "' + b"A" * 500_000 + b'", "quantity": 1}',
            "sku",
            "must be at most 64 characters",
            id="long-string",
        ),
    ],
)
async def test_every_malformed_json_body_is_the_contracts_422(
    body: bytes, field: str, message: str
) -> None:
    """Each a 422 problem naming the field at fault, as CONTRACT.md says of bad input, and the
    route never runs. A body that is not UTF-8 (GBK text, which a county storefront may well
    send) and one nested 10,000 deep (past Python's recursion limit) were FastAPI's 400
    "There was an error parsing the body", with no errors."""
    app = service()
    ran = []

    @app.post("/lines")
    async def lines(line: Line) -> str:
        ran.append(line)
        return "taken"

    answer = await call(
        app, "POST", "/lines", content=body, headers={"content-type": "application/json"}
    )
    assert (answer.status_code, answer.headers["content-type"]) == (422, PROBLEM), answer.text
    said = answer.json()
    assert {"type", "title", "status", "detail"} <= said.keys() and said["status"] == 422
    assert [(e["field"], e["message"]) for e in said["errors"]] == [(field, message)]
    assert ran == []
    assert (await call(app, "POST", "/lines", json={"sku": "A", "quantity": 1})).json() == "taken"


@pytest.mark.parametrize("body", [b'{"sku": ', b"sku=A&quantity=1", b"{'sku': 'A'}"])
async def test_a_body_that_is_not_json_says_so_in_its_detail(body: bytes) -> None:
    """Its detail said "the request does not match its schema", its one error "not JSON":
    the detail says what is wrong, the error where, the problem's shape as ever."""
    app = service()

    @app.post("/lines")
    async def lines(line: Line) -> str:
        return "taken"

    answer = await call(
        app, "POST", "/lines", content=body, headers={"content-type": "application/json"}
    )
    assert (answer.status_code, answer.headers["content-type"]) == (422, PROBLEM), answer.text
    said = answer.json()
    assert (said["title"], said["detail"]) == ("Invalid request", NOT_JSON)
    [error] = said["errors"]
    assert error["field"] == "body" and error["message"].startswith("not JSON: "), error


async def test_an_unreadable_body_without_a_token_is_401_first() -> None:
    """The token check answers before the body is judged (refusal_first), for a body FastAPI
    could not decode as for any other: the 400 came before it."""
    app = service()

    @app.post("/lines", dependencies=[require("orders:write")])
    async def lines(line: Line) -> str:
        return "taken"

    json_type = {"content-type": "application/json"}
    for body in (b"\xff{}", b"[" * 10_000):
        answer = await call(app, "POST", "/lines", content=body, headers=json_type)
        assert (answer.status_code, answer.json()["title"]) == (401, "Unauthorized"), answer.text


async def test_a_body_with_no_content_type_is_read_as_json() -> None:
    """Python's requests with ``data=`` and httpx with ``content=`` send no Content-Type:
    FastAPI's strict default left such a body unread (a 422, "the body has no
    Content-Type")."""
    app = service()

    @app.post("/things")
    async def things(body: dict[str, int]) -> dict[str, int]:
        return body

    answer = await call(app, "POST", "/things", content=b'{"x": 1}')
    assert (answer.status_code, answer.json()) == (200, {"x": 1}), answer.text
    broken = await call(app, "POST", "/things", content=b'{"x": ')
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["field"] == "body", broken.text


async def test_a_path_id_holding_nul_is_404_but_where_a_put_would_store_it() -> None:
    """NO_NUL, in one app with no database (the services' own routes: e2e test_http.py)."""
    app = service()

    @app.api_route("/things/{thing_id}", methods=["GET", "PUT", "DELETE"])
    async def thing(thing_id: Annotated[str, Path(max_length=64), NO_NUL]) -> str:
        return thing_id

    said = [(await call(app, m, "/things/a%00b")) for m in ("GET", "DELETE", "PUT")]
    assert [(a.status_code, a.json()["detail"]) for a in said[:2]] == [
        (404, "no thing_id holds NUL (PostgreSQL cannot store one)")
    ] * 2
    assert said[2].status_code == 422
    assert said[2].json()["errors"] == [
        {"field": "path.thing_id", "message": "must not contain NUL"}
    ]
    assert (await call(app, "GET", "/things/ab")).json() == "ab"


async def test_a_query_parameter_holding_nul_is_422_naming_it() -> None:
    """NO_NUL on a query parameter (GET /orders?buyer_id=): 422 naming the field, as any
    invalid parameter (orders checked its buyer_id by hand before)."""
    app = service()

    @app.get("/things")
    async def things(owner: Annotated[str, Query(max_length=64), NO_NUL]) -> str:
        return owner

    said = await call(app, "GET", "/things?owner=a%00b")
    assert said.status_code == 422
    assert said.json()["errors"] == [{"field": "query.owner", "message": "must not contain NUL"}]
    assert (await call(app, "GET", "/things?owner=ab")).json() == "ab"


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str
    lines: list[_Line]


def test_a_body_s_unknown_fields_are_named_by_the_error_s_type() -> None:
    """A 422 names the fields a body holds that the route does not know in
    ``unknown_fields``, at any depth, as (and in the order) ``errors`` name them, told by
    pydantic's error type (``extra_forbidden``): a client read it only in pydantic's words
    ("Extra inputs are not permitted"), which an upgrade may change. A 422 of none has none."""
    with pytest.raises(ValidationError) as refused:
        _Body.model_validate({"reason": "x", "by": "operator", "lines": [{"sku": "a", "qty": 1}]})
    said = json.loads(bytes(invalid(refused.value).body))
    assert said["unknown_fields"] == ["lines.0.qty", "by"], said
    assert [e["field"] for e in said["errors"]] == ["lines.0.qty", "by"], said
    with pytest.raises(ValidationError) as refused:
        _Body.model_validate({"lines": []})
    assert "unknown_fields" not in json.loads(bytes(invalid(refused.value).body))
