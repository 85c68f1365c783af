"""HTTP adapters of the SMS gateway port: the local simulator, and Infobip (a real provider).

Both map HTTP outcomes the same way: 2xx accepted; 408, 429 and 5xx, timeouts and
connection errors are transient (``Retry-After`` honoured); so are the 4xx about our account
or configuration (``ACCOUNT_STATUSES``), logged once; any other 4xx (a bad destination or
content) is a permanent refusal of that message. An answer accepting the message under an id
that is not a string PostgreSQL can keep (a number, null, NUL, a lone surrogate) is
transient too: recorded, it would fail the batch's update; asked again under its dedup key,
the message is not sent twice. An id is kept whole, however long.
"""

import contextlib
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx
import orjson

from services.notifications.adapters.gateway import Accepted, GatewayError, OutgoingSms, Receipt
from shared.db import storable_text

log = logging.getLogger(__name__)

RETRY_STATUSES: Final = frozenset({408, 429})
"""4xx answers asking us to come back: the gateway timed our request out, or rate-limits."""

ACCOUNT_STATUSES: Final = frozenset({401, 402, 403, 404, 407})
"""4xx answers about our account or configuration, never the message: an API key rotated or
expired (401, 403), no credit left (402), a wrong base URL (404), a proxy wanting credentials
(407). Every text is refused alike until operations put it right, so, as with a gateway that
is down, they are retried with the backoff until the give-up window ends: failed at once,
they would be lost for good (texts have no redrive)."""

INFOBIP_ACCOUNT_REJECTIONS: Final = frozenset(
    {
        "REJECTED_NOT_ENOUGH_CREDITS",
        "REJECTED_PREPAID_PACKAGE_EXPIRED",
        "REJECTED_ROUTE_NOT_AVAILABLE",  # no route set up on the account
        "REJECTED_SENDER",  # our sender id, barred on the account
        "REJECTED_SOURCE",  # our sender id, not allowed
    }
)
"""Infobip's ``REJECTED`` statuses about our account, as ``ACCOUNT_STATUSES``; its other
rejections (destination, prefix, do-not-disturb, content) are about the message: final."""


class AccountRefusals:
    """The gateway refusing our account: a warning when it starts (or its reason changes) and
    a line when texts are accepted again, not a line for every text it refuses meanwhile."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def refused(self, reason: str, detail: str) -> GatewayError:
        if reason != self.reason:
            self.reason = reason
            log.warning(
                "the SMS gateway refuses our account or configuration (%s): texts stay queued"
                " and are retried until it is put right or they give up",
                detail,
            )
        return GatewayError(detail, transient=True)

    def accepted(self) -> None:
        if self.reason is not None:
            log.info("the SMS gateway accepts texts again (it refused them: %s)", self.reason)
            self.reason = None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The seconds ``Retry-After`` asks for (a number, or an HTTP date); None if unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    with contextlib.suppress(TypeError, ValueError):
        at = parsedate_to_datetime(value)
        if at.tzinfo is not None:
            return max(0.0, (at - datetime.now(UTC)).total_seconds())
    return None  # unreadable: our own backoff


async def _post(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], account: AccountRefusals
) -> httpx.Response:
    try:
        response = await client.post(url, json=body)
    except httpx.TimeoutException as exc:
        raise GatewayError(f"timeout: {exc!r}", transient=True) from exc
    except httpx.TransportError as exc:
        raise GatewayError(f"transport: {exc!r}", transient=True) from exc
    status = response.status_code
    detail = f"HTTP {status}: {response.text[:200]}"
    if status in RETRY_STATUSES or status >= 500:
        raise GatewayError(
            detail, transient=True, retry_after=retry_after_seconds(response.headers)
        )
    if status in ACCOUNT_STATUSES:
        raise account.refused(f"HTTP {status}", detail)
    if status >= 400:
        raise GatewayError(detail, transient=False)
    return response


def _accepted(provider_id: object, answer: str) -> Accepted:
    """The message accepted under ``provider_id``, if the database can keep it."""
    if not storable_text(provider_id):
        raise GatewayError(
            f"{answer}: accepted with an unusable id {str(provider_id)[:80]!r}", transient=True
        )
    return Accepted(provider_id)


class SimulatorGateway:
    """The local SMS gateway simulator (``python -m services.notifications.simulator``).

    ``POST {url}/sms`` with ``{dedup_key, to, text, callback_url}`` answers ``{"id"}``; its
    receipts are ``{"id", "dedup_key", "status": "delivered" | "failed", "detail"}``.
    """

    def __init__(
        self,
        url: str,
        receipts_url: str | None,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an httpx.MockTransport
    ) -> None:
        self.url = url.rstrip("/")
        self.receipts_url = receipts_url
        self.client = httpx.AsyncClient(timeout=timeout, transport=transport)
        self.account = AccountRefusals()

    async def send(self, message: OutgoingSms) -> Accepted:
        body = {
            "dedup_key": message.dedup_key,
            "to": message.to,
            "text": message.text,
            "callback_url": self.receipts_url,
        }
        response = await _post(self.client, f"{self.url}/sms", body, self.account)
        self.account.accepted()
        return _accepted(response.json()["id"], f"HTTP {response.status_code}")

    def parse_receipts(self, body: bytes) -> list[Receipt]:
        raw = orjson.loads(body)
        items = raw if isinstance(raw, list) else [raw]
        try:
            return [
                Receipt(str(i["id"]), i["status"] == "delivered", str(i.get("detail", "")))
                for i in items
            ]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a simulator receipt: {exc!r}") from exc

    async def close(self) -> None:
        await self.client.aclose()


class InfobipGateway:
    """Infobip's SMS API (``POST {base}/sms/2/text/advanced``, ``Authorization: App KEY``).

    Configured by ``CARAVAN_NOTIFICATIONS_GATEWAY=infobip``, ``..._GATEWAY_URL`` (the
    account's base URL), ``..._GATEWAY_API_KEY``, ``..._GATEWAY_SENDER``, ``..._RECEIPTS_URL``.
    Our ``sms_id`` is sent as the message id, so receipts (``{"results": [{"messageId",
    "status": {"groupName"}}]}``) name it; the dedup key travels as ``callbackData``. Never
    called by the tests.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        sender: str,
        receipts_url: str | None,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an httpx.MockTransport
    ) -> None:
        self.url = url.rstrip("/")
        self.sender = sender
        self.receipts_url = receipts_url
        self.client = httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"App {api_key}", "Accept": "application/json"},
        )
        self.account = AccountRefusals()

    async def send(self, message: OutgoingSms) -> Accepted:
        entry: dict[str, Any] = {
            "destinations": [{"to": message.to.lstrip("+"), "messageId": message.sms_id}],
            "from": self.sender,
            "text": message.text,
            "callbackData": message.dedup_key,
        }
        if self.receipts_url:
            entry |= {"notifyUrl": self.receipts_url, "notifyContentType": "application/json"}
        response = await _post(
            self.client, f"{self.url}/sms/2/text/advanced", {"messages": [entry]}, self.account
        )
        result = response.json()["messages"][0]
        status = result.get("status", {})
        if status.get("groupName") == "REJECTED":
            if status.get("name") in INFOBIP_ACCOUNT_REJECTIONS:
                raise self.account.refused(status["name"], f"rejected: {status}")
            raise GatewayError(f"rejected: {status}", transient=False)
        self.account.accepted()
        return _accepted(result.get("messageId", message.sms_id), f"HTTP {response.status_code}")

    def parse_receipts(self, body: bytes) -> list[Receipt]:
        try:
            results = orjson.loads(body)["results"]
            return [
                Receipt(
                    str(r["messageId"]),
                    r["status"]["groupName"] == "DELIVERED",
                    str(r["status"].get("description", "")),
                )
                for r in results
                if r["status"]["groupName"] in ("DELIVERED", "UNDELIVERABLE", "EXPIRED", "REJECTED")
            ]
        except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not an Infobip delivery report: {exc!r}") from exc

    async def close(self) -> None:
        await self.client.aclose()
