"""Validation errors said field by field (shared/api.py ``field_errors``), in the words of
the validator that refused them."""

from typing import Self

import pytest
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from shared.api import field_errors
from shared.events.registry import PoisonRecord, validate_record
from shared.topics import Topic
from tests.harness import raw_event


class Box(BaseModel):
    size: int
    label: str = ""

    @field_validator("size")
    @classmethod
    def _small(cls, size: int) -> int:
        if size > 9:
            raise ValueError("a box holds at most 9")
        return size

    @model_validator(mode="after")
    def _labelled(self) -> Self:
        if self.size and not self.label:  # not `assert`: pytest rewrites its message
            raise AssertionError("a box that holds something has a label")
        return self


def refusal(given: dict[str, object]) -> ValidationError:
    with pytest.raises(ValidationError) as refused:
        Box.model_validate(given)
    return refused.value


def test_a_validators_message_is_its_own_without_pydantics_prefix() -> None:
    assert field_errors(refusal({"size": 10, "label": "x"})) == [
        {"field": "size", "message": "a box holds at most 9"}
    ]
    assert field_errors(refusal({"size": 1}), whole="data") == [
        {"field": "data", "message": "a box that holds something has a label"}
    ]


def test_pydantics_own_messages_are_kept() -> None:
    assert field_errors(refusal({"size": "many"})) == [
        {
            "field": "size",
            "message": "Input should be a valid integer, unable to parse string as an integer",
        }
    ]


def test_a_refused_event_and_its_dead_letter_reason_say_the_validators_words() -> None:
    """A sku on two lines is told on the second line's sku, with the other fields' errors (a
    phone, a quantity): it was told of the whole ``data`` once they were mended, one round
    of edits more."""
    line = {"sku": "T-PEPPER", "quantity": 1}
    data = {
        "order_ref": "SWN-1",
        "buyer": {"id": "b-1", "phone": "0991", "locale": "en"},
        "lines": [line, {"sku": "T-JUJUBE", "quantity": 0}, line],
        "payment": {"method": "prepaid"},
    }
    with pytest.raises(PoisonRecord) as refused:
        validate_record(Topic.ORDER_REQUESTS, raw_event("order.requested", data))
    said = "each sku may appear in at most one line: line 0 has it too"
    assert refused.value.errors == [
        {"field": "buyer.phone", "message": PHONE},
        {"field": "lines.1.quantity", "message": "must be 1 or more"},
        {"field": "lines.2.sku", "message": said},
    ]
    assert refused.value.message.endswith(f"; lines.2.sku: {said}")


PHONE = "should be an E.164 phone number, + and 7 to 15 digits: e.g. +8613912345678"
ORDER_REF = "should be 1-64 characters, each an ASCII letter or digit or one of . _ : -"


def test_a_pattern_of_the_contract_is_said_in_words_not_as_its_regex() -> None:
    """A bad phone was refused "String should match pattern '^\\+[1-9][0-9]{6,14}$'", a bad
    order_ref with the pattern of its characters: a storefront developer had to read the
    regex. The words are the same in a dead letter's reason and an order.rejected's errors
    (here) as on HTTP (tests/e2e/test_http.py), all said by field_errors."""
    data = {
        "order_ref": "SWN 1",
        "buyer": {"id": "b-1", "phone": "13912345678", "locale": "en"},
        "lines": [{"sku": "T-PEPPER", "quantity": 1}],
        "payment": {"method": "prepaid"},
    }
    with pytest.raises(PoisonRecord) as refused:
        validate_record(Topic.ORDER_REQUESTS, raw_event("order.requested", data))
    assert refused.value.errors == [
        {"field": "order_ref", "message": ORDER_REF},
        {"field": "buyer.phone", "message": PHONE},
    ]
    assert refused.value.message == f"order_ref: {ORDER_REF}; buyer.phone: {PHONE}"
