"""Under ``caravan up --processes N`` several services share a process and its one registry.
A family a service's code alone counts, without a ``service`` label
(``caravan_orders_ended_total``), was shown on every port of the process: Prometheus scraped
it once a port, each copy under that port's ``service``, and ``CaravanOrdersExpiring``'s
``sum`` counted the orders' ends twice, ``CaravanTextsFailed`` fired once a port. It is shown
on its service's port alone, as where that service runs alone."""

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import services.notifications.dispatch
import services.orders.adapters.repository
import services.orders.entrypoints.ops
import services.orders.handlers
import services.payments.handlers
import services.payments.prepaid
import services.platform.metrics  # noqa: F401  # every service's families registered
from shared.metrics import OWNERS, exposition
from shared.topics import SERVICES


def shown(service: str) -> set[str]:
    """The names of the families ``service``'s ``/metrics`` shows."""
    page = exposition(service).decode()
    return {line.split()[2] for line in page.splitlines() if line.startswith("# TYPE ")}


def test_a_services_own_figures_are_shown_on_its_port_alone() -> None:
    for family, service in (
        ("caravan_orders_ended_total", "orders"),
        ("caravan_sms", "notifications"),
        ("caravan_payments_void_refused_total", "payments"),
        ("caravan_platform_problems_open", "platform"),
    ):
        on = {s for s in SERVICES if family in shown(s)}
        assert on == {service}, (family, on)
    # The process's own figures (CPU, memory) are every port's.
    assert all("process_cpu_seconds_total" in shown(s) for s in SERVICES)


def test_every_services_family_without_a_service_label_has_its_owner() -> None:
    unowned = {
        name
        for name, collector in REGISTRY._names_to_collectors.items()
        if name.startswith("caravan_")
        and isinstance(collector, MetricWrapperBase)
        and "service" not in collector._labelnames
        and next(iter(collector.describe())).name not in OWNERS
    }
    assert unowned == set()


def test_no_series_of_when_a_series_began_is_served() -> None:
    """prometheus_client served a ``_created`` series beside each counter's and histogram's
    (``caravan_orders_ended_created``): as many series again in Prometheus, read by nothing."""
    for service in SERVICES:
        page = exposition(service).decode()
        created = [line for line in page.splitlines() if "_created" in line.split(" ")[0]]
        assert created == [], (service, created[:3])
