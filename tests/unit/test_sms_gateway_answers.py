"""What the SMS gateway clients (services.notifications.adapters.http_gateway) make of each
kind of answer: a refusal of the message itself is final, a refusal of our account or
configuration (a key, a credit, a URL to put right) is retried like a gateway that is down."""

import contextlib
import logging
from typing import Any

import httpx
import orjson
import pytest

from services.notifications.adapters.gateway import GatewayError, OutgoingSms
from services.notifications.adapters.http_gateway import InfobipGateway, SimulatorGateway

Gateway = SimulatorGateway | InfobipGateway
MESSAGE = OutgoingSms(sms_id="sms-1", dedup_key="k-1", to="+8613912345678", text="hi")


def answering(kind: str, status: int, body: dict[str, Any] | None = None) -> Gateway:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=orjson.dumps(body or {"error": "no"}))

    transport = httpx.MockTransport(answer)
    if kind == "simulator":
        return SimulatorGateway("http://sms.test", None, 1, transport=transport)
    return InfobipGateway("http://sms.test", "key", "Caravan", None, 1, transport=transport)


def infobip_status(name: str, group: str = "REJECTED") -> dict[str, Any]:
    return {"messages": [{"messageId": "sms-1", "status": {"groupName": group, "name": name}}]}


async def refusal(gateway: Gateway) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await gateway.send(MESSAGE)
    return caught.value


@pytest.mark.parametrize("kind", ["simulator", "infobip"])
@pytest.mark.parametrize("status", [401, 402, 403, 404, 407, 408, 429, 500, 503])
async def test_an_answer_about_our_account_or_the_gateway_is_retried(
    kind: str, status: int
) -> None:
    # A rotated API key (401/403), no credit (402), a wrong base URL (404), a proxy (407):
    # every text would be refused alike until operations put it right.
    assert (await refusal(answering(kind, status))).transient


@pytest.mark.parametrize("kind", ["simulator", "infobip"])
@pytest.mark.parametrize("status", [400, 413, 422])
async def test_a_refusal_of_the_message_itself_is_final(kind: str, status: int) -> None:
    error = await refusal(answering(kind, status))
    assert not error.transient and f"HTTP {status}" in str(error)


@pytest.mark.parametrize(
    "name",
    [
        "REJECTED_NOT_ENOUGH_CREDITS",
        "REJECTED_PREPAID_PACKAGE_EXPIRED",
        "REJECTED_ROUTE_NOT_AVAILABLE",
        "REJECTED_SENDER",
        "REJECTED_SOURCE",
    ],
)
async def test_infobip_rejecting_our_account_is_retried(name: str) -> None:
    error = await refusal(answering("infobip", 200, infobip_status(name)))
    assert error.transient and name in str(error)


@pytest.mark.parametrize(
    "name", ["REJECTED_DESTINATION", "REJECTED_PREFIX_MISSING", "REJECTED_DND", "UNKNOWN_NEW"]
)
async def test_infobip_rejecting_the_message_is_final(name: str) -> None:
    assert not (await refusal(answering("infobip", 200, infobip_status(name)))).transient


async def test_infobip_accepting_names_our_message() -> None:
    accepted = answering("infobip", 200, infobip_status("PENDING_ACCEPTED", "PENDING"))
    assert (await accepted.send(MESSAGE)).provider_id == "sms-1"


async def test_an_account_refusal_is_logged_once_not_per_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = iter([401, 401, 401, 403, 403, 200, 401])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={"id": "gw-1"})

    gateway = SimulatorGateway("http://sms.test", None, 1, transport=httpx.MockTransport(answer))
    with caplog.at_level(logging.INFO, logger="services.notifications.adapters.http_gateway"):
        for _ in range(7):
            with contextlib.suppress(GatewayError):
                await gateway.send(MESSAGE)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "WARNING", "INFO", "WARNING"]
    assert "HTTP 401" in lines[0][1] and "HTTP 403" in lines[1][1] and "HTTP 401" in lines[3][1]


def answering_raw(kind: str, provider_id: bytes) -> Gateway:
    """A gateway accepting the message under ``provider_id`` (raw JSON: it may be any
    value, or a string orjson would not write, a lone surrogate)."""
    if kind == "simulator":
        body = b'{"id": %s}' % provider_id
    else:
        accepted = b'{"groupName": "PENDING", "name": "PENDING_ACCEPTED"}'
        body = b'{"messages": [{"messageId": %s, "status": %s}]}' % (provider_id, accepted)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    transport = httpx.MockTransport(answer)
    if kind == "simulator":
        return SimulatorGateway("http://sms.test", None, 1, transport=transport)
    return InfobipGateway("http://sms.test", "key", "Caravan", None, 1, transport=transport)


@pytest.mark.parametrize(
    "provider_id",
    [b"12345", b'"sim-\\u0000x"', b'"sim-\\ud800"', b'{"id": "sim-1"}', b"true", b"null"],
    ids=["a number", "NUL", "a lone surrogate", "an object", "a boolean", "null"],
)
@pytest.mark.parametrize("kind", ["simulator", "infobip"])
async def test_an_id_the_database_cannot_keep_is_asked_again(kind: str, provider_id: bytes) -> None:
    # Recorded, it would fail the batch's update, over and over (the text sent each time).
    error = await refusal(answering_raw(kind, provider_id))
    assert error.transient and "id" in str(error)


@pytest.mark.parametrize("kind", ["simulator", "infobip"])
async def test_a_long_id_is_kept_whole(kind: str) -> None:
    long_id = "sim-" + "7" * 300
    accepted = await answering_raw(kind, b'"%s"' % long_id.encode()).send(MESSAGE)
    assert accepted.provider_id == long_id
