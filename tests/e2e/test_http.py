"""The storefront HTTP API of the orders service, against the running system."""

from tests.harness import System, ref

BODY = {
    "buyer": {"id": "t-rich", "phone": "+8613900000001", "locale": "en"},
    "lines": [{"sku": "T-PEPPER", "quantity": 1}],
    "payment": {"method": "prepaid"},
    "delivery": {"county": "Shawan", "address": "Village 3"},
}


async def test_post_then_get_follows_the_order_to_its_outcome(caravan: System) -> None:
    http = caravan.client
    key = ref("HTTP")
    first = await http.post("/orders", json=BODY, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    order_id = first.json()["order_id"]
    again = await http.post("/orders", json=BODY, headers={"Idempotency-Key": key})
    assert again.status_code == 202 and again.json()["order_id"] == order_id
    outcome = await caravan.outcome(order_id)
    assert outcome.type == "order.confirmed"
    body = (await http.get(f"/orders/{order_id}")).json()
    assert body["order_ref"] == key and body["status"] == "confirmed"


async def test_same_key_with_another_body_is_refused(caravan: System) -> None:
    http = caravan.client
    key = ref("HTTP")
    assert (
        await http.post("/orders", json=BODY, headers={"Idempotency-Key": key})
    ).status_code == 202
    other = {**BODY, "lines": [{"sku": "T-PEPPER", "quantity": 2}]}
    refused = await http.post("/orders", json=other, headers={"Idempotency-Key": key})
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")


async def test_bad_input_gets_422_problem_and_creates_nothing(caravan: System) -> None:
    http = caravan.client
    key = ref("HTTP")
    bad = {**BODY, "lines": [], "payment": {"method": "microloan"}}
    response = await http.post("/orders", json=bad, headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = {e["field"] for e in response.json()["errors"]}
    assert "lines" in fields
    missing_key = await http.post("/orders", json=BODY)
    assert missing_key.status_code == 422
    assert (
        await caravan.scalar("select count(*) from orders.orders where order_ref = :r", r=key) == 0
    )


async def test_unknown_order_is_404_and_health_and_metrics_answer(caravan: System) -> None:
    http = caravan.client
    missing = await http.get("/orders/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    metrics = await http.get("/metrics")
    assert "caravan_records_consumed_total" in metrics.text
