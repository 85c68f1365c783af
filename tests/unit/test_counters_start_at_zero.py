"""A freshly built service's ``/metrics`` shows its counters at 0 for every label set it
knows at start: a series Prometheus first sees at 1 has no increase, so ``increase()`` and
``rate()`` missed the first dead letter of a topic, the first row set aside, the first push
refused or problem opened of an app."""

from collections.abc import Callable
from datetime import timedelta

import pytest

from services.notifications.bootstrap import bootstrap as notifications
from services.orders import handlers as orders_handlers
from services.orders.bootstrap import bootstrap as orders
from services.orders.entrypoints.subscribers import subscriptions as orders_subscriptions
from services.platform.bootstrap import bootstrap as platform
from shared.metrics import exposition
from shared.runtime import Service
from shared.settings import PlatformApp, Settings
from shared.topics import Topic


def settings() -> Settings:
    return Settings(
        database_url="postgresql://caravan:secret@127.0.0.1:1/caravan",
        platform_apps={
            "shop-a": PlatformApp(secret="a-secret-of-16-chars", api_url="http://127.0.0.1:1")
        },
    )


@pytest.mark.parametrize(
    ("build", "lines"),
    [
        (
            notifications,
            [
                'caravan_dead_letters_total{error="invalid_data",service="notifications",'
                'topic="orders.events.v1"} 0.0',
                'caravan_dead_letters_total{error="handler_error",service="notifications",'
                'topic="payments.events.v1"} 0.0',
                'caravan_records_consumed_total{outcome="dead_lettered",service="notifications",'
                'topic="orders.events.v1"} 0.0',
                'caravan_outbox_refused_total{error="MessageSizeTooLargeError",'
                'service="notifications"} 0.0',
                'caravan_records_produced_total{service="notifications"} 0.0',
                'caravan_messaging_rows_pruned_total{service="notifications",table="inbox"} 0.0',
            ],
        ),
        (
            orders,
            [
                'caravan_orders_unknown_order_events_total{type="stock.reserved"} 0.0',
                'caravan_orders_unknown_order_events_total{type="payment.refunded"} 0.0',
                'caravan_orders_ignored_fields_total{field="unknown"} 0.0',
                'caravan_orders_ignored_fields_total{field="payment.term_months"} 0.0',
            ],
        ),
        (
            platform,
            [
                'caravan_platform_pushes_total{app="shop-a",outcome="bad_signature"} 0.0',
                'caravan_platform_pushes_total{app="shop-a",outcome="accepted"} 0.0',
                'caravan_platform_pushes_total{app="unknown",outcome="unknown_app"} 0.0',
                'caravan_platform_refetches_total{app="shop-a",outcome="accepted"} 0.0',
                'caravan_platform_refetches_total{app="shop-a",outcome="fetch_failed"} 0.0',
                'caravan_platform_problems_total{app="shop-a",kind="rejected"} 0.0',
                'caravan_platform_callback_calls_total{app="shop-a",result="failed"} 0.0',
                'caravan_dead_letters_total{error="not_json",service="platform",'
                'topic="orders.events.v1"} 0.0',
            ],
        ),
    ],
)
async def test_a_fresh_service_shows_its_counters_at_zero(
    build: Callable[[Settings], Service], lines: list[str]
) -> None:
    service = build(settings())
    try:
        shown = exposition(service.name).decode().splitlines()
        assert [line for line in lines if line not in shown] == []
    finally:
        await service.db.dispose()


def test_orders_counts_from_zero_every_type_it_reads_about_an_order() -> None:
    """Events of inventory and payments about an order orders never had are counted by type
    (``caravan_orders_unknown_order_events_total``): each type it reads from those topics."""
    read = {
        t
        for s in orders_subscriptions(timedelta(minutes=15))
        if s.topic in (Topic.INVENTORY_EVENTS, Topic.PAYMENT_EVENTS)
        for t in s.handlers
    }
    assert set(orders_handlers.ABOUT_AN_ORDER) == read
