"""Signing of platform requests, the marketplace platforms' usual "sign" scheme. Pure.

The signed bytes are the request's parameters except ``sign`` itself, sorted by name
(byte order of their UTF-8 names), each written as its name immediately followed by its
value, with no separators, encoded as UTF-8::

    params = {"timestamp": "1764489600", "app_key": "ali", "order_id": "P-1"}
    payload = b"app_keyaliorder_idP-1timestamp1764489600"

- ``hmac-sha256``: ``HMAC-SHA256(key=secret, msg=payload)``;
- ``md5`` (older apps): ``MD5(secret + payload + secret)``, the secret as UTF-8 bytes;

each written as upper-case hex. Verification compares in constant time.
"""

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

SignMethod = Literal["hmac-sha256", "md5"]
SIGN = "sign"
HEX_DIGITS: dict[SignMethod, int] = {"hmac-sha256": 64, "md5": 32}
"""How long each method's ``sign`` is, in hex digits."""
HEX = re.compile(r"[0-9A-Fa-f]+", re.ASCII)


def payload(params: Mapping[str, str]) -> bytes:
    """The bytes that are signed (see the module docstring)."""
    items = sorted((k.encode(), v.encode()) for k, v in params.items() if k != SIGN)
    return b"".join(k + v for k, v in items)


def sign(params: Mapping[str, str], secret: str, method: SignMethod = "hmac-sha256") -> str:
    body = payload(params)
    key = secret.encode()
    if method == "md5":
        return hashlib.md5(key + body + key, usedforsecurity=False).hexdigest().upper()
    return hmac.new(key, body, hashlib.sha256).hexdigest().upper()


def signed(
    params: Mapping[str, str], secret: str, method: SignMethod = "hmac-sha256"
) -> dict[str, str]:
    """``params`` with their ``sign`` added."""
    return {**params, SIGN: sign(params, secret, method)}


def verify(params: Mapping[str, str], secret: str, method: SignMethod = "hmac-sha256") -> bool:
    """True when ``params`` carry the right ``sign`` (upper- or lower-case hex)."""
    given = params.get(SIGN)
    if not given:
        return False
    expected = sign(params, secret, method)
    return hmac.compare_digest(given.upper().encode(), expected.encode())


def unreadable_sign(given: str | None) -> str | None:
    """Why a push's ``sign`` (``given``, None if it has none) is no signature of any app's,
    whatever its app and secret: missing, or not the hex digits of one method's
    (:data:`HEX_DIGITS`: base64, say). None when it may be one. Said to the platform, as it
    tells nothing of which apps exist nor of their methods, and never quoting the value."""
    if not given:
        return "the push carries no sign: sign every other parameter with the app's secret"
    lengths = " or ".join(f"{n} ({method})" for method, n in HEX_DIGITS.items())
    if len(given) not in HEX_DIGITS.values() or not HEX.fullmatch(given):
        return (
            f"sign is {len(given)} characters, not the hex digits of a signature, {lengths}"
            " (upper- or lower-case; base64 is not read)"
        )
    return None


def fingerprint(params: Mapping[str, str]) -> str:
    """What makes a push the same push sent again, as SHA-256 hex: its parameters but ``sign``
    and ``timestamp``, which a platform resending a push may sign anew."""
    kept = sorted((k, v) for k, v in params.items() if k not in (SIGN, "timestamp"))
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()


BEIJING = timezone(timedelta(hours=8), "UTC+08:00")  # China keeps no summer time
TOP_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", re.ASCII)
TIMESTAMP_FORMATS = (
    "Unix seconds or milliseconds, ISO 8601 with a zone (2026-12-04T17:04:00Z), or"
    " yyyy-MM-dd HH:mm:ss in Beijing time (UTC+8, as Taobao's TOP API sends it)"
)
"""What :func:`parse_timestamp` reads, as a refusal names it."""


def parse_timestamp(value: str) -> datetime | None:
    """A push's ``timestamp`` (:data:`TIMESTAMP_FORMATS`), else None. Taobao's TOP API writes
    ``yyyy-MM-dd HH:mm:ss`` in GMT+8 and says so: that is read as Beijing time. Any other
    time without a zone (``2026-12-04T17:04:00``) is not read: it names no instant, and
    taken as UTC or as Beijing time it would be eight hours off for half the platforms."""
    value = value.strip()
    try:
        if value.isdigit():
            number = int(value)
            seconds = number / 1000 if number >= 10**11 else number
            return datetime.fromtimestamp(seconds, UTC)
        if TOP_TIMESTAMP.fullmatch(value):
            return datetime.fromisoformat(value).replace(tzinfo=BEIJING)
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo is not None else None


def unread_timestamp(value: str) -> str:
    """Why a push's ``timestamp`` (``value``, empty if none) that :func:`parse_timestamp`
    does not read is refused: missing, or the value quoted (its first 40 characters)."""
    if not value:
        return f"timestamp needed, one of: {TIMESTAMP_FORMATS}"
    given = value if len(value) <= 40 else f"{value[:40]}..."
    return f"timestamp {given!r} is in no format read: send one of: {TIMESTAMP_FORMATS}"


def within(at: datetime, now: datetime, window_seconds: float) -> bool:
    """True when ``at`` is within ``window_seconds`` of ``now`` (either way)."""
    return abs((now - at).total_seconds()) <= window_seconds


def fresh(value: str | None, now: datetime, window_seconds: float) -> bool:
    """True when ``value`` is a timestamp within ``window_seconds`` of ``now`` (either way)."""
    at = parse_timestamp(value) if value is not None else None
    return at is not None and within(at, now, window_seconds)
