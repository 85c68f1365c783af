"""Prometheus metrics shared by every service (each process exports its own registry)."""

from prometheus_client import Counter, Histogram

CONSUMED = Counter(
    "caravan_records_consumed_total", "Records consumed", ["service", "topic", "outcome"]
)
OUTBOX_PUBLISHED = Counter(
    "caravan_records_produced_total", "Records published from the outbox", ["service"]
)
HANDLER_SECONDS = Histogram(
    "caravan_handler_seconds",
    "Time to handle one record, database commit included",
    ["service", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
