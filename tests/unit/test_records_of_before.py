"""The records 2026-12-05's release (``c0331116``) wrote, read by this one: an upgrade keeps
them on the topics (those its consumers had not read at the stop, and every one for a replay),
and its outbox rows not yet sent (docs/running.md, Upgrading). One of each type that release
wrote, as its outbox held them (drilled on 2026-12-07, ``caravan demo`` under ``caravan up``),
each read as the event it was, no field of it told as ignored: a reader grown stricter since
(an RFC 3339 ``time``, a ``datacontenttype`` of JSON) would dead-letter them, their orders
expiring."""

from typing import Any

import orjson
import pytest

from shared.events.ignored import NOTHING, ignored_fields
from shared.events.registry import parse_record
from shared.topics import Topic

# The loan of the confirmed order below, as its order.confirmed and payment.authorized said it.
SCHEDULE = [
    {"number": n, "due": f"2027-0{n}-07", "amount_fen": 2567 if n < 5 else 2566, "interest_fen": 0}
    for n in range(1, 7)
]

WRITTEN_BY_2026_12_05: list[tuple[Topic, dict[str, Any]]] = [
    (
        Topic("orders.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-f19d-7755-b6e9-f86504a3292c",
            "source": "caravan/orders",
            "type": "order.cancelled",
            "time": "2026-12-07T15:03:24.829802Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": "01a25107-ec6c-77f2-9e00-2cbbe0e14601",
                "order_ref": "DEMO-5df9d0-0059",
                "reason": "out_of_season",
                "source": "storefront/caravan-demo",
            },
            "correlationid": "01a25107-ec6c-77f2-9e00-2cbbe0e14601",
            "causationid": "01a25107-ee93-72d5-a804-6e99b630cf1c",
        },
    ),
    (
        Topic("orders.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-f548-75e9-8660-235d479119a6",
            "source": "caravan/orders",
            "type": "order.confirmed",
            "time": "2026-12-07T15:03:25.768334Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": "01a25107-ec2e-73ae-b441-8e0bfb57eb56",
                "order_ref": "DEMO-5df9d0-0001",
                "total_fen": 15400,
                "payment": {
                    "method": "microloan",
                    "loan_id": "01a25107-f19e-76c1-b3ae-e7d6c2466c91",
                    "schedule": SCHEDULE,
                },
                "term_months": 6,
                "source": "storefront/caravan-demo",
            },
            "correlationid": "01a25107-ec2e-73ae-b441-8e0bfb57eb56",
            "causationid": "01a25107-f19f-7515-bae8-a667f0d1445b",
        },
    ),
    (
        Topic("orders.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-ec2f-7407-9b84-b4d2a88127c6",
            "source": "caravan/orders",
            "type": "order.placed",
            "time": "2026-12-07T15:03:23.439178Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": "01a25107-ec2e-73ae-b441-8e0bfb57eb56",
                "order_ref": "DEMO-5df9d0-0001",
                "source": "storefront/caravan-demo",
                "buyer_id": "buyer-0027",
                "lines": [
                    {"sku": "SWN-RAISIN-GREEN-500G", "quantity": 3},
                    {"sku": "SWN-PEPPER-CAYENNE-1KG", "quantity": 2},
                ],
                "buyer": {"id": "buyer-0027", "phone": "+8613938138782", "locale": "zh-CN"},
                "payment": {"method": "microloan", "term_months": 6},
                "placed_at": "2026-12-07T15:03:23.439039Z",
            },
            "correlationid": "01a25107-ec2e-73ae-b441-8e0bfb57eb56",
            "causationid": "01a25107-ea7f-7564-95c4-6f55934f0cd4",
        },
    ),
    (
        Topic("inventory.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-ee93-72d5-a804-6e99b630cf1c",
            "source": "caravan/inventory",
            "type": "stock.rejected",
            "time": "2026-12-07T15:03:24.051217Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": "01a25107-ec6c-77f2-9e00-2cbbe0e14601",
                "reason": "out_of_season",
                "skus": ["KSG-FIG-FRESH-1KG"],
            },
            "correlationid": "01a25107-ec6c-77f2-9e00-2cbbe0e14601",
            "causationid": "01a25107-ec6c-77f2-9e00-2cbc26f425a5",
        },
    ),
    (
        Topic("inventory.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-f63f-7705-96a9-95487c92efa2",
            "source": "caravan/inventory",
            "type": "stock.released",
            "time": "2026-12-07T15:03:26.015395Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": "01a25107-ec46-72e4-817a-fdd9a16dc3b9",
                "returned": 3,
                "spoiled": 0,
            },
            "correlationid": "01a25107-ec46-72e4-817a-fdd9a16dc3b9",
            "causationid": "01a25107-f54d-72f6-8eda-b984fbf3951d",
        },
    ),
    (
        Topic("inventory.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-ee3b-74b7-8b56-a5d07dd4ceae",
            "source": "caravan/inventory",
            "type": "stock.reserved",
            "time": "2026-12-07T15:03:23.964016Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": "01a25107-ec32-72fa-a20b-5e8ef285635e",
                "buyer_id": "buyer-0018",
                "payment": {"method": "prepaid"},
                "lines": [
                    {
                        "sku": "SWN-PEPPER-POWDER-250G",
                        "quantity": 1,
                        "unit_price_fen": 1800,
                        "seller_id": "seller-005",
                        "lots": [{"lot_id": "LOT-PPW-2026-01", "quantity": 1}],
                    },
                    {
                        "sku": "YNG-HONEY-BLACKBEE-500G",
                        "quantity": 3,
                        "unit_price_fen": 8800,
                        "seller_id": "seller-002",
                        "lots": [{"lot_id": "LOT-HNY-2026-01", "quantity": 3}],
                    },
                ],
                "total_fen": 28200,
                "source": "storefront/caravan-demo",
                "order_ref": "DEMO-5df9d0-0019",
            },
            "correlationid": "01a25107-ec32-72fa-a20b-5e8ef285635e",
            "causationid": "01a25107-ec32-72fa-a20b-5e8f374c650f",
        },
    ),
    (
        Topic("inventory.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-f62a-732b-ab35-4c3dddd4458a",
            "source": "caravan/inventory",
            "type": "stock.sold",
            "time": "2026-12-07T15:03:25.994365Z",
            "datacontenttype": "application/json",
            "data": {"order_id": "01a25107-ec43-75ef-8d2e-db58b324d7ea"},
            "correlationid": "01a25107-ec43-75ef-8d2e-db58b324d7ea",
            "causationid": "01a25107-f549-77d9-9a2f-a7b54757f3a0",
        },
    ),
    (
        Topic("payments.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-f19f-7515-bae8-a667f0d1445b",
            "source": "caravan/payments",
            "type": "payment.authorized",
            "time": "2026-12-07T15:03:24.831051Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": "01a25107-ec2e-73ae-b441-8e0bfb57eb56",
                "buyer_id": "buyer-0027",
                "method": "microloan",
                "amount_fen": 15400,
                "loan_id": "01a25107-f19e-76c1-b3ae-e7d6c2466c91",
                "term_months": 6,
                "interest_fen": 0,
                "schedule": SCHEDULE,
            },
            "correlationid": "01a25107-ec2e-73ae-b441-8e0bfb57eb56",
            "causationid": "01a25107-eeca-724e-9f37-9bbb2eae594c",
        },
    ),
    (
        Topic("payments.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-f1a0-70fe-863c-e9e347f3e003",
            "source": "caravan/payments",
            "type": "payment.declined",
            "time": "2026-12-07T15:03:24.832060Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": "01a25107-ec45-758f-aca5-8bfb43d7a020",
                "reason": "credit_declined",
            },
            "correlationid": "01a25107-ec45-758f-aca5-8bfb43d7a020",
            "causationid": "01a25107-eee2-77b4-943d-45c860382281",
        },
    ),
    (
        Topic("notifications.events.v1"),
        {
            "specversion": "1.0",
            "id": "01a25107-f43d-7300-8262-f0c9c60f4cea",
            "source": "caravan/notifications",
            "type": "sms.sent",
            "time": "2026-12-07T15:03:25.501554Z",
            "datacontenttype": "application/json",
            "data": {
                "sms_id": "01a25107-f34d-75d4-af6a-a2a8814934f9",
                "to": "+8613991732498",
                "locale": "en",
                "text": "【Caravan】Your order DEMO-5df9d0-0059 has been cancelled because"
                " the product is out of season. Sorry for the inconvenience.",
                "encoding": "UCS-2",
                "segments": 2,
                "order_id": "01a25107-ec6c-77f2-9e00-2cbbe0e14601",
                "purpose": "order_cancelled",
                "attempts": 1,
            },
            "correlationid": "01a25107-ec6c-77f2-9e00-2cbbe0e14601",
            "causationid": "01a25107-f19d-7755-b6e9-f86504a3292c",
        },
    ),
]


@pytest.mark.parametrize(
    ("topic", "written"),
    WRITTEN_BY_2026_12_05,
    ids=[written["type"] for _, written in WRITTEN_BY_2026_12_05],
)
def test_a_record_of_2026_12_05_s_release_is_read_as_the_event_it_was(
    topic: Topic, written: dict[str, Any]
) -> None:
    parsed = parse_record(topic, orjson.dumps(written))
    assert parsed.envelope.type == written["type"]
    assert parsed.envelope.id == written["id"]
    assert ignored_fields(written["data"], parsed.data) == NOTHING
