"""Every scope an API token may carry, and what it allows (docs/security.md has the full
table): apart from shared/auth/tokens.py, so that the ``caravan`` command names them in its
help without importing the tokens' table (SQLAlchemy)."""

SCOPES: dict[str, str] = {
    "orders:write": "place and cancel orders",
    "orders:read": "read orders and their timelines",
    "inventory:write": "receive harvest lots and adjust them",
    "inventory:read": "read stock, lots and the spoilage report",
    "credit:write": "set and adjust credit lines, record repayments",
    "credit:read": "read credit lines, loans and payments",
    "notifications:write": "opt phone numbers out of (and back into) SMS",
    "notifications:read": "read whether a phone number is opted out",
    "platform:write": "map marketplace platforms' SKUs and buyers to ours",
    "platform:read": "read platform mappings, problems and status callbacks",
    "metrics": "scrape /metrics (Prometheus)",
    "ops": "stuck orders, the operations page, refunds made by hand",
}

_CREDIT = "reads every buyer's credit line, loans and payments (payments keeps no order's client)"
_OPT_OUTS = "reads every phone number's SMS opt-out"
_PLATFORM = "reads every platform app's mappings, problems and status callbacks"
# platform:read may be bound: a token bound to platform/APP reads that app's problems and
# callbacks alone (shared.auth.tokens.Principal.apps), as a platform following its pushes does.
BEYOND_A_BINDING: dict[str, str] = {
    "ops": "reaches every order",
    "credit:read": _CREDIT,
    "credit:write": _CREDIT,
    "notifications:read": _OPT_OUTS,
    "notifications:write": _OPT_OUTS,
    "platform:write": _PLATFORM,
}
"""The scopes a token bound to its own orders may not hold, and what they read that no binding
limits: no order's data, or (payments' reads of an order) kept where nothing says which client
placed it (``caravan tokens issue --own-orders``, docs/security.md). The others (the orders
API's own, inventory's stock, metrics) hold nothing of another client's."""

LIMITED_BY_A_BINDING: tuple[str, ...] = ("orders:read", "orders:write", "platform:read")
"""The scopes whose reads a binding limits (a client's orders, a platform app's problems and
callbacks): a token holding none of them (inventory's, ``metrics`` alone) reads nothing a
binding could limit, so a binding of it would do nothing and is refused (it read as done)."""
ORDERS_SCOPES: tuple[str, ...] = ("orders:read", "orders:write")
"""The scopes a token's ``--client`` is in effect with: it places and reads orders as that
client."""
