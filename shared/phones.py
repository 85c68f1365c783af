"""Phone numbers as the services keep them: E.164 (``+``, the country calling code and the
subscriber number, at most 15 digits), and numbers written otherwise read as E.164. Pure.

For mainland China (``+86``) only mobile numbers can receive SMS: 11 digits starting
``1[3-9]``.
"""

import re
import unicodedata
from typing import Final

from shared.events.orders import E164_PATTERN

E164: Final = re.compile(E164_PATTERN)
_CN_MOBILE_DIGITS: Final = r"1[3-9][0-9]{9}"  # a mainland China mobile number, nationally
CN_MOBILE: Final = re.compile(rf"^\+86{_CN_MOBILE_DIGITS}$")
_CN_MOBILE_NATIONAL: Final = re.compile(_CN_MOBILE_DIGITS)
_SEPARATORS: Final = re.compile(r"[\s\-().]")


def as_e164(phone: str) -> str | None:
    """``phone`` in E.164, or None when it cannot be read as one.

    Read as people write numbers (a Chinese marketplace gives its buyers' so): full-width
    characters as their ASCII ones; spaces, dashes, parentheses and dots dropped; ``00``
    (the international prefix) as ``+``; a mainland China mobile number (11 digits, ``1[3-9]``)
    written nationally, or after a bare ``86``, as ``+86`` and the number. Nothing else is
    guessed: what is not then E.164 is None.
    """
    digits = _SEPARATORS.sub("", unicodedata.normalize("NFKC", phone))
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    elif _CN_MOBILE_NATIONAL.fullmatch(digits.removeprefix("86")):
        digits = "+86" + digits.removeprefix("86")
    return digits if E164.fullmatch(digits) else None


def as_written(phone: object) -> object:
    """A phone as people type it (``139 1234-5678``, ``0086...``, a mainland mobile without
    ``+86``, as a county centre's spreadsheet of sellers has them) read as E.164
    (:func:`as_e164`), for a model's ``BeforeValidator``; one that cannot be is left to the
    E.164 pattern to refuse."""
    return (as_e164(phone) or phone) if isinstance(phone, str) else phone
