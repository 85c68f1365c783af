"""Where a server is bound to every interface (``CARAVAN_HTTP_HOST=0.0.0.0`` or ``::``), or
to an IPv6 address, what calls it named it as bound: ``http://0.0.0.0:8083``, no address to
give a gateway (nor to call, but on Linux), and ``http://:::8083``, no URL at all. Each
names it as the platform adapter's start line does (:mod:`shared.addresses`): this machine's
hostname, an IPv6 address in brackets; 127.0.0.1 and other hosts as before. A client on this
machine (a command, the page) calls every interface's server at the loopback address, which
a hostname may not resolve to."""

import socket

import pytest

from caravan.admin_api import base_url
from caravan.ops.dashboard import further_instances, instance_addresses
from services.notifications.bootstrap import receipts_url
from shared.settings import Settings

HOSTS = [
    ("0.0.0.0", socket.gethostname()),
    ("::", socket.gethostname()),
    ("::1", "[::1]"),
    ("127.0.0.1", "127.0.0.1"),
]
HERE = [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), *HOSTS[2:]]


@pytest.mark.parametrize(("bound", "named"), HOSTS)
def test_the_gateway_is_told_to_call_receipts_back_at_an_address(bound: str, named: str) -> None:
    settings = Settings(http_host=bound, notifications_http_port=18083)
    url = receipts_url(settings)
    assert url.startswith(f"http://{named}:18083/sms/receipts?key="), url


@pytest.mark.parametrize(("bound", "named"), HERE)
def test_a_command_calls_a_service_at_an_address(
    bound: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARAVAN_HTTP_HOST", bound)
    monkeypatch.setenv("CARAVAN_PAYMENTS_HTTP_PORT", "18082")
    assert base_url(None, "payments") == f"http://{named}:18082"


@pytest.mark.parametrize(("bound", "named"), HERE)
def test_the_operations_page_reads_each_instance_at_an_address(bound: str, named: str) -> None:
    settings = Settings(http_host=bound, payments_http_port=18082)
    further = further_instances(["payments=9182", "payments=10.0.0.2:9182"], bound)
    assert instance_addresses(settings, further)["payments"] == [
        f"{named}:18082",
        f"{named}:9182",
        "10.0.0.2:9182",
    ]
