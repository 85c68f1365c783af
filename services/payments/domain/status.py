"""A payment's status (``payments.payments.status``), as ``GET /payments`` and ``caravan
payments list --status`` take it."""

from typing import Literal, get_args

Status = Literal[
    "pending",
    "charging",
    "authorized",
    "declined",
    "voiding",
    "voided",
    "void_refused",
    "refunded",
    "awaiting",
    "cancelled",
]
STATUSES: tuple[str, ...] = get_args(Status)
