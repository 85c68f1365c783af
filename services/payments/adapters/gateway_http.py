"""A :class:`~services.payments.adapters.gateway.PaymentGateway` over HTTP, as the local
simulator (``services.payments.simulator``) speaks it:

- ``POST /charges`` ``{"key", "amount_fen", "buyer_id"}`` → ``{"status": "approved" |
  "declined", "charge_id", "reason"}`` (idempotent by ``key``);
- ``POST /charges/{key}/void`` → 200 (404: no charge under ``key``).

What an answer means:

- a timeout, a refused connection, a 5xx, or an answer asking to come back (408, 409: the
  key's first request is still being processed, 425, 429), or one this client cannot read
  (not the JSON above, or a ``charge_id`` that is neither null nor a string PostgreSQL can
  keep: a number, NUL, a lone surrogate): the outcome is unknown, ``GatewayUnavailable``,
  and the call is made again with the same key; a connection refused or not made (no
  request sent, the gateway has not seen it) is ``GatewayUnreached``, one of them;
- 401 and 403 (the gateway refused *us*: a key or a certificate to put right), 404 and 405
  (no such route: a wrong base URL, which no charge of this API answers with) and 407 (a
  proxy wanting credentials) likewise: nothing was done, and a buyer's payment must not fail
  for our configuration (every prepaid order was declined while a base URL was wrong);
- but a 404 to a void is the gateway's "no such charge" under that key (the route is there:
  our charges reach it): ``NoSuchCharge``, one of them, nothing to void if the gateway never
  approved the charge (it never reached it, or was never answered), and made again if it
  did (a base URL changed since: the void went where the charge is not);
- any other 4xx to a charge is the gateway's refusal of that charge: nothing was charged,
  and the charge is ``declined`` with the answer as its reason; to a void (400, 410, 422: a
  charge settled already), the gateway's refusal of that void, for good: ``VoidRefused``
  with the answer, and the charge stands. Any other answer to a void but a 2xx leaves it to
  be made again.
"""

from typing import Any

import httpx

from services.payments.adapters.gateway import (
    ChargeResult,
    GatewayUnavailable,
    GatewayUnreached,
    NoSuchCharge,
    VoidRefused,
)
from shared.db import storable_text

RETRY_STATUSES = frozenset({401, 403, 404, 405, 407, 408, 409, 425, 429})
"""4xx answers that do not decide a charge: asked again later, with the same key."""
NO_SUCH_CHARGE = 404
"""A void's answer that the gateway knows no charge under its key (:class:`NoSuchCharge`)."""


class HttpGateway:
    def __init__(
        self,
        base_url: str,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an httpx.MockTransport
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_seconds, transport=transport
        )

    async def _post(
        self,
        path: str,
        body: dict[str, object] | None = None,
        retried: frozenset[int] = RETRY_STATUSES,
    ) -> httpx.Response:
        try:
            response = await self._client.post(path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # no request sent
            raise GatewayUnreached(f"{path}: {exc.__class__.__name__}") from exc
        except httpx.HTTPError as exc:  # timeouts and connection errors
            raise GatewayUnavailable(f"{path}: {exc.__class__.__name__}") from exc
        if response.status_code >= 500 or response.status_code in retried:
            raise GatewayUnavailable(f"{path}: HTTP {response.status_code}")
        return response

    async def charge(self, key: str, amount_fen: int, buyer_id: str) -> ChargeResult:
        response = await self._post(
            "/charges", {"key": key, "amount_fen": amount_fen, "buyer_id": buyer_id}
        )
        if response.is_client_error:
            return ChargeResult("declined", reason=_refusal(response))
        body = _json_object(response)
        status = body.get("status")
        if not response.is_success or status not in ("approved", "declined"):
            raise GatewayUnavailable(
                f"/charges: HTTP {response.status_code}, charge status {status!r}"
            )
        charge_id = body.get("charge_id")
        if charge_id is not None and not storable_text(charge_id):
            raise GatewayUnavailable(
                f"/charges: HTTP {response.status_code}, charge status {status!r}"
                f" with an unusable charge_id {str(charge_id)[:80]!r}"
            )
        return ChargeResult(status, charge_id=charge_id, reason=body.get("reason"))

    async def void(self, key: str) -> None:
        path = f"/charges/{key}/void"
        response = await self._post(path, retried=RETRY_STATUSES - {NO_SUCH_CHARGE})
        if response.status_code == NO_SUCH_CHARGE:
            raise NoSuchCharge(f"{path}: {_refusal(response)}")
        if response.is_client_error:
            raise VoidRefused(_refusal(response))
        if not response.is_success:
            raise GatewayUnavailable(f"{path}: {_refusal(response)}")

    async def close(self) -> None:
        await self._client.aclose()


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:  # not JSON, or not UTF-8
        body = None
    if not isinstance(body, dict):
        raise GatewayUnavailable(
            f"{response.request.url.path}: an answer that is not a JSON object"
            f" (HTTP {response.status_code}, {response.headers.get('content-type')!r})"
        )
    return body


def _refusal(response: httpx.Response) -> str:
    """The answer in one short line: its status and the start of its body (a NUL shown as
    U+FFFD, as undecodable bytes are: a void's refusal is kept in a text column)."""
    body = response.content[:200].decode("utf-8", "replace").replace("\x00", "\ufffd")
    text = " ".join(body.split())
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")
