"""Exponential backoff, the one step every retry loop waits by. Pure."""

from typing import Final

MAX_DOUBLINGS: Final = 64


def exponential_step(attempt: int, base_seconds: float, cap_seconds: float) -> float:
    """``base_seconds`` doubled once per failed try after the first (``attempt`` is 1-based),
    at most ``cap_seconds``.

    The doublings stop at ``MAX_DOUBLINGS``, far past any cap: ``2.0 ** 1024`` raises
    OverflowError before the cap applies, and a row tried that often (a short cap and a
    long give-up window) would then fail its loop on every pass.
    """
    return min(cap_seconds, base_seconds * 2.0 ** min(max(attempt - 1, 0), MAX_DOUBLINGS))
