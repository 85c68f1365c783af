"""The platform adapter's figures for ``/metrics`` (besides the shared ones)."""

from collections.abc import Iterable
from typing import Literal, get_args

from prometheus_client import Counter, Gauge

from services.platform.domain.orders import ProblemKind
from services.platform.domain.retries import Verdict
from shared.metrics import owned_by, start_at_zero

FetchRefused = Literal["fetch_failed", "fetch_refused", "fetch_signature_refused"]
"""The ``outcome`` of a push or a refetch whose order was not fetched: ``fetch_failed`` the
order API down, too slow or answering another status (push again later),
``fetch_signature_refused`` its 401 or 403 to our signed request (a secret or a clock to mend
by hand), ``fetch_refused`` an order it does not know or that cannot be read."""
PushRefused = Literal[
    "invalid", "unknown_app", "bad_signature", "stale", "replayed", "busy", FetchRefused
]
"""The ``outcome`` of a push refused (the others are those of ``handlers.Accepted``); ``busy``:
not taken in time, too many pushes waiting ahead of it (503, push again later)."""

RESENT = "resent"
"""The ``outcome`` of a push sent again under its push id (answered 200 ``duplicate``, not
acted on again): a platform that lost our answer, or a replay inside the window, told apart
from a new push of an order placed before (``duplicate``)."""

UNKNOWN_APP = "unknown"
"""The ``app`` label of a push naming no configured app."""

PUSHES = Counter(
    "caravan_platform_pushes_total", "Order pushes received, by outcome", ["app", "outcome"]
)
REFETCHES = Counter(
    "caravan_platform_refetches_total",
    "Orders fetched again by operations (POST /platform/refetch), by outcome",
    ["app", "outcome"],
)
"""Apart from the pushes: a refetch is no push a platform sent (its outcomes: those of
``handlers.Decided`` and :data:`FetchRefused`)."""
PROBLEMS = Counter(
    "caravan_platform_problems_total",
    "Platform orders that needed operations (a problem recorded), by kind",
    ["app", "kind"],
)
OPEN_PROBLEMS = Gauge(
    "caravan_platform_problems_open", "Platform orders waiting for operations", ["kind"]
)
CALLBACK_CALLS = Counter(
    "caravan_platform_callback_calls_total",
    "Calls of the platforms' status APIs, by result",
    ["app", "result"],
)
CALLBACKS = Gauge(
    "caravan_platform_callbacks", "Status callbacks by status (pending, failed, ...)", ["status"]
)
CALLBACKS_OLDEST = Gauge(
    "caravan_platform_callbacks_oldest_seconds",
    "How long the oldest status callback not yet delivered (pending or being sent) has waited"
    " since it was queued (0: none): the platform's status API hanging, or refusing us",
)
owned_by(
    "platform",
    PUSHES,
    REFETCHES,
    PROBLEMS,
    OPEN_PROBLEMS,
    CALLBACK_CALLS,
    CALLBACKS,
    CALLBACKS_OLDEST,
)


def start_at_zero_for(apps: Iterable[str], accepted: Iterable[str], decided: Iterable[str]) -> None:
    """The counters of ``apps`` (those configured) at 0, by every outcome, kind and result
    (:func:`shared.metrics.start_at_zero`); ``accepted``: the outcomes of a push taken,
    ``decided``: those of a refetch."""
    apps = list(apps)
    start_at_zero(PUSHES, apps, [*accepted, RESENT, *get_args(PushRefused)])
    start_at_zero(REFETCHES, apps, [*decided, *get_args(FetchRefused)])
    start_at_zero(PUSHES, [UNKNOWN_APP], ["invalid", "unknown_app"])
    start_at_zero(PROBLEMS, apps, get_args(ProblemKind))
    start_at_zero(CALLBACK_CALLS, apps, get_args(Verdict))
