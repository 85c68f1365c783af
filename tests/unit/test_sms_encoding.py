"""Tests for SMS encoding detection and segment counting."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifications.domain.sms import (
    GSM7_BASIC_CHARS,
    GSM7_EXTENSION_CHARS,
    SmsEncoding,
    clipped,
    encode_info,
)

GSM_ALPHABET = GSM7_BASIC_CHARS + GSM7_EXTENSION_CHARS


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def test_alphabets_are_well_formed() -> None:
    assert len(GSM7_BASIC_CHARS) == 127  # 128 code points minus ESC
    assert len(set(GSM7_BASIC_CHARS)) == 127
    assert "\x1b" not in GSM7_BASIC_CHARS
    assert set(GSM7_EXTENSION_CHARS) == set("\f^{}\\[~]|€")
    assert not set(GSM7_BASIC_CHARS) & set(GSM7_EXTENSION_CHARS)


def test_result_is_frozen() -> None:
    info = encode_info("hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.segments = 2  # type: ignore[misc]


def test_empty_text_is_one_gsm_segment() -> None:
    assert encode_info("") == SmsEncoding(encoding="GSM-7", segments=1, units=0)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (153, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_segment_boundaries(length: int, segments: int) -> None:
    assert encode_info("a" * length) == SmsEncoding("GSM-7", segments, length)


def test_all_basic_chars_are_gsm7_one_septet_each() -> None:
    assert encode_info(GSM7_BASIC_CHARS) == SmsEncoding("GSM-7", 1, 127)


@pytest.mark.parametrize("char", list(GSM7_EXTENSION_CHARS))
def test_extension_char_counts_two_septets(char: str) -> None:
    assert encode_info(char) == SmsEncoding("GSM-7", 1, 2)
    assert encode_info("a" + char) == SmsEncoding("GSM-7", 1, 3)


def test_euro_boundaries() -> None:
    assert encode_info("€" * 80) == SmsEncoding("GSM-7", 1, 160)
    assert encode_info("€" * 81) == SmsEncoding("GSM-7", 2, 162)


def test_typical_english_sms_is_gsm7() -> None:
    info = encode_info("Caravan: Your order CRV-1 is confirmed. Total: CNY 35.00. Thank you!")
    assert info.encoding == "GSM-7"
    assert info.segments == 1


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_segment_boundaries(length: int, segments: int) -> None:
    assert encode_info("中" * length) == SmsEncoding("UCS-2", segments, length)


@pytest.mark.parametrize("char", ["中", "ئ", "ç", "€\u200f", "\x1b", "¢", "`"])
def test_non_gsm_char_forces_ucs2(char: str) -> None:
    assert encode_info(char).encoding == "UCS-2"


def test_one_non_gsm_char_switches_whole_text_to_ucs2() -> None:
    text = "a" * 69 + "中"
    assert encode_info(text) == SmsEncoding("UCS-2", 1, 70)
    # Extension chars are single UTF-16 units once the text is UCS-2.
    assert encode_info("€" * 70 + "中") == SmsEncoding("UCS-2", 2, 71)


def test_emoji_counts_two_units() -> None:
    assert encode_info("😀") == SmsEncoding("UCS-2", 1, 2)
    assert encode_info("😀" * 35) == SmsEncoding("UCS-2", 1, 70)
    assert encode_info("😀" * 35 + "a") == SmsEncoding("UCS-2", 2, 71)


def test_uyghur_text_is_ucs2() -> None:
    text = "بۇيرۇتمىڭىز جەزملەشتۈرۈلدى"
    assert encode_info(text) == SmsEncoding("UCS-2", 1, len(text))


@given(st.text(alphabet=GSM_ALPHABET, max_size=700))
def test_gsm7_units_and_segments_are_consistent(text: str) -> None:
    info = encode_info(text)
    assert info.encoding == "GSM-7"
    assert info.units == len(text) + sum(c in GSM7_EXTENSION_CHARS for c in text)
    assert_parts(info, text, GSM7_EXTENSION_CHARS.__contains__, 160, 153)


@given(
    st.text(max_size=400),
    st.characters(blacklist_characters=GSM_ALPHABET, blacklist_categories=["Cs"]),
    st.text(max_size=400),
)
def test_ucs2_units_and_segments_are_consistent(before: str, odd: str, after: str) -> None:
    text = before + odd + after
    info = encode_info(text)
    assert info.encoding == "UCS-2"
    assert info.units == len(text.encode("utf-16-le")) // 2
    assert_parts(info, text, lambda c: ord(c) > 0xFFFF, 70, 67)


def assert_parts(
    info: SmsEncoding, text: str, pair: Callable[[str], bool], single: int, multi: int
) -> None:
    """As many parts as the units need; one more at most per part where a pair (2 units)
    would straddle a boundary; exactly that many when the text has no pair."""
    if info.units <= single:
        assert info.segments == 1
    elif not any(pair(c) for c in text):
        assert info.segments == _ceil_div(info.units, multi)
    else:
        assert _ceil_div(info.units, multi) <= info.segments <= _ceil_div(info.units, multi - 1)


@pytest.mark.parametrize(("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3)])
def test_uyghur_segment_boundaries(length: int, segments: int) -> None:
    text = ("بۇيرۇتما " * 40)[:length]
    assert encode_info(text) == SmsEncoding("UCS-2", segments, length)


def test_chinese_sms_known_case() -> None:
    text = "【Caravan】您的订单SWN-000123已确认，金额¥70.00。感谢惠顾！"
    assert encode_info(text) == SmsEncoding("UCS-2", 1, len(text))


def test_a_pair_is_never_split_across_two_parts() -> None:
    # 306 septets fit 2 x 153, but the euro's escape pair would straddle the boundary.
    assert encode_info("a" * 152 + "€" + "a" * 152) == SmsEncoding("GSM-7", 3, 306)
    assert encode_info("a" * 151 + "€" + "a" * 153) == SmsEncoding("GSM-7", 2, 306)
    # 134 units fit 2 x 67, but the emoji's surrogate pair would straddle the boundary.
    assert encode_info("中" * 66 + "😀" + "中" * 66) == SmsEncoding("UCS-2", 3, 134)
    assert encode_info("中" * 65 + "😀" + "中" * 67) == SmsEncoding("UCS-2", 2, 134)


def test_extension_chars_at_the_160_boundary() -> None:
    assert encode_info("a" * 158 + "{") == SmsEncoding("GSM-7", 1, 160)
    assert encode_info("a" * 159 + "{") == SmsEncoding("GSM-7", 2, 161)


def test_clipped_keeps_a_text_that_fits_and_cuts_one_that_does_not() -> None:
    assert clipped("Honey", 5) == "Honey"
    assert clipped("Honey jar", 5) == "Hone…"
    assert clipped("Honey jar", 6, "...") == "Hon..."
    assert clipped("Honey jar", 7) == "Honey…"  # no space left before the mark


def test_clipped_counts_ucs2_units_and_never_splits_a_surrogate_pair() -> None:
    """An emoji is two UCS-2 units: cut whole, the text kept within its units."""
    assert clipped("ab😀cd", 5) == "ab😀…"
    assert clipped("ab😀cd", 4) == "ab…"  # the emoji would straddle the room: dropped whole
    assert encode_info(clipped("😀" * 30, 9)).units <= 9


@pytest.mark.parametrize(
    ("text", "units", "cut"),
    [
        ("cafe\u0301s!", 6, "cafe\u0301…"),  # e and its acute accent kept together
        ("cafe\u0301s!", 5, "caf…"),  # or dropped together, not the accent left out
        ("\u0626\u0627\u0644\u0645\u0627", 3, "\u0626\u0627…"),  # Uyghur letters: plain cut
        ("\u064a\u0654\u0627\u0644", 2, "…"),  # a letter and its hamza above stay together
        ("👍🏽ok", 3, "…"),  # an emoji and its skin tone
        ("a👨\u200d👩\u200d👧b", 6, "a…"),  # a family joined by zero-width joiners
        ("a\ufe0fb", 2, "…"),  # a variation selector stays with its character
    ],
)
def test_clipped_never_cuts_inside_a_character_as_read(text: str, units: int, cut: str) -> None:
    assert clipped(text, units) == cut


@given(st.text(min_size=1, max_size=80), st.integers(min_value=1, max_value=60))
def test_clipped_is_the_text_or_a_start_of_it_within_its_units(text: str, units: int) -> None:
    cut = clipped(text, units)
    if cut != text:
        assert len(cut.encode("utf-16-le")) // 2 <= units
        assert cut.endswith("…") and text.startswith(cut.removesuffix("…"))


def _counted(text: str) -> SmsEncoding:
    """``text`` measured a character at a time, as the module says: each character's units
    (GSM-7 when every one has a septet, an escaped one two; else UTF-16 units, two outside the
    BMP), a part closed before a character that would not fit whole in it."""
    gsm = all(c in GSM_ALPHABET for c in text)
    if gsm:
        costs, single, multi = [1 + (c in GSM7_EXTENSION_CHARS) for c in text], 160, 153
    else:
        costs, single, multi = [1 + (ord(c) > 0xFFFF) for c in text], 70, 67
    parts, used = 1, 0
    if sum(costs) > single:
        for cost in costs:
            if used + cost > multi:
                parts, used = parts + 1, 0
            used += cost
    return SmsEncoding("GSM-7" if gsm else "UCS-2", parts, sum(costs))


@given(
    st.text(
        alphabet=st.sampled_from([*GSM_ALPHABET, "【", "é", "\U0001f600", "ئ", "\u0301"]),
        max_size=700,
    )
)
def test_a_text_is_measured_as_a_character_at_a_time(text: str) -> None:
    """Texts of one unit a character (most: every English one abroad, every one signed to
    China) are counted at once, not a character at a time: the same encoding, units and
    parts; a name is kept whole by :func:`clipped` as long as its UTF-16 units fit."""
    assert encode_info(text) == _counted(text)
    assert (clipped(text, 67) == text) == (len(text.encode("utf-16-le")) // 2 <= 67)
