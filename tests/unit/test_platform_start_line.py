"""The platform adapter's start line names the apps it loaded, never their secrets
(``tests/e2e/test_platform.py``: the line a restarted adapter logs), and so does ``caravan
up``'s ready line (``tests/e2e/test_up_command.py``: the line it prints)."""

import socket

import pytest

from services.platform.served import ready_note, start_note
from shared.settings import Settings

SECRET = "shop-a-secret-0001"


def test_its_start_line_names_its_apps_and_where_their_pushes_go() -> None:
    apps = {
        "shop-b": {"secret": "shop-b-secret-0002", "api_url": "http://127.0.0.1:9002"},
        "shop-a": {"secret": SECRET, "api_url": "http://127.0.0.1:9001"},
    }
    note = start_note(Settings(platform_apps=apps, platform_http_port=18084))
    where = "http://127.0.0.1:18084/platform/{app}/push"
    assert note == f"apps shop-a, shop-b; pushes to POST {where}"
    assert SECRET not in note


def test_its_start_line_says_when_no_app_is_configured() -> None:
    """Every push is then refused 401 (no app of that name), which the line says."""
    note = start_note(Settings())
    assert note == "no app configured (CARAVAN_PLATFORM_APPS): every push is refused"


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_bound_to_every_interface_its_line_names_this_machine(host: str) -> None:
    """It said ``http://0.0.0.0:18084/...``, which no platform can be told to call: this
    machine's name instead, and that it listens on all interfaces."""
    apps = {"shop-a": {"secret": SECRET, "api_url": "http://127.0.0.1:9001"}}
    note = start_note(Settings(platform_apps=apps, platform_http_port=18084, http_host=host))
    where = f"http://{socket.gethostname()}:18084/platform/{{app}}/push (all interfaces)"
    assert note == f"apps shop-a; pushes to POST {where}"


def test_bound_to_an_ipv6_address_its_line_has_it_in_brackets() -> None:
    apps = {"shop-a": {"secret": SECRET, "api_url": "http://127.0.0.1:9001"}}
    note = start_note(Settings(platform_apps=apps, platform_http_port=18084, http_host="::1"))
    assert note == "apps shop-a; pushes to POST http://[::1]:18084/platform/{app}/push"


def test_caravan_ups_ready_line_names_them_as_the_adapter_does() -> None:
    """It named the HTTP API and the operations page, not the apps the adapter it started
    serves, which only the adapter's log said."""
    apps = {"shop-a": {"secret": SECRET, "api_url": "http://127.0.0.1:9001"}}
    note = ready_note(Settings(platform_apps=apps, platform_http_port=18084))
    assert (
        note == "platform apps shop-a (pushes to POST http://127.0.0.1:18084/platform/{app}/push)"
    )
    assert SECRET not in note
    assert ready_note(Settings()) == "no platform app configured (CARAVAN_PLATFORM_APPS)"
