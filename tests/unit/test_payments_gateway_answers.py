"""What the HTTP gateway client makes of each kind of answer (services.payments.adapters.
gateway_http): a refusal declines a charge or ends a void, anything it cannot be sure of is
asked again."""

import httpx
import pytest

from services.payments.adapters.gateway import (
    ChargeResult,
    GatewayUnavailable,
    GatewayUnreached,
    NoSuchCharge,
    VoidRefused,
)
from services.payments.adapters.gateway_http import HttpGateway


def gateway(status: int, body: bytes, content_type: str = "application/json") -> HttpGateway:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return HttpGateway("http://gateway.test", 1, transport=httpx.MockTransport(answer))


async def test_an_approval_and_a_decline_are_read_from_the_answer() -> None:
    approved = gateway(200, b'{"status": "approved", "charge_id": "ch_1", "reason": null}')
    assert await approved.charge("o-1", 100, "b") == ChargeResult("approved", charge_id="ch_1")
    declined = gateway(200, b'{"status": "declined", "charge_id": null, "reason": "card"}')
    assert await declined.charge("o-1", 100, "b") == ChargeResult("declined", reason="card")


async def test_a_charge_refused_with_a_4xx_is_declined_with_the_answer_as_its_reason() -> None:
    refused = gateway(400, b'{"title": "charge refused",\n "detail": "barred"}', "application/json")
    result = await refused.charge("o-1", 100, "b")
    assert result.status == "declined" and result.charge_id is None
    assert result.reason == 'HTTP 400: {"title": "charge refused", "detail": "barred"}'
    assert (await gateway(422, b"").charge("o-1", 100, "b")).reason == "HTTP 422"


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, b"oops", "text/plain"),
        (503, b"", "text/plain"),
        (429, b'{"title": "slow down"}', "application/json"),  # come back later
        (409, b'{"title": "in progress"}', "application/json"),  # the key's first call runs
        (408, b"", "text/plain"),
        (401, b'{"title": "bad key"}', "application/json"),  # refused *us*: not the buyer
        (403, b"", "text/plain"),
        (404, b"Not Found", "text/plain"),  # a wrong base URL: not the buyer either
        (405, b"", "text/plain"),
        (407, b"", "text/plain"),
        (200, b"<html>502 upstream hiccup</html>", "text/html"),  # a proxy's page
        (200, b'["approved"]', "application/json"),  # JSON, not the object
        (200, b'{"status": "pending"}', "application/json"),
        (200, b"\xff\xfe", "application/json"),  # not UTF-8
        (302, b"", "text/plain"),  # not followed: not an answer
    ],
)
async def test_an_answer_that_does_not_decide_the_charge_is_asked_again(
    status: int, body: bytes, content_type: str
) -> None:
    with pytest.raises(GatewayUnavailable):
        await gateway(status, body, content_type).charge("o-1", 100, "b")


@pytest.mark.parametrize("status", [401, 403, 405, 407, 408, 409, 425, 429, 500, 503, 302])
async def test_a_void_not_refused_for_good_is_made_again(status: int) -> None:
    """No answer to be sure of (a 5xx, asked to come back, the key's charge still running:
    409), or a refusal of *us* (a key, a wrong route): the void is made again."""
    with pytest.raises(GatewayUnavailable, match=f"HTTP {status}"):
        await gateway(status, b"no").void("o-1")
    await gateway(200, b"{}").void("o-1")  # done
    await gateway(204, b"").void("o-1")


async def test_a_void_answered_404_says_the_gateway_knows_no_such_charge() -> None:
    """A 404 to a void is the gateway's "no such charge" (its route is there: our charges
    reach it), not a wrong base URL as to a charge: told apart, with the answer, for the
    loop to decide by what it knows of the charge (services.payments.prepaid)."""
    with pytest.raises(NoSuchCharge) as said:
        await gateway(404, b'{"title": "no such charge"}').void("o-1")
    assert str(said.value) == '/charges/o-1/void: HTTP 404: {"title": "no such charge"}'
    assert isinstance(said.value, GatewayUnavailable)  # made again, unless decided


@pytest.mark.parametrize("status", [400, 410, 422])
async def test_a_void_refused_for_good_says_the_gateways_answer(status: int) -> None:
    """A 4xx that decides the void (a charge settled already) is not asked again."""
    refused = gateway(status, b'{"title": "void refused",\n "detail": "settled"}')
    with pytest.raises(VoidRefused) as said:
        await refused.void("o-1")
    assert str(said.value) == f'HTTP {status}: {{"title": "void refused", "detail": "settled"}}'
    with pytest.raises(VoidRefused, match=r"^HTTP 422: settled \ufffd\ufffd$"):  # kept in text
        await gateway(422, b"settled \x00\xff").void("o-1")


@pytest.mark.parametrize(
    "charge_id",
    [b"12345", b'"ch_\\u0000x"', b'"ch_\\ud800"', b'{"id": "ch_1"}', b"true"],
    ids=["a number", "NUL", "a lone surrogate", "an object", "a boolean"],
)
@pytest.mark.parametrize("status", ["approved", "declined"])
async def test_a_charge_id_the_database_cannot_keep_is_asked_again(
    status: str, charge_id: bytes
) -> None:
    body = b'{"status": "%s", "charge_id": %s, "reason": null}' % (status.encode(), charge_id)
    with pytest.raises(GatewayUnavailable, match="charge_id"):
        await gateway(200, body).charge("o-1", 100, "b")


async def test_a_long_charge_id_is_kept_whole() -> None:
    long_id = "ch_" + "7" * 200
    approved = gateway(200, b'{"status": "approved", "charge_id": "%s"}' % long_id.encode())
    assert await approved.charge("o-1", 100, "b") == ChargeResult("approved", charge_id=long_id)


def failing(error: httpx.TransportError) -> HttpGateway:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    return HttpGateway("http://gateway.test", 1, transport=httpx.MockTransport(fail))


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("refused"), httpx.ConnectTimeout("no handshake")]
)
async def test_a_call_whose_connection_was_not_made_never_reached_the_gateway(
    error: httpx.TransportError,
) -> None:
    """No request left: the gateway has not seen the charge (a lapsed hold need not send it)."""
    with pytest.raises(GatewayUnreached, match=f"/charges: {type(error).__name__}"):
        await failing(error).charge("o-1", 100, "b")
    with pytest.raises(GatewayUnreached):
        await failing(error).void("o-1")


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout("slow"), httpx.WriteTimeout("slow"), httpx.RemoteProtocolError("cut")],
)
async def test_a_call_cut_once_sent_may_have_reached_the_gateway(
    error: httpx.TransportError,
) -> None:
    """Sent, or part sent: the gateway may have taken the charge, so it is not unreached."""
    with pytest.raises(GatewayUnavailable) as raised:
        await failing(error).charge("o-1", 100, "b")
    assert not isinstance(raised.value, GatewayUnreached)
