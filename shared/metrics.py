"""Prometheus metrics shared by every service (each process exports its own registry)."""

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter(
    "caravan_records_consumed_total", "Records consumed", ["service", "topic", "outcome"]
)
OUTBOX_PUBLISHED = Counter(
    "caravan_records_produced_total", "Records published from the outbox", ["service"]
)
MESSAGING_PRUNED = Counter(
    "caravan_messaging_rows_pruned_total",
    "Outbox and inbox rows deleted past their retention",
    ["service", "table"],
)
HANDLER_SECONDS = Histogram(
    "caravan_handler_seconds",
    "Time to handle one record, database commit included",
    ["service", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

OUTBOX_BACKLOG = Gauge("caravan_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_SECONDS = Gauge(
    "caravan_outbox_oldest_seconds", "Age of the oldest unpublished outbox row", ["service"]
)
CONSUMER_LAG = Gauge(
    "caravan_consumer_lag",
    "Records past the service's group's committed offset (commits trail handling by up to"
    " CARAVAN_CONSUMER_COMMIT_INTERVAL_MS)",
    ["service", "topic", "partition"],
)
DEAD_LETTERS = Counter(
    "caravan_dead_letters_total", "Records dead-lettered", ["service", "topic", "error"]
)
