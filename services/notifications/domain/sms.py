"""SMS encoding and segment counting (GSM 03.38 / 3GPP TS 23.038).

A message is sent as GSM-7 when every character is in the GSM 03.38 basic
character set or its extension table; otherwise the whole message is sent as
UCS-2 (UTF-16). Pure module: no I/O, no framework imports.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

Encoding = Literal["GSM-7", "UCS-2"]
"""The two SMS data codings a message can be sent in."""

GSM7_BASIC_CHARS: Final[str] = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"  # 0x1B (ESC) is the escape to the extension table, not a character.
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
"""The 127 printable characters of the GSM 03.38 default alphabet; each costs 1 septet."""

GSM7_EXTENSION_CHARS: Final[str] = "\f^{}\\[~]|€"
"""Characters of the GSM 03.38 extension table; each costs 2 septets (ESC + code)."""

GSM7_SINGLE_SEGMENT: Final[int] = 160
"""Septets that fit in a single, non-concatenated GSM-7 SMS."""

GSM7_MULTI_SEGMENT: Final[int] = 153
"""Septets per part of a concatenated GSM-7 SMS (7 septets go to the UDH)."""

UCS2_SINGLE_SEGMENT: Final[int] = 70
"""UTF-16 code units that fit in a single, non-concatenated UCS-2 SMS."""

UCS2_MULTI_SEGMENT: Final[int] = 67
"""UTF-16 code units per part of a concatenated UCS-2 SMS (6 octets go to the UDH)."""

_GSM7_BASIC: Final[frozenset[str]] = frozenset(GSM7_BASIC_CHARS)
_GSM7_EXTENSION: Final[frozenset[str]] = frozenset(GSM7_EXTENSION_CHARS)


@dataclass(frozen=True)
class SmsEncoding:
    """How a text would be sent as SMS.

    Attributes:
        encoding: ``"GSM-7"`` or ``"UCS-2"``.
        segments: number of SMS parts the text is billed and sent as (at least 1).
        units: septets for GSM-7 (extension-table characters count 2), or
            UTF-16 code units for UCS-2 (characters outside the BMP count 2).
    """

    encoding: Encoding
    segments: int
    units: int


def _segments(costs: list[int], single: int, multi: int) -> int:
    """Number of parts for characters of these ``costs`` (units each) given single-part and
    per-part capacities. A character is never split across two parts: an escape pair
    (GSM-7) or a surrogate pair (UCS-2) that would straddle a boundary starts the next."""
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            parts, used = parts + 1, 0
        used += cost
    return parts


def encode_info(text: str) -> SmsEncoding:
    """Return the encoding, length in units and segment count for ``text``.

    GSM-7 is used when every character is in the GSM 03.38 basic character set
    or its extension table (``^ { } \\ [ ~ ] | €`` and form feed, 2 septets
    each). Otherwise the text is UCS-2 and measured in UTF-16 code units, so a
    character outside the Basic Multilingual Plane (e.g. most emoji) counts 2.

    A single SMS carries 160 GSM-7 septets or 70 UCS-2 units; a concatenated
    message carries 153 septets or 67 units per part. Empty text is 1 segment.

    A part never ends inside an escape pair (GSM-7) or a surrogate pair (UCS-2): such a
    pair at a boundary moves to the next part, which may take one part more than
    ``ceil(units / per_part)``. No national language shift tables are considered, and no
    character is transliterated (e.g. ``ç`` forces UCS-2).
    """
    if _GSM7_BASIC.issuperset(text):  # each character one septet: no pair to keep whole
        return SmsEncoding(
            "GSM-7", _even_parts(len(text), GSM7_SINGLE_SEGMENT, GSM7_MULTI_SEGMENT), len(text)
        )
    septets: list[int] = []
    for char in text:
        if char in _GSM7_BASIC:
            septets.append(1)
        elif char in _GSM7_EXTENSION:
            septets.append(2)
        else:
            break
    else:
        return SmsEncoding(
            encoding="GSM-7",
            segments=_segments(septets, GSM7_SINGLE_SEGMENT, GSM7_MULTI_SEGMENT),
            units=sum(septets),
        )

    units = _utf16_units(text)
    if units == len(text):  # no character outside the BMP: no surrogate pair to keep whole
        return SmsEncoding(
            "UCS-2", _even_parts(units, UCS2_SINGLE_SEGMENT, UCS2_MULTI_SEGMENT), units
        )
    code_units = [_utf16(char) for char in text]
    return SmsEncoding(
        encoding="UCS-2",
        segments=_segments(code_units, UCS2_SINGLE_SEGMENT, UCS2_MULTI_SEGMENT),
        units=sum(code_units),
    )


def _even_parts(units: int, single: int, multi: int) -> int:
    """:func:`_segments` of ``units`` characters of one unit each, counted at once."""
    return 1 if units <= single else -(-units // multi)


def _utf16_units(text: str) -> int:
    """UTF-16 code units of ``text`` (:func:`_utf16` of each character, summed), counted by
    the codec (a lone surrogate, which no text should hold, one unit as :func:`_utf16` says)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _utf16(char: str) -> int:
    """UTF-16 code units of a character: 2 outside the Basic Multilingual Plane."""
    return 2 if ord(char) > 0xFFFF else 1


_ZWJ: Final[str] = "\u200d"


def _attached(char: str) -> bool:
    """Whether ``char`` belongs to the character before it, as a reader sees them: a
    combining mark (an accent, a hamza above), a variation selector, an emoji's skin tone, a
    zero-width joiner."""
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")
        or char == _ZWJ
        or "\U0001f3fb" <= char <= "\U0001f3ff"
    )


def clipped(text: str, units: int, mark: str = "…") -> str:
    """``text`` in at most ``units`` UCS-2 units (UTF-16 code units, as :func:`encode_info`
    counts them): whole if it fits, else cut with ``mark`` after. The cut falls between
    characters as a reader sees them: never inside a surrogate pair (an emoji is kept or
    dropped whole), nor before a combining mark or after a zero-width joiner, which would
    leave a letter without its accent or hamza, or half an emoji sequence."""
    if _utf16_units(text) <= units:
        return text
    room, cut = units - sum(map(_utf16, mark)), 0
    for char in text:
        room -= _utf16(char)
        if room < 0:
            break
        cut += 1
    while cut > 0 and (_attached(text[cut]) or text[cut - 1] == _ZWJ):
        cut -= 1
    return text[:cut].rstrip() + mark
