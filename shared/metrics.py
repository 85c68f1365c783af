"""Prometheus metrics shared by every service, and what each service's ``/metrics`` shows."""

from collections.abc import Iterable, Iterator
from itertools import product

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

# prometheus_client serves, beside each counter's and histogram's series, a ``_created`` one
# (when the series began, in Unix time): as many series again in an operator's Prometheus,
# read by nothing of ours (alerts, dashboard, docs; ``increase()`` and ``rate()`` need it not).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in 0.26

CONSUMED = Counter(
    "caravan_records_consumed_total", "Records consumed", ["service", "topic", "outcome"]
)
OUTBOX_PUBLISHED = Counter(
    "caravan_records_produced_total", "Records published from the outbox", ["service"]
)
OUTBOX_REFUSED = Counter(
    "caravan_outbox_refused_total",
    "Outbox rows set aside by the relay, Kafka refusing them for good (by the error it gave)",
    ["service", "error"],
)
MESSAGING_PRUNED = Counter(
    "caravan_messaging_rows_pruned_total",
    "Rows deleted past their retention (outbox, inbox, parked events, finished texts)",
    ["service", "table"],
)
HANDLER_SECONDS = Histogram(
    "caravan_handler_seconds",
    "Time to handle one record, database commit included (a record handled in a batch: the"
    " batch's, which commits them together)",
    ["service", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
HTTP_REQUEST_SECONDS = Histogram(
    "caravan_http_request_seconds",
    "Time to answer one HTTP request, from its arrival to its answer's start (the client's"
    " sending of its body included), by method, route template (unmatched: no route took the"
    " path) and status code; /healthz and /metrics not counted",
    ["service", "method", "route", "status"],
    # Milliseconds when all is well; a request the database did not answer is answered 503 at
    # CARAVAN_HTTP_DB_TIMEOUT_SECONDS (8 s by default): 10 holds it, 30 one set longer.
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

OUTBOX_BACKLOG = Gauge(
    "caravan_outbox_backlog", "Outbox rows not yet published (but those set aside)", ["service"]
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "caravan_outbox_oldest_seconds",
    "Age of the oldest unpublished outbox row (but those set aside)",
    ["service"],
)
OUTBOX_REFUSED_ROWS = Gauge(
    "caravan_outbox_refused_rows",
    "Outbox rows set aside unpublished, Kafka having refused them for good (refused_at set):"
    " for operations to act on",
    ["service"],
)
PARKED_EVENTS = Gauge(
    "caravan_parked_events",
    "Events parked until their order's order.placed comes (shared.messaging.parking), in a"
    " service that parks them (notifications, the platform adapter)",
    ["service"],
)
PARKED_OLDEST_SECONDS = Gauge(
    "caravan_parked_oldest_seconds",
    "How long the oldest parked event has waited for its order's order.placed (0: none)",
    ["service"],
)
CONSUMER_LAG = Gauge(
    "caravan_consumer_lag",
    "Records past the service's group's committed offset (commits trail handling by up to"
    " CARAVAN_CONSUMER_COMMIT_INTERVAL_MS)",
    ["service", "topic", "partition"],
)
CONSUMER_GROUP_MEMBERS = Gauge(
    "caravan_consumer_group_members",
    "Members of the service's consumer group, as its Kafka coordinator lists them: one per"
    " instance of the service running (every instance says its group's)",
    ["service"],
)
CONSUMER_STALLED_SECONDS = Gauge(
    "caravan_consumer_stalled_seconds",
    "How long the partition has had records waiting past what the service's group has handled"
    " with none handled (0: none waiting, or they move); /healthz names one past"
    " CARAVAN_CONSUMER_STALL_SECONDS",
    ["service", "topic", "partition"],
)
OUTBOX_STALLED_SECONDS = Gauge(
    "caravan_outbox_stalled_seconds",
    "How long the oldest unpublished outbox row (but those set aside) has been the oldest, no"
    " row published meanwhile (0: none waiting, or they move); /healthz names one past"
    " CARAVAN_OUTBOX_STALL_SECONDS",
    ["service"],
)
OBSERVED_AT = Gauge(
    "caravan_observed_at_seconds",
    "When the service last sampled its figures (outbox, consumer lag and its own) without a"
    " failure, in Unix time: figures sampled before then are not live",
    ["service"],
)
DB_POOL_CONNECTIONS = Gauge(
    "caravan_db_pool_connections",
    "Connections of the service's pool to PostgreSQL, read at each scrape: in_use (held by a"
    " request, a consumer, a loop) and idle (open and free); /healthz's own is not of it",
    ["service", "state"],
)
DB_POOL_CAPACITY = Gauge(
    "caravan_db_pool_capacity",
    "The most connections the service's pool opens at once (twice CARAVAN_DB_POOL_SIZE): with"
    " as many in use, the next work waits for one",
    ["service"],
)
EVENT_LOOP_LAG = Gauge(
    "caravan_event_loop_lag_seconds",
    "How late the service's event loop woke a task asking to wake every 0.5 s, the most of the"
    " last 15 s, read at each scrape: a loop busy with a long step or short of CPU hears every"
    " answer (PostgreSQL's, Kafka's, a client's) as late; /healthz names one that made its"
    " SELECT 1 time out",
    ["service"],
)
DEAD_LETTERS = Counter(
    "caravan_dead_letters_total", "Records dead-lettered", ["service", "topic", "error"]
)


def start_at_zero(counter: Counter, *values: Iterable[str]) -> dict[tuple[str, ...], Counter]:
    """Show ``counter`` at 0 for each combination of ``values`` (one iterable per label, in
    the counter's order). A series Prometheus first sees at 1 has no increase: ``increase()``
    and ``rate()`` missed the first event of each label set (the first dead letter of a topic,
    say), so the label sets a service knows at start are shown before anything happens.

    Returns each series by its labels, for what counts on a path taken often (every record
    consumed): ``labels()`` costs a lock and a look-up each time."""
    return {labels: counter.labels(*labels) for labels in product(*values)}


OWNERS: dict[str, str] = {}
"""The service each family without a ``service`` label belongs to, by name (a service's own
figures: ``caravan_orders_ended_total``, orders'), as :func:`owned_by` says."""


def owned_by(service: str, *metrics: Counter | Gauge | Histogram) -> None:
    """``metrics`` are ``service``'s alone: shown on its port alone where a process hosts
    several services, as where it runs alone. Shown on every port of such a process,
    Prometheus took each sample once a port (with that port's ``service``): a ``sum`` counted
    it as often, an alert fired once a port."""
    for metric in metrics:
        for family in metric.describe():
            OWNERS[family.name] = service


class _ServiceView:
    """The process's registry as one service shows it: without the samples labelled with
    another service. A process hosting several services (``python -m services a b``) has one
    registry; each service's port shows its own figures (those labelled with it, those
    :data:`OWNERS` gives it), and the process's (CPU, memory, the other families without a
    ``service`` label) on every port."""

    def __init__(self, service: str) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if OWNERS.get(family.name, self.service) != self.service:
                continue
            own = Metric(family.name, family.documentation, family.type, family.unit)
            own.samples = [
                s for s in family.samples if s.labels.get("service", self.service) == self.service
            ]
            yield own


def exposition(service: str) -> bytes:
    """``service``'s ``/metrics`` page, in Prometheus' text format."""
    return generate_latest(_ServiceView(service))
