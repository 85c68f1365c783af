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
