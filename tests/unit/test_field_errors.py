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


def test_a_value_of_the_wrong_kind_is_said_in_our_words_not_pydantics() -> None:
    assert field_errors(refusal({"size": "many"})) == [
        {"field": "size", "message": "must be a whole number"}
    ]
    assert field_errors(refusal({"label": "x"})) == [{"field": "size", "message": "must be given"}]


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


REQUEST: dict[str, object] = {
    "order_ref": "SWN-1",
    "buyer": {"id": "b-1", "phone": "+8613912345678", "locale": "en"},
    "lines": [{"sku": "T-PEPPER", "quantity": 1}],
    "payment": {"method": "prepaid"},
}
BAD_REQUESTS: list[tuple[dict[str, object], str, str]] = [
    ({**REQUEST, "order_ref": None}, "order_ref", "must be a string"),
    ({"buyer": {"id": "b-1", "phone": "+8613912345678"}}, "order_ref", "must be given"),
    ({**REQUEST, "buyer": "b-1"}, "buyer", "must be a JSON object"),
    ({**REQUEST, "buyer": {"id": "", "phone": "+8613912345678"}}, "buyer.id", "must not be empty"),
    (
        {**REQUEST, "buyer": {"id": "b" * 65, "phone": "+8613912345678"}},
        "buyer.id",
        "must be at most 64 characters",
    ),
    (
        {**REQUEST, "buyer": {"id": "b", "phone": "+8613912345678", "locale": "fr"}},
        "buyer.locale",
        "must be 'zh-CN', 'ug-CN' or 'en'",
    ),
    ({**REQUEST, "lines": "T-PEPPER"}, "lines", "must be a JSON array"),
    ({**REQUEST, "lines": []}, "lines", "must hold at least 1 item (it holds 0)"),
    (
        {**REQUEST, "lines": [{"sku": f"S-{i}", "quantity": 1} for i in range(51)]},
        "lines",
        "must hold at most 50 items (it holds 51)",
    ),
    (
        {**REQUEST, "lines": [{"sku": "T", "quantity": "2"}]},
        "lines.0.quantity",
        "must be a whole number, not a string",
    ),
    (
        {**REQUEST, "lines": [{"sku": "T", "quantity": 2.5}]},
        "lines.0.quantity",
        "must be a whole number",
    ),
    (
        {**REQUEST, "lines": [{"sku": "T", "quantity": 10_001}]},
        "lines.0.quantity",
        "must be 10000 or less",
    ),
    (
        {**REQUEST, "payment": {"method": "card"}},
        "payment.method",
        "must be 'microloan' or 'prepaid'",
    ),
    ({**REQUEST, "delivery": {"county": "Shawan"}}, "delivery.address", "must be given"),
]
"""Each pydantic error type a storefront's order.requested (or POST /orders's body, the same
model) can meet, with the words it is told in."""


@pytest.mark.parametrize(("data", "field", "message"), BAD_REQUESTS)
def test_every_error_of_a_request_is_said_in_our_words_not_pydantics(
    data: dict[str, object], field: str, message: str
) -> None:
    """A storefront was told "Field required", "String should have at most 64 characters",
    "Input should be a valid integer" (of "2", which is one to a reader), "List should have
    at least 1 item after validation, not 0": pydantic's wording, where a number past its
    bound was already "must be 10000 or less". The same words in an order.rejected's errors
    and a dead letter's reason (here) as in a 422 (tests/e2e/test_http.py)."""
    with pytest.raises(PoisonRecord) as refused:
        validate_record(Topic.ORDER_REQUESTS, raw_event("order.requested", data))
    assert {"field": field, "message": message} in refused.value.errors, refused.value.errors
    assert f"{field}: {message}" in refused.value.message


@pytest.mark.parametrize(
    ("envelope", "said"),
    [
        (
            {"specversion": "0.3"},
            "specversion: should be 1.0, the version of CloudEvents Caravan reads",
        ),
        ({"id": None}, "id: must be a string"),
        ({"id": ""}, "id: must not be empty"),
        ({"source": "s" * 257}, "source: must be at most 256 characters"),
        ({"time": "2026-02-30T08:00:00Z"}, "time: should be a date and time that exists (a month"),
        ({"time": "2026-11-30T25:00:00Z"}, "time: should be a date and time that exists (a month"),
    ],
)
def test_an_envelope_refused_is_said_in_our_words_in_its_dead_letters_reason(
    envelope: dict[str, object], said: str
) -> None:
    """The envelope's refusals (not_cloudevent), said as its data's are: "String should
    match pattern '^1\\.0$'" of a specversion, and of a time of hour 25 "Input should be a
    valid datetime or date, unexpected extra characters at the end of the input"."""
    event = {**raw_event("order.requested", REQUEST), **envelope}
    with pytest.raises(PoisonRecord) as refused:
        validate_record(Topic.ORDER_REQUESTS, event)
    assert refused.value.code == "not_cloudevent"
    assert refused.value.message.startswith(said), refused.value.message


def test_a_missing_field_names_the_field_sent_nearest_it_as_a_likely_misspelling() -> None:
    """A storefront's deploy sent ``"qty"`` for each line's quantity: its 200 requests were
    dead-lettered "lines.0.quantity: Field required", and neither the reason in ``caravan dlq
    list`` nor the ``order.rejected`` its developer reads said that ``qty`` was there. The
    name sent nearest the missing one is said beside it; a name far from it is not (a line
    without its quantity, a colour beside it, is said as before)."""
    data = {
        "oder_ref": "SWN-1",
        "buyer": {"id": "b-1", "phone": "+8613912345678", "locale": "en"},
        "lines": [{"sku": "T-PEPPER", "qty": 1}, {"sku": "T-JUJUBE", "colour": "red"}],
        "payment": {"method": "prepaid"},
    }
    with pytest.raises(PoisonRecord) as refused:
        validate_record(Topic.ORDER_REQUESTS, raw_event("order.requested", data))
    assert refused.value.errors == [
        {
            "field": "order_ref",
            "message": "must be given (oder_ref was sent: a misspelling of order_ref?)",
        },
        {
            "field": "lines.0.quantity",
            "message": "must be given (qty was sent: a misspelling of quantity?)",
        },
        {"field": "lines.1.quantity", "message": "must be given"},
    ]
    assert field_errors(refusal({"sise": 1, "label": "x"})) == [
        {"field": "size", "message": "must be given (sise was sent: a misspelling of size?)"}
    ]
