"""Phone numbers written as people write them, read as E.164 (``shared.phones.as_e164``)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.phones import E164, as_e164


@pytest.mark.parametrize(
    "written",
    [
        "13912345678",
        "139 1234-5678",
        "139-1234-5678",
        "(139) 1234.5678",
        "+86 139-1234-5678",
        "+86 (139) 1234 5678",
        "008613912345678",
        "0086 139 1234 5678",
        "86 13912345678",
        "8613912345678",
        "+8613912345678",
        "１３９　１２３４－５６７８",  # full-width digits, dash and space
        " 139 1234 5678\n",
    ],
)
def test_a_mainland_mobile_number_however_written_is_plus_86(written: str) -> None:
    assert as_e164(written) == "+8613912345678"


@pytest.mark.parametrize(
    ("written", "e164"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 7700 900123", "+447700900123"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+86 10 1234 5678", "+861012345678"),  # E.164, if no mobile (notifications says so)
    ],
)
def test_an_international_number_is_kept_without_its_separators(written: str, e164: str) -> None:
    assert as_e164(written) == e164


@pytest.mark.parametrize(
    "written",
    [
        "",
        "   ",
        "1391234567",  # 10 digits
        "139123456789",  # 12
        "12912345678",  # 12x is no mobile prefix
        "010 1234 5678",  # a Beijing landline, written nationally: which country is not said
        "86 10 1234 5678",  # "86" then no mobile number: not taken for a calling code
        "+0 139 1234 5678",
        "+86 139 1234 5678 ext 1",
        "+8613912345678901234",  # over 15 digits
        "139/1234/5678",
        "tel:13912345678",
        "+",
    ],
)
def test_anything_else_is_not_read(written: str) -> None:
    assert as_e164(written) is None


@given(st.text(max_size=40))
def test_what_is_read_is_e164_and_read_again_unchanged(written: str) -> None:
    read = as_e164(written)
    assert read is None or (E164.fullmatch(read) and as_e164(read) == read)


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True), st.sampled_from(["", "86", "0086", "+86"]))
def test_every_mainland_mobile_number_with_or_without_its_prefix_is_read(
    number: str, prefix: str
) -> None:
    spaced = f"{prefix} {number[:3]} {number[3:7]}-{number[7:]}"
    assert as_e164(spaced) == as_e164(prefix + number) == "+86" + number
