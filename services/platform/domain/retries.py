"""Trying a platform again: what its answer to a status callback means (delivered, to retry,
failed for good) and when a callback is sent again (:class:`Backoff`), which also says how long
a push is asked to wait while the platform's order API fails (``Retry-After``). Pure."""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from shared.backoff import exponential_step

Verdict = Literal["delivered", "retry", "failed"]
CallbackStatus = Literal["pending", "sending", "delivered", "failed"]
"""A status callback's state (``platform.callbacks.status``): due, being sent, or its end."""


def verdict(status_code: int | None) -> Verdict:
    """A status API's answer: 2xx delivered; no answer, 408, 429 or 5xx worth retrying, and
    401 or 403 too (our signature refused: a skewed clock or a rotated secret, which
    operations put right within the backoff's hours, as when reading an order); any other
    4xx refused for good (retrying the same request would be refused again)."""
    if status_code is None or status_code in (401, 403, 408, 429) or status_code >= 500:
        return "retry"
    if 200 <= status_code < 300:
        return "delivered"
    return "failed"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter, at most ``max_attempts`` calls in all."""

    max_attempts: int = 30
    base_seconds: float = 1.0
    cap_seconds: float = 300.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed call number ``attempt`` (1-based): half of the
        exponential step for sure, the other half at random."""
        step = exponential_step(attempt, self.base_seconds, self.cap_seconds)
        return step / 2 + rand() * step / 2

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def retry_after(self, failing_for: float) -> int:
        """Whole seconds a platform is asked to wait before pushing again (``Retry-After``),
        its order API failing for ``failing_for`` seconds: as long again, from
        ``base_seconds`` to ``cap_seconds`` (the waits of its status API's)."""
        return math.ceil(min(self.cap_seconds, max(self.base_seconds, failing_for)))
