"""The platform adapter's start line names the apps it loaded, never their secrets
(``tests/e2e/test_platform.py``: the line a restarted adapter logs)."""

from services.platform.bootstrap import start_note
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
