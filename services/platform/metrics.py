"""The platform adapter's figures for ``/metrics`` (besides the shared ones)."""

from prometheus_client import Counter, Gauge

PUSHES = Counter(
    "caravan_platform_pushes_total", "Order pushes received, by outcome", ["app", "outcome"]
)
PROBLEMS = Counter(
    "caravan_platform_problems_total",
    "Pushed orders that could not be placed (unmapped SKU or buyer, invalid)",
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
