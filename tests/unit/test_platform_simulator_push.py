"""The platform simulator's push with no body: docs/platform-adapter.md said "push them
signed (`POST /orders/{id}/push`)", and a bare POST was refused 422 `Field required` (the
body was required, though each of its fields has a default). No body is now ``{}``: a full
JSON push, signed, stamped now."""

import httpx

from services.platform.simulator.app import create_app
from tests.harness import free_port

ORDER = {
    "order_id": "MKT-1",
    "status": "paid",
    "buyer": {"id": "nick-1", "phone": "+8613912345678"},
    "items": [{"sku": "MKT-PEPPER", "quantity": 1}],
}


async def test_a_push_without_a_body_is_sent_as_a_full_signed_push() -> None:
    push_url = f"http://127.0.0.1:{free_port()}/platform/shop/push"  # nothing listens there
    app = create_app("shop", "t-shop-secret-0001", push_url, "hmac-sha256")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as sim:
        (await sim.post("/orders", json=ORDER)).raise_for_status()
        answer = await sim.post("/orders/MKT-1/push")
    assert answer.status_code == 502, answer.text  # the adapter's push URL, unreachable
    assert answer.json()["url"] == push_url
