"""A :class:`~services.payments.adapters.gateway.PaymentGateway` over HTTP, as the local
simulator (``services.payments.simulator``) speaks it:

- ``POST /charges`` ``{"key", "amount_fen", "buyer_id"}`` → ``{"status": "approved" |
  "declined", "charge_id", "reason"}`` (idempotent by ``key``);
- ``POST /charges/{key}/void`` → 200.

Timeouts, refused connections and 5xx answers raise ``GatewayUnavailable``.
"""

import httpx

from services.payments.adapters.gateway import ChargeResult, GatewayUnavailable


class HttpGateway:
    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_seconds)

    async def _post(self, path: str, body: dict[str, object] | None = None) -> httpx.Response:
        try:
            response = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:  # timeouts and connection errors
            raise GatewayUnavailable(f"{path}: {exc.__class__.__name__}") from exc
        if response.status_code >= 500:
            raise GatewayUnavailable(f"{path}: HTTP {response.status_code}")
        response.raise_for_status()
        return response

    async def charge(self, key: str, amount_fen: int, buyer_id: str) -> ChargeResult:
        body = (
            await self._post(
                "/charges", {"key": key, "amount_fen": amount_fen, "buyer_id": buyer_id}
            )
        ).json()
        status = body.get("status")
        if status not in ("approved", "declined"):
            raise GatewayUnavailable(f"unexpected charge status {status!r}")
        return ChargeResult(status, charge_id=body.get("charge_id"), reason=body.get("reason"))

    async def void(self, key: str) -> None:
        await self._post(f"/charges/{key}/void")

    async def close(self) -> None:
        await self._client.aclose()
