"""The AsyncAPI document (services/orders/asyncapi.py), generated without any broker."""

import json

from caravan.checkout import REPO_ROOT
from services.orders.asyncapi import asyncapi_json, consumers
from shared.messaging.consumer import (
    DEAD_LETTER_HEADERS,
    HEADERS_DROPPED,
    LETTER_REDRIVEN_FROM,
    VALUE_DROPPED,
)
from shared.settings import Settings


def test_the_published_document_is_up_to_date() -> None:
    published = json.loads((REPO_ROOT / "docs" / "asyncapi.json").read_text())
    assert published == asyncapi_json(), (
        "run: python -m services.orders.asyncapi > docs/asyncapi.json"
    )


def test_each_subscription_of_each_service_is_a_receive_operation_naming_its_types() -> None:
    document = asyncapi_json()
    for service, subscriptions in consumers(Settings()).items():
        for sub in subscriptions:
            name = f"{service}:{sub.topic.value}"
            assert document["operations"][name]["action"] == "receive"
            description = document["channels"][name]["description"]
            assert all(t.value in description for t in sub.handlers), description


def test_each_dead_letter_channel_names_the_headers_the_consumer_writes() -> None:
    """The document said every dead letter holds its record's value unchanged, where one too
    big to copy is emptied and says so in ``dlq.value.dropped``."""
    channels = asyncapi_json()["channels"]
    dead = [c["description"] for name, c in channels.items() if name.endswith(".dlq")]
    assert dead
    for description in dead:
        assert all(
            h in description
            for h in (*DEAD_LETTER_HEADERS, VALUE_DROPPED, LETTER_REDRIVEN_FROM, HEADERS_DROPPED)
        ), description
