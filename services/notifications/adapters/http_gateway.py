"""HTTP adapters of the SMS gateway port: the local simulator, and Infobip (a real provider).

Both map HTTP outcomes the same way: 2xx accepted; 429 and 5xx, timeouts and connection
errors are transient (``Retry-After`` honoured); any other 4xx is a permanent refusal.
"""

import contextlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from services.notifications.adapters.gateway import Accepted, GatewayError, OutgoingSms, Receipt


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


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    try:
        response = await client.post(url, json=body)
    except httpx.TimeoutException as exc:
        raise GatewayError(f"timeout: {exc!r}", transient=True) from exc
    except httpx.TransportError as exc:
        raise GatewayError(f"transport: {exc!r}", transient=True) from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise GatewayError(
            f"HTTP {response.status_code}: {response.text[:200]}",
            transient=True,
            retry_after=retry_after_seconds(response.headers),
        )
    if response.status_code >= 400:
        raise GatewayError(f"HTTP {response.status_code}: {response.text[:200]}", transient=False)
    return response


class SimulatorGateway:
    """The local SMS gateway simulator (``python -m services.notifications.simulator``).

    ``POST {url}/sms`` with ``{dedup_key, to, text, callback_url}`` answers ``{"id"}``; its
    receipts are ``{"id", "dedup_key", "status": "delivered" | "failed", "detail"}``.
    """

    def __init__(self, url: str, receipts_url: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.receipts_url = receipts_url
        self.client = httpx.AsyncClient(timeout=timeout)

    async def send(self, message: OutgoingSms) -> Accepted:
        body = {
            "dedup_key": message.dedup_key,
            "to": message.to,
            "text": message.text,
            "callback_url": self.receipts_url,
        }
        response = await _post(self.client, f"{self.url}/sms", body)
        return Accepted(str(response.json()["id"]))

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
        self, url: str, api_key: str, sender: str, receipts_url: str | None, timeout: float
    ) -> None:
        self.url = url.rstrip("/")
        self.sender = sender
        self.receipts_url = receipts_url
        self.client = httpx.AsyncClient(
            timeout=timeout,
            headers={"Authorization": f"App {api_key}", "Accept": "application/json"},
        )

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
            self.client, f"{self.url}/sms/2/text/advanced", {"messages": [entry]}
        )
        result = response.json()["messages"][0]
        if result.get("status", {}).get("groupName") == "REJECTED":
            raise GatewayError(f"rejected: {result['status']}", transient=False)
        return Accepted(str(result.get("messageId", message.sms_id)))

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
