"""The receipts URL given to the SMS gateway carries the receipts secret so that the route
reads it back whole: a secret of ``openssl rand -base64 32`` has ``+``, ``/`` and ``=``,
and one made by hand may have ``&``, ``#`` or ``%``; unquoted, the route read another key
(``+`` a space, the rest cut at ``&`` or ``#``) and refused every receipt 401."""

import pytest
from starlette.datastructures import QueryParams

from services.notifications.bootstrap import make_gateway, receipts_url
from shared.settings import Settings

SECRET = "q+Z/8w==&next=1#frag%2Fé x"


@pytest.mark.parametrize(
    ("given", "params"),
    [
        ("http://notifications.internal:8083/sms/receipts", {}),
        ("https://gw.example/cb?tenant=shawan", {"tenant": "shawan"}),
    ],
)
def test_the_route_reads_the_secret_of_the_receipts_url_whole(
    given: str, params: dict[str, str]
) -> None:
    settings = Settings(notifications_receipts_url=given, notifications_receipts_secret=SECRET)
    url = receipts_url(settings)
    base, _, query = url.partition("?")
    assert base == given.partition("?")[0]
    assert dict(QueryParams(query)) == {**params, "key": SECRET}


def test_infobip_in_production_needs_a_receipts_url_it_can_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without CARAVAN_NOTIFICATIONS_RECEIPTS_URL the gateway was given this host's own
    address (http://127.0.0.1:8083/sms/receipts), which Infobip can never call: no delivery
    receipt ever arrived, and nothing said so."""
    monkeypatch.delenv("CARAVAN_NOTIFICATIONS_RECEIPTS_URL", raising=False)
    infobip = Settings(
        environment="production",
        database_url="postgresql://caravan:Xy7-long-real-secret@db.internal:5432/caravan",
        notifications_gateway="infobip",
        notifications_gateway_url="https://api.infobip.test",
        notifications_gateway_api_key="key",
        notifications_receipts_secret=SECRET,
    )
    with pytest.raises(ValueError, match="CARAVAN_NOTIFICATIONS_RECEIPTS_URL is required"):
        make_gateway(infobip)
    given = infobip.model_copy(update={"notifications_receipts_url": "https://cb.example/r"})
    assert type(make_gateway(given)).__name__ == "InfobipGateway"
    # Locally, the simulator calls back on this host's address: allowed.
    local = infobip.model_copy(update={"environment": "development"})
    assert receipts_url(local).startswith(f"http://{local.http_host}:8083/sms/receipts?key=")
